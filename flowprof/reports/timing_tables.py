"""Rich tables of a time prediction (flowprof/device/roofline.py): per block the FLOPs, bytes,
intensity, bound and predicted time, with the measured time and the error where measured."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:
    from flowprof.device.roofline import Prediction


def _si(x: float, unit: str) -> str:
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds * 1e6:.1f} us"


def timing_table(prediction: Prediction, title: str = "") -> Table:
    """One row per block and a total row; measured and error columns when measured."""
    d = prediction.device
    measured = bool(prediction.measured())
    phase = "" if prediction.phase == "forward" else f", {prediction.phase}"
    t = Table(
        title=title or f"Time per block on {d.title} ({prediction.precision}{phase}, roofline)",
        header_style="bold",
    )
    for name, justify in (
        ("block", "left"),
        ("kind", "left"),
        ("FLOPs", "right"),
        ("bytes", "right"),
        ("FLOP/byte", "right"),
        ("bound", "left"),
        ("predicted", "right"),
    ):
        t.add_column(name, justify=justify, overflow="fold")
    if measured:
        t.add_column("measured", justify="right")
        t.add_column("error", justify="right")
    for b in prediction.blocks:
        row = [
            b.block,
            b.kind,
            _si(b.flops, ""),
            _si(b.bytes, "B"),
            f"{b.intensity:.3g}",
            b.bound.value,
            _time(b.predicted_seconds),
        ]
        if measured:
            row += [_time(b.measured_seconds), "-" if b.error is None else f"{b.error:+.0%}"]
        t.add_row(*row)
    total = prediction.measured_seconds()
    row = ["total", "", "", "", "", "", _time(prediction.predicted_seconds())]
    if measured:
        err = (prediction.predicted_seconds() - total) / total if total else None
        row += [_time(total), "-" if err is None else f"{err:+.0%}"]
    t.add_row(*row, style="bold")
    return t


def error_line(prediction: Prediction) -> str:
    """One line on the measured blocks' errors: the median |predicted - measured| / measured
    over all and over the GEMM-dominated ones ("" when nothing was measured)."""
    from flowprof.device.roofline import error_summary

    every = error_summary(prediction.blocks)
    if not every["blocks"]:
        return ""
    gemm = error_summary(b for b in prediction.blocks if b.gemm_dominated)
    median = every["median_abs_error"]
    line = (
        f"{prediction.phase}: median |predicted - measured| / measured {median:.0%} over "
        f"{every['blocks']} blocks"
    )
    if gemm["blocks"]:
        line += f", {gemm['median_abs_error']:.0%} over the {gemm['blocks']} GEMM-dominated ones"
    return line

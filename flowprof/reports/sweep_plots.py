"""Figures of a communication sweep (analyses/comm_sweep.py) as matplotlib Figures.

Built with ``matplotlib.figure.Figure`` directly (no pyplot, no global state, Agg canvas) and
returned to the caller, who saves them (``cli.save_figure`` writes PNG and SVG atomically).
matplotlib is imported inside the functions: importing this module is cheap. Every
line is labelled with its family, so a test can read the plotted data back from the axes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from flowprof.analyses.comm_sweep import Sweep, Variable

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

WEIGHTS_LABEL = "weights (all blocks)"
ACTIVATIONS_LABEL = "activations (all edges)"
TOTAL_LABEL = "activations + weights"

_AXIS_LABEL = {Variable.EMB: "embedding size (emb = d_model)", Variable.SEQ_LEN: "sequence length"}


def _figure(width: float = 7.5, height: float = 5.0) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


# At most this many labelled ticks on the swept axis: more overprint at the figure's width.
MAX_TICKS = 8


def ticks(values: list[int], most: int = MAX_TICKS) -> list[int]:
    """The swept values to label on a log axis: all of them if they are few, else values at
    least 1/``most`` of the axis's log span apart, the first and the last always kept (a point
    within half that of the last gives way to it)."""
    if len(values) <= most:
        return list(values)
    lo, hi = math.log2(values[0]), math.log2(values[-1])
    gap = (hi - lo) / most
    kept = [values[0]]
    for v in values[1:-1]:
        if math.log2(v) - math.log2(kept[-1]) >= gap:
            kept.append(v)
    if len(kept) > 1 and hi - math.log2(kept[-1]) < gap / 2:
        kept.pop()
    return [*kept, values[-1]]


def _decorate(ax: Axes, sw: Sweep, ylabel: str) -> None:
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    shown = ticks(sw.values)
    ax.set_xticks(shown, [str(v) for v in shown])
    ax.xaxis.set_minor_formatter(NullFormatter())  # no unlabelled values labelled by matplotlib
    ax.set_xlabel(_AXIS_LABEL[sw.variable])
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.25)


def _held(sw: Sweep) -> str:
    depth = "leaf blocks" if sw.depth is None else f"depth {sw.depth}"
    held = ", ".join(f"{k}={v}" for k, v in sorted(sw.options.items()))
    return f"{sw.model}, {sw.dtype}, {depth}" + (f", {held}" if held else "")


def family_figure(sw: Sweep, title: str = "") -> Figure:
    """Bits per edge family vs the swept option (log-log), the weights dashed beside them."""
    fig = _figure()
    ax = fig.add_subplot()
    for i, fam in enumerate(sw.families()):
        style = "-" if i < 10 else "-."  # the default cycle has ten colours
        ax.plot(sw.values, sw.series(fam), style, marker="o", markersize=3, label=fam.value)
    ax.plot(sw.values, sw.weight_series(), "k--", marker="s", markersize=3, label=WEIGHTS_LABEL)
    _decorate(ax, sw, "bits per forward pass")
    ax.legend(fontsize="small", ncols=2)
    ax.set_title(title or f"Bits per edge family vs {sw.variable.value}\n{_held(sw)}")
    return fig


def totals_figure(sw: Sweep, title: str = "") -> Figure:
    """Total activation bits on all edges, weight bits and their sum vs the swept option."""
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(sw.values, sw.activation_series(), "-", marker="o", label=ACTIVATIONS_LABEL)
    ax.plot(sw.values, sw.weight_series(), "--", marker="s", label=WEIGHTS_LABEL)
    totals = [p.total_bits for p in sw.points]
    ax.plot(sw.values, totals, ":", color="k", label=TOTAL_LABEL)
    _decorate(ax, sw, "bits per forward pass")
    ax.legend(fontsize="small")
    ax.set_title(title or f"Traffic per forward pass vs {sw.variable.value}\n{_held(sw)}")
    return fig


def seq_len_figure(sw: Sweep, title: str = "") -> Figure:
    """The sequence-length picture: bits per family vs seq_len at fixed emb (left) and the
    totals (right); attention scores and weights grow as seq_len squared."""
    if sw.variable is not Variable.SEQ_LEN:
        raise ValueError(f"seq_len_figure needs a sweep over seq_len, not {sw.variable.value}")
    fig = _figure(13.0, 5.0)
    left, right = fig.subplots(1, 2)
    for i, fam in enumerate(sw.families()):
        style = "-" if i < 10 else "-."
        left.plot(sw.values, sw.series(fam), style, marker="o", markersize=3, label=fam.value)
    left.plot(sw.values, sw.weight_series(), "k--", label=WEIGHTS_LABEL)
    _decorate(left, sw, "bits per forward pass")
    left.legend(fontsize="small", ncols=2)
    left.set_title("per edge family")
    right.plot(sw.values, sw.activation_series(), "-", marker="o", label=ACTIVATIONS_LABEL)
    right.plot(sw.values, sw.weight_series(), "--", marker="s", label=WEIGHTS_LABEL)
    _decorate(right, sw, "bits per forward pass")
    right.legend(fontsize="small")
    right.set_title("totals")
    fig.suptitle(title or f"Bits vs sequence length\n{_held(sw)}")
    return fig


def figures(emb_sweep: Sweep, seq_sweep: Sweep | None = None) -> dict[str, Figure]:
    """The sweep's figures by file stem: ``sweep_families``, ``sweep_totals`` and, given a sweep
    over seq_len, ``sweep_seq_len``."""
    out = {"sweep_families": family_figure(emb_sweep), "sweep_totals": totals_figure(emb_sweep)}
    if seq_sweep is not None:
        out["sweep_seq_len"] = seq_len_figure(seq_sweep)
    return out


def line_data(fig: Figure) -> dict[str, tuple[list[float], list[float]]]:
    """Every labelled line of ``fig`` as label -> (x, y), axes in order (for tests and checks)."""
    data: dict[str, tuple[list[float], list[float]]] = {}
    for i, ax in enumerate(fig.axes):
        for line in ax.get_lines():
            label = str(line.get_label())
            if label.startswith("_"):
                continue
            key = label if label not in data else f"{label} [{i}]"
            data[key] = ([float(x) for x in line.get_xdata()], [float(y) for y in line.get_ydata()])
    return data

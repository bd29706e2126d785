"""A MemoryReport (flowprof/analyses/memory.py) shown: Rich tables (bytes by block, what is alive
at the peak, the CPU measurement beside the prediction), a CSV of the blocks, and a matplotlib
timeline of the live bytes by category over the run, the phases shaded and the peak marked.
Returned, not printed or saved."""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING

from rich.table import Table

from flowprof.reports.fit import fit
from flowprof.tracer import MEMORY_CATEGORIES as CATEGORIES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from flowprof.analyses.memory import MemoryReport

_PHASE_COLOURS = {
    "forward": "#e8f0fb",
    "loss": "#f3e8fb",
    "backward": "#fbeee8",
    "optimizer": "#eefbe8",
}


def nbytes(n: int) -> str:
    """Bytes with a binary unit (B, KiB, MiB, GiB), three significant figures."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            v = n / size
            digits = 0 if abs(v) >= 100 else 1 if abs(v) >= 10 else 2
            return f"{v:.{digits}f} {unit}"
    return f"{n} B"


def _phases(report: MemoryReport) -> list[str]:
    seen: list[str] = []
    for b in report.blocks:
        for p in list(b.temporaries) + list(b.live_after):
            if p not in seen and p in ("forward", "loss", "backward", "optimizer", "recompute"):
                seen.append(p)
    order = ("forward", "loss", "backward", "recompute", "optimizer")
    return [p for p in order if p in seen]


def blocks_table(report: MemoryReport, title: str = "memory by block") -> Table:
    """One row per block: the bytes it holds by category, its temporaries and the live bytes
    after it, per phase."""
    phases = _phases(report)
    t = Table(
        title=title,
        header_style="bold",
        caption="params, grads, opt state: of the parameters the block owns; saved: what its ops "
        "keep for the backward; temp: the most it had alive beyond its start and end; live: "
        "the whole run's live bytes when the block ended",
    )
    t.add_column("block", overflow="fold")
    for name in ("params", "grads", "opt state", "saved"):
        t.add_column(name, justify="right")
    for p in phases:
        t.add_column(f"temp {p}", justify="right")
    for p in phases:
        t.add_column(f"live {p}", justify="right")
    for b in report.blocks:
        row = [b.parameters, b.gradients, b.optimizer_state, b.saved]
        if not any(row) and not any(b.temporaries.values()) and not b.live_after:
            continue  # (a shape computation: nothing allocated)
        t.add_row(
            b.name,
            *(nbytes(v) if v else "" for v in row),
            *(nbytes(b.temporaries[p]) if b.temporaries.get(p) else "" for p in phases),
            *(nbytes(b.live_after[p]) if p in b.live_after else "" for p in phases),
        )
    return fit(t)


def peak_table(report: MemoryReport, title: str = "alive at the peak") -> Table:
    """What is alive at the peak, by category, and what the run allocated of each."""
    at = report.at_peak()
    ever = report.totals()
    block, phase = report.peak_at
    t = Table(
        title=title,
        header_style="bold",
        show_footer=True,
        caption=f"peak {nbytes(report.peak)} ({report.peak:,} bytes) in {block} ({phase}); "
        f"before the step: {nbytes(report.predicted.baseline)}",
    )
    t.add_column("category", footer="total")
    t.add_column("at the peak", justify="right", footer=nbytes(sum(at.values())))
    t.add_column("bytes", justify="right", footer=f"{sum(at.values()):,}")
    t.add_column("allocated in all", justify="right")
    for c in CATEGORIES:
        if at[c] or ever[c]:
            t.add_row(c, nbytes(at[c]), f"{at[c]:,}", nbytes(ever[c]))
    return t


def measured_summary(report: MemoryReport) -> str:
    """One line: how many block boundaries the CPU run equals the prediction at, the peaks."""
    m = report.measured
    assert m is not None
    p = report.predicted
    equal = report.boundaries_equal()
    line = (
        f"measured ({m.device}): {equal} of {len(p.segments)} block boundaries equal the "
        f"prediction; peak predicted {p.peak:,} B, measured {m.peak:,} B"
    )
    if m.cuda_max_allocated:
        error = (p.peak - m.cuda_max_allocated) / m.cuda_max_allocated
        line += f"; torch.cuda.max_memory_allocated {m.cuda_max_allocated:,} B ({error:+.1%})"
    return line


def measured_table(report: MemoryReport, title: str = "predicted against measured") -> Table:
    """Where the measured live bytes part from the predicted ones, and why."""
    t = Table(title=title, header_style="bold", caption=measured_summary(report))
    t.add_column("where", overflow="fold")
    t.add_column("predicted", justify="right")
    t.add_column("measured", justify="right")
    t.add_column("difference", justify="right")
    t.add_column("ops", overflow="fold")
    t.add_column("why", overflow="fold")
    for d in report.differences:
        t.add_row(
            f"{d.block} ({d.phase})",
            f"{d.predicted:,}",
            f"{d.measured:,}",
            f"{d.bytes:+,}",
            ", ".join(d.ops),
            d.why or "not known",
        )
    return fit(t)


def blocks_csv(report: MemoryReport) -> str:
    """One row per block: bytes by category, temporaries and live bytes per phase."""
    phases = ("forward", "loss", "backward", "recompute", "optimizer")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        ["block", "parameters", "gradients", "optimizer_state", "saved"]
        + [f"temporaries_{p}" for p in phases]
        + [f"live_after_{p}" for p in phases]
    )
    for b in report.blocks:
        w.writerow(
            [b.name, b.parameters, b.gradients, b.optimizer_state, b.saved]
            + [b.temporaries.get(p, "") for p in phases]
            + [b.live_after.get(p, "") for p in phases]
        )
    return buf.getvalue()


def timeline_figure(report: MemoryReport) -> Figure:
    """Live bytes by category (stacked) against the allocation and free events in execution
    order; the phases shaded, the peak marked."""
    from matplotlib.figure import Figure

    rec = report.predicted
    live = {c: 0 for c in CATEGORIES}
    for s in rec.storages:
        if s.born == -1 and s.died != -2:
            live[s.category] += s.nbytes
    series = {c: [v] for c, v in live.items()}
    for e in rec.events:
        c = rec.storages[e.storage].category
        live[c] += e.delta
        for k in CATEGORIES:
            series[k].append(live[k])
    x = list(range(len(rec.events) + 1))
    fig = Figure(figsize=(9, 4.2), layout="constrained")
    ax = fig.add_subplot()
    scale = 2**20
    shown = [c for c in CATEGORIES if any(series[c])]
    ax.stackplot(x, *[[v / scale for v in series[c]] for c in shown], labels=shown, alpha=0.85)
    start = 0
    for i in range(1, len(rec.events) + 1):
        if i == len(rec.events) or rec.events[i].phase != rec.events[start].phase:
            phase = rec.events[start].phase
            ax.axvspan(start, i, color=_PHASE_COLOURS.get(phase, "#f4f4f4"), zorder=0)
            ax.text(
                (start + i) / 2,
                1.0,
                phase,
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="bottom",
                fontsize=8,
            )
            start = i
    top = rec.peak_at
    if top is not None:
        i = rec.events.index(top) + 1
        ax.plot([i], [rec.peak / scale], "v", color="black")
        ax.annotate(
            f"peak {nbytes(rec.peak)}\n{top.block} ({top.phase})",
            (i, rec.peak / scale),
            textcoords="offset points",
            xytext=(6, -24),
            fontsize=8,
        )
    ax.set_xlabel("allocations and frees, in execution order")
    ax.set_ylabel("live MiB")
    ax.set_title(f"{report.model}: live memory by category", pad=14)
    ax.legend(loc="upper left", fontsize=7)
    ax.set_xlim(0, max(1, len(x) - 1))
    return fig

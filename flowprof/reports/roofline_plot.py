"""The roofline plot of a prediction (flowprof/device/roofline.py) as a matplotlib Figure.

Blocks are points at (arithmetic intensity, attained FLOP/s) under the device's roofline: the
memory roof (bandwidth x intensity) rising to the compute roof (the precision's dense peak). A
block's predicted point is its FLOPs over its predicted roofline time; where it was measured, a
second point (hollow) is its FLOPs over its measured time, joined to the first by a thin line,
so the distance between them is the prediction's error. Blocks that do no arithmetic (views,
copies) have no place on a log-log plot and are left out; the caption says how many. On a
measured device a predicted point may sit above the memory roof, which is main memory's
bandwidth: a block whose tensors fit in cache is predicted at the cache's (roofline.py,
refinement 2), and below the compute roof, where a small product reaches less than the peak
(refinement 1).

A training step (one prediction per phase) marks each phase with its own marker: circles the
forward, squares the backward, triangles the optimizer (its points labelled ``blocks,
predicted (backward)`` ...), under the one roofline.

Built with ``matplotlib.figure.Figure`` (no pyplot, no global state) and returned to the caller,
who saves it; matplotlib is imported inside the function. The plotted data is labelled so that a
test reads it back from the axes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from flowprof.device.roofline import Prediction

PREDICTED_LABEL = "blocks, predicted"
MEASURED_LABEL = "blocks, measured"
ROOF_LABEL = "roofline"


MARKERS = {"forward": "o", "backward": "s", "optimizer": "^"}


def _label(base: str, phase: str, training: bool) -> str:
    return f"{base} ({phase})" if training and phase != "forward" else base


def roofline_figure(predictions: Prediction | Sequence[Prediction], title: str = "") -> Figure:
    """Blocks under the device's roofline (log-log), coloured by their predicted bound; one
    prediction, or a training step's, one per phase, each phase its own marker."""
    from matplotlib.figure import Figure

    preds = [predictions] if not isinstance(predictions, Sequence) else list(predictions)
    training = len(preds) > 1
    prediction = preds[0]
    device, precision = prediction.device, prediction.precision
    peak, bandwidth = device.peak(precision), device.bandwidth
    every = [b for p in preds for b in p.blocks]
    shown_all = [b for b in every if b.flops > 0 and b.bytes > 0]
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    ax = fig.add_subplot()
    ax.set_xscale("log")
    ax.set_yscale("log")

    intensities = [b.intensity for b in shown_all] or [1.0]
    ridge = peak / bandwidth
    lo = min(min(intensities), ridge) / 4
    hi = max(max(intensities), ridge) * 4
    ax.plot([lo, ridge, hi], [bandwidth * lo, peak, peak], "k-", linewidth=1.5, label=ROOF_LABEL)
    ax.annotate(
        f"{peak / 1e9:,.4g} GFLOP/s ({precision})", (hi, peak), ha="right", va="bottom", size=8
    )
    ax.annotate(f"{bandwidth / 1e9:,.4g} GB/s", (lo * 1.2, bandwidth * lo * 1.2), ha="left", size=8)

    colours = {"compute": "tab:blue", "memory": "tab:orange"}
    for p in preds:
        shown = [b for b in p.blocks if b.flops > 0 and b.bytes > 0]
        if not shown:
            continue
        marker = MARKERS.get(p.phase, "o")
        ax.scatter(
            [b.intensity for b in shown],
            [b.flops / b.predicted_seconds for b in shown],
            c=[colours[b.bound.value] for b in shown],
            s=18,
            marker=marker,
            label=_label(PREDICTED_LABEL, p.phase, training),
            zorder=3,
        )
        measured = [b for b in shown if b.measured_seconds]
        if measured:
            ax.scatter(
                [b.intensity for b in measured],
                [b.flops / b.measured_seconds for b in measured],
                facecolors="none",
                edgecolors=[colours[b.bound.value] for b in measured],
                s=30,
                marker=marker,
                label=_label(MEASURED_LABEL, p.phase, training),
                zorder=3,
            )
            for b in measured:
                ax.plot(
                    [b.intensity] * 2,
                    [b.flops / b.predicted_seconds, b.flops / b.measured_seconds],
                    color="0.6",
                    linewidth=0.6,
                    zorder=2,
                )
    for bound, colour in colours.items():  # legend entries for the colours
        ax.scatter([], [], c=colour, s=18, label=f"{bound}-bound (predicted)")
    ax.set_xlabel("arithmetic intensity (FLOPs per byte moved)")
    ax.set_ylabel("FLOP/s (FLOPs / time)")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize="small", loc="lower right")
    left_out = len(every) - len(shown_all)
    name = prediction.model or "model"
    phases = f", {' + '.join(p.phase for p in preds)}" if training else ""
    ax.set_title(
        title
        or f"{name} on {device.title}, {precision}{phases}"
        + (f"\n({left_out} blocks with no FLOPs not shown)" if left_out else ""),
        fontsize=10,
    )
    return fig

"""Training curves as matplotlib Figures: accuracy and loss vs epochs, and a comparison of runs.

The figures are built with ``matplotlib.figure.Figure`` directly (no pyplot, no global state,
rendered by the Agg canvas), and returned to the caller (``cli.save_figure`` writes one as PNG and
SVG atomically). matplotlib is imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from flowprof.training.history import EpochRecord

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# (attribute, label) of each curve; train dashed, test solid, one colour per run.
_CURVES = {
    "accuracy": (("train_acc", "train"), ("test_acc", "test")),
    "loss": (("train_loss", "train"), ("test_loss", "test")),
}
_STYLE = {"train": "--", "test": "-"}


def _figure(ncols: int) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(5.2 * ncols, 3.8), layout="constrained")


def _plot(
    ax: Axes,
    history: Sequence[EpochRecord],
    metric: str,
    label: str | None,
    color: str,
    converged_epoch: int | None,
) -> None:
    epochs = [r.epoch for r in history]
    for attr, split in _CURVES[metric]:
        values = [getattr(r, attr) * (100 if metric == "accuracy" else 1) for r in history]
        name = f"{label} {split}" if label else split
        ax.plot(epochs, values, _STYLE[split], color=color, marker=".", label=name)
    if converged_epoch is not None:
        mark = f"{label} converged" if label else "converged"
        ax.axvline(converged_epoch, color=color, linestyle=":", linewidth=1, label=mark)


def _decorate(ax: Axes, metric: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)" if metric == "accuracy" else "cross-entropy loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")


def metric_figure(
    history: Sequence[EpochRecord],
    metric: str,
    title: str = "",
    converged_epoch: int | None = None,
) -> Figure:
    """One panel: ``metric`` ("accuracy" or "loss") vs epoch, train and test.

    A dotted vertical line marks ``converged_epoch`` when given.
    """
    if metric not in _CURVES:
        raise ValueError(f"metric must be one of {sorted(_CURVES)}, got {metric!r}")
    fig = _figure(1)
    ax = fig.add_subplot()
    _plot(ax, history, metric, None, "C0", converged_epoch)
    _decorate(ax, metric)
    ax.set_title(title or f"{metric} vs epochs")
    return fig


def accuracy_figure(
    history: Sequence[EpochRecord], title: str = "", converged_epoch: int | None = None
) -> Figure:
    """Accuracy (%) vs epochs, train and test."""
    return metric_figure(history, "accuracy", title, converged_epoch)


def loss_figure(
    history: Sequence[EpochRecord], title: str = "", converged_epoch: int | None = None
) -> Figure:
    """Cross-entropy loss vs epochs, train and test."""
    return metric_figure(history, "loss", title, converged_epoch)


def comparison_figure(
    histories: Mapping[str, Sequence[EpochRecord]],
    converged: Mapping[str, int | None] | None = None,
    title: str = "",
) -> Figure:
    """Accuracy and loss of several runs (e.g. ``lenet5`` and ``lenet5-dws``) on shared axes.

    Left panel accuracy, right panel loss; each run has one colour, train dashed, test solid;
    ``converged`` maps a run's label to its convergence epoch (a dotted line).
    """
    fig = _figure(2)
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
        for i, (label, history) in enumerate(histories.items()):
            _plot(ax, history, metric, label, f"C{i}", (converged or {}).get(label))
        _decorate(ax, metric)
        ax.set_title(f"{metric} vs epochs")
    if title:
        fig.suptitle(title)
    return fig

"""A Rich progress bar for training: one line per epoch with loss, accuracy and samples/s; and
the same as plain text lines (:func:`batch_line`, :func:`epoch_line`) for output that is not a
terminal, where a live bar draws nothing until the end.

The training library (training.loop) never prints; it calls ``on_batch`` and ``on_epoch``. This
module turns a ``rich.progress.Progress`` into those two callbacks. The caller owns the Progress
(and so decides where it draws), e.g.::

    with training_progress() as progress:
        on_batch, on_epoch = progress_callbacks(progress, config)
        result = train(config, data, on_batch=on_batch, on_epoch=on_epoch)
"""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from flowprof.training.history import EpochRecord
from flowprof.training.loop import BatchProgress, TrainConfig


def training_progress(console: Console | None = None) -> Progress:
    """A Progress whose columns show an epoch's samples, loss, accuracy, speed and test result."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=28),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:6.2%}"),
        TextColumn("{task.fields[rate]:>7,.0f} samples/s"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[test]}"),
        console=console,
    )


class EpochBars:
    """Keeps one progress task per epoch and feeds it from the training callbacks."""

    def __init__(self, progress: Progress, config: TrainConfig) -> None:
        self.progress = progress
        bound = config.epochs if config.epochs is not None else config.max_epochs
        self._of = f"/{bound}" if config.epochs is not None else f"/<={bound}"
        self._tasks: dict[int, TaskID] = {}

    def _task(self, epoch: int, total: int) -> TaskID:
        if epoch not in self._tasks:
            self._tasks[epoch] = self.progress.add_task(
                f"epoch {epoch}{self._of}", total=total, loss=0.0, acc=0.0, rate=0.0, test=""
            )
        return self._tasks[epoch]

    def on_batch(self, p: BatchProgress) -> None:
        """Advance the epoch's bar to ``p.samples_done`` and show the running loss and accuracy."""
        task = self._task(p.epoch, p.samples_total)
        self.progress.update(
            task, completed=p.samples_done, loss=p.loss, acc=p.acc, rate=p.samples_per_s
        )

    def on_epoch(self, record: EpochRecord) -> None:
        """Complete the epoch's bar and add its test loss and accuracy."""
        task = self._tasks.get(record.epoch)
        if task is None:  # no batch was reported (no on_batch): draw the finished line alone
            task = self._task(record.epoch, 1)
            self.progress.update(task, completed=1)
        test = f"test loss {record.test_loss:.4f}  acc {record.test_acc:6.2%}"
        self.progress.update(
            task,
            loss=record.train_loss,
            acc=record.train_acc,
            rate=record.samples_per_s,
            test=test,
        )
        self.progress.stop_task(task)


def batch_line(p: BatchProgress) -> str:
    """A batch's progress as one plain line (for output that is not a terminal)."""
    return (
        f"epoch {p.epoch}: {p.samples_done:,}/{p.samples_total:,} samples, loss {p.loss:.4f}, "
        f"acc {p.acc:.2%}, {p.samples_per_s:,.0f} samples/s"
    )


def epoch_line(record: EpochRecord, config: TrainConfig) -> str:
    """A finished epoch as one plain line (for output that is not a terminal)."""
    bound = config.epochs if config.epochs is not None else f"<={config.max_epochs}"
    return (
        f"epoch {record.epoch}/{bound} done in {record.seconds:.1f} s: train loss "
        f"{record.train_loss:.4f}, acc {record.train_acc:.2%}; test loss {record.test_loss:.4f}, "
        f"acc {record.test_acc:.2%}"
    )


def progress_callbacks(
    progress: Progress, config: TrainConfig
) -> tuple[Callable[[BatchProgress], None], Callable[[EpochRecord], None]]:
    """``(on_batch, on_epoch)`` for :func:`training.loop.train`, drawing on ``progress``."""
    bars = EpochBars(progress, config)
    return bars.on_batch, bars.on_epoch

"""``flowprof train``: LeNet-5 variants trained on MNIST until convergence, with curves."""

from __future__ import annotations

import argparse
import contextlib

from flowprof.cli.command import Command
from flowprof.cli.emit import Emitter, OutputDir
from flowprof.cli.options import (
    PROG,
    add_data_options,
    fraction,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from flowprof.cli.progress import Lines, live
from flowprof.errors import UsageError

_DEFAULT = "default: training.loop.recipe's"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help="lenet5, lenet5-dws, lenet5-modern, lenet5-modern-dws (several: "
        "a comparison figure too)",
    )
    add_data_options(p)
    p.add_argument(
        "--out",
        metavar="DIR",
        default="out/train",
        help="histories, checkpoints and curves (default out/train)",
    )
    p.add_argument("--epochs", type=positive_int, help="train exactly N epochs")
    # The recipe's defaults live once, in training.loop.recipe (TrainConfig's fields and a
    # model's own learning rate; read there, not here: --help must not import torch); an option
    # left out keeps the recipe's value.
    p.add_argument("--max-epochs", type=positive_int, help=_DEFAULT)
    p.add_argument("--patience", type=positive_int, help=_DEFAULT)
    p.add_argument("--tol", type=non_negative_float, help=_DEFAULT)
    p.add_argument("--batch-size", type=positive_int, help=_DEFAULT)
    p.add_argument("--lr", type=positive_float, help=_DEFAULT)
    p.add_argument("--lr-decay", type=fraction, help=f"per-epoch factor; {_DEFAULT}")
    p.add_argument("--optimizer", choices=("adam", "sgd"), help=_DEFAULT)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--shift",
        type=non_negative_int,
        default=0,
        metavar="PX",
        help="augment: move each training digit by up to PX pixels",
    )
    p.add_argument("--train-samples", type=positive_int, metavar="N")
    p.add_argument("--test-samples", type=positive_int, metavar="N")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads (default 1)")
    p.add_argument("--profile", action="store_true", help="time each block's forward pass")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--force", action="store_true", help="overwrite an earlier run in --out")


def run(args: argparse.Namespace) -> int:
    from flowprof.reports.training_plots import accuracy_figure, comparison_figure, loss_figure
    from flowprof.reports.training_progress import progress_callbacks, training_progress
    from flowprof.training import mnist
    from flowprof.training.loop import TrainingInterrupted, recipe, train

    for name in args.models:
        _check_trainable(name)
    out = OutputDir(args.out)
    data = mnist.load(args.dataset, args.data_dir, download_allowed=args.download)
    emit = Emitter()
    console = emit.console
    console.print(f"data: {data.description}")
    results = {}
    for name in args.models:
        config = recipe(
            name,
            epochs=args.epochs,
            max_epochs=args.max_epochs,
            patience=args.patience,
            tol=args.tol,
            batch_size=args.batch_size,
            lr=args.lr,
            lr_decay=args.lr_decay,
            optimizer=args.optimizer,
            seed=args.seed,
            shift=args.shift,
            train_samples=args.train_samples,
            test_samples=args.test_samples,
            threads=args.threads,
        )
        console.print(f"[bold]{name}[/bold]: {config.rule()}")
        if live(console):
            display = training_progress(console)
            on_batch, on_epoch = progress_callbacks(display, config)
        else:  # piped: plain lines on stderr, one per epoch and one per half minute between
            display = contextlib.nullcontext()
            on_batch, on_epoch = _plain_callbacks(name, config)
        with display:
            try:
                result = train(
                    config,
                    data,
                    out_dir=out / name,
                    resume=args.resume,
                    overwrite=args.force,
                    on_batch=on_batch,
                    on_epoch=on_epoch,
                    profile=args.profile,
                )
            except TrainingInterrupted as stop:
                console.print(stop.result.summary())
                console.print(
                    f"stopped: the last complete epoch is saved in {out / name}; "
                    "continue with --resume"
                )
                return 130
        results[name] = result
        out.figure(
            f"{name}/accuracy",
            accuracy_figure(result.history, f"{name}: accuracy", result.converged_epoch),
        )
        out.figure(
            f"{name}/loss", loss_figure(result.history, f"{name}: loss", result.converged_epoch)
        )
        if args.profile and result.block_times:
            from flowprof.reports.tables import block_time_table

            console.print(block_time_table(result.block_times, title=f"{name}: forward time"))
        console.print(result.summary())
    if len(results) > 1:
        fig = comparison_figure(
            {n: r.history for n, r in results.items()},
            converged={n: r.converged_epoch for n, r in results.items()},
        )
        out.figure("comparison", fig)
    console.print(f"wrote histories, checkpoints and curves to {out}")
    return 0


def _check_trainable(name: str) -> None:
    """``train`` feeds MNIST digits to a built-in LeNet-5 variant, built by name; not to a
    factory, whose input shape and outputs it cannot know, nor to the transformer."""
    import difflib

    from flowprof.models import catalog

    known = [n for n in catalog.names() if n.startswith("lenet5")]
    if name in known:
        return
    close = difflib.get_close_matches(name, known, n=2)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise UsageError(
        f"{PROG} train: cannot train {name}: {hint}train takes {', '.join(known)}; to train a "
        "model of yours, call flowprof.training.loop.train(config, data, model_factory=...) in "
        "Python"
    )


def _plain_callbacks(name: str, config):
    from flowprof.reports.training_progress import batch_line, epoch_line

    lines = Lines(f"train {name}")
    return (
        lambda p: lines.say(batch_line(p), force=False),
        lambda record: lines.say(epoch_line(record, config)),
    )


COMMAND = Command(
    name="train",
    help="train LeNet-5 variants on MNIST until convergence, with curves",
    example="python cli.py train lenet5 lenet5-dws --out out/train",
    arguments=arguments,
    run=run,
    order=70,
)

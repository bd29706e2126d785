"""``flowprof compare``: two models side by side, layer by layer, and the mapping f between
a regular convolution's counts and its depthwise-separable twin's."""

from __future__ import annotations

import argparse

from flowprof.cli.command import Command
from flowprof.cli.emit import Emitter, Format, add_format
from flowprof.cli.options import DTYPES, input_dtypes, positional_inputs, positive_int, shapes


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_a")
    p.add_argument("model_b")
    p.add_argument("--input", type=shapes, metavar="SHAPE[:DTYPE][,...]")
    p.add_argument(
        "--depth",
        type=positive_int,
        default=1,
        metavar="N",
        help="layer granularity (default 1: the model's children)",
    )
    p.add_argument("--dtype", choices=DTYPES)
    add_format(p, Format.TABLE, Format.JSON)
    p.add_argument("--explain", action="store_true", help="also show the derivation of f")
    p.add_argument(
        "--train",
        action="store_true",
        help="also count training both: per step (forward, criterion, backward, optimizer), "
        "per epoch of full MNIST and per run, as `flowprof train` runs it",
    )
    p.add_argument(
        "--epochs",
        type=positive_int,
        default=20,
        metavar="N",
        help="with --train: the run's epochs (default 20, the paper's passes)",
    )


def run(args: argparse.Namespace) -> int:
    from flowprof.analyses.op_compare import compare

    cmp = compare(
        args.model_a,
        args.model_b,
        depth=args.depth,
        input_shapes=positional_inputs(args),
        input_dtypes=input_dtypes(args),
        dtype=args.dtype,
    )
    costs = _training_costs(args) if args.train else None

    def data() -> dict:
        out = cmp.to_dict()
        if costs:
            out["training"] = [c.to_dict() for c in costs]
        return out

    Emitter(args.format).show(table=lambda: _tables(cmp, args.explain, costs), json=data)
    return 0


def _training_costs(args: argparse.Namespace) -> list:
    """The training cost of both models with `train`'s defaults (full MNIST's 60,000 training
    and 10,000 test samples) for ``--epochs`` epochs."""
    from flowprof.analyses.training_cost import training_cost
    from flowprof.training.loop import recipe

    train_size, test_size = 60_000, 10_000  # MNIST's standard split
    return [
        training_cost(m, recipe(m), train_size, test_size, args.epochs)
        for m in (args.model_a, args.model_b)
    ]


def _tables(cmp, explain: bool, costs=None):
    from flowprof.reports.compare_tables import comparison_table, conv_check_table, mapping_table

    yield comparison_table(cmp)
    yield conv_check_table(cmp)
    if explain:
        yield mapping_table()
    if costs:
        from flowprof.reports.compare_tables import training_cost_table

        yield training_cost_table(costs)


COMMAND = Command(
    name="compare",
    help="two models side by side: multiplications and additions per layer, and f",
    example="python cli.py compare lenet5 lenet5-dws --train",
    arguments=arguments,
    run=run,
    order=40,
)

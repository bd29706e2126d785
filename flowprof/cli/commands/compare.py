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
    Emitter(args.format).show(table=lambda: _tables(cmp, args.explain), json=cmp.to_dict)
    return 0


def _tables(cmp, explain: bool):
    from flowprof.reports.compare_tables import comparison_table, conv_check_table, mapping_table

    yield comparison_table(cmp)
    yield conv_check_table(cmp)
    if explain:
        yield mapping_table()


COMMAND = Command(
    name="compare",
    help="two models side by side: multiplications and additions per layer, and f",
    example="python cli.py compare lenet5 lenet5-dws",
    arguments=arguments,
    run=run,
    order=40,
)

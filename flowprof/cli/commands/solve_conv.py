"""``flowprof solve-conv``: every conv layer configuration that maps one shape to another."""

from __future__ import annotations

import argparse

from flowprof.cli.command import Command
from flowprof.cli.emit import Emitter, Format, add_format


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--in", dest="in_shape", required=True, metavar="HxWxC")
    p.add_argument("--out", dest="out_shape", required=True, metavar="HxWxC")
    p.add_argument("--kernel", metavar="KHxKW", help="only this kernel size, e.g. 3x3")
    add_format(p, Format.TABLE, Format.JSON)


def run(args: argparse.Namespace) -> int:
    from flowprof.analyses.conv_shapes import solve_conv

    solutions = solve_conv(args.in_shape, args.out_shape, kernel=args.kernel)
    Emitter(args.format).show(table=lambda: _tables(solutions), json=solutions.config_dicts)
    return 0


def _tables(solutions):
    from flowprof.reports.conv_tables import explanation_table, solutions_table

    return [solutions_table(solutions), explanation_table(solutions)]


COMMAND = Command(
    name="solve-conv",
    help="every conv layer configuration that maps one shape to another",
    example="python cli.py solve-conv --in 8x8x5 --out 5x5x3 --kernel 3x3",
    arguments=arguments,
    run=run,
    order=30,
)

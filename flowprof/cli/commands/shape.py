"""``flowprof shape``: the shape after each conv/pool layer, with the formula used."""

from __future__ import annotations

import argparse

from flowprof.cli.command import Command
from flowprof.cli.emit import Emitter, Format, add_format


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input_shape", metavar="HxWxC", help="input height x width x channels")
    p.add_argument("layers", nargs="+", metavar="LAYER", help="e.g. conv:8@3x4/s2/p1")
    add_format(p, Format.TABLE, Format.JSON)


def run(args: argparse.Namespace) -> int:
    from flowprof.analyses.conv_shapes import propagate

    steps = propagate(args.input_shape, args.layers)
    Emitter(args.format).show(
        table=lambda: _tables(steps), json=lambda: [s.to_dict() for s in steps]
    )
    return 0


def _tables(steps):
    from flowprof.reports.conv_tables import shape_table

    return [shape_table(steps)]


COMMAND = Command(
    name="shape",
    help="shape after each conv/pool layer, with the formula used",
    example="python cli.py shape 13x15x3 conv:7@4x6 conv:8@3x4/s2/p1 maxpool:2x2",
    notes="layers: conv:C@KHxKW, convT:C@K, maxpool:K, avgpool:K; options /sN or /sHxW stride,\n"
    "/pN padding, /dN dilation, /gN groups, /opN output padding (convT), /nobias",
    arguments=arguments,
    run=run,
    order=20,
)

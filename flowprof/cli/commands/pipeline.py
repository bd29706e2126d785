"""``flowprof pipeline``: a model split into stages over processes, each cut's bytes checked."""

from __future__ import annotations

import argparse
import sys

from flowprof.cli.command import Command
from flowprof.cli.emit import Emitter, Format, OutputDir, add_format
from flowprof.cli.options import (
    PROG,
    add_model_options,
    check_model,
    input_dtypes,
    model_options,
    positional_inputs,
    positive_int,
)


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model")
    p.add_argument("--stages", type=positive_int, required=True, metavar="N")
    p.add_argument("--micro-batches", type=positive_int, default=1, metavar="M")
    p.add_argument(
        "--depth", type=positive_int, metavar="N", help="cut only between blocks at this depth"
    )
    add_model_options(p)
    add_format(p, Format.TABLE, Format.JSON)
    p.add_argument("--out", metavar="DIR", help="write pipeline.json and the stage diagram")


def run(args: argparse.Namespace) -> int:
    options, inputs = model_options(args), positional_inputs(args)
    check_model(args.model, options)  # (before torch is imported)
    if args.out:
        OutputDir.check(args.out)
    from flowprof.distributed import run_pipeline

    result = run_pipeline(
        args.model,
        args.stages,
        micro_batches=args.micro_batches,
        model_options=options,
        input_shapes=inputs,
        input_dtypes=input_dtypes(args),
        depth=args.depth,
    )
    Emitter(args.format).show(table=lambda: _tables(result), json=result.to_dict)
    if args.out:
        from flowprof.reports.pipeline_tables import stages_diagram

        with OutputDir(args.out, staged=True, command="pipeline") as out:
            out.json("pipeline.json", result.to_dict())
            out.diagram("stages", stages_diagram(result))
    if not result.ok:
        print(
            f"{PROG}: the measured bytes or the outputs differ from the prediction", file=sys.stderr
        )
        return 1
    return 0


def _tables(result):
    from flowprof.reports.pipeline_tables import pipeline_table

    return [pipeline_table(result)]


COMMAND = Command(
    name="pipeline",
    help="split a model into stages over processes (gloo, loopback) and check the "
    "bytes each cut sends against the prediction",
    example="python cli.py pipeline transformer --stages 3 --emb 64 --seq-len 16",
    arguments=arguments,
    run=run,
    order=60,
)

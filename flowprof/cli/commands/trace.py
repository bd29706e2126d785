"""``flowprof trace``: a model's block graph as tables, CSV or JSON, and its files."""

from __future__ import annotations

import argparse
import sys

from flowprof.cli import trace_files
from flowprof.cli.command import Command
from flowprof.cli.emit import Emitter, Format, OutputDir, add_format
from flowprof.cli.options import (
    PROG,
    Inputs,
    add_analysis_options,
    add_model_options,
    check_model,
    input_dtypes,
    model_options,
)


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        help="lenet5, lenet5-dws, lenet5-modern[-dws], transformer, "
        "torchvision:NAME, package.module:factory or path/to/file.py:factory",
    )
    add_model_options(p)
    add_analysis_options(p)
    add_format(p, Format.TABLE, Format.CSV, Format.JSON, help="stdout format")
    p.add_argument(
        "--out",
        metavar="DIR",
        help="write blocks.csv, edges.csv, graph.json, graph.dot (+ svg, png, pdf)",
    )
    p.add_argument(
        "--measure",
        action="store_true",
        help="also run the model for real: seconds per block and measured edge bytes",
    )
    trace_files.add_options(p)


def run(args: argparse.Namespace) -> int:
    options = model_options(args)
    check_model(args.model, options)  # (before torch is imported)
    if args.out:
        OutputDir.check(args.out)  # (before the work)
    import flowprof

    shapes = args.input  # in forward's order, or by forward's parameter names
    if shapes and shapes.names:
        shapes = dict(zip(shapes.names, shapes, strict=True))
    graph = flowprof.trace(
        args.model,
        list(shapes) if isinstance(shapes, Inputs) else shapes,
        dtype=args.dtype,
        depth=args.depth,
        measure=args.measure,
        input_dtypes=input_dtypes(args),  # (passed on to the model's build)
        **options,
    )
    name = graph.meta["model"]
    emit = Emitter(args.format)
    emit.show(
        table=lambda: _tables(graph, name, args.measure),
        csv=lambda: _csv(graph),
        json=graph.to_dict,
    )
    if args.out:
        with OutputDir(args.out, staged=True, command="trace") as out:  # all files, or none
            out.kept(graph.to_csv(out.path))
            out.kept([graph.to_json(out / "graph.json")])
            files = trace_files.write(
                graph,
                name,
                out.path,
                args,
                lambda path, data: out.text(path.relative_to(out.path), data),
            )
        for line in files.warnings:
            print(f"{PROG}: warning: {line}", file=sys.stderr)
        emit.note(f"wrote {out.names()} to {out}")
        for line in files.notes:
            emit.note(f"note: {line}")
    return 0


def _tables(graph, name: str, measured: bool):
    from rich.text import Text

    from flowprof.reports import tables

    yield tables.blocks_table(graph, title=f"{name}: blocks")
    yield tables.edges_table(graph, title=f"{name}: tensors between blocks")
    yield tables.totals_table(graph, title=f"{name}: totals")
    for line in tables.trace_notes(graph):
        yield Text(line)
    if measured:
        yield tables.measured_table(graph)


def _csv(graph) -> list[str]:
    from flowprof.reports import export

    return [export.blocks_csv(graph), export.edges_csv(graph)]


COMMAND = Command(
    name="trace",
    help="trace a model into a block graph: counts, tensors, diagram",
    example="python cli.py trace transformer --emb 512 --out out/t512",
    arguments=arguments,
    run=run,
    order=10,
)

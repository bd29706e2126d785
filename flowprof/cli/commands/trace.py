"""``flowprof trace``: a model's block graph as tables, CSV or JSON, and its files."""

from __future__ import annotations

import argparse
import sys

from flowprof.cli import memory, timing, trace_files
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
from flowprof.errors import BadInputError


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
        help="also run the model for real: seconds per block and measured edge bytes; with "
        "--train, the step on the CPU: each block's forward, backward and optimizer step timed",
    )
    g = p.add_argument_group("training step (--train)")
    g.add_argument(
        "--train",
        action="store_true",
        help="count one training step: forward, loss, backward and optimizer update, by block, "
        "and the gradients flowing back between blocks",
    )
    g.add_argument(
        "--optimizer",
        choices=("sgd", "adam", "adamw"),
        help="the update of --train (default sgd, momentum 0.9)",
    )
    g.add_argument(
        "--loss",
        choices=("auto", "cross-entropy", "mse", "sum"),
        help="the loss of --train (default auto: cross-entropy for an N x C output, else mse)",
    )
    g.add_argument(
        "--amp",
        choices=("bf16", "fp16"),
        help="with --train: mixed precision (autocast over fp32 master weights; fp16 with a loss "
        "scaler), run on fake tensors",
    )
    g.add_argument(
        "--input-grad",
        action="store_true",
        help="with --train: the inputs need a gradient too (as inside a bigger model)",
    )
    timing.add_options(p)
    memory.add_options(p)
    trace_files.add_options(p)


def run(args: argparse.Namespace) -> int:
    options = model_options(args)
    check_model(args.model, options)  # (before torch is imported)
    train = args.train or args.optimizer or args.loss or args.input_grad or args.amp
    if train and not args.train:
        raise BadInputError("--optimizer, --loss, --amp and --input-grad go with --train")
    if args.amp and args.measure and not args.memory:
        raise BadInputError(
            "--measure times the training step in the model's own dtype; --amp is counted, not "
            "measured: drop one of the two"
        )
    memory.check(args)
    if args.out:
        OutputDir.check(args.out)  # (before the work)
    import flowprof

    shapes = args.input  # in forward's order, or by forward's parameter names
    if shapes and shapes.names:
        shapes = dict(zip(shapes.names, shapes, strict=True))
    # (the memory first: a module --checkpoint names that is not there fails before the trace)
    mem = memory.report(args, shapes, {**options, "input_dtypes": input_dtypes(args)}, train)
    graph = flowprof.trace(
        args.model,
        list(shapes) if isinstance(shapes, Inputs) else shapes,
        dtype=args.dtype,
        depth=args.depth,
        measure=args.measure and not args.memory,  # (with --memory: the memory is measured)
        input_dtypes=input_dtypes(args),  # (passed on to the model's build)
        phases=("forward", "backward", "optimizer") if train else None,
        optimizer=args.optimizer,
        loss=args.loss,
        input_grad=args.input_grad,
        amp=args.amp,
        **options,
    )
    name = graph.meta["model"]
    predictions, notes = timing.predict(graph, args)  # (--device; one per phase)
    emit = Emitter(args.format)
    emit.show(
        table=lambda: _tables(graph, name, args.measure and not mem, predictions, mem),
        csv=lambda: _csv(graph),
        json=lambda: (
            graph.to_dict()
            | timing.to_json(predictions)
            | ({"memory": mem.to_dict()} if mem else {})
        ),
    )
    for line in notes + timing.step_notes(graph):
        emit.note(f"note: {line}")
    if args.out:
        from flowprof.reports.fit import short_name

        with OutputDir(args.out, staged=True, command="trace") as out:  # all files, or none
            out.kept(graph.to_csv(out.path))
            out.kept([graph.to_json(out / "graph.json")])
            files = trace_files.write(
                graph,
                short_name(name),  # titles: a file's name, not its whole path
                out.path,
                args,
                lambda path, data: out.text(path.relative_to(out.path), data),
            )
            if predictions:
                timing.write(predictions, out)
            if mem is not None:
                memory.write(mem, out)
        for line in files.warnings:
            print(f"{PROG}: warning: {line}", file=sys.stderr)
        emit.note(f"wrote {out.names()} to {out}")
        for line in files.notes:
            emit.note(f"note: {line}")
    return 0


def _tables(graph, name: str, measured: bool, predictions=(), mem=None):
    from flowprof.reports.fit import short_name

    yield from _count_tables(graph, short_name(name), measured, predictions)
    if mem is not None:
        yield from memory.tables(mem, short_name(name))


def _count_tables(graph, name: str, measured: bool, predictions=()):
    from rich.text import Text

    from flowprof.reports import tables, training_tables

    if training_tables.is_training(graph):
        yield training_tables.phase_blocks_table(graph, title=f"{name}: training step by block")
        yield tables.edges_table(graph, title=f"{name}: activations between blocks (forward)")
        yield training_tables.gradient_edges_table(
            graph, title=f"{name}: gradients between blocks (backward)"
        )
        yield training_tables.phase_totals_table(graph, title=f"{name}: training step totals")
        for line in training_tables.step_notes(graph) + tables.trace_notes(graph):
            yield Text(line)
        if measured and not predictions:
            yield training_tables.measured_step_table(graph)
        yield from timing.tables(predictions)
        return

    yield tables.blocks_table(graph, title=f"{name}: blocks")
    yield tables.edges_table(graph, title=f"{name}: tensors between blocks")
    yield tables.totals_table(graph, title=f"{name}: totals")
    for line in tables.trace_notes(graph):
        yield Text(line)
    if measured:
        yield tables.measured_table(graph)
    yield from timing.tables(predictions)


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

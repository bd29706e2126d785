"""``trace --memory``: the memory of the pass or step traced (flowprof.memory), its tables and
files. The trace command's own work is unchanged; this adds to it."""

from __future__ import annotations

import argparse
from typing import Any

from flowprof.errors import BadInputError

_RUN_DTYPES = ("fp32", "fp16", "bf16")


def add_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("memory (--memory)")
    g.add_argument(
        "--memory",
        action="store_true",
        help="the bytes each block holds (parameters, gradients, optimizer state, saved "
        "activations, temporaries), the live bytes over the run and the peak, predicted on meta "
        "tensors; of a training step with --train; --dtype runs the model in that dtype; with "
        "--measure, a real CPU run recorded beside the prediction; with --out, memory.csv, "
        "memory.json and memory-timeline.png/.svg",
    )
    g.add_argument(
        "--checkpoint",
        metavar="MODULES",
        help="with --memory --train: modules (comma-separated paths, e.g. layer1,layer2) "
        "recomputed in the backward (activation checkpointing)",
    )


def check(args: argparse.Namespace) -> None:
    """Bad combinations, before any work."""
    if args.checkpoint and not (args.memory and args.train):
        raise BadInputError("--checkpoint goes with --memory --train")
    if args.memory and args.dtype and args.dtype not in _RUN_DTYPES:
        raise BadInputError(
            f"--memory runs the model in --dtype: one of {', '.join(_RUN_DTYPES)}, not {args.dtype}"
        )


def report(args: argparse.Namespace, shapes: Any, options: dict[str, Any], train: bool) -> Any:
    """The MemoryReport the options ask for (None without --memory)."""
    if not args.memory:
        return None
    import flowprof

    return flowprof.memory(
        args.model,
        shapes,
        phases=("forward", "backward", "optimizer") if train else None,
        optimizer=args.optimizer,
        loss=args.loss,
        amp=args.amp,
        input_grad=args.input_grad,
        dtype=args.dtype,
        checkpoint=[m for m in (args.checkpoint or "").split(",") if m],
        depth=args.depth,
        measure=args.measure,
        **options,
    )


def tables(report: Any, name: str):
    from rich.text import Text

    from flowprof.reports import memory_tables

    what = "training step" if report.step else "forward pass"
    yield memory_tables.blocks_table(report, title=f"{name}: memory of one {what}, by block")
    yield memory_tables.peak_table(report, title=f"{name}: alive at the peak")
    if report.measured is not None and report.differences:
        yield memory_tables.measured_table(report, title=f"{name}: predicted against measured")
    elif report.measured is not None:
        yield Text(memory_tables.measured_summary(report))
    if report.checkpoint:
        yield Text(f"checkpointed (recomputed in the backward): {', '.join(report.checkpoint)}")


def write(report: Any, out: Any) -> None:
    from flowprof.reports import memory_tables

    out.text("memory.csv", memory_tables.blocks_csv(report))
    out.json("memory.json", report.to_dict())
    out.figure("memory-timeline", memory_tables.timeline_figure(report))

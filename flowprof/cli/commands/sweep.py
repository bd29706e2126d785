"""``flowprof sweep``: the bits between consecutive blocks as a model dimension grows."""

from __future__ import annotations

import argparse
import sys

from flowprof.cli.command import Command
from flowprof.cli.emit import Emitter, Format, OutputDir, add_format
from flowprof.cli.options import (
    PROG,
    add_analysis_options,
    add_model_options,
    check_model,
    int_list,
    model_options,
)
from flowprof.errors import UsageError

# --emb and --seq-len take lists here: the dimensions swept.
SWEPT = ("emb", "seq_len")


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="transformer")
    add_model_options(p, exclude=SWEPT)
    p.add_argument(
        "--emb",
        type=int_list,
        metavar="E1,E2,...",
        help="embedding sizes (default 64,128,...,4096)",
    )
    p.add_argument(
        "--seq-len",
        type=int_list,
        metavar="N[,N2,...]",
        dest="seq_len",
        help="sequence length, or a list for the sequence-length sweep",
    )
    p.add_argument(
        "--trace-each",
        action="store_true",
        help="trace every value (default: evaluate one formula fitted on a few traces, checked "
        "by tracing at up to three of the values)",
    )
    add_analysis_options(p)
    add_format(p, Format.TABLE, Format.CSV, Format.JSON)
    p.add_argument("--out", metavar="DIR", help="write sweep.csv, sweep.json and the plots")


def _check_sweepable(model: str) -> None:
    """A built-in model without the options a sweep varies is refused by name, before torch is
    imported (``check_model`` would blame an --emb the user never gave)."""
    if ":" in model:
        return  # torchvision's and a user's factories: their builders say what they take
    from flowprof.models import catalog, config

    takes = config.settable(catalog.entry(model).config)
    if not all(name in takes for name in SWEPT):
        raise UsageError(
            f"{PROG} sweep: {model} has no --emb and --seq-len to vary; sweep a model that "
            "does, e.g. python cli.py sweep transformer --emb 64,128,256"
        )


def run(args: argparse.Namespace) -> int:
    _check_sweepable(args.model)
    options = model_options(args, exclude=SWEPT)
    # Before torch is imported; every model built below is given emb, and seq_len when given.
    check_model(args.model, options | {"emb": args.emb or "default", "seq_len": args.seq_len})
    if args.out:
        OutputDir.check(args.out)
    from flowprof.analyses import comm_sweep

    emb = args.emb or list(comm_sweep.DEFAULT_EMBS)
    method = comm_sweep.Method.TRACE if args.trace_each else comm_sweep.Method.AUTO
    if len(emb) == 1 and args.seq_len and len(args.seq_len) > 1:
        emb_sweep = None
    else:
        seq = args.seq_len[0] if args.seq_len else None
        emb_sweep = comm_sweep.sweep(
            args.model,
            emb=emb,
            seq_len=seq,
            depth=args.depth,
            dtype=args.dtype or "fp16",
            method=method,
            **options,
        )
    # How the picture changes with sequence length, at one embedding size.
    seq_lens = (
        args.seq_len
        if args.seq_len and len(args.seq_len) > 1
        else list(comm_sweep.DEFAULT_SEQ_LENS)
    )
    seq_emb = emb[0] if len(emb) == 1 else comm_sweep.SEQ_SWEEP_EMB
    seq_sweep = comm_sweep.sweep(
        args.model,
        emb=seq_emb,
        seq_len=seq_lens,
        depth=args.depth,
        dtype=args.dtype or "fp16",
        method=method,
        **options,
    )
    sweeps = [s for s in (emb_sweep, seq_sweep) if s is not None]
    emit = Emitter(args.format)
    for s in sweeps:
        emit.note(f"{s.variable.value} sweep: {s.method_note}")
    emit.show(
        table=lambda: _tables(sweeps),
        csv=lambda: [s.to_csv() for s in sweeps],
        json=lambda: [s.to_dict() for s in sweeps],
    )
    if args.out:
        from flowprof.reports.sweep_plots import figures

        with OutputDir(args.out, staged=True, command="sweep") as out:
            if emb_sweep is not None:
                out.text("sweep.csv", emb_sweep.to_csv())
                out.json("sweep.json", emb_sweep.to_dict())
            out.text("sweep_seq_len.csv", seq_sweep.to_csv())
            for stem, fig in figures(emb_sweep or seq_sweep, seq_sweep).items():
                out.figure(stem, fig)
        emit.note(f"wrote the sweep's CSV, JSON and plots to {out}")
    mismatched = [m for s in sweeps for m in s.mismatches()]
    if mismatched:
        print(f"{PROG}: traced bits differ from the closed forms: {mismatched[0]}", file=sys.stderr)
        return 1
    return 0


def _tables(sweeps):
    from flowprof.analyses import comm_sweep
    from flowprof.reports.compare_tables import sweep_table

    for s in sweeps:
        yield sweep_table(s)
        for line in comm_sweep.explain(s):
            yield f"- {line}"


COMMAND = Command(
    name="sweep",
    help="bits between consecutive blocks as a model dimension grows",
    example="python cli.py sweep transformer --emb 64,128,256,512,1024,2048,4096 --out out/sweep",
    arguments=arguments,
    run=run,
    order=50,
)

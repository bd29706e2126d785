"""flowprof's command line: parses arguments, calls the library, prints and writes.

Only this file prints, writes files and picks exit codes: 0 success, 2 bad input or usage (one
line on stderr, no traceback), 1 internal error. Heavy packages (torch, torchvision, matplotlib)
are imported inside the commands, so ``--help`` and usage errors stay fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from flowprof.errors import BadInputError, UnsupportedModelError, UsageError

PROG = "flowprof"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see --help)")


# --- argument types --------------------------------------------------------------------------


# Input dtypes the --input suffix accepts (names only: parsing must not import torch).
INPUT_DTYPES = "float64 float32 float16 bfloat16 int64 int32 int16 int8 uint8 bool".split()


class Inputs(list):
    """Parsed ``--input``: the shapes (this list), per shape a dtype name or None, and the
    forward parameter each is for (``names``; empty when given in forward's order)."""

    def __init__(self, shapes, dtypes, names=()):
        super().__init__(shapes)
        self.dtypes = list(dtypes)
        self.names = list(names)


def _shapes(text: str) -> Inputs:
    """``1x3x224x224,4x16:int64`` -> shapes ``[(1, 3, 224, 224), (4, 16)]``, dtypes
    ``[None, "int64"]`` (None: the model's own floating dtype). With names,
    ``input_ids=1x32:int64,decoder_input_ids=1x8:int64``: the inputs of those forward parameters
    (all named or none)."""
    shapes, dtypes, names = [], [], []
    for part in text.split(","):
        name, eq, spec = part.strip().rpartition("=")
        if eq and not name.isidentifier():
            raise argparse.ArgumentTypeError(f"not a parameter name: {name!r} in {part!r}")
        names.append(name or None)
        shape_text, _, dtype = spec.lower().partition(":")
        if dtype and dtype not in INPUT_DTYPES:
            raise argparse.ArgumentTypeError(
                f"unknown input dtype {dtype!r} in {part!r} (known: {', '.join(INPUT_DTYPES)})"
            )
        try:
            dims = tuple(int(d) for d in shape_text.split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"malformed shape {part!r}: expected sizes joined by 'x', e.g. 1x3x32x32"
            ) from None
        if any(d <= 0 for d in dims):
            raise argparse.ArgumentTypeError(f"malformed shape {part!r}: sizes must be positive")
        shapes.append(dims)
        dtypes.append(dtype or None)
    if any(names) and not all(names):
        raise argparse.ArgumentTypeError(
            f"name every input or none: {text!r} (e.g. input_ids=1x32:int64,mask=1x32)"
        )
    return Inputs(shapes, dtypes, names if all(names) else ())


def _input_dtypes(args: argparse.Namespace) -> list[str | None] | None:
    return args.input.dtypes if args.input else None


def _positional_inputs(args: argparse.Namespace) -> Inputs | None:
    """``--input`` for a command that gives inputs in forward's order only."""
    if args.input and args.input.names:
        raise UsageError(
            f"{PROG} {args.command}: --input takes shapes in forward's order here, without "
            "names (names are for trace)"
        )
    return args.input


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _int_list(text: str) -> list[int]:
    return [_positive_int(p) for p in text.split(",") if p.strip()]


DTYPES = ("fp64", "fp32", "fp16", "bf16", "fp8", "int8")
FORMATS = ("table", "csv", "json")

# Model options: CLI flag -> factory keyword. Only the options a user gives are passed on.
MODEL_OPTIONS = (
    ("emb", _positive_int, "transformer: embedding size d_model (default 256)"),
    ("heads", _positive_int, "transformer: attention heads (default 8)"),
    ("ffn", _positive_int, "transformer: feed-forward size (default 4 x emb)"),
    ("enc_layers", _positive_int, "transformer: encoder layers (default 1)"),
    ("dec_layers", _positive_int, "transformer: decoder layers (default 1)"),
    ("seq_len", _positive_int, "transformer: source and target length"),
    ("src_len", _positive_int, "transformer: source length (default --seq-len)"),
    ("tgt_len", _positive_int, "transformer: target length (default --seq-len)"),
    ("batch", _positive_int, "transformer: batch size (default 1)"),
    ("vocab", _positive_int, "transformer: add token embeddings and output projection"),
    ("norm", str, "transformer: 'post' (the paper) or 'pre' layer norm"),
    ("activation", str, "lenet5-modern: 'tanh' or 'relu'"),
)


def _add_model_options(p: argparse.ArgumentParser, exclude: Sequence[str] = ()) -> None:
    g = p.add_argument_group("model options")
    g.add_argument(
        "--input",
        type=_shapes,
        metavar="[NAME=]SHAPE[:DTYPE][,...]",
        help="example input shapes, e.g. 1x3x224x224 (default: per model); a dtype suffix "
        "for inputs that are not floating point, e.g. token ids 4x16:int64; named for "
        "forward's parameters to give them by name (trace), e.g. "
        "input_ids=1x32:int64,decoder_input_ids=1x8:int64",
    )
    for name, kind, text in MODEL_OPTIONS:
        if name not in exclude:
            g.add_argument("--" + name.replace("_", "-"), type=kind, help=text, dest=name)


def _model_options(args: argparse.Namespace, exclude: Sequence[str] = ()) -> dict[str, Any]:
    return {
        name: getattr(args, name)
        for name, _, _ in MODEL_OPTIONS
        if name not in exclude and getattr(args, name, None) is not None
    }


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", choices=("mnist", "fashion-mnist"), default="mnist")
    p.add_argument(
        "--data-dir", metavar="DIR", help="a folder with the IDX files in torchvision's layout"
    )
    p.add_argument(
        "--download", action="store_true", help="allow torchvision's download (needs a network)"
    )


def _add_analysis_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--depth",
        type=_positive_int,
        metavar="N",
        help="group blocks by module hierarchy (1 = children of the model)",
    )
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        help="precision that bits are accounted at (default: the model's dtype)",
    )


# --- writing files ---------------------------------------------------------------------------


def _out_dir(path: str) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output folder {path}: {exc.strerror}") from None
    if not os.access(out, os.W_OK):
        raise UsageError(f"output folder {path} is not writable")
    return out


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write to a temporary file beside ``path``, then rename: never a half-written file."""
    from flowprof import atomic  # one implementation for the library and the CLI

    atomic.write_bytes(path, data.encode("utf-8") if isinstance(data, str) else data)
    return path


def _console():
    from rich.console import Console

    # Piped output (CI logs, files) gets a wide page rather than Rich's 80 columns.
    return Console(width=None if sys.stdout.isatty() else 160)


def _dot_available() -> bool:
    import shutil

    return shutil.which("dot") is not None


def _write_diagram(dot, out: Path, stem: str, formats: Sequence[str] = ("svg",)) -> list[Path]:
    """DOT always; rendered formats when Graphviz's dot is installed. dot's warnings (a large
    graph's bitmap scaled to fit) are not passed on; its errors still raise."""
    from flowprof.reports.render import render

    written = [write_atomic(out / f"{stem}.dot", dot.source)]
    if _dot_available():
        for fmt in formats:
            data = render(dot.source, fmt)  # time-limited; dot dies with flowprof
            written.append(write_atomic(out / f"{stem}.{fmt}", data))
    return written


# --- trace -----------------------------------------------------------------------------------


def _build(args: argparse.Namespace, device: str = "meta", exclude: Sequence[str] = ()):
    from flowprof.models import registry

    return registry.build(
        args.model,
        device=device,
        input_shapes=args.input,
        input_dtypes=_input_dtypes(args),
        **_model_options(args, exclude),
    )


def _trace_built(built, args: argparse.Namespace, measure: bool = False):
    from flowprof import tracer

    meta = {"model": built.name, "config": dict(built.config)}
    inputs = built.example_inputs("cpu" if measure else "meta")
    if args.input and args.input.names:  # given by forward's parameter names
        inputs = dict(zip(args.input.names, inputs, strict=True))
    return tracer.trace(
        built.module,
        inputs,
        dtype=args.dtype,
        depth=args.depth,
        meta=meta,
        measure=measure,
    )


def cmd_trace(args: argparse.Namespace) -> int:
    from flowprof.cli import trace_files
    from flowprof.reports import export, tables

    built = _build(args, device="cpu" if args.measure else "meta")
    graph = _trace_built(built, args, measure=args.measure)
    if args.format == "json":
        sys.stdout.write(export.graph_json(graph))
    elif args.format == "csv":
        sys.stdout.write(export.blocks_csv(graph) + "\n" + export.edges_csv(graph))
    else:
        console = _console()
        console.print(tables.blocks_table(graph, title=f"{built.name}: blocks"))
        console.print(tables.edges_table(graph, title=f"{built.name}: tensors between blocks"))
        console.print(tables.totals_table(graph, title=f"{built.name}: totals"))
        for line in tables.trace_notes(graph):
            console.print(line, markup=False, highlight=False)
        if args.measure:
            console.print(tables.measured_table(graph))
    if args.out:
        out = _out_dir(args.out)
        write_atomic(out / "blocks.csv", export.blocks_csv(graph))
        write_atomic(out / "edges.csv", export.edges_csv(graph))
        write_atomic(out / "graph.json", export.graph_json(graph))
        files = trace_files.write(graph, built.name, out, args, write_atomic)
        for line in files.warnings:
            print(f"{PROG}: warning: {line}", file=sys.stderr)
        if args.format == "table":
            names = ", ".join(str(p.relative_to(out)) for p in files.paths)
            _console().print(f"wrote blocks.csv, edges.csv, graph.json, {names} to {out}")
            for line in files.notes:
                _console().print(f"note: {line}", markup=False, highlight=False)
    return 0


def _json_text(data: Any) -> str:
    import json

    return json.dumps(data, indent=2, default=str) + "\n"


def _print_json(data: Any) -> None:
    sys.stdout.write(_json_text(data))


def cmd_shape(args: argparse.Namespace) -> int:
    from flowprof.analyses.conv_shapes import propagate

    steps = propagate(args.input_shape, args.layers)
    if args.format == "json":
        _print_json([s.to_dict() for s in steps])
    else:
        from flowprof.reports.conv_tables import shape_table

        _console().print(shape_table(steps))
    return 0


def cmd_solve_conv(args: argparse.Namespace) -> int:
    from flowprof.analyses.conv_shapes import solve_conv

    solutions = solve_conv(args.in_shape, args.out_shape, kernel=args.kernel)
    if args.format == "json":
        _print_json(solutions.config_dicts())
    else:
        from flowprof.reports.conv_tables import explanation_table, solutions_table

        console = _console()
        console.print(solutions_table(solutions))
        console.print(explanation_table(solutions))
    return 0


def save_figure(fig, stem: Path, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """A matplotlib figure as PNG and SVG, each written atomically (SVG without a timestamp)."""
    import io

    written = []
    for fmt in formats:
        buf = io.BytesIO()
        metadata = {"Date": None} if fmt == "svg" else None
        fig.savefig(buf, format=fmt, dpi=150, metadata=metadata)
        written.append(write_atomic(stem.with_name(f"{stem.name}.{fmt}"), buf.getvalue()))
    return written


def cmd_compare(args: argparse.Namespace) -> int:
    from flowprof.analyses.op_compare import compare

    cmp = compare(
        args.model_a,
        args.model_b,
        depth=args.depth,
        input_shapes=_positional_inputs(args),
        input_dtypes=_input_dtypes(args),
        dtype=args.dtype,
    )
    if args.format == "json":
        _print_json(cmp.to_dict())
        return 0
    from flowprof.reports.compare_tables import comparison_table, conv_check_table, mapping_table

    console = _console()
    console.print(comparison_table(cmp))
    console.print(conv_check_table(cmp))
    if args.explain:
        console.print(mapping_table())
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from flowprof.analyses import comm_sweep

    options = _model_options(args, exclude=("emb", "seq_len"))
    emb = args.emb or list(comm_sweep.DEFAULT_EMBS)
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
        **options,
    )
    sweeps = [s for s in (emb_sweep, seq_sweep) if s is not None]
    if args.format == "json":
        _print_json([s.to_dict() for s in sweeps])
    elif args.format == "csv":
        sys.stdout.write("\n".join(s.to_csv() for s in sweeps))
    else:
        from flowprof.reports.compare_tables import sweep_table

        console = _console()
        for s in sweeps:
            console.print(sweep_table(s))
            for line in comm_sweep.explain(s):
                console.print(f"- {line}")
    if args.out:
        from flowprof.reports.sweep_plots import figures

        out = _out_dir(args.out)
        if emb_sweep is not None:
            write_atomic(out / "sweep.csv", emb_sweep.to_csv())
            write_atomic(out / "sweep.json", _json_text(emb_sweep.to_dict()))
        write_atomic(out / "sweep_seq_len.csv", seq_sweep.to_csv())
        for stem, fig in figures(emb_sweep or seq_sweep, seq_sweep).items():
            save_figure(fig, out / stem)
        if args.format == "table":
            _console().print(f"wrote the sweep's CSV, JSON and plots to {out}")
    mismatched = [m for s in sweeps for m in s.mismatches()]
    if mismatched:
        print(f"{PROG}: traced bits differ from the closed forms: {mismatched[0]}", file=sys.stderr)
        return 1
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    from flowprof.distributed import run_pipeline

    result = run_pipeline(
        args.model,
        args.stages,
        micro_batches=args.micro_batches,
        model_options=_model_options(args),
        input_shapes=_positional_inputs(args),
        input_dtypes=_input_dtypes(args),
        depth=args.depth,
    )
    if args.format == "json":
        _print_json(result.to_dict())
    else:
        from flowprof.reports.pipeline_tables import pipeline_table

        _console().print(pipeline_table(result))
    if args.out:
        from flowprof.reports.pipeline_tables import stages_diagram

        out = _out_dir(args.out)
        write_atomic(out / "pipeline.json", _json_text(result.to_dict()))
        _write_diagram(stages_diagram(result), out, "stages")
    if not result.ok:
        print(
            f"{PROG}: the measured bytes or the outputs differ from the prediction", file=sys.stderr
        )
        return 1
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from flowprof.training import mnist

    if args.action == "provision":
        result = mnist.provision(args.dataset, args.data_dir, download_allowed=args.download)
        print(result.message)
        return 0
    data = mnist.load(args.dataset, args.data_dir, download_allowed=args.download)
    if args.format == "json":
        _print_json(
            {
                "source": str(data.source),
                "description": data.description,
                "train": len(data.train_labels),
                "test": len(data.test_labels),
            }
        )
    else:
        print(data.description)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from flowprof.reports.training_plots import accuracy_figure, comparison_figure, loss_figure
    from flowprof.reports.training_progress import progress_callbacks, training_progress
    from flowprof.training import mnist
    from flowprof.training.loop import TrainConfig, TrainingInterrupted, train

    if args.threads:
        torch.set_num_threads(args.threads)
    out = _out_dir(args.out)
    data = mnist.load(args.dataset, args.data_dir, download_allowed=args.download)
    console = _console()
    console.print(f"data: {data.description}")
    results = {}
    for name in args.models:
        config = TrainConfig(
            model=name,
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
        ).validate()
        console.print(f"[bold]{name}[/bold]: {config.rule()}")
        with training_progress(console) as progress:
            on_batch, on_epoch = progress_callbacks(progress, config)
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
        save_figure(
            accuracy_figure(result.history, f"{name}: accuracy", result.converged_epoch),
            out / name / "accuracy",
        )
        save_figure(
            loss_figure(result.history, f"{name}: loss", result.converged_epoch),
            out / name / "loss",
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
        save_figure(fig, out / "comparison")
    console.print(f"wrote histories, checkpoints and curves to {out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from flowprof.analyses.assignment import run_assignment
    from flowprof.reports import document
    from flowprof.reports.assignment_report import build_report

    out = _out_dir(args.out)
    console = _console()
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("report", total=None)

        def on_step(step: str, done: int, total: int) -> None:
            progress.update(task, description=step, completed=done, total=total)

        results = run_assignment(quick=args.quick, data_dir=args.data_dir, progress=on_step)
    doc = build_report(results)
    html = document.render_html(doc)
    markdown, md_files = document.render_markdown(doc)
    latex, tex_files = document.render_latex(doc)
    for name, data in (md_files | tex_files).items():
        write_atomic(out / name, data)
    write_atomic(out / "report.html", html)
    write_atomic(out / "report.md", markdown)
    write_atomic(out / "report.tex", latex)
    written = ["report.html", "report.md", "report.tex", f"{len(md_files | tex_files)} figures"]
    try:
        pdf = document.compile_pdf(latex, tex_files)
    except document.LatexError as exc:
        print(f"{PROG}: warning: LaTeX failed, no PDF: {_first_line(exc)}", file=sys.stderr)
        pdf = None
    if pdf is not None:
        write_atomic(out / "report.pdf", pdf)
        written.append("report.pdf")
    console.print(f"wrote {', '.join(written)} to {out}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from rich.table import Table

    from flowprof.models import registry

    t = Table(title="models", header_style="bold")
    t.add_column("name")
    t.add_column("what it is")
    for e in registry.entries():
        t.add_row(e.name, e.summary)
    t.add_row("torchvision:NAME", "any torchvision classification model, random weights")
    t.add_row(
        "package.module:factory",
        "any model of yours: a factory (or class) returning an nn.Module; also path/to/file.py:Net",
    )
    _console().print(t)
    return 0


# --- the parser ------------------------------------------------------------------------------

EPILOG = {
    "trace": "example: python cli.py trace transformer --emb 512 --out out/t512",
    "models": "example: python cli.py models",
    "shape": "example: python cli.py shape 13x15x3 conv:7@4x6 conv:8@3x4/s2/p1 maxpool:2x2\n"
    "layers: conv:C@KHxKW, convT:C@K, maxpool:K, avgpool:K; options /sN or /sHxW stride,\n"
    "/pN padding, /dN dilation, /gN groups, /opN output padding (convT), /nobias",
    "solve-conv": "example: python cli.py solve-conv --in 8x8x5 --out 5x5x3 --kernel 3x3",
    "compare": "example: python cli.py compare lenet5 lenet5-dws",
    "train": "example: python cli.py train lenet5 lenet5-dws --out out/train",
    "data": "example: python cli.py data info",
    "report": "example: python cli.py report --out out/report",
    "pipeline": "example: python cli.py pipeline transformer --stages 3 --emb 64 --seq-len 16",
    "sweep": "example: python cli.py sweep transformer --emb 64,128,256,512,1024,2048,4096 "
    "--out out/sweep",
}


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Exact operation counts and the dataflow between blocks of PyTorch models.",
        epilog="example: python cli.py trace transformer --emb 512 --out out/t512",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, fn: Callable[[argparse.Namespace], int], help_: str):
        sp = sub.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=EPILOG.get(name),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sp.set_defaults(fn=fn)
        return sp

    t = command("trace", cmd_trace, "trace a model into a block graph: counts, tensors, diagram")
    t.add_argument(
        "model",
        help="lenet5, lenet5-dws, lenet5-modern[-dws], transformer, "
        "torchvision:NAME, package.module:factory or path/to/file.py:factory",
    )
    _add_model_options(t)
    _add_analysis_options(t)
    t.add_argument("--format", choices=FORMATS, default="table", help="stdout format")
    t.add_argument(
        "--out",
        metavar="DIR",
        help="write blocks.csv, edges.csv, graph.json, graph.dot (+ svg, png, pdf)",
    )
    t.add_argument(
        "--measure",
        action="store_true",
        help="also run the model for real: seconds per block and measured edge bytes",
    )
    from flowprof.cli import trace_files  # (its own imports are deferred: --help stays fast)

    trace_files.add_options(t)

    sh = command("shape", cmd_shape, "shape after each conv/pool layer, with the formula used")
    sh.add_argument("input_shape", metavar="HxWxC", help="input height x width x channels")
    sh.add_argument("layers", nargs="+", metavar="LAYER", help="e.g. conv:8@3x4/s2/p1")
    sh.add_argument("--format", choices=("table", "json"), default="table")

    sc = command(
        "solve-conv",
        cmd_solve_conv,
        "every conv layer configuration that maps one shape to another",
    )
    sc.add_argument("--in", dest="in_shape", required=True, metavar="HxWxC")
    sc.add_argument("--out", dest="out_shape", required=True, metavar="HxWxC")
    sc.add_argument("--kernel", metavar="KHxKW", help="only this kernel size, e.g. 3x3")
    sc.add_argument("--format", choices=("table", "json"), default="table")

    cp = command(
        "compare",
        cmd_compare,
        "two models side by side: multiplications and additions per layer, and f",
    )
    cp.add_argument("model_a")
    cp.add_argument("model_b")
    cp.add_argument("--input", type=_shapes, metavar="SHAPE[:DTYPE][,...]")
    cp.add_argument(
        "--depth",
        type=_positive_int,
        default=1,
        metavar="N",
        help="layer granularity (default 1: the model's children)",
    )
    cp.add_argument("--dtype", choices=DTYPES)
    cp.add_argument("--format", choices=("table", "json"), default="table")
    cp.add_argument("--explain", action="store_true", help="also show the derivation of f")

    sw = command("sweep", cmd_sweep, "bits between consecutive blocks as a model dimension grows")
    sw.add_argument("model", help="transformer")
    _add_model_options(sw, exclude=("emb", "seq_len"))
    sw.add_argument(
        "--emb",
        type=_int_list,
        metavar="E1,E2,...",
        help="embedding sizes (default 64,128,...,4096)",
    )
    sw.add_argument(
        "--seq-len",
        type=_int_list,
        metavar="N[,N2,...]",
        dest="seq_len",
        help="sequence length, or a list for the sequence-length sweep",
    )
    _add_analysis_options(sw)
    sw.add_argument("--format", choices=FORMATS, default="table")
    sw.add_argument("--out", metavar="DIR", help="write sweep.csv, sweep.json and the plots")

    pp = command(
        "pipeline",
        cmd_pipeline,
        "split a model into stages over processes (gloo, loopback) and check the "
        "bytes each cut sends against the prediction",
    )
    pp.add_argument("model")
    pp.add_argument("--stages", type=_positive_int, required=True, metavar="N")
    pp.add_argument("--micro-batches", type=_positive_int, default=1, metavar="M")
    pp.add_argument(
        "--depth", type=_positive_int, metavar="N", help="cut only between blocks at this depth"
    )
    _add_model_options(pp)
    pp.add_argument("--format", choices=("table", "json"), default="table")
    pp.add_argument("--out", metavar="DIR", help="write pipeline.json and the stage diagram")

    tr = command(
        "train", cmd_train, "train LeNet-5 variants on MNIST until convergence, with curves"
    )
    tr.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help="lenet5, lenet5-dws, lenet5-modern, lenet5-modern-dws (several: "
        "a comparison figure too)",
    )
    _add_data_options(tr)
    tr.add_argument(
        "--out",
        metavar="DIR",
        default="out/train",
        help="histories, checkpoints and curves (default out/train)",
    )
    tr.add_argument("--epochs", type=_positive_int, help="train exactly N epochs")
    tr.add_argument("--max-epochs", type=_positive_int, default=50)
    tr.add_argument("--patience", type=_positive_int, default=3)
    tr.add_argument("--tol", type=float, default=1e-3)
    tr.add_argument("--batch-size", type=_positive_int, default=64)
    tr.add_argument("--lr", type=float, default=1e-3)
    tr.add_argument("--lr-decay", type=float, default=1.0, help="per-epoch factor")
    tr.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument(
        "--shift",
        type=int,
        default=0,
        metavar="PX",
        help="augment: move each training digit by up to PX pixels",
    )
    tr.add_argument("--train-samples", type=_positive_int, metavar="N")
    tr.add_argument("--test-samples", type=_positive_int, metavar="N")
    tr.add_argument("--threads", type=_positive_int, help="torch CPU threads")
    tr.add_argument("--profile", action="store_true", help="time each block's forward pass")
    tr.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    tr.add_argument("--force", action="store_true", help="overwrite an earlier run in --out")

    da = command("data", cmd_data, "provision MNIST offline, or say which source is used")
    da.add_argument("action", choices=("provision", "info"))
    _add_data_options(da)
    da.add_argument("--format", choices=("table", "json"), default="table")

    rp = command(
        "report",
        cmd_report,
        "answer the whole assignment: HTML, Markdown and LaTeX report with figures",
    )
    rp.add_argument(
        "--out",
        metavar="DIR",
        default="out/report",
        help="where to write the report (default out/report)",
    )
    rp.add_argument(
        "--quick",
        action="store_true",
        help="small data, few epochs, fewer sweep points (a first look; tests)",
    )
    rp.add_argument("--data-dir", metavar="DIR", help="MNIST IDX files to train on")

    command("models", cmd_models, "list the built-in models")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "fn", None):
            parser.print_help()
            return 2
        return args.fn(args)
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if _is_user_error(exc):
            print(f"{PROG}: error: {_first_line(exc)}{_hint(exc)}", file=sys.stderr)
            return 2
        if os.environ.get("FLOWPROF_DEBUG"):
            raise
        print(
            f"{PROG}: internal error: {type(exc).__name__}: {_first_line(exc)} "
            "(set FLOWPROF_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1


def _hint(exc: BaseException) -> str:
    """What to do about a known cause, appended to the error line."""
    text = str(exc)
    if "'indices'" in text and "Long" in text:  # an Embedding given a floating input
        return " (inputs that hold token ids need an integer dtype: --input SHAPE:int64)"
    return ""


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _is_user_error(exc: BaseException) -> bool:
    """Errors that are the input's fault, not flowprof's (flowprof.errors: exit code 2)."""
    return isinstance(exc, (BadInputError, UnsupportedModelError))


if __name__ == "__main__":
    sys.exit(main())

"""``flowprof report``: the whole assignment answered in one HTML, Markdown and LaTeX report."""

from __future__ import annotations

import argparse
import sys

from flowprof.cli.command import Command
from flowprof.cli.emit import Emitter, OutputDir
from flowprof.cli.main import first_line
from flowprof.cli.options import PROG
from flowprof.cli.progress import Lines, live


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        metavar="DIR",
        default="out/report",
        help="where to write the report (default out/report)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small data, few epochs, fewer sweep points (a first look; tests)",
    )
    p.add_argument("--data-dir", metavar="DIR", help="MNIST IDX files to train on")


def run(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from flowprof.analyses.assignment import run_assignment
    from flowprof.errors import LatexError
    from flowprof.reports import document
    from flowprof.reports.assignment_report import build_report

    OutputDir.check(args.out)  # (before the work)
    emit = Emitter()
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    if live(emit.console):
        with Progress(*columns, console=emit.console) as progress:
            task = progress.add_task("report", total=None)

            def on_step(step: str, done: int, total: int) -> None:
                progress.update(task, description=step, completed=done, total=total)

            results = run_assignment(quick=args.quick, data_dir=args.data_dir, progress=on_step)
    else:  # piped: a plain line on stderr per step and per epoch trained
        lines = Lines("report")
        results = run_assignment(
            quick=args.quick,
            data_dir=args.data_dir,
            progress=lambda step, done, total: lines.say(f"[{done}/{total}] {step}"),
        )
    doc = build_report(results)
    html = document.render_html(doc)
    markdown, md_files = document.render_markdown(doc)
    latex, tex_files = document.render_latex(doc)
    written = ["report.html", "report.md", "report.tex", f"{len(md_files | tex_files)} figures"]
    try:
        pdf = document.compile_pdf(latex, tex_files)
        if pdf is None:
            print(
                f"{PROG}: note: no report.pdf: no LaTeX engine is installed (any of "
                f"{', '.join(document.LATEX_ENGINES)} compiles report.tex)",
                file=sys.stderr,
            )
    except LatexError as exc:
        print(f"{PROG}: warning: LaTeX failed, no PDF: {first_line(exc)}", file=sys.stderr)
        pdf = None
    with OutputDir(args.out, staged=True, command="report") as out:  # all files, or none
        for name, data in (md_files | tex_files).items():
            out.text(name, data)
        out.text("report.html", html)
        out.text("report.md", markdown)
        out.text("report.tex", latex)
        if pdf is not None:
            out.text("report.pdf", pdf)
            written.append("report.pdf")
    emit.print(f"wrote {', '.join(written)} to {out}")
    return 0


COMMAND = Command(
    name="report",
    help="answer the whole assignment: HTML, Markdown and LaTeX report with figures",
    example="python cli.py report --out out/report",
    arguments=arguments,
    run=run,
    order=90,
)

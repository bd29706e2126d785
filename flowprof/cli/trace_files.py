"""``trace --out``'s diagram, HTML view and Model Explorer files: their options and writing.

Kept apart from the command itself so that the command adds the options with one call and
writes the files with another. Diagrams never run unbounded: a big model's default diagram is
folded (``--diagram full`` draws every block), Graphviz runs under ``--render-timeout``
seconds, and ``--diagram none`` skips it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DIAGRAM_MODES = ("auto", "full", "none")
FORMATS = ("svg", "png", "pdf")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


def add_options(p: argparse.ArgumentParser) -> None:
    """``--view``, ``--diagram``, ``--render-timeout`` and ``--model-explorer``."""
    from flowprof.reports.render import DEFAULT_TIMEOUT_S

    g = p.add_argument_group("files written with --out")
    g.add_argument(
        "--view",
        action="store_true",
        help="also write view.html: the model as one self-contained page (modules open and "
        "close, repeats fold, search, each block's exact numbers)",
    )
    g.add_argument(
        "--diagram",
        choices=DIAGRAM_MODES,
        default="auto",
        help="the Graphviz diagram: auto (big models folded and, if need be, drawn shallower; "
        "graph-full.dot has every block), full (every block: dot may take very long), none "
        "(no diagram files)",
    )
    g.add_argument(
        "--render-timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"stop Graphviz after S seconds for all of a diagram's formats (default "
        f"{DEFAULT_TIMEOUT_S:g})",
    )
    g.add_argument(
        "--model-explorer",
        action="store_true",
        help="also write model-explorer/graph.json and its node data (macs.json, bits.json, "
        "...) for Google's Model Explorer",
    )


@dataclass
class Written:
    """What was written, and lines for the user: ``notes`` (what was chosen and how to get
    the rest) and ``warnings`` (what could not be done)."""

    paths: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def write(
    graph: Any,
    name: str,
    out: Path,
    args: argparse.Namespace,
    write_file: Callable[[Path, str | bytes], Path],
) -> Written:
    """Write the diagram, view and Model Explorer files ``args`` ask for into ``out`` with
    ``write_file`` (atomic); returns what was written and the lines to show."""
    done = Written()
    if args.diagram != "none":
        _diagram(graph, name, out, args, write_file, done)
    if args.view:
        from flowprof.reports.view import view_html

        done.paths.append(write_file(out / "view.html", view_html(graph, name)))
    if args.model_explorer:
        import json

        from flowprof.reports import model_explorer as me

        folder = out / "model-explorer"
        data = json.dumps(me.graph_json(graph, name))
        done.paths.append(write_file(folder / "graph.json", data))
        for metric in me.overlays(graph):
            text = json.dumps(me.node_data_json(graph, metric, name))
            done.paths.append(write_file(folder / f"{metric}.json", text))
    return done


def _diagram(graph, name, out, args, write_file, done: Written) -> None:
    from flowprof.errors import RenderTimeout
    from flowprof.reports import diagram
    from flowprof.reports.render import dot_program, render

    title = f"{name} ({graph.precision.value})"
    plan = diagram.plan(graph) if args.diagram == "auto" else None
    if plan is None or plan.full:
        dot = diagram.dataflow(graph, title=title)
    else:
        depth = "" if plan.depth == graph.depth else f", depth {plan.depth}"
        dot = diagram.dataflow(plan.graph, title=f"{title}, folded{depth}", fold=True)
        done.paths.append(write_file(out / "graph-full.dot", diagram.dataflow(graph, title).source))
        done.notes.append(
            f"{plan.reason()}; for every block: --diagram full (dot may take very long), "
            "graph-full.dot, or --view for a view that opens every module"
        )
    done.paths.append(write_file(out / "graph.dot", dot.source))
    if dot_program() is None:
        done.notes.append("Graphviz's dot is missing: graph.dot only, no SVG, PNG or PDF")
        return
    deadline = time.monotonic() + args.render_timeout
    for fmt in FORMATS:
        try:
            data = render(dot.source, fmt, timeout=max(0.1, deadline - time.monotonic()))
        except RenderTimeout:
            done.warnings.append(
                f"Graphviz did not finish graph.{fmt} within --render-timeout "
                f"{args.render_timeout:g} s and was stopped; graph.dot is written (render it "
                f"with: dot -T{fmt} graph.dot -o graph.{fmt})"
            )
            return
        done.paths.append(write_file(out / f"graph.{fmt}", data))

"""Bounded Graphviz rendering (flowprof.reports.render) and the default diagram for big models
(flowprof.reports.diagram.plan)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import flowprof
from flowprof.errors import RenderError, RenderTimeout
from flowprof.reports import diagram
from flowprof.reports.render import render

needs_dot = pytest.mark.skipif(
    __import__("shutil").which("dot") is None, reason="Graphviz's dot program is missing"
)
linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's"
)

ROOT = Path(__file__).resolve().parents[1]


def slow_dot_source(nodes: int = 1500, seed: int = 0) -> str:
    """A DOT graph dot needs minutes for: clusters of nodes with random labelled edges."""
    rng = random.Random(seed)
    lines = ["digraph g {"]
    for c in range(nodes // 50):
        lines.append(f"subgraph cluster_{c} {{")
        lines += [f'n{i} [label="node {i}\\nline two"];' for i in range(c * 50, c * 50 + 50)]
        lines.append("}")
    for i in range(nodes):
        lines += [f'n{i} -> n{rng.randrange(nodes)} [label="{i}"];' for _ in range(2)]
    return "\n".join([*lines, "}"])


@pytest.mark.dot
@needs_dot
def test_render_returns_the_format_and_raises_on_dot_errors() -> None:
    svg = render("digraph { a -> b }", "svg")
    assert svg.startswith(b"<?xml") and b"<svg" in svg
    assert render("digraph { a -> b }", "png").startswith(b"\x89PNG")
    with pytest.raises(RenderError, match="syntax error"):
        render("digraph { a -> ", "svg")


@pytest.mark.dot
@needs_dot
def test_render_time_limit_stops_dot_and_says_so() -> None:
    start = time.monotonic()
    with pytest.raises(RenderTimeout, match=r"did not finish in 1 s"):
        render(slow_dot_source(), "svg", timeout=1)
    assert time.monotonic() - start < 10
    assert _dot_children(os.getpid()) == []  # killed and reaped


def _dot_children(parent: int) -> list[int]:
    """Live (not zombie) ``dot`` processes whose parent is ``parent``, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
            if comm == "dot" and int(ppid) == parent and state != "Z":
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


# A parent that starts dot on a graph it needs minutes for: through flowprof's render, or (the
# negative control) through a plain subprocess call, as graphviz.Digraph.pipe does. The control's
# dot reads the graph from a file: killed while still writing dot's stdin, the parent would leave
# dot a truncated graph, which it rejects at once (a race that made the control flaky).
PARENT = """
import subprocess, sys, tempfile
sys.path.insert(0, {root!r})
from tests.test_render import slow_dot_source
source = slow_dot_source()
if sys.argv[1] == "flowprof":
    from flowprof.reports.render import render
    render(source, "svg", timeout=None)
else:
    with tempfile.NamedTemporaryFile("w", suffix=".dot", delete=False) as f:
        f.write(source)
    subprocess.run(["dot", "-Tsvg", f.name], capture_output=True)
"""


def _kill_parent_and_watch_dot(how: str, sig: int) -> tuple[int, bool]:
    """Start the parent, wait for its dot, kill the parent with ``sig``; the dot's pid and
    whether it is still alive 3 s later."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT.format(root=str(ROOT)), how])
    try:
        deadline = time.monotonic() + 60
        children: list[int] = []
        while not children and time.monotonic() < deadline:
            time.sleep(0.1)
            children = _dot_children(parent.pid)
        assert children, "dot never started"
        os.kill(parent.pid, sig)
        parent.wait(timeout=30)
        time.sleep(3)
        return children[0], _alive(children[0])
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


@pytest.mark.dot
@pytest.mark.multiproc
@linux_only
@needs_dot
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_no_dot_outlives_a_killed_flowprof(sig: int) -> None:
    pid, alive = _kill_parent_and_watch_dot("flowprof", sig)
    if alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive


@pytest.mark.dot
@pytest.mark.multiproc
@linux_only
@needs_dot
def test_a_plain_subprocess_dot_is_orphaned() -> None:
    # The negative control: the check above does see an orphaned dot.
    pid, alive = _kill_parent_and_watch_dot("plain", signal.SIGTERM)
    if alive:
        os.kill(pid, signal.SIGKILL)
    assert alive


# --- the default diagram for big models --------------------------------------------------------


def test_small_models_are_drawn_in_full() -> None:
    graph = flowprof.trace("transformer")
    p = diagram.plan(graph)
    assert p.full and p.graph is graph and p.reason() == ""
    assert p.drawn == p.blocks == len(graph.blocks(include_io=True))


def test_big_models_are_folded_then_regrouped() -> None:
    graph = flowprof.trace("transformer", enc_layers=12, dec_layers=12)
    blocks = len(graph.blocks(include_io=True))
    assert blocks > diagram.MAX_DRAWN_NODES
    p = diagram.plan(graph)
    # 12 identical layers each side drawn once: what one layer of each has, plus the rest
    one = flowprof.trace("transformer")
    assert not p.full and p.fold and p.depth is None
    assert p.drawn == len(one.blocks(include_io=True)) and p.blocks == blocks
    assert "folded" in p.reason() and str(blocks) in p.reason()
    # With room for fewer nodes it regroups, at the deepest depth that fits.
    q = diagram.plan(graph, max_nodes=20)
    assert q.fold and q.depth is not None and q.drawn <= 20
    assert diagram.drawn_nodes(graph.by_block(q.depth + 1), fold_repeats=True) > 20

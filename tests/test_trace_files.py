"""``trace --out``'s diagram, view and Model Explorer files (flowprof/cli/trace_files.py), as a
user runs them: big models finish, Graphviz is bounded, and nothing outlives flowprof."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_render import _alive, _dot_children

ROOT = Path(__file__).resolve().parents[1]
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is missing")


def trace(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "cli.py", "trace", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
@pytest.mark.dot
@needs_dot
def test_48_plus_48_layers_finish_in_a_minute_with_a_folded_diagram(tmp_path: Path) -> None:
    start = time.monotonic()
    out = trace("transformer", "--enc-layers", "48", "--dec-layers", "48", "--out", str(tmp_path))
    seconds = time.monotonic() - start
    assert out.returncode == 0, out.stderr
    assert seconds < 60, seconds
    folded = (tmp_path / "graph.dot").read_text()
    assert folded.count('label="layers.0-47 ×48"') == 2  # the encoder's and the decoder's
    assert "decoder.layers.47" in (tmp_path / "graph-full.dot").read_text()
    for fmt in ("svg", "png", "pdf"):
        assert (tmp_path / f"graph.{fmt}").stat().st_size > 0
    # The line that says what was drawn and how to get the rest.
    text = " ".join(out.stdout.split())
    assert "the diagram is folded" in text and "--diagram full" in text
    assert "2021 blocks" in text  # 48 x 20 + 48 x 21 + inputs, positions and output: by_block


@pytest.mark.dot
@needs_dot
def test_render_timeout_is_reported_and_dot_is_kept(tmp_path: Path) -> None:
    start = time.monotonic()
    out = trace(
        "transformer",
        *("--enc-layers", "24", "--dec-layers", "24", "--format", "json"),
        *("--diagram", "full", "--render-timeout", "2", "--out", str(tmp_path)),
    )
    assert out.returncode == 0, out.stderr
    assert time.monotonic() - start < 120
    warning = out.stderr.strip().splitlines()
    assert (
        len(warning) == 1 and "did not finish graph.svg within --render-timeout 2 s" in warning[0]
    )
    assert (tmp_path / "graph.dot").exists() and not (tmp_path / "graph.svg").exists()
    json.loads(out.stdout)  # stdout stays the JSON


def test_diagrams_can_be_skipped_and_the_view_and_exports_written(tmp_path: Path) -> None:
    out = trace("lenet5", "--diagram", "none", "--view", "--model-explorer", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert not list(tmp_path.glob("graph.*[!n]")) and not (tmp_path / "graph.dot").exists()
    page = (tmp_path / "view.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and 'id="flowprof-data"' in page
    graph = json.loads((tmp_path / "model-explorer" / "graph.json").read_text())
    assert graph["label"] == "lenet5" and graph["graphs"][0]["nodes"]
    for metric in ("macs", "ops", "params", "bits"):
        assert json.loads((tmp_path / "model-explorer" / f"{metric}.json").read_text())["lenet5"]
    assert "view.html" in out.stdout


def test_bad_render_timeout_is_a_usage_error(tmp_path: Path) -> None:
    out = trace("lenet5", "--render-timeout", "0", "--out", str(tmp_path))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.dot
@pytest.mark.multiproc
@needs_dot
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_no_dot_outlives_a_killed_trace(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "cli.py",
            "trace",
            "transformer",
            *("--enc-layers", "24", "--dec-layers", "24", "--format", "json"),
            *("--diagram", "full", "--render-timeout", "600", "--out", str(tmp_path)),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        children: list[int] = []
        deadline = time.monotonic() + 180
        while not children and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            children = _dot_children(proc.pid)
        assert children, "flowprof never started dot"
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        time.sleep(3)
        alive = [pid for pid in children if _alive(pid)]
        for pid in alive:
            os.kill(pid, signal.SIGKILL)
        assert alive == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

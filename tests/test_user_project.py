"""A user's own models load from their project, as Python loads a script (issue 22, items 1 and
2): the current folder and the model file's own folder are importable, in ``trace`` and in the
processes of ``pipeline``. Each test builds a small project in a temporary folder and runs the
CLI from there, with nothing of the project on PYTHONPATH."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

NET = """
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.b = nn.Linear(8, 2)

    def forward(self, x):
        return self.b(self.a(x).relu())


def make():
    return Net()
"""

HELPER = """
from torch import nn


class Block(nn.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.lin = nn.Linear(n_in, n_out)

    def forward(self, x):
        return self.lin(x).relu()
"""

# a file name that is no Python name (stage processes must still find its classes)
SIBLING = """
from torch import nn

from helper_layers import Block


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.one = Block(4, 8)
        self.two = Block(8, 8)
        self.out = nn.Linear(8, 2)

    def forward(self, x):
        return self.out(self.two(self.one(x)))


def make():
    return Net()
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """myproj/mypkg/net.py (a package in the current folder) and myproj/models/my-nets.py,
    which imports helper_layers.py beside it."""
    root = tmp_path / "myproj"
    (root / "mypkg").mkdir(parents=True)
    (root / "mypkg" / "__init__.py").write_text("")
    (root / "mypkg" / "net.py").write_text(textwrap.dedent(NET))
    (root / "models").mkdir()
    (root / "models" / "helper_layers.py").write_text(textwrap.dedent(HELPER))
    (root / "models" / "my-nets.py").write_text(textwrap.dedent(SIBLING))
    return root


def run_in(folder: Path, *argv: str) -> subprocess.CompletedProcess:
    # flowprof itself is found as an installed copy would be; the project is not on the path
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "flowprof", *argv],
        cwd=folder,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def blocks(out: subprocess.CompletedProcess) -> dict[str, dict[str, str]]:
    assert out.returncode == 0, out.stderr
    text = out.stdout.split("\n\n")[0]
    return {row["block"]: row for row in csv.DictReader(io.StringIO(text))}


def test_a_package_in_the_current_folder(project):
    rows = blocks(run_in(project, "trace", "mypkg.net:make", "--input", "1x4", "--format", "csv"))
    # a: 4 -> 8 with bias: 4*8 = 32 MACs, 32 + 8 = 40 params; b: 8 -> 2: 16 MACs, 18 params
    assert (rows["a"]["macs"], rows["a"]["params"]) == ("32", "40")
    assert (rows["b"]["macs"], rows["b"]["params"]) == ("16", "18")


def test_a_file_that_imports_its_sibling(project):
    argv = ["models/my-nets.py:make", "--input", "1x4", "--depth", "1", "--format", "csv"]
    out = run_in(project, "trace", *argv)
    rows = blocks(out)
    # one: 4 -> 8 (32 MACs), two: 8 -> 8 (64 MACs), out: 8 -> 2 (16 MACs)
    assert {k: rows[k]["macs"] for k in ("one", "two", "out")} == {
        "one": "32",
        "two": "64",
        "out": "16",
    }


def _pipeline(folder: Path, model: str) -> dict:
    out = run_in(folder, "pipeline", model, "--stages", "3", "--input", "1x4", "--format", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _cut_bits(result: dict) -> list[int]:
    return sorted(c["predicted_bits"] for c in result["cuts"])


@pytest.mark.multiproc
def test_pipeline_runs_a_package_in_the_current_folder(project):
    result = _pipeline(project, "mypkg.net:make")
    assert result["ok"] is True
    # three stages of a -> relu -> b cut twice: after a and after relu, each 1x8 fp32 = 256 bits
    assert _cut_bits(result) == [256, 256]


@pytest.mark.multiproc
def test_pipeline_runs_a_file_that_imports_its_sibling(project):
    # from another folder than the model's: the file's own folder makes helper_layers importable
    result = _pipeline(project / "mypkg", "../models/my-nets.py:make")
    assert result["ok"] is True
    # cuts between one, two and out: each carries a 1x8 fp32 tensor, 8 * 32 = 256 bits
    assert _cut_bits(result) == [256, 256]

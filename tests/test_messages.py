"""Every error says what to do (issue 22, item 6): one line on stderr, starting ``flowprof``,
exit code 2, naming the option or the command that works."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

BRANCHY = """
from torch import nn


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.Linear(4, 4)

    def forward(self, x):
        y = self.l(x)
        if y.sum() > 0:  # a branch on a tensor's value
            return y * 2
        return y


def make():
    return Branchy()
"""


def _error(*argv: str, cwd: Path = ROOT) -> str:
    out = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *argv], cwd=cwd, capture_output=True, text=True
    )
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stderr
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith("flowprof"), lines[0]
    return lines[0]


@pytest.fixture
def branchy(tmp_path) -> str:
    (tmp_path / "branchy.py").write_text(BRANCHY)
    return f"{tmp_path / 'branchy.py'}:make"


def test_a_model_that_branches_on_values_is_told_to_use_measure(branchy) -> None:
    line = _error("trace", branchy, "--input", "1x4")
    assert "run it again with --measure" in line


def test_pipeline_of_a_one_unit_model_says_why_not_a_range(branchy) -> None:
    line = _error("pipeline", branchy, "--stages", "2", "--input", "1x4")
    assert "from 2 to 1" not in line
    assert "has only 1 unit, so it cannot be split into stages" in line and "--measure" in line


def test_sweep_of_a_model_without_emb_does_not_blame_an_option_not_given() -> None:
    line = _error("sweep", "lenet5")
    assert "got emb" not in line
    assert "lenet5 has no --emb and --seq-len to vary" in line and "sweep transformer" in line


def test_train_of_a_factory_names_what_train_takes(branchy) -> None:
    line = _error("train", branchy)
    assert "--input" not in line  # train has no --input
    assert "train takes lenet5, lenet5-dws, lenet5-modern, lenet5-modern-dws" in line
    assert "model_factory" in line


def test_output_folder_errors_have_the_prefix(tmp_path) -> None:
    (tmp_path / "file").write_text("mine")
    line = _error("trace", "lenet5", "--out", str(tmp_path / "file" / "sub"))
    assert line.startswith("flowprof: error: cannot create output folder")
    assert "give --out a folder you can write to" in line


def test_a_negative_filter_count_is_not_called_not_a_number() -> None:
    line = _error("shape", "13x15x3", "conv:-7@4x6")
    assert "is not a number" not in line
    assert "the filter count '-7' must be a whole number of filters, 1 or more" in line

"""The public Python API: the README's example runs, and flowprof.trace takes a module or a
model name. Numbers are derived by hand in the comments."""

from __future__ import annotations

import contextlib
import csv
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from torch import nn

import flowprof

ROOT = Path(__file__).resolve().parents[1]


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_api_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(_readme_example(), "README.md", "exec"), {})
    # Linear(784, 256) on 32 rows: 32 x 256 dot products of length 784; Linear(256, 10): 32 x 10
    # of length 256. 32 x (200,704 + 2,560) = 6,504,448.
    assert out.getvalue().splitlines()[0] == "6504448"
    assert "tensors between blocks" in out.getvalue()
    with open(tmp_path / "out/mlp/blocks.csv") as f:
        rows = {r["block"]: r for r in csv.DictReader(f)}
    # Linear 0: 32 x 256 outputs, each 784 multiplications and 783 additions + 1 for the bias.
    assert int(rows["0"]["multiplications"]) == 32 * 256 * 784
    assert int(rows["0"]["additions"]) == 32 * 256 * (783 + 1)
    assert int(rows["0"]["params"]) == 784 * 256 + 256
    # ReLU: one comparison per element, 32 x 256.
    assert int(rows["1"]["other"]) == 32 * 256
    with open(tmp_path / "out/mlp/edges.csv") as f:
        edges = {(r["src"], r["dst"]): r for r in csv.DictReader(f)}
    # 32 x 256 fp16 activations from the first Linear to the ReLU: 8,192 x 16 bits.
    assert edges[("0", "1")]["shape"] == "32x256"
    assert int(edges[("0", "1")]["bits"]) == 32 * 256 * 16


def test_trace_a_model_by_name_with_its_options():
    g = flowprof.trace("transformer", emb=64, seq_len=16)
    assert g.meta["model"] == "transformer" and g.meta["config"]["emb"] == 64
    # Parameters of one encoder layer at d=64, ffn=256: attention 4 x (64 x 64 + 64) = 16,640,
    # feed-forward 64 x 256 + 256 + 256 x 64 + 64 = 33,088, two layer norms 2 x 128 = 256.
    encoder_layer = 16_640 + 33_088 + 256
    # A decoder layer adds cross-attention (16,640) and a third norm (128).
    decoder_layer = encoder_layer + 16_640 + 128
    # Post-norm layers (the default, as in Vaswani et al.): no final norm after either stack.
    assert g.params() == encoder_layer + decoder_layer


def test_trace_a_model_by_name_with_input_shapes():
    small = flowprof.trace("lenet5", (1, 1, 32, 32))
    batch4 = flowprof.trace("lenet5", (4, 1, 32, 32))
    assert batch4.meta["inputs"][0]["shape"] == [4, 1, 32, 32]
    assert batch4.total().multiplications == 4 * small.total().multiplications


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: flowprof.trace(nn.Linear(2, 2)), "example inputs"),
        (lambda: flowprof.trace(nn.Linear(2, 2), (1, 2), emb=4), "apply to a model given by name"),
        (lambda: flowprof.trace(object(), (1, 2)), "not a torch.nn.Module"),
        (lambda: flowprof.trace("lenet5", [object()]), "takes input shapes"),
        (lambda: flowprof.trace("no-such-model"), "unknown model"),
    ],
)
def test_bad_calls_raise_bad_input(call, message):
    with pytest.raises(flowprof.BadInputError, match=message):
        call()


def test_import_flowprof_is_cheap_and_public_names_resolve():
    code = (
        "import sys, flowprof\n"
        "print('torch' in sys.modules)\n"
        "missing = [n for n in flowprof.__all__ if not hasattr(flowprof, n)]\n"
        "print(missing)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.split("\n")[:2] == ["False", "[]"]

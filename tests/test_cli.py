"""The command line's contracts: files and columns, exit codes, one-line errors, light --help."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flowprof import cli

ROOT = Path(__file__).resolve().parent.parent


def run(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *argv], cwd=cwd, capture_output=True, text=True
    )


def test_help_lists_commands_and_imports_no_torch():
    code = (
        "import sys, contextlib, io; sys.argv=['flowprof', '--help']; from flowprof import cli\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    try: cli.main(['--help'])\n"
        "    except SystemExit: pass\n"
        "print(buf.getvalue()); print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    for command in ("trace", "shape", "solve-conv", "models"):
        assert command in out.stdout
    assert out.stdout.strip().endswith("NO-TORCH")


# The model options come from the models' config dataclasses, declared apart from the networks
# (flowprof/models/configs/), so a command's --help and a bad model, option or value need no torch
# (docs/design.md: "Keep `--help` and bad-input errors free of heavy imports").
LIGHT = [
    (["trace", "--help"], 0, "--emb EMB"),
    (["sweep", "--help"], 0, "--activation ACTIVATION"),
    (["pipeline", "--help"], 0, "--heads HEADS"),
    (["trace", "transformer", "--emb", "-3"], 2, "--emb: expected a positive integer, got -3"),
    (["trace", "transformer", "--heads", "0"], 2, "--heads: expected a positive integer, got 0"),
    (["trace", "lenet5", "--emb", "4"], 2, "lenet5 takes no model options; got emb"),
    (["trace", "lenet6"], 2, "unknown model 'lenet6'; did you mean lenet5"),
    (["sweep", "lenet5", "--heads", "2"], 2, "lenet5 has no --emb and --seq-len to vary"),
    (["pipeline", "lenet5-modern", "--stages", "2", "--emb", "4"], 2, "takes only activation"),
    (["models"], 0, "lenet5-modern-dws"),
]


@pytest.mark.parametrize("argv, code, needle", LIGHT, ids=[" ".join(a) for a, _, _ in LIGHT])
def test_help_and_bad_model_input_import_no_torch(argv, code, needle):
    runner = (
        "import sys; from flowprof import cli\n"
        "try: code = cli.main(sys.argv[1:])\n"
        "except SystemExit as exc: code = exc.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    env = {**os.environ, "COLUMNS": "200"}
    out = subprocess.run(
        [sys.executable, "-c", runner, *argv], cwd=ROOT, capture_output=True, text=True, env=env
    )
    assert out.returncode == code, out.stderr
    assert needle in out.stdout + out.stderr
    *message, torch_line = out.stderr.splitlines()
    assert torch_line == "NO-TORCH"
    assert len(message) == (0 if code == 0 else 1)  # an error is one line


@pytest.mark.parametrize("command", ["trace", "shape", "solve-conv", "models"])
def test_every_command_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    assert "example: python cli.py" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["trace", "lenet6"], "unknown model 'lenet6'; did you mean lenet5"),
        (["trace", "lenet5", "--input", "1x1x3a"], "malformed shape"),
        (["trace", "lenet5", "--input", "1x1x32x32:int65"], "unknown input dtype 'int65'"),
        (["trace", "lenet5", "--depth", "0"], "positive integer"),
        (["trace", "lenet5", "--dtype", "fp7"], "invalid choice"),
        (["trace", "transformer", "--emb", "100", "--heads", "8"], "divisible"),
        (["trace", "lenet5", "--emb", "64"], "lenet5"),
        (["shape", "13x15x3", "conv:7@4x"], "bad layer"),
        (["nonsense"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, needle):
    out = run(*argv)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert needle in lines[0]


def test_unwritable_output_folder_is_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    out = run("trace", "lenet5", "--out", str(blocker / "sub"))
    assert out.returncode == 2
    assert "cannot create output folder" in out.stderr
    assert blocker.read_text() == "mine"


def test_trace_writes_the_contract_files(tmp_path):
    out = run("trace", "transformer", "--emb", "64", "--seq-len", "8", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    for name in ("blocks.csv", "edges.csv", "graph.json", "graph.dot"):
        assert (tmp_path / name).stat().st_size > 0
    with open(tmp_path / "blocks.csv") as f:
        rows = list(csv.DictReader(f))
    header = "block,kind,macs,multiplications,additions,other,params".split(",")
    assert list(rows[0])[: len(header)] == header
    with open(tmp_path / "edges.csv") as f:
        edges = list(csv.DictReader(f))
    assert list(edges[0])[:6] == ["src", "dst", "shape", "dtype", "elements", "bits"]
    # The residual stream at emb 64, seq 8, batch 1 in fp16: 1*8*64 = 512 elements, 8192 bits.
    stream = [e for e in edges if e["src"] == "input:src"]
    assert stream and all(e["shape"] == "1x8x64" and int(e["bits"]) == 8192 for e in stream)
    # bits = elements x 16 for the fp16 activations; the causal mask is bool: 8 bits a byte.
    width = {"fp16": 16, "bool": 8}
    assert {e["dtype"] for e in edges} == {"fp16", "bool"}
    for e in edges:
        assert int(e["bits"]) == int(e["elements"]) * width[e["dtype"]]
    data = json.loads((tmp_path / "graph.json").read_text())
    assert data["meta"]["precision"] == "fp16"
    assert data["meta"]["config"]["emb"] == 64
    assert "1 MAC = 2 FLOPs" in data["meta"]["convention"]
    assert data["meta"]["tool_version"]
    assert "digraph" in (tmp_path / "graph.dot").read_text()
    if shutil.which("dot"):  # rendered too when Graphviz is installed
        assert (tmp_path / "graph.svg").read_bytes().lstrip().startswith(b"<?xml")
        assert (tmp_path / "graph.png").read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / "graph.pdf").read_bytes()[:4] == b"%PDF"


def test_trace_dtype_changes_the_bit_width(tmp_path):
    out = run("trace", "lenet5", "--dtype", "int8", "--format", "csv")
    assert out.returncode == 0, out.stderr
    edges_part = out.stdout.split("\n\n", 1)[1]
    rows = list(csv.DictReader(edges_part.splitlines()))
    assert rows and all(int(r["bits"]) == 8 * int(r["elements"]) for r in rows)
    # C1's output: 6 maps of 28x28 = 4704 elements, 37632 bits at 8 bits each.
    c1 = [r for r in rows if r["src"] == "c1.conv"]
    assert c1 and c1[0]["shape"] == "1x6x28x28" and int(c1[0]["bits"]) == 4704 * 8


def test_output_is_replaced_atomically(tmp_path):
    target = tmp_path / "blocks.csv"
    target.write_text("old")
    cli.write_atomic(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["blocks.csv"]


def test_shape_json(capsys):
    assert (
        cli.main(
            [
                "shape",
                "13x15x3",
                "conv:7@4x6",
                "conv:8@3x4/s2/p1",
                "maxpool:2x2",
                "--format",
                "json",
            ]
        )
        == 0
    )
    steps = json.loads(capsys.readouterr().out)
    assert [s["output"] for s in steps][-1] == {"height": 2, "width": 2, "channels": 8}


def test_solve_conv_json(capsys):
    assert cli.main(["solve-conv", "--in", "8x8x5", "--out", "5x5x3", "--format", "json"]) == 0
    configs = json.loads(capsys.readouterr().out)
    keys = {"kernel", "stride", "padding", "dilation", "transposed", "weight_shape"}
    assert configs and all(keys <= set(c) for c in configs)
    # 4x4, stride 1, no padding: 8 - 4 + 1 = 5; weight (C_out, C_in, kh, kw) = (3, 5, 4, 4).
    assert any(c["kernel"] == [4, 4] and c["weight_shape"] == [3, 5, 4, 4] for c in configs)


def test_compare_json_lenet5_vs_dws(capsys):
    assert cli.main(["compare", "lenet5", "lenet5-dws", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    text = json.dumps(data)
    # C1 regular: 28*28 outputs * 6 maps * 25 taps = 117600 multiplications
    assert "117600" in text
    # C1 separable: depthwise 28*28*25 = 19600, pointwise 28*28*6*1 = 4704: 24304 multiplications
    assert "24304" in text


@pytest.mark.parametrize("command", ["compare", "sweep", "train", "data", "pipeline"])
def test_more_commands_have_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    assert "example: python cli.py" in capsys.readouterr().out


def test_sweep_writes_csv_and_plots(tmp_path):
    out = run(
        "sweep",
        "transformer",
        "--emb",
        "32,64",
        "--seq-len",
        "8",
        "--heads",
        "4",
        "--out",
        str(tmp_path),
    )
    assert out.returncode == 0, out.stderr
    for name in (
        "sweep.csv",
        "sweep.json",
        "sweep_families.png",
        "sweep_families.svg",
        "sweep_totals.png",
        "sweep_seq_len.png",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    rows = list(csv.DictReader((tmp_path / "sweep.csv").read_text().splitlines()))
    assert rows
    # the model input edge at emb 32, seq 8, batch 1, fp16: 8*32*16 = 4096 bits per edge
    assert "4096" in (tmp_path / "sweep.csv").read_text()


def test_data_info_names_the_source(capsys):
    assert cli.main(["data", "info", "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["train"], info["test"]) == (60_000, 10_000)  # the full standard set
    assert "mnist" in info["description"].lower()


def test_train_writes_history_and_curves(tmp_path):
    argv = ["train", "lenet5-modern", "--epochs", "1", "--train-samples", "256"]
    argv += ["--test-samples", "128", "--out", str(tmp_path), "--threads", "1"]
    out = run(*argv)
    assert out.returncode == 0, out.stderr
    for name in ("history.csv", "history.json", "accuracy.png", "loss.svg"):
        assert (tmp_path / "lenet5-modern" / name).stat().st_size > 0, name
    history = list(csv.DictReader((tmp_path / "lenet5-modern" / "history.csv").open()))
    assert [int(r["epoch"]) for r in history] == [1]
    # a second run into the same folder refuses to overwrite it
    again = run(*argv)
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1


@pytest.mark.multiproc
def test_pipeline_command_agrees(capsys):
    rc = cli.main(["pipeline", "lenet5", "--stages", "2", "--format", "json"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["cuts"] and all(c["measured_bits"] == c["predicted_bits"] for c in data["cuts"])


def test_input_dtypes_must_match_the_inputs():
    from flowprof.models import registry

    with pytest.raises(registry.ModelError, match="2 input dtypes for a model of 1 inputs"):
        registry.build("lenet5", input_dtypes=["int64", None])
    built = registry.build("lenet5", input_dtypes=["float16"])
    assert built.example_inputs("meta")[0].dtype.is_floating_point
    assert str(built.inputs[0].dtype) == "torch.float16"


def test_integer_inputs_of_a_user_model(tmp_path):
    # A user model fed token ids: an Embedding needs an integer input, given as 4x16:int64.
    (tmp_path / "tokmodel.py").write_text(
        "from torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.embed = nn.Embedding(100, 8)\n"
        "        self.head = nn.Linear(8, 3)\n"
        "    def forward(self, tokens):\n"
        "        return self.head(self.embed(tokens))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}

    def trace(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(ROOT / "cli.py"), "trace", "tokmodel:Net", *argv],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=env,
        )

    out = trace("--input", "4x16:int64", "--format", "csv")
    assert out.returncode == 0, out.stderr
    # Without the dtype the Embedding refuses the floating input: one line, saying what to do.
    wrong = trace("--input", "4x16")
    assert wrong.returncode == 2 and len(wrong.stderr.strip().splitlines()) == 1
    assert "--input SHAPE:int64" in wrong.stderr
    edges = list(csv.DictReader(out.stdout.split("\n\n", 1)[1].splitlines()))
    ids = next(e for e in edges if e["src"] == "input:tokens")
    # 4 x 16 token ids, int64 whatever --dtype says: 64 elements x 64 bits
    assert (ids["shape"], ids["dtype"], int(ids["bits"])) == ("4x16", "int64", 64 * 64)
    blocks = list(csv.DictReader(out.stdout.split("\n\n", 1)[0].splitlines()))
    head = next(b for b in blocks if b["block"] == "head")
    # head: 4*16 rows x 3 outputs = 192 dot products of 8: 1,536 MACs
    assert int(head["macs"]) == 192 * 8


def test_a_module_fx_cannot_trace_is_named_with_the_reason(tmp_path):
    # The top-level forward branches on a shape, so torch.fx cannot trace it and hooks record
    # its blocks as it runs; the output says so and why.
    (tmp_path / "branchy.py").write_text(
        "import torch\n"
        "from torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(4, 4)\n"
        "    def forward(self, x):\n"
        "        if x.shape[0] > 1:\n"
        "            x = torch.relu(self.fc(x))\n"
        "        return x\n"
    )
    out = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "trace", "branchy:Net", "--input", "3x4"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path), "COLUMNS": "200"},
    )
    assert out.returncode == 0, out.stderr
    note = " ".join(out.stdout.split())  # (Rich wraps long lines)
    assert "note: torch.fx cannot trace model (TraceError: symbolically traced" in note
    assert "the blocks were recorded by hooks as the model ran on these inputs" in note
    assert "│ fc " in out.stdout and "│ relu " in out.stdout


def test_a_model_from_a_python_file(tmp_path):
    # path/to/file.py:Net works without PYTHONPATH; a missing file is one line and exit 2
    (tmp_path / "net.py").write_text(
        "from torch import nn\n"
        "class Net(nn.Sequential):\n"
        "    def __init__(self):\n"
        "        super().__init__(nn.Linear(4, 3))\n"
    )
    out = run("trace", f"{tmp_path / 'net.py'}:Net", "--input", "2x4", "--format", "csv")
    assert out.returncode == 0, out.stderr
    blocks = list(csv.DictReader(out.stdout.split("\n\n", 1)[0].splitlines()))
    # Linear(4, 3) on 2 rows: 6 dot products of 4 = 24 MACs
    assert sum(int(b["macs"]) for b in blocks) == 24
    out = run("trace", f"{tmp_path / 'nope.py'}:Net", "--input", "2x4")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "no file" in out.stderr


def test_inputs_given_by_name(tmp_path):
    # --input NAME=SHAPE gives forward's parameters by name; skipped ones keep their defaults
    (tmp_path / "kw.py").write_text(
        "from torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.emb = nn.Embedding(100, 8)\n"
        "    def forward(self, ids, mask=None, extra=None):\n"
        "        h = self.emb(ids)\n"
        "        return h if extra is None else h + extra\n"
    )
    net = f"{tmp_path / 'kw.py'}:Net"
    out = run("trace", net, "--input", "ids=2x5:int64,extra=2x5x8", "--format", "json")
    assert out.returncode == 0, out.stderr
    graph = json.loads(out.stdout)
    assert graph["totals"]["additions"] == 2 * 5 * 8  # h + extra; mask stays None
    assert {(e["src"], e["dst"]) for e in graph["edges"]} >= {("input:extra", "add")}
    for argv, message in (
        (["trace", net, "--input", "ids=2x5:int64,2x5x8"], "name every input or none"),
        (["trace", net, "--input", "idz=2x5:int64"], "has no positional parameter 'idz'"),
        (["compare", "lenet5", "lenet5-dws", "--input", "x=1x1x32x32"], "without names"),
    ):
        out = run(*argv)
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert message in out.stderr

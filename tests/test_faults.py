"""Bad input and faults (issue 21): each case of the issue's table, run as a user runs it (the CLI
in a subprocess), gives exit 2 and exactly one line on stderr that says what is wrong and what
to do (or exit 0 and nothing, for a closed pipe), and never a traceback or torch's log."""

from __future__ import annotations

import json
import re
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MNIST = ROOT / "data" / "mnist-full" / "MNIST" / "raw"
needs_mnist = pytest.mark.skipif(
    not (MNIST / "train-images-idx3-ubyte").exists(), reason="full MNIST not provisioned"
)


def cli(*argv: str, cwd: Path = ROOT, preexec=None, timeout: float = 300):
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        preexec_fn=preexec,
        timeout=timeout,
    )


def one_line(out: subprocess.CompletedProcess, code: int = 2) -> str:
    """The one stderr line of a failed run (and the checks every failure must pass). Progress
    lines before it are not part of the failure: with stderr not a terminal, ``train`` reports
    its progress there (``flowprof: train MODEL: ...``)."""
    assert out.returncode == code, out.stderr
    lines = [x for x in out.stderr.splitlines() if not x.startswith("flowprof: train ")]
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert lines[0].startswith("flowprof"), lines[0]
    return lines[0]


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


# --- the user's factory ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, error",
    [
        ('raise RuntimeError("broken at import")', "RuntimeError: broken at import"),
        ("x = undefined_name", "NameError: name 'undefined_name' is not defined"),
    ],
    ids=["RuntimeError", "NameError"],
)
def test_a_factory_file_that_raises_on_import_names_file_and_line(tmp_path, body, error):
    path = write(tmp_path, "broken.py", f"import torch\n{body}\ndef make(): pass\n")
    line = one_line(cli("trace", f"{path}:make", "--input", "1x4"))
    # line 2 of the file is the statement that raised
    assert line == f"flowprof: error: {path}:make: importing {path} raised {error} at {path}:2"


def test_the_model_name_colon_alone_is_malformed():
    line = one_line(cli("trace", ":"))
    assert line == (
        "flowprof: error: malformed model name ':': expected MODULE:FACTORY, "
        "e.g. mypkg.nets:make or path/to/nets.py:make"
    )


def test_a_factory_that_calls_sys_exit_is_the_users_error(tmp_path):
    path = write(tmp_path, "exits.py", "import sys\n\ndef make():\n    sys.exit(3)\n")
    line = one_line(cli("trace", f"{path}:make", "--input", "1x4"))
    assert line == (
        f"flowprof: error: {path}:make: the factory exited (sys.exit(3)) at {path}:4 while "
        "building the model; a factory must return a torch.nn.Module"
    )


UNET = """
import torch
from torch import nn


class Up(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.up = nn.ConvTranspose2d(channels, channels, 2, stride=2)

    def forward(self, x, skip):
        return torch.cat([self.up(x), skip], dim=1)


class UNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc1 = nn.Conv2d(3, 8, 3, padding=1)
        self.enc2 = nn.Conv2d(8, 16, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.mid = nn.Conv2d(16, 16, 3, padding=1)
        self.dec = Up(16)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        return self.dec(self.mid(self.pool(e2)), e2)


def unet():
    return UNet()
"""


def test_a_unet_whose_sizes_do_not_fit_names_op_block_and_shapes(tmp_path):
    path = write(tmp_path, "unet.py", UNET)
    out = cli("trace", f"{path}:unet", "--input", "1x3x30x30")
    line = one_line(out)
    # 30x30 -> pool 15x15 (e2, 16 maps) -> pool 7x7 -> mid 7x7 -> up (stride 2) 14x14:
    # cat of 1x16x14x14 with the skip 1x16x15x15 cannot work.
    assert line.startswith(
        "flowprof: error: shape propagation failed for UNet at torch.cat in dec "
        "(inputs 1x16x14x14, 1x16x15x15): RuntimeError: Sizes of tensors must match"
    ), line
    assert "fake_tensor" not in out.stderr and out.stdout == ""


TWO_INPUTS = """
from torch import nn


class Add(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, a, b):
        return self.lin(a) + b


def make():
    return Add()
"""


def test_more_inputs_than_forward_takes_is_refused(tmp_path):
    path = write(tmp_path, "two.py", TWO_INPUTS)
    line = one_line(cli("trace", f"{path}:make", "--input", "1x4,1x4,1x4"))
    assert line == (
        f"flowprof: error: {path}:make: forward takes 2 inputs (a, b), 3 were given with --input"
    )


# --- sizes and memory --------------------------------------------------------------------------


def test_a_shape_too_large_for_torch_is_refused():
    line = one_line(cli("shape", "99999999999x99999999999x3", "conv:7@4x6"))
    # 3 x 99999999999^2 = 2.99999999994e22 elements > 2^60 = 1.15e18
    assert line == (
        "flowprof: error: the input of conv:7@4x6 is too large: 1x3x99999999999x99999999999 "
        "is 3e+22 elements, and a tensor holds at most 2^60 (torch counts its bytes in a "
        "signed 64-bit integer)"
    )


def _needs_gb(line: str) -> tuple[float, float]:
    found = re.search(r"needs about ([\d,.]+) GB of memory and this machine has ([\d,.]+) GB", line)
    assert found, line
    return float(found[1].replace(",", "")), float(found[2].replace(",", ""))


def test_measure_on_a_huge_batch_is_refused_before_the_run():
    line = one_line(cli("trace", "lenet5", "--input", "99999999x1x32x32", "--measure"))
    assert line.startswith("flowprof: error: --measure on lenet5 needs about ")
    assert line.endswith("use smaller sizes, or leave out --measure (counting needs no memory for "
                         "tensors)")  # fmt: skip
    needed, _ = _needs_gb(line)
    # at least the input and C1's output, alive together: 99999999 x (1x32x32 + 6x28x28) fp32
    assert needed * 1e9 >= 99999999 * (32 * 32 + 6 * 28 * 28) * 4 * 0.999


def _address_space(limit_bytes: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    return apply


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/status is Linux's")
def test_measure_of_a_big_transformer_under_a_6_gb_limit_is_refused():
    out = cli(
        *("trace", "transformer", "--emb", "12288", "--seq-len", "2048", "--measure"),
        preexec=_address_space(6 * 10**9),
    )
    line = one_line(out)
    needed, available = _needs_gb(line)
    # Weights alone, fp16: an encoder layer 12 e^2 (q, k, v, out: 4 e^2; the FFN 2 x 4 e^2) and
    # a decoder layer 16 e^2 (two attentions), e = 12288: 28 x 12288^2 x 2 bytes = 8.46 GB.
    weights = 28 * 12288**2 * 2
    # plus the two inputs (2 x 2048 x 12288 x 2 bytes) and the FFN's hidden (2048 x 4e x 2)
    assert (
        weights / 1e9
        <= needed
        <= (weights + 2 * 2048 * 12288 * 2 + 2048 * 4 * 12288 * 2) / 1e9 + 0.2
    )
    assert available < 6


BRANCHY = """
from torch import nn


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:
            return self.a(x)
        return self.b(x)


def make():
    return Branchy()
"""


def test_the_memory_check_lets_a_model_that_branches_on_values_run(tmp_path):
    # meta tensors cannot decide the branch: the pre-check must not refuse what --measure is for
    path = write(tmp_path, "branchy.py", BRANCHY)
    refused = one_line(cli("trace", f"{path}:make", "--input", "1x4"))
    assert "branches on tensor values" in refused and "--measure" in refused
    out = cli("trace", f"{path}:make", "--input", "1x4", "--measure", "--format", "json")
    assert out.returncode == 0, out.stderr
    # one of the two 4 -> 4 layers ran: 4 x 4 = 16 multiply-accumulates; additions 4 x 3 (dot
    # products of 4) + 4 (bias) + 3 (x.sum() of 4 values) = 19
    totals = json.loads(out.stdout)["totals"]
    assert (totals["macs"], totals["additions"]) == (16, 19)


# --- train and data ----------------------------------------------------------------------------


@needs_mnist
def test_train_says_which_models_it_trains():
    line = one_line(cli("train", "transformer", "--epochs", "1"))
    assert line == (
        "flowprof train: cannot train transformer: train takes lenet5, lenet5-dws, "
        "lenet5-modern, lenet5-modern-dws; to train a model of yours, call "
        "flowprof.training.loop.train(config, data, model_factory=...) in Python"
    )
    # (the library refuses what is no digit classifier too, naming what the model takes)
    from flowprof.errors import TrainingError
    from flowprof.models import registry
    from flowprof.training.loop import _check_trainable

    with pytest.raises(TrainingError, match="transformer takes 1x128x256, 1x128x256"):
        _check_trainable("transformer", registry.build("transformer"))


def test_data_provision_into_a_file_is_refused(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    line = one_line(cli("data", "provision", "--data-dir", str(afile)))
    assert line == (
        f"flowprof: error: data dir {afile} is a file, not a folder: give a folder to put MNIST in"
    )
    assert afile.read_text() == "mine"


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["sweep", "transformer", "--emb", ",,,"],
            "flowprof sweep: argument --emb: expected positive integers separated by commas, "
            "e.g. 64,128,256; got ',,,' (see --help)",
        ),
        (
            ["train", "lenet5", "--tol", "nan"],
            "flowprof train: argument --tol: expected a finite number, got 'nan' (see --help)",
        ),
        (
            ["train", "lenet5", "--shift", "-3"],
            "flowprof train: argument --shift: expected an integer of 0 or more, got '-3' "
            "(see --help)",
        ),
        (
            ["train", "lenet5", "--lr", "inf"],
            "flowprof train: argument --lr: expected a finite number, got 'inf' (see --help)",
        ),
    ],
    ids=["emb-commas", "tol-nan", "shift-negative", "lr-inf"],
)
def test_numeric_options_out_of_range_are_refused(argv, expected):
    assert one_line(cli(*argv)) == expected


@needs_mnist
def test_more_train_samples_than_the_data_has_is_refused():
    line = one_line(cli("train", "lenet5", "--train-samples", "99999999", "--epochs", "1"))
    # full MNIST has 60,000 training digits
    assert line.startswith(
        "flowprof: error: train_samples 99,999,999 is more than the 60,000 train samples there "
        "are (mnist, "
    )
    assert line.endswith("give at most 60,000, or leave it out to use all")


# --- the OS: a full disk, a closed pipe --------------------------------------------------------


def _small_disk(folder: Path, argv: list[str], kib: int = 64) -> subprocess.CompletedProcess:
    """Run the CLI with ``folder`` a tmpfs of ``kib`` KiB, mounted in a user and mount namespace
    of its own (no root needed; gone when the run ends)."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    folder.mkdir()
    mount = f"mount -t tmpfs -o size={kib}k tmpfs {folder}"
    command = " ".join([sys.executable, str(ROOT / "cli.py"), *argv])
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", mount], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a namespace: {probe.stderr.decode().strip()}")
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"{mount} && exec {command}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_full_disk_while_tracing_names_the_file(tmp_path):
    disk = tmp_path / "disk"
    out = _small_disk(disk, ["trace", "lenet5", "--out", str(disk / "o")])
    line = one_line(out)
    # 64 KiB holds blocks.csv and edges.csv (3 KB, 2 KB) but not graph.json (about 50 KB)
    # with the rest: whichever file did not fit is named, in the folder the user gave
    expected = rf"flowprof: error: the disk is full writing {disk}/o/[\w.]+: free some space, or "
    assert re.fullmatch(expected + "write elsewhere", line), line


@needs_mnist
@pytest.mark.slow
def test_a_full_disk_while_training_names_the_checkpoint(tmp_path):
    disk = tmp_path / "disk"
    argv = ["train", "lenet5", "--epochs", "1", "--train-samples", "256", "--test-samples", "64"]
    out = _small_disk(disk, [*argv, "--out", str(disk / "o")])
    line = one_line(out)
    # the weights (about 60,000) and Adam's two moments, 3 x 60,000 x 4 bytes = 720 KB > 64 KiB
    assert line == (
        f"flowprof: error: the disk is full writing {disk}/o/lenet5/checkpoint.pt: free some "
        "space, or write elsewhere"
    )


def test_a_closed_pipe_is_a_quiet_exit_0():
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "trace", "transformer"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()  # `| head -1`
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 0
    assert err == b""


# --- training resumed after a signal -----------------------------------------------------------

TRAIN = ["train", "lenet5-modern", "--epochs", "4", "--train-samples", "3000"]
TRAIN += ["--test-samples", "500", "--threads", "1"]


def _history(folder: Path):
    from flowprof.training.history import read_history

    path = folder / "lenet5-modern" / "history.csv"
    return [r.metrics() for r in read_history(path)] if path.exists() else []


def _weights(folder: Path) -> dict:
    from flowprof.training.checkpoint import load_checkpoint

    return load_checkpoint(folder / "lenet5-modern" / "checkpoint.pt")["model"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    if not (MNIST / "train-images-idx3-ubyte").exists():
        pytest.skip("full MNIST not provisioned")
    out = tmp_path_factory.mktemp("uninterrupted")
    done = cli(*TRAIN, "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out


@needs_mnist
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_a_resume_after_a_signal_equals_an_uninterrupted_run(uninterrupted, tmp_path, sig):
    import torch

    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), *TRAIN, "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # a test run started in the background of a shell (as `make test &` is) ignores SIGINT,
        # and a child inherits that: the run must see Ctrl-C as a user's terminal sends it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 240
    while len(_history(out)) < 1:  # stop it once the first epoch is saved, mid-way through
        assert proc.poll() is None and time.monotonic() < deadline, "it ended first"
        time.sleep(0.01)
    proc.send_signal(sig)
    code = proc.wait(timeout=120)
    assert code == (130 if sig == signal.SIGINT else -signal.SIGKILL)
    saved = len(_history(out))
    assert 1 <= saved < 4, saved  # stopped before the end, with whole epochs saved
    resumed = cli(*TRAIN, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert _history(out) == _history(uninterrupted)  # every epoch's losses, accuracies, lr
    a, b = _weights(out), _weights(uninterrupted)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

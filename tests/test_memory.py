"""flowprof.memory (issue 17): bytes by block and category, the live bytes over the run, the
peak; checked against hand derivations and against real CPU runs recorded independently.

The CPU comparisons of resnet18 and the transformer at batch 8 (every block boundary, fp32 and
mixed precision) take a minute and run in bench/memory.py, which writes BENCHMARKS.md; here a
small CNN and a small transformer are compared at every boundary.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

import flowprof
from flowprof.analyses import korthikanti

F32 = 4  # bytes per fp32 element


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(100, 200), nn.ReLU(), nn.Linear(200, 10))


# The MLP's parameters: 100·200 + 200 weights and biases of the first layer, 200·10 + 10 of the
# second: 22,210 elements, 88,840 bytes in fp32.
MLP_PARAMS = (100 * 200 + 200 + 200 * 10 + 10) * F32


def test_inference_pass_by_hand():
    r = flowprof.memory(_mlp(), [(8, 100)])
    # Before the pass: the parameters and the input (8·100·4 = 3,200 B).
    assert r.predicted.baseline == MLP_PARAMS + 8 * 100 * F32
    # The peak: the first layer's output (8·200·4 = 6,400 B) is still alive when ReLU makes its
    # own (not in place: another 6,400 B); fx frees the first after its last use, ReLU.
    assert r.peak == MLP_PARAMS + 3_200 + 6_400 + 6_400
    assert r.peak_at == ("1", "forward")
    assert r.totals()["saved activations"] == 0  # (no grad: autograd saves nothing)
    assert r.totals()["gradients"] == 0


def test_training_step_categories_by_hand():
    r = flowprof.memory(_mlp(), [(8, 100)], optimizer="adam", loss="cross-entropy")
    blocks = {b.name: b for b in r.blocks}
    totals = r.totals()
    assert totals["parameters"] == MLP_PARAMS
    assert totals["gradients"] == MLP_PARAMS  # every parameter gets a gradient of its size
    # Adam: exp_avg and exp_avg_sq of each parameter's size, and a 0-dim fp32 step count per
    # parameter tensor (4 tensors).
    assert totals["optimizer state"] == 2 * MLP_PARAMS + 4 * F32
    assert blocks["0"].parameters == (100 * 200 + 200) * F32
    assert blocks["2"].optimizer_state == 2 * (200 * 10 + 10) * F32 + 2 * F32
    # Saved for the backward: the first Linear keeps its input x (8·100·4 = 3,200 B; addmm keeps
    # mat1), ReLU its output (8·200·4 = 6,400 B), which the second Linear keeps too (charged to
    # the first that saved it); the loss: log_softmax's output (8·10·4 = 320 B), the target
    # (8 int64: 64 B) and nll_loss's total weight (a 0-dim fp32: 4 B).
    assert blocks["0"].saved == 3_200
    assert blocks["1"].saved == 6_400
    assert blocks["2"].saved == 0
    assert blocks["loss"].saved == 320 + 64 + 4


def test_dtype_what_if_halves_the_weights():
    fp32 = flowprof.memory(_mlp(), [(8, 100)], optimizer="sgd")
    fp16 = flowprof.memory(_mlp(), [(8, 100)], optimizer="sgd", dtype="fp16")
    assert fp32.totals()["parameters"] == MLP_PARAMS
    assert fp16.totals()["parameters"] == MLP_PARAMS // 2  # 2 bytes an element
    # SGD with momentum: one buffer of each parameter's size
    assert fp16.totals()["optimizer state"] == MLP_PARAMS // 2


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 64), nn.ReLU())
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.body(x))


def test_checkpointing_keeps_only_the_blocks_input():
    plain = flowprof.memory(_Net(), [(16, 64)], optimizer="sgd", loss="cross-entropy")
    ckpt = flowprof.memory(
        _Net(), [(16, 64)], optimizer="sgd", loss="cross-entropy", checkpoint=["body"]
    )
    saved = {b.name: b.saved for b in plain.blocks}
    # Without: body.0 keeps x (16·64·4 = 4,096 B), body.1 its output (16·256·4 = 16,384 B),
    # body.3 its output (16·64·4 = 4,096 B), kept by the head too.
    assert saved["body.0"] == 4_096
    assert saved["body.1"] == 16_384
    assert saved["body.3"] == 4_096
    # Checkpointed, the body keeps its input alone (4,096 B) and recomputes the rest in the
    # backward; the head keeps the body's output (4,096 B).
    saved = {b.name: b.saved for b in ckpt.blocks}
    assert saved["body"] == 4_096
    assert saved["head"] == 4_096
    assert any(s.phase == "recompute" for s in ckpt.predicted.segments)
    assert ckpt.totals()["saved activations"] < plain.totals()["saved activations"]


def _boundaries_equal(report) -> None:
    p, m = report.predicted, report.measured
    assert [(s.block, s.phase) for s in p.segments] == [(s.block, s.phase) for s in m.segments]
    assert [s.live_after for s in p.segments] == [s.live_after for s in m.segments]
    assert p.peak == m.peak
    assert report.differences == []


class _CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.relu(self.bn(self.conv(x)))), 1))


@pytest.mark.parametrize("amp", [None, "bf16"])
def test_cpu_run_equals_prediction_at_every_boundary(amp):
    """The real CPU run (real kernels, real storages) against the meta prediction."""
    r = flowprof.memory(_CNN(), [(4, 3, 16, 16)], optimizer="adam", amp=amp, measure=True)
    _boundaries_equal(r)


def test_transformer_cpu_run_equals_prediction():
    r = flowprof.memory(
        "transformer",
        emb=64,
        heads=4,
        src_len=16,
        tgt_len=16,
        batch=2,
        dtype="fp32",
        optimizer="adam",
        amp="bf16",
        measure=True,
    )
    _boundaries_equal(r)


def test_cpu_kernels_that_differ_from_meta():
    """The two CPU kernels whose outputs' storage the prediction corrects (lifetimes.py)."""
    x = torch.randn(8, 16, 32)
    # mse_loss's 0-dim result lives in an input-sized storage on the CPU (8·16·32·4 B)
    loss = nn.functional.mse_loss(x, torch.zeros_like(x))
    assert loss.dim() == 0 and loss.untyped_storage().nbytes() == 8 * 16 * 32 * F32
    # a 16-bit LayerNorm's mean and 1/std are 16-bit on the CPU (fp32 on meta)
    _, mean, rstd = torch.native_layer_norm(x.half(), [32], None, None, 1e-5)
    assert mean.dtype == rstd.dtype == torch.float16
    _, mean, _ = torch.native_layer_norm(x.half().to("meta"), [32], None, None, 1e-5)
    assert mean.dtype == torch.float32
    # a BatchNorm on a bf16 input with fp32 weights (autocast) keeps fp32 batch statistics on the
    # CPU (the fake CPU tensors a mixed-precision prediction runs on make them bf16; the _CNN test
    # above fails without the correction)
    w, b, rm, rv = torch.ones(16), torch.zeros(16), torch.zeros(16), torch.ones(16)
    _, mean, invstd = torch.native_batch_norm(x.bfloat16(), w, b, rm, rv, True, 0.1, 1e-5)
    assert mean.dtype == invstd.dtype == torch.float32


def _saved_in_a_real_run(layer: nn.Module, x: torch.Tensor) -> int:
    """Bytes PyTorch saves for the backward in a real run, recorded by a pack hook (each storage
    once, parameters left out): independent of flowprof's bookkeeping."""
    params = {p.untyped_storage()._cdata for p in layer.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        key = t.untyped_storage()._cdata
        if key not in params:
            seen[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x)
    return sum(seen.values())


def test_korthikanti_reconciled():
    s, b, h, a = 32, 2, 64, 4
    # The paper: s·b·h·(34 + 5·a·s/h) = 4,096·34 + 5·4·32²·2 = 139,264 + 40,960 = 180,224 B.
    assert korthikanti.paper_bytes(s, b, h, a) == 180_224
    terms, report = korthikanti.reconcile(s, b, h, a)
    assert sum(t.paper for t in terms) == 180_224
    torch.manual_seed(0)
    layer = korthikanti.GPTLayer(h, a).half().train()
    x = torch.randn(s, b, h, dtype=torch.half, requires_grad=True)
    real = _saved_in_a_real_run(layer, x)
    assert real == 197_120  # (the number the issue measured)
    assert sum(t.flowprof for t in terms) == real
    assert sum(blk.saved for blk in report.blocks) == real
    # The terms that differ, and by how much: CPU dropout keeps a 2-byte noise tensor where the
    # paper has a 1-byte mask (as²b = 8,192 B more after the softmax, sbh = 4,096 B after the
    # projection and the MLP); each LayerNorm keeps a 2-byte mean and 1/std per row
    # (2·2·s·b = 256 B).
    extra = {t.term: t.flowprof - t.paper for t in terms if t.flowprof != t.paper}
    assert extra == {
        "attention dropout: mask": 8_192,
        "projection dropout: mask": 4_096,
        "MLP dropout: mask": 4_096,
        "LayerNorm 1: input": 256,
        "LayerNorm 2: input": 256,
    }
    assert all(t.why for t in terms if t.flowprof != t.paper)


def test_modern_layer_saved_equals_a_real_run():
    s, b, h, a = 32, 2, 64, 4
    report = flowprof.memory(
        korthikanti.ModernLayer(h, a),
        [(b, s, h)],
        phases=("forward", "backward"),
        loss="sum",
        input_grad=True,
        dtype="bf16",
    )
    torch.manual_seed(0)
    layer = korthikanti.ModernLayer(h, a).to(torch.bfloat16).train()
    x = torch.randn(b, s, h, dtype=torch.bfloat16, requires_grad=True)
    assert sum(blk.saved for blk in report.blocks) == _saved_in_a_real_run(layer, x)


def test_cli_memory_files(tmp_path):
    out = tmp_path / "m"
    p = subprocess.run(
        [
            sys.executable,
            "cli.py",
            "trace",
            "lenet5",
            "--memory",
            "--train",
            "--optimizer",
            "adam",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert "alive at the peak" in p.stdout
    for name in ("memory.csv", "memory.json", "memory-timeline.png", "memory-timeline.svg"):
        assert (out / name).stat().st_size > 0
    import json

    data = json.loads((out / "memory.json").read_text())
    # LeNet-5's parameters: 60,000 in fp32 (the paper's count, asserted in test_models): 240,000 B
    assert sum(b["parameters"] for b in data["blocks"]) == 240_000


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--checkpoint", "c1"], "--checkpoint goes with --memory --train"),
        (["--memory", "--dtype", "int8"], "--memory runs the model in --dtype"),
        (["--memory", "--train", "--checkpoint", "nope"], "no module 'nope'"),
    ],
)
def test_cli_bad_memory_options(argv, words):
    p = subprocess.run(
        [sys.executable, "cli.py", "trace", "lenet5", *argv],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 2
    assert words in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_peak_within_5_percent_of_the_allocator():
    """On a GPU: the predicted peak against torch.cuda.max_memory_allocated (the caching
    allocator rounds each block up to 512 B, so the allocator's figure is a little higher)."""
    r = flowprof.memory(
        "torchvision:resnet18",
        [(8, 3, 224, 224)],
        optimizer="adam",
        measure=True,
        measure_on="cuda",
    )
    real = r.measured.cuda_max_allocated
    assert abs(r.peak - real) / real <= 0.05


def test_measure_on_cuda_without_a_gpu_is_bad_input():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(flowprof.BadInputError, match="needs a CUDA device"):
        flowprof.memory(_mlp(), [(8, 100)], measure=True, measure_on="cuda")


def test_differences_name_the_op_and_the_bytes():
    """A prediction with the meta kernels as they are (kernels="meta") against the CPU run of the
    fp16 GPT layer: the CPU's LayerNorm keeps fp16 statistics where meta's are fp32, 2 x s·b
    elements x 2 bytes fewer = 256 B per LayerNorm (s=32, b=2), listed where each LayerNorm runs
    and carried on from there."""
    from rich.console import Console

    from flowprof.analyses.memory import MemoryReport, by_block, differences
    from flowprof.reports import memory_tables
    from flowprof.tracer import as_step, record_lifetimes

    layer = korthikanti.GPTLayer(64, 4).half()
    x = torch.randn(32, 2, 64, dtype=torch.half)
    step = as_step(("forward", "backward"), None, "sum", input_grad=True)
    meta = record_lifetimes(layer, [x], step, kernels="meta")
    cpu = record_lifetimes(layer, [x], step, device="cpu")
    found = differences(meta, cpu)
    norms = [(d.block, d.phase, d.bytes, d.ops) for d in found if d.phase == "forward"]
    assert norms == [
        ("ln1", "forward", -256, ("aten::native_layer_norm",)),
        ("ln2", "forward", -512, ("aten::native_layer_norm",)),
    ]
    report = MemoryReport("GPTLayer", None, None, (), None, meta, by_block(meta), cpu, found)
    console = Console(width=200, record=True)
    console.print(memory_tables.measured_table(report))
    text = console.export_text()
    assert "ln1 (forward)" in text and "-256" in text and "aten::native_layer_norm" in text

"""Models as users hand them over: compiled, wrapped for data parallelism, exported, scripted.

torch.compile's OptimizedModule and (Distributed)DataParallel add no arithmetic: the tracer
traces the module they wrap, block for block, and says so. torch.export's modules (which refuse
eval()) and TorchScript modules trace too. A user factory that fails on the meta device (it reads
a tensor's value, or runs its model with torch.jit.trace) is built on the CPU instead; one that
fails there too is the user's error, in one line with exit code 2.

Expected counts are derived by hand in comments.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from flowprof import tracer
from flowprof.models import registry
from flowprof.tracer import OpCount

ROOT = Path(__file__).resolve().parent.parent


def net() -> nn.Module:
    return nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))


# Linear(16, 16) on 2x16: 32 outputs, dot products of 16 (16 mult, 15 add) + bias (1 add):
#   512 MACs, 512 mult, 512 add; ReLU: 32 comparisons; Linear(16, 4): 8 outputs x 16 = 128
#   MACs/mult and 8 x (15 + 1) = 128 add. Parameters 16*16 + 16 + 16*4 + 4 = 340.
EXPECTED = OpCount(macs=640, multiplications=640, additions=640, comparisons=32)
BLOCKS = ["0", "1", "2"]


def _check(graph, wrappers: list[str]) -> None:
    assert graph.total() == EXPECTED
    assert graph.params() == 340
    assert [b.name for b in graph.blocks()] == BLOCKS
    assert graph.meta["wrappers"] == wrappers
    assert graph.meta["untraceable_leaves"] == {}


def test_plain_model_has_no_wrappers():
    _check(tracer.trace(net(), [(2, 16)]), [])


def test_torch_compile_is_traced_through():
    compiled = torch.compile(net())  # compiles lazily, on its first call: never here
    _check(tracer.trace(compiled, [(2, 16)]), ["torch.compile (OptimizedModule)"])


def test_data_parallel_is_traced_through():
    _check(tracer.trace(nn.DataParallel(net()), [(2, 16)]), ["DataParallel"])


def test_compiled_data_parallel_peels_both():
    wrapped = torch.compile(nn.DataParallel(net()))
    graph = tracer.trace(wrapped, [(2, 16)])
    _check(graph, ["torch.compile (OptimizedModule)", "DataParallel"])


def test_distributed_data_parallel_is_traced_through(tmp_path):
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(net())
        _check(tracer.trace(ddp, [(2, 16)]), ["DistributedDataParallel"])
    finally:
        dist.destroy_process_group()


def test_exported_module_traces():
    """torch.export's module refuses eval(); its graph calls ATen ops (one block each)."""
    model = net().eval()
    exported = torch.export.export(model, (torch.randn(2, 16),)).module()
    graph = tracer.trace(exported, [(2, 16)])
    assert graph.total() == EXPECTED
    assert graph.params() == 340


def test_scripted_module_is_one_block():
    graph = tracer.trace(torch.jit.script(net()), [(2, 16)])
    assert graph.total() == EXPECTED
    assert [b.name for b in graph.blocks()] == ["model"]
    assert "model" in graph.meta["untraceable_leaves"]


def _factories(tmp_path: Path) -> Path:
    path = tmp_path / "factories.py"
    path.write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            def net():
                return nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))

            def sized():  # reads a tensor's value while building: not possible on meta
                width = int(torch.tensor([16.0]).item())
                return nn.Sequential(nn.Linear(width, 16), nn.ReLU(), nn.Linear(16, 4))

            def broken():
                raise ValueError("no such checkpoint: weights.pt\\nsecond line")
            """
        )
    )
    return path


def test_factory_that_fails_on_meta_is_built_on_cpu(tmp_path):
    path = _factories(tmp_path)
    built = registry.build(f"{path}:sized", input_shapes=[(2, 16)])
    assert next(built.module.parameters()).device.type == "cpu"
    graph = tracer.trace(built.module, built.example_inputs("meta"))
    assert graph.total() == EXPECTED


def test_factory_error_is_one_line_exit_2(tmp_path):
    path = _factories(tmp_path)
    out = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "trace", f"{path}:broken", "--input", "2x16"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"flowprof: error: {path}:broken raised ValueError: no such checkpoint: weights.pt"
    ]


@pytest.mark.parametrize(
    ("factory", "note"),
    [
        ("compiled", "note: traced the model inside torch.compile (OptimizedModule)"),
        ("parallel", "note: traced the model inside DataParallel"),
    ],
)
def test_cli_says_what_it_looked_through(tmp_path, factory, note):
    path = tmp_path / "wrapped.py"
    path.write_text(
        "import torch\nfrom torch import nn\n"
        "def compiled():\n    return torch.compile(nn.Linear(16, 4))\n"
        "def parallel():\n    return nn.DataParallel(nn.Linear(16, 4))\n"
    )
    out = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "trace", f"{path}:{factory}", "--input", "2x16"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert note in out.stdout


class Recorded(nn.Module):
    """Marks its forward as a profiler range, as DataParallel and many libraries do, and asks
    len() of its input, which torch.fx cannot trace: the model is run as one block, so the range
    markers reach the counting mode as ATen ops (profiler::_record_function_enter_new, _exit)."""

    def __init__(self):
        super().__init__()
        self.net = net()

    def forward(self, x):
        with torch.autograd.profiler.record_function("recorded forward"):
            assert len(x) == 2
            return self.net(x)


def test_profiler_ranges_cost_nothing():
    """The range markers are bookkeeping: not arithmetic, and not uncounted either."""
    graph = tracer.trace(Recorded(), [(2, 16)])
    assert "model" in graph.meta["untraceable_leaves"]
    assert graph.total() == EXPECTED
    assert graph.uncounted() == {}
    assert graph.coverage() == 1.0

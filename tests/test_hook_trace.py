"""Blocks of models torch.fx cannot trace, recorded by hooks as they run (tracer/hook_trace.py).

Two kinds of check:

- on a small Hugging-Face-style model that fx cannot trace (a loop behind a branch on a size, and
  a Conv1D that multiplies by its weight with torch.addmm instead of being a torch.nn leaf),
  every block, count, parameter and edge is derived by hand below;
- on models fx can trace, the hooked path is forced and must give the fx path's graph: the same
  blocks with the same counts, parameters and shapes, and the same edges with the same tensors.
  The fx path is itself checked against hand counts elsewhere; two mechanisms that share nothing
  but the op formulas (an fx graph interpreted node by node, against module hooks and a
  torch-function mode on the model's own forward) agreeing block for block is the check here.
"""

from __future__ import annotations

import networkx as nx
import pytest
import torch
from torch import nn

from flowprof import tracer
from flowprof.models import registry
from flowprof.tracer import OpCount


class Conv1D(nn.Module):
    """A linear layer written as Hugging Face's GPT-2 writes it: weight (in, out), torch.addmm."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.n_out = n_out
        self.weight = nn.Parameter(torch.randn(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x):
        size = x.size()[:-1] + (self.n_out,)
        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return x.view(size)


class Block(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.norm = nn.Tanh()
        self.fc = Conv1D(d, 2 * d)
        self.proj = Conv1D(2 * d, d)

    def forward(self, x):
        h = torch.relu(self.fc(self.norm(x)))
        return x + self.proj(h)


class Tiny(nn.Module):
    def __init__(self, d: int = 4, layers: int = 2):
        super().__init__()
        self.h = nn.ModuleList(Block(d) for _ in range(layers))

    def forward(self, x):
        if x.size(0) > 0:  # control flow on a traced size: torch.fx cannot trace this forward
            for block in self.h:
                x = block(x)
        return x


def test_hand_derived_blocks_of_an_untraceable_model():
    g = tracer.trace(Tiny(), [(2, 3, 4)])
    assert g.meta["blocks_by_hooks"] and "model" in g.meta["untraceable_leaves"]
    per_layer = ["norm", "fc.addmm", "relu", "proj.addmm", "add"]
    assert [b.name for b in g.blocks()] == [f"h.{i}.{n}" for i in (0, 1) for n in per_layer]
    # 2 x 3 = 6 rows of 4 features.
    #   norm (Tanh): 24 elements, one nonlinearity each
    #   fc: addmm of (6, 4) by (4, 8): 48 dot products of 4 = 192 products, 48 x 3 = 144
    #       additions, + 48 bias additions = 192; parameters 4 x 8 + 8 = 40, read by the addmm
    #   relu: 48 comparisons
    #   proj: addmm of (6, 8) by (8, 4): 24 dot products of 8 = 192 products, 24 x 7 = 168
    #       additions + 24 bias = 192; parameters 8 x 4 + 4 = 36
    #   add (the residual): 24 additions
    expected = {
        "norm": (OpCount(nonlinearities=24), 0),
        "fc.addmm": (OpCount(macs=192, multiplications=192, additions=192), 40),
        "relu": (OpCount(comparisons=48), 0),
        "proj.addmm": (OpCount(macs=192, multiplications=192, additions=192), 36),
        "add": (OpCount(additions=24), 0),
    }
    for i in (0, 1):
        for name, (count, params) in expected.items():
            block = g.block(f"h.{i}.{name}")
            assert (block.count, block.params) == (count, params), block.name
    assert g.params() == 2 * (40 + 36) == sum(p.numel() for p in Tiny().parameters())
    assert g.coverage() == 1.0
    # Kinds and the module calls each block sits in.
    assert g.block("h.0.norm").kind == "Tanh"
    assert g.block("h.1.fc.addmm").kind == "addmm"
    # (the ModuleList is iterated, never called: no module call of its own, as on the fx path)
    assert g.block("h.1.fc.addmm").parents == ("h.1", "h.1.fc")
    # Edges, with the tensor on each: a view folds into the tensor it views, so the addmm's
    # (6, 8) output is what reaches relu (through its (2, 3, 8) view).
    shapes = {(e.src, e.dst): [t.shape for t in e.tensors] for e in g.edges()}
    assert shapes == {
        ("input:x", "h.0.norm"): [(2, 3, 4)],
        ("input:x", "h.0.add"): [(2, 3, 4)],
        ("h.0.norm", "h.0.fc.addmm"): [(2, 3, 4)],
        ("h.0.fc.addmm", "h.0.relu"): [(6, 8)],
        ("h.0.relu", "h.0.proj.addmm"): [(2, 3, 8)],
        ("h.0.proj.addmm", "h.0.add"): [(6, 4)],
        ("h.0.add", "h.1.norm"): [(2, 3, 4)],
        ("h.0.add", "h.1.add"): [(2, 3, 4)],
        ("h.1.norm", "h.1.fc.addmm"): [(2, 3, 4)],
        ("h.1.fc.addmm", "h.1.relu"): [(6, 8)],
        ("h.1.relu", "h.1.proj.addmm"): [(2, 3, 8)],
        ("h.1.proj.addmm", "h.1.add"): [(6, 4)],
        ("h.1.add", "output:out"): [(2, 3, 4)],
    }
    assert nx.is_directed_acyclic_graph(g.graph)
    # Grouped by module call, as on the fx path: depth 1 = one block per layer.
    layers = g.by_block(1)
    assert [b.name for b in layers.blocks()] == ["h.0", "h.1"]
    assert layers.block("h.0").count == OpCount.sum(c for c, _ in expected.values())
    assert list(layers.graph.edges) == [
        ("input:x", "h.0"),
        ("h.0", "h.1"),
        ("h.1", "output:out"),
    ]


def test_hooked_measure_weighs_every_edge_and_times_every_block():
    model = Tiny().eval()
    g = tracer.trace(model, [torch.randn(2, 3, 4)], measure=True)
    assert all(e.measured_bits == e.native_bits for e in g.edges())
    assert all(b.seconds is not None and b.seconds > 0 for b in g.blocks())


class Ones(nn.Module):
    """Work on a tensor made from Python numbers: counted (it runs every call), no edge in."""

    def forward(self, x):
        if x.size(0) > 0:
            return x * torch.arange(x.size(-1), dtype=x.dtype)
        return x


def test_hooks_false_keeps_one_block_per_untraceable_module():
    g = tracer.trace(Tiny(), [(2, 3, 4)], hooks=False)
    assert not g.meta["blocks_by_hooks"]
    assert [b.name for b in g.blocks()] == ["model"]
    assert g.total() == tracer.trace(Tiny(), [(2, 3, 4)]).total()


def test_work_on_a_constant_is_counted_without_an_edge():
    g = tracer.trace(Ones(), [(2, 5)])
    assert g.total() == OpCount(multiplications=10)  # 2 x 5 products; arange makes, not computes
    assert sorted(g.graph.edges) == [("input:x", "mul"), ("mul", "output:out")]


# --- the hooked path agrees with the fx path ------------------------------------------------------


# What the two paths name differently, and why:
#   truediv -> div: Python's `a / b` reaches fx as operator.truediv, and a torch-function mode
#     as Tensor.div (the same aten.div);
#   causal_mask -> triu: fx records a torch.fx.wrap'ed helper as one call (the transformer's
#     mask); run for real, its ones() makes a constant and its triu() is the work.
#   aten.add_ -> aten.add: `out += identity` (torchvision's residuals) adds in place when run;
#     fx's proxies have no in-place add, so Python falls back to out = out + identity.
RENAMED = {"truediv": "div", "causal_mask": "triu"}


def _as_fx_names(name: str) -> str:
    head, _, last = name.rpartition(".")
    base, at, k = last.partition("@")
    return ".".join(filter(None, [head, RENAMED.get(base, base) + at + k]))


def _units(g):
    return [
        (
            _as_fx_names(u.name),
            RENAMED.get(u.kind, u.kind),
            u.stack,
            u.count,
            u.params,
            u.buffers,
            u.input_shapes,
            u.output_shapes,
            u.role,
        )
        for u in g.units
    ]


def _edges(g):
    return sorted((_as_fx_names(c.src), _as_fx_names(c.dst), c.tensors) for c in g.crossings)


def _ops(g):
    return [tuple((op.removesuffix("_"), n) for op, n in u.ops) for u in g.units]


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("lenet5", {}),
        ("lenet5-dws", {}),
        ("transformer", {"emb": 64, "heads": 4, "seq_len": 16}),
        ("torchvision:resnet18", {}),
        ("torchvision:mobilenet_v3_small", {}),
        ("torchvision:vit_b_16", {}),
    ],
)
def test_hooked_path_gives_the_fx_path_graph(name, options):
    built = registry.build(name, **options)
    inputs = built.example_inputs("meta")
    fx_graph = tracer.trace(built.module, inputs)
    hooked = tracer.trace(built.module, inputs, hooks=True)
    assert hooked.meta["blocks_by_hooks"] and not fx_graph.meta["blocks_by_hooks"]
    assert _units(hooked) == _units(fx_graph)
    assert _edges(hooked) == _edges(fx_graph)
    assert _ops(hooked) == _ops(fx_graph)
    assert hooked.params() == fx_graph.params()
    for depth in (1, 2):
        a, b = fx_graph.by_block(depth), hooked.by_block(depth)
        assert [(x.name, x.count) for x in a.blocks()] == [(x.name, x.count) for x in b.blocks()]
        assert sorted(a.graph.edges) == sorted(b.graph.edges)


@torch.jit.script
def _scripted_double(x: torch.Tensor) -> torch.Tensor:
    return x * 2


class CallsScript(nn.Module):
    """Calls a TorchScript function, whose ops no torch-function mode sees (they still reach the
    counting dispatch mode)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.size(0) > 0:
            x = _scripted_double(self.fc(x))
        return x


def test_work_outside_any_call_the_hooks_see_is_kept_as_a_block():
    g = tracer.trace(CallsScript(), [(3, 4)])
    # fc on 3 rows: 12 dot products of 4 + bias (48 / 48); x * 2 in TorchScript: 12 products
    fc = OpCount(macs=48, multiplications=48, additions=48)
    assert g.total() == fc + OpCount(multiplications=12)
    assert g.block("fc").count == fc
    assert g.block("forward:rest").count == OpCount(multiplications=12)


def test_a_run_on_real_tensors_keeps_no_activation_alive(monkeypatch):
    """On meta tensors every tensor is kept for the run (ids stay unique, no memory spent); on
    real ones each is forgotten as it dies, so the run frees activations as the model does, and
    the graph is the same."""
    from flowprof.tracer import hook_trace

    kept = []
    records = hook_trace.HookRun.records

    def spy(run):
        kept.append([t for t in run.keep if not isinstance(t, nn.Parameter)])
        return records(run)

    monkeypatch.setattr(hook_trace.HookRun, "records", spy)
    model = Tiny().eval()
    on_meta = tracer.trace(model, [(2, 3, 4)])
    measured = tracer.trace(model, [torch.randn(2, 3, 4)], measure=True)  # a real hooked run
    assert len(kept[0]) > 10  # the meta run's activations (and input)
    assert kept[-1] == []  # the real run's: none held
    assert [(u.name, u.count) for u in measured.units] == [(u.name, u.count) for u in on_meta.units]
    assert measured.crossings and all(e.measured_bits == e.native_bits for e in measured.edges())
    assert [(c.src, c.dst, c.tensors) for c in measured.crossings] == [
        (c.src, c.dst, c.tensors) for c in on_meta.crossings
    ]

"""Invariants of the block graph, on hand-made models and torchvision resnet18 (meta device).

Rows add up to the totals and groups to the sums of their members at every depth; parameters
match the model's own; bits are elements times the bit width on every edge for every precision
(integer and bool tensors keep their own width); the graph is a DAG; tracing leaves the model as
it was and is deterministic; models fx cannot trace (in a child or at the top) still get a graph.
Expected counts are derived by hand in comments, never read back from the tool.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re

import networkx as nx
import pytest
import torch
from torch import nn

from flowprof import tracer
from flowprof.errors import FlowprofError
from flowprof.models import registry
from flowprof.tracer import OpCount, Precision

DEPTHS = (None, 1, 2, 3)
BITS = {"fp32": 32, "fp16": 16, "bf16": 16, "fp8": 8, "int8": 8}


# --- models --------------------------------------------------------------------------------------


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.act = nn.ReLU()

    def forward(self, x):
        return x + self.act(self.fc(x))  # (B, T, 8)


class Pair(nn.Module):
    """Returns a tuple: both halves are used downstream."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 4)

    def forward(self, x):
        return self.a(x), self.b(x)


class Toy(nn.Module):
    """Embedding -> residual block -> a shared Linear called twice -> a tuple-returning module ->
    a head whose weight is tied to the embedding's."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.block = Residual()
        self.shared = nn.Linear(8, 8)
        self.pair = Pair()
        self.head = nn.Linear(8, 10, bias=False)
        self.head.weight = self.emb.weight  # tied

    def forward(self, ids):
        x = self.emb(ids)  # (2, 5, 8)
        x = self.block(x)
        x = torch.relu(self.shared(x))
        x = self.shared(x)
        a, b = self.pair(x)  # (2, 5, 8), (2, 5, 4)
        return self.head(a), b.sum(-1)  # (2, 5, 10), (2, 5)


def toy_ids() -> torch.Tensor:
    return torch.randint(0, 10, (2, 5))


# 2*5 = 10 rows throughout.
#   block.fc  Linear(8, 8):  80 dot products of 8 + bias: macs 640, additions 80*7 + 80 = 640
#   block.act ReLU:          80 comparisons;   block add: 80 additions
#   shared (twice):          2 * (640 macs, 640 additions); torch.relu between: 80 comparisons
#   pair.a   Linear(8, 8):   640 / 640;  pair.b Linear(8, 4): 40 dot products: 320 / 320
#   head     Linear(8, 10), no bias: 100 dot products of 8: macs 800, additions 100*7 = 700
#   b.sum(-1): 10 outputs of 4: 30 additions
TOY_TOTAL = OpCount(
    macs=640 * 4 + 320 + 800,
    multiplications=640 * 4 + 320 + 800,
    additions=640 * 4 + 320 + 700 + 80 + 30,
    comparisons=80 + 80,
)
# emb 10*8 (shared with head) + block.fc 8*8+8 + shared 72 + pair.a 72 + pair.b 8*4+4
TOY_PARAMS = 80 + 72 + 72 + 72 + 36


@pytest.fixture(scope="module")
def resnet18():
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):
        return torchvision.models.resnet18()


def graphs(model: nn.Module, inputs) -> dict:
    """The analysis at every depth: traced once, regrouped, and traced again at that depth."""
    base = tracer.trace(model, inputs)
    out = {}
    for depth in DEPTHS:
        out[depth] = base.by_block(depth)
        if depth is not None:
            out[f"traced@{depth}"] = tracer.trace(model, inputs, depth=depth)
    return out


@pytest.fixture(scope="module")
def toy_graphs():
    torch.manual_seed(0)
    model = Toy()
    return model, graphs(model, [toy_ids()])


@pytest.fixture(scope="module")
def resnet_graphs(resnet18):
    return resnet18, graphs(resnet18, [(1, 3, 224, 224)])


def _all(toy_graphs, resnet_graphs):
    for model, gs in (toy_graphs, resnet_graphs):
        for key, g in gs.items():
            yield model, key, g


# --- counts --------------------------------------------------------------------------------------


def test_toy_total_by_hand(toy_graphs):
    _, gs = toy_graphs
    for g in gs.values():
        assert g.total() == TOY_TOTAL
        assert g.uncounted() == {}


def test_rows_add_up_to_the_totals(toy_graphs, resnet_graphs):
    for _, _, g in _all(toy_graphs, resnet_graphs):
        table = g.to_dict()
        kinds = table["totals"].keys() & OpCount().to_dict().keys()
        for kind in kinds:
            column = sum(row["counts"][kind] for row in table["blocks"])
            assert column == table["totals"][kind], kind
        assert sum(row["other"] for row in table["blocks"]) == table["totals"]["other"]
        assert sum(row["params"] for row in table["blocks"]) == table["totals"]["params"]
        assert table["totals"]["flops_from_macs"] == 2 * table["totals"]["macs"]


def test_every_depth_has_the_same_total(toy_graphs, resnet_graphs):
    for _, gs in (toy_graphs, resnet_graphs):
        totals = {key: g.total() for key, g in gs.items()}
        assert len(set(totals.values())) == 1, totals
        units = OpCount.sum(u.count for u in gs[None].units)
        assert totals[None] == units


def test_groups_are_the_sums_of_their_members(toy_graphs, resnet_graphs):
    for _, _, g in _all(toy_graphs, resnet_graphs):
        units = {u.name: u for u in g.units}
        seen: list[str] = []
        for block in g.blocks(include_io=True):
            members = [units[m] for m in block.members]
            assert block.count == OpCount.sum(u.count for u in members)
            assert block.params == sum(u.params for u in members)
            seen.extend(block.members)
        # every leaf unit is in exactly one block
        assert sorted(seen) == sorted(units)


def test_resnet_groups_by_hand(resnet_graphs):
    _, gs = resnet_graphs
    # depth 1: the model's ten children; depth 2: the eight BasicBlocks replace the four stages
    names1 = [b.name for b in gs[1].blocks()]
    assert names1 == [
        "conv1",
        "bn1",
        "relu",
        "maxpool",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
        "avgpool",
        "fc",
    ]
    names2 = [b.name for b in gs[2].blocks()]
    assert names2[4:12] == [f"layer{s}.{b}" for s in (1, 2, 3, 4) for b in (0, 1)]
    # layer1 = four 3x3 convs 64 -> 64 at 56x56: 4 * 56*56*64 * 576 = 462,422,016 MACs
    assert gs[1].block("layer1").macs == 4 * 56 * 56 * 64 * 576
    # its edges carry what crosses the boundary: in and out one 1x64x56x56 tensor
    into = [e for e in gs[1].edges() if e.dst == "layer1"]
    out = [e for e in gs[1].edges() if e.src == "layer1"]
    assert [(e.src, e.shape) for e in into] == [("maxpool", "1x64x56x56")]
    assert [(e.dst, e.shape) for e in out] == [("layer2", "1x64x56x56")]


def test_params_match_the_model(toy_graphs, resnet_graphs):
    for model, _, g in _all(toy_graphs, resnet_graphs):
        # model.parameters() yields a tied tensor once
        assert g.params() == sum(p.numel() for p in model.parameters())
    assert toy_graphs[1][None].params() == TOY_PARAMS
    # resnet18's published 11,689,512 parameters
    assert resnet_graphs[1][None].params() == 11_689_512


def test_shared_module_calls_are_distinct_blocks(toy_graphs):
    _, gs = toy_graphs
    g = gs[None]
    shared = [b for b in g.blocks() if b.path == "shared"]
    assert [b.name for b in shared] == ["shared", "shared@1"]
    # each call: 10 rows * 8 outputs * 8 inputs = 640 MACs; the parameters belong to one call
    assert [b.macs for b in shared] == [640, 640]
    assert sum(b.params for b in shared) == 8 * 8 + 8


def test_edges_between_groups_carry_each_value_once(toy_graphs):
    _, gs = toy_graphs
    # at depth None the embedding output goes to block.fc and to the residual add: two edges
    leaf = {(e.src, e.dst) for e in gs[None].edges()}
    assert {("emb", "block.fc"), ("emb", "block.add")} <= leaf
    # at depth 1 it crosses into `block` once: 2*5*8 = 80 floats = 2560 bits at fp32
    edges = {(e.src, e.dst): e for e in gs[1].edges()}
    assert edges[("emb", "block")].elements == 80
    assert edges[("emb", "block")].bits == 80 * 32
    # activation bits count a tensor once however many blocks read it
    assert gs[None].block("emb").activation_bits == 80 * 32
    assert gs[1].block("block").activation_bits == 80 * 32
    # the tuple-returning module: a (2,5,8) to the head, b (2,5,4) to the sum
    assert edges[("pair", "head")].shape == "2x5x8"
    assert edges[("pair", "sum")].shape == "2x5x4"
    # the outputs: head (2,5,10) and the sum (2,5)
    assert edges[("head", "output:out")].shape == "2x5x10"
    assert edges[("sum", "output:out")].shape == "2x5"


def test_block_graph_is_a_dag(toy_graphs, resnet_graphs):
    for _, _, g in _all(toy_graphs, resnet_graphs):
        assert nx.is_directed_acyclic_graph(g.graph)
        for e in g.edges():
            assert g.graph.has_edge(e.src, e.dst)


# --- bits ----------------------------------------------------------------------------------------


class Ints(nn.Module):
    """Float, int64 and bool tensors on its edges."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 10)
        self.emb = nn.Embedding(10, 6)

    def forward(self, x):
        ids = self.fc(x).argmax(-1)  # (3,) int64
        y = self.emb(ids)  # (3, 6)
        mask = y > 0  # (3, 6) bool
        return y.masked_fill(mask, 0.0)


def _native_bits(dtype_name: str) -> int:
    """PyTorch as the oracle: the storage width of a non-floating dtype."""
    return torch.empty((), dtype=getattr(torch, dtype_name)).element_size() * 8


def _check_bits(g, precision: str) -> None:
    width = BITS[precision]
    assert g.precision.bits == width
    for e in g.edges():
        expected = 0
        for t in e.tensors:
            n = 1
            for d in t.shape:
                n *= d
            assert t.elements == n
            expected += n * (width if t.is_floating else _native_bits(t.dtype))
        assert e.bits == expected
        assert e.to_dict()["bits"] == expected
    for b in g.blocks():
        assert b.param_bits == b.params * width


@pytest.mark.parametrize("precision", list(BITS))
def test_bits_are_elements_times_width(precision, resnet18):
    ints = tracer.trace(Ints(), [(3, 6)], dtype=precision)
    _check_bits(ints, precision)
    by_pair = {(e.src, e.dst): e for e in ints.edges()}
    # int64 ids keep 64 bits and the bool mask 8 bits whatever the accounted precision
    assert by_pair[("argmax", "emb")].bits == 3 * 64
    assert by_pair[("argmax", "emb")].dtype == "int64"
    assert by_pair[("gt", "masked_fill")].bits == 3 * 6 * 8
    # floating tensors at the accounted width: the 3x10 logits
    assert by_pair[("fc", "argmax")].bits == 30 * BITS[precision]
    for depth in (None, 1, 2):
        _check_bits(
            tracer.trace(resnet18, [(1, 3, 32, 32)], dtype=precision, depth=depth), precision
        )
    # regrouping at another precision is the same as tracing at it
    fp32 = tracer.trace(Ints(), [(3, 6)])
    again = fp32.with_precision(Precision(precision))
    assert [e.to_dict() for e in again.edges()] == [e.to_dict() for e in ints.edges()]


def test_default_precision_is_the_models():
    assert tracer.trace(Ints(), [(3, 6)]).precision == Precision.FP32
    assert tracer.trace(Ints().half(), [(3, 6)]).precision == Precision.FP16
    assert tracer.trace(Ints().to(torch.bfloat16), [(3, 6)]).precision == Precision.BF16


# --- the model is left alone ---------------------------------------------------------------------


class WithStats(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)

    def forward(self, x):
        y = self.drop(self.bn(self.conv(x)))  # (1, 4, 6, 6)
        seq = y.flatten(2).transpose(1, 2)  # (1, 36, 4)
        return self.attn(seq, seq, seq)[0]


def _hooks(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


def test_profiling_never_changes_the_model():
    torch.manual_seed(0)
    model = WithStats()
    model.train()
    model.attn.eval()  # a mixed state, to be restored as it was
    before_state = copy.deepcopy(model.state_dict())
    before_flags = {name: m.training for name, m in model.named_modules()}
    x = torch.randn(1, 3, 8, 8)
    first = tracer.trace(model, [x])
    second = tracer.trace(model, [x])
    assert {name: m.training for name, m in model.named_modules()} == before_flags
    after = model.state_dict()
    assert after.keys() == before_state.keys()
    for key, value in before_state.items():
        assert torch.equal(after[key], value), key  # running stats, num_batches_tracked too
    assert _hooks(model) == 0
    assert not x.requires_grad
    # deterministic: identical output, as data and as text
    assert first.to_dict() == second.to_dict()
    assert json.dumps(first.to_dict(), sort_keys=True) == json.dumps(
        second.to_dict(), sort_keys=True
    )
    # shapes and a real tensor give the same analysis
    assert tracer.trace(model, [(1, 3, 8, 8)]).to_dict() == first.to_dict()


class MakesAConstant(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x) * torch.ones(4)  # fx folds torch.ones(4) into a constant tensor


def test_tracing_adds_no_attribute_to_the_model():
    # torch.fx stores folded constants as attributes (_tensor_constant0, 1, ...) of the module it
    # traces, a new one each time; the tracer traces a twin of the model, never the model.
    model = MakesAConstant()
    before = {name: set(vars(m)) for name, m in model.named_modules()}
    for _ in range(3):
        g = tracer.trace(model, [(2, 4)])
    assert {name: set(vars(m)) for name, m in model.named_modules()} == before
    # fc: 2*4 = 8 dot products of 4 + bias (32 / 32), then * ones: 8 multiplications
    assert g.total() == OpCount(macs=32, multiplications=40, additions=32)
    # The folded constant is made on the CPU while tracing; a model on meta still traces.
    with torch.device("meta"):
        on_meta = MakesAConstant()
    assert tracer.trace(on_meta, [(2, 4)]).total() == g.total()


def test_trace_leaves_the_garbage_collector_as_it_was():
    # A trace pauses Python's cyclic collector (see tracer.gc_paused); it must hand it back in
    # the state it found it, after an error too.
    import gc

    assert gc.isenabled()
    tracer.trace(Residual(), [(2, 3, 8)])
    assert gc.isenabled()
    with pytest.raises(FlowprofError):
        tracer.trace(Residual(), [(2, 3, 7)])  # 7 features into Linear(8, 8)
    assert gc.isenabled()
    gc.disable()
    try:
        tracer.trace(Residual(), [(2, 3, 8)])
        assert not gc.isenabled()  # a caller who turned it off keeps it off
    finally:
        gc.enable()


def test_profiling_twice_is_identical_on_resnet(resnet18):
    a = tracer.trace(resnet18, [(1, 3, 64, 64)], depth=2)
    b = tracer.trace(resnet18, [(1, 3, 64, 64)], depth=2)
    assert a.to_dict() == b.to_dict()
    assert resnet18.training  # torchvision builds models in training mode; it stays so


# --- models torch.fx cannot trace ----------------------------------------------------------------


class ShapeBranch(nn.Module):
    """Python control flow on a shape: fx cannot trace it, fake tensors can run it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.shape[0] > 1:
            return self.fc(x)
        return x


class ValueBranch(nn.Module):
    """Python control flow on a value: `if x.sum() > 0`."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return x


class Parent(nn.Module):
    def __init__(self, child: nn.Module):
        super().__init__()
        self.child = child
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        return self.out(self.child(x))


def test_untraceable_child_is_seen_through_by_hooks():
    g = tracer.trace(Parent(ShapeBranch()), [(3, 4)])
    assert "child" in g.meta["untraceable_leaves"] and g.meta["blocks_by_hooks"]
    # child.fc: 3 rows * 4 outputs = 12 dot products of 4 + bias: macs 48, additions 36 + 12 = 48
    # out: 3 * 2 = 6 dot products of 4 + bias: macs 24, additions 18 + 6 = 24
    assert g.total() == OpCount(macs=72, multiplications=72, additions=72)
    assert [b.name for b in g.blocks()] == ["child.fc", "out"]
    assert g.block("child.fc").macs == 48 and g.block("out").macs == 24
    assert list(g.graph.edges) == [
        ("input:x", "child.fc"),
        ("child.fc", "out"),
        ("out", "output:out"),
    ]
    assert g.by_block(1).block("child").macs == 48  # the untraceable module, as a group
    assert g.params() == (16 + 4) + (8 + 2)


@pytest.mark.parametrize("inputs", [[(3, 4)], [torch.ones(3, 4)]], ids=["shape", "tensor"])
def test_value_branch_in_child_never_raises_a_trace_error(inputs):
    try:
        g = tracer.trace(Parent(ValueBranch()), inputs)
    except torch.fx.proxy.TraceError as exc:  # pragma: no cover - the failure this test guards
        pytest.fail(f"raw TraceError reached the user: {exc}")
    except FlowprofError as exc:
        # on shapes alone the branch cannot be decided: a clear error of ours is acceptable
        assert "ValueBranch" in str(exc) or "Parent" in str(exc)
    else:
        assert g.total().macs in (24, 72)


def test_value_branch_with_real_inputs_gets_a_graph():
    # Fake tensors cannot decide `x.sum() > 0`; with real inputs and weights the tracer runs on
    # them instead (counts depend on shapes only).
    g = tracer.trace(Parent(ValueBranch()), [torch.ones(3, 4)])
    # x.sum() = 12 > 0: child.fc runs: 48 + 24 MACs
    assert g.total().macs == 72


class TopBranch(nn.Module):
    """The top-level forward itself cannot be traced."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.shape[0] > 1:
            x = torch.relu(self.fc(x))
        return x


def test_untraceable_top_level_still_gets_a_graph():
    # fx cannot trace the forward; hooks record its blocks as it runs (tracer/hook_trace.py)
    g = tracer.trace(TopBranch(), [(3, 4)])
    assert "model" in g.meta["untraceable_leaves"] and g.meta["blocks_by_hooks"]
    # fc: 12 dot products of 4 + bias (48 / 48), relu: 12 comparisons
    assert g.total() == OpCount(macs=48, multiplications=48, additions=48, comparisons=12)
    assert g.block("fc").count == OpCount(macs=48, multiplications=48, additions=48)
    assert g.block("relu").count == OpCount(comparisons=12)
    assert g.params() == 20 and g.block("fc").params == 20
    assert nx.is_directed_acyclic_graph(g.graph)
    assert [(b.name, b.kind) for b in g.blocks()] == [("fc", "Linear"), ("relu", "relu")]
    assert list(g.graph.edges) == [("input:x", "fc"), ("fc", "relu"), ("relu", "output:out")]
    assert g.graph.edges["fc", "relu"]["edge"].tensors[0].shape == (3, 4)


class TopBranchOptionalScale(nn.Module):
    """Untraceable at the top, with an optional second input."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x, scale=None):
        if x.shape[0] > 1:
            x = self.fc(x)
        if scale is not None:
            x = x * scale
        return x


def test_untraceable_top_level_keeps_an_optional_input_given_positionally():
    g = tracer.trace(TopBranchOptionalScale(), [(3, 4), (3, 4)])
    # fc: 12 dot products of 4 + bias (48 multiplications, 48 additions); x * scale: 12 more
    assert g.total() == OpCount(macs=48, multiplications=48 + 12, additions=48)
    assert g.graph.has_edge("input:scale", "mul") and g.graph.has_edge("fc", "mul")
    # Given one input, the optional one keeps its default: no multiplication by scale.
    g = tracer.trace(TopBranchOptionalScale(), [(3, 4)])
    assert g.total() == OpCount(macs=48, multiplications=48, additions=48)
    assert "input:scale" not in g.graph


class TopBranchDict(TopBranch):
    """Untraceable at the top, returning a dict (as Hugging Face models return a ModelOutput)."""

    def forward(self, x):
        return {"y": super().forward(x)}


@dataclasses.dataclass
class Output:
    y: torch.Tensor
    note: str = "not a tensor"


class ChildWithDataclassOutput(TopBranch):
    """An untraceable child (becomes a leaf) whose output is a dataclass holding the tensor."""

    def forward(self, x):
        return Output(super().forward(x))


class Opaque:
    def __init__(self, tensor):
        self.tensor = tensor


class OpaqueLeaf(TopBranch):
    """An untraceable child whose output is an object fx knows nothing of."""

    def forward(self, x):
        return Opaque(super().forward(x))


class Holder(nn.Module):
    """A parent of one child; ``read`` takes what the parent returns from the child's output."""

    def __init__(self, child: nn.Module, read=lambda out: out):
        super().__init__()
        self.child = child
        self.read = read

    def forward(self, x):
        return self.read(self.child(x))


# fc on 3 rows: 12 dot products of 4 + bias = 48 multiplications, 48 additions; relu 12
FC = OpCount(macs=48, multiplications=48, additions=48)


def test_leaf_outputs_in_containers_keep_their_counts_and_edges():
    # A leaf whose output is a dict or a dataclass: its counts stay and its tensors flow on.
    g = tracer.trace(TopBranchDict(), [(3, 4)])
    assert g.total() == FC + OpCount(comparisons=12)
    assert g.block("fc").count == FC
    assert g.graph.has_edge("relu", "output:out")
    assert g.graph.edges["relu", "output:out"]["edge"].tensors[0].shape == (3, 4)
    g = tracer.trace(Holder(ChildWithDataclassOutput(), lambda out: out.y * 2), [(3, 4)])
    assert g.total() == FC + OpCount(comparisons=12, multiplications=12)  # and * 2
    assert g.by_block(1).block("child").count == FC + OpCount(comparisons=12)
    assert g.graph.has_edge("child.relu", "mul")


def test_a_leaf_with_no_tensor_output_keeps_its_counts_and_parameters():
    g = tracer.trace(Holder(OpaqueLeaf()), [(3, 4)])
    assert g.total() == FC + OpCount(comparisons=12)
    assert g.by_block(1).block("child").count == FC + OpCount(comparisons=12)
    assert g.params() == 20 and g.meta["params_not_run"] == 0


class OptionalArguments(nn.Module):
    """A forward with optional inputs, checked the way Hugging Face models check theirs."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x, embeds=None, mask=None, *, scale=2.0):
        if x is not None and embeds is not None:
            raise ValueError("give x or embeds, not both")
        y = self.fc(x)
        if mask is not None:
            y = y * mask
        return y * scale


def test_optional_arguments_not_given_are_traced_as_their_defaults():
    # Called with x alone: embeds and mask are None, scale 2.0. Traced with those defaults, the
    # model is traced (not a whole-model leaf) and the unmasked path is what is counted:
    # fc 48 multiplications and 48 additions (FC), then * scale: 12 multiplications.
    g = tracer.trace(OptionalArguments(), [(3, 4)])
    assert g.meta["untraceable_leaves"] == {}
    assert g.total() == FC + OpCount(multiplications=12)
    assert [n for n in g.graph if n.startswith("input:")] == ["input:x"]


@torch.fx.wrap
def _grow(x, sizes):
    sizes[0] = sizes[0] * 2  # writes into its list argument, as torchvision's video Swin does
    return x.repeat(*sizes)


class WritesIntoListArguments(nn.Module):
    def forward(self, x):
        return _grow(x, [1, 1]) * 2 + _grow(x, sizes=[1, 1])


def test_a_wrapped_function_may_write_into_its_list_arguments():
    # fx keeps list arguments as immutable lists; the function gets plain ones, as without fx.
    # (2, 3) repeated (2, 1) -> (4, 3) = 12 elements: 12 multiplications, then 12 additions
    g = tracer.trace(WritesIntoListArguments(), [(2, 3)])
    assert g.total() == OpCount(multiplications=12, additions=12)


def test_untraceable_torch_modules_at_top_level():
    # nn.MultiheadAttention's own forward is not traceable; E 8, 2 heads, B 1, T 3, self-attention
    # 4 projections of 3 rows * 8 outputs * 8 inputs = 4 * 192 = 768; attention 2 heads * (3*3*4
    # + 3*4*3) = 144
    g = tracer.trace(nn.MultiheadAttention(8, 2, batch_first=True), [(1, 3, 8)] * 3)
    assert g.total().macs == 768 + 144
    # ConvTranspose2d(1, 1, 3, stride=2) on 2x2: 36 products (see test_formulas)
    g = tracer.trace(nn.ConvTranspose2d(1, 1, 3, stride=2), [(1, 1, 2, 2)])
    assert g.total().macs == 36


def test_transformer_encoder_layer_is_a_counted_leaf():
    d, heads, ff, B, T = 16, 4, 32, 2, 5
    layer = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, batch_first=True)

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = layer

        def forward(self, x):
            return self.enc(x)

    # B*T = 10 rows.
    #   self-attention (MultiheadAttention formula, need_weights=False):
    #     4 projections: 10 rows * 16 outputs = 160 dot products of 16 + bias: 2560 / 2560 each
    #     8 heads (2 * 4), head_dim 4, 5*5 = 25 scores each = 200 scores: Q K^T 800 products,
    #     600 additions; scale 200 multiplications; softmax 40 rows of 5: 200 exp, 160 additions,
    #     200 divisions; A V: 8*5*4 = 160 dot products of 5: 800 products, 640 additions
    #   linear1: 10*32 = 320 dot products of 16 + bias: 5120 / 5120; relu: 320 comparisons
    #   linear2: 10*16 = 160 dot products of 32 + bias: 5120 / 5120
    #   two residual additions: 2 * 160
    #   two layer norms, 10 rows of 16: per row 3*16 + 2 = 50 multiplications, 4*16 - 1 = 63
    #     additions, 1 square root, 1 division (see test_formulas.test_layer_norm)
    expected = OpCount(
        macs=4 * 2560 + 800 + 800 + 5120 + 5120,
        multiplications=4 * 2560 + 800 + 200 + 800 + 5120 + 5120 + 2 * 500,
        additions=4 * 2560 + 600 + 160 + 640 + 5120 + 5120 + 2 * 160 + 2 * 630,
        comparisons=320,
        exponentials=200,
        divisions=200 + 2 * 10,
        square_roots=2 * 10,
    )
    # As a child it is a torch.nn leaf: one block. As the model itself fx traces its forward,
    # which it cannot (it branches on its inputs), so hooks record its parts as it runs.
    for model, blocks in ((Encoder(), ["enc"]), (layer, ["self_attn", "linear1", "linear2"])):
        g = tracer.trace(model, [(B, T, d)])
        assert g.total() == expected
        assert g.uncounted() == {}
        assert g.params() == sum(p.numel() for p in layer.parameters())
        attention = [u for u in g.units if u.name == blocks[0]]
        ops = dict(attention[0].ops)
        assert ops["torch.nn.modules.activation.MultiheadAttention"] == 1
        # the attention's matmuls are inside the module formula, not counted again
        assert "aten.bmm" not in ops and "aten.baddbmm" not in ops
        assert all(b in [u.name for u in g.units] for b in blocks)
    assert layer.training  # built in training mode, left so


def test_a_layer_named_output_stays_apart_from_the_graph_output():
    # LeNet-5's RBF layer is called "output": at depth 1 it is a block of its own, with the RBF's
    # 10 units * 84 squares = 840 multiplications, and it feeds the graph's end node.
    built = registry.build("lenet5")
    graph = tracer.trace(built.module, built.example_inputs("meta"), depth=1)
    assert graph.block("output").count.multiplications == 10 * 84
    assert graph.block("output").role == "block"
    assert graph.block("output:out").role == "output"
    assert graph.graph.has_edge("output", "output:out")
    assert nx.is_directed_acyclic_graph(graph.graph)


def test_tracer_loads_no_drawing_or_printing_package_and_no_compiler():
    # Drawing and printing live in reports; torch._dynamo (0.7 s to import) and sympy (0.3 s)
    # are what a first build and trace would pay for if something on the way pulled them in (the
    # dispatch mode's Dynamo wrapper, torch.broadcast_shapes, a meta arange in a constructor).
    import subprocess
    import sys

    code = (
        "import sys; from flowprof import tracer; from flowprof.models import registry\n"
        "for name in ('lenet5', 'transformer'):\n"
        "    b = registry.build(name); tracer.trace(b.module, b.example_inputs('meta'))\n"
        "heavy = ('rich', 'matplotlib', 'graphviz', 'torch._dynamo', 'sympy')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


class AutocastOff(nn.Module):
    """Disables autocast for its device, as Hugging Face's rotary embeddings do."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.fc(x).float()


def test_autocast_on_meta_tensors_is_no_error():
    # torch.autocast has no meta backend; during the run it is the CPU's, which leaves meta ops
    # alone. fc on 3 rows: FC (48 multiplications, 48 additions); .float() on fp32 is free.
    with torch.device("meta"):  # (with CPU weights the fake-tensor run is on the CPU: no error)
        model = AutocastOff()
    g = tracer.trace(model, [(3, 4)])
    assert g.total() == FC
    assert torch.amp.autocast_mode.autocast.__init__.__name__ == "__init__"  # restored


class KeywordInputs(nn.Module):
    """Inputs a caller gives by name, as Hugging Face encoder-decoders take decoder_input_ids."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(100, 8)
        self.fc = nn.Linear(8, 8)

    def forward(self, ids, mask=None, extra=None):
        h = self.fc(self.emb(ids))
        if mask is not None:
            h = h * mask.unsqueeze(-1)
        if extra is not None:
            h = h + extra
        return h


def test_inputs_given_by_name_reach_forward_in_its_order():
    ids = torch.empty(2, 5, dtype=torch.long, device="meta")
    g = tracer.trace(KeywordInputs(), {"ids": ids, "extra": (2, 5, 8)})
    # mask is skipped: forward's default (None) takes its place, so nothing is masked.
    # fc: 10 rows x 8 outputs = 80 dot products of 8: 640 products, 80 x 7 + 80 bias = 640
    # additions; + extra: 80 additions.
    assert g.total() == OpCount(macs=640, multiplications=640, additions=640 + 80)
    assert [b.name for b in g.blocks()] == ["emb", "fc", "add"]
    assert g.graph.has_edge("input:extra", "add") and "input:mask" not in g.graph
    assert [i["shape"] for i in g.meta["inputs"]] == [[2, 5], [2, 5, 8]]
    # Given a mask too: one multiplication per element of h (80).
    g = tracer.trace(KeywordInputs(), {"ids": ids, "mask": (2, 5)})
    assert g.total() == OpCount(macs=640, multiplications=640 + 80, additions=640)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"idz": (2, 5)}, "has no positional parameter 'idz' (it has: ids, mask, extra)"),
        ({"extra": (2, 5, 8)}, "give KeywordInputs.forward's input 'ids'"),
    ],
)
def test_inputs_by_an_unknown_name_or_missing_a_required_one_are_bad_input(inputs, message):
    with pytest.raises(FlowprofError, match=re.escape(message)):
        tracer.trace(KeywordInputs(), inputs)


class MaskShortcut(nn.Module):
    """Drops an all-ones mask unless compiling, as Hugging Face's attention-mask helpers do."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x, mask):
        if not torch.compiler.is_compiling() and torch.all(mask == 1):
            mask = None  # a value-dependent shortcut: meta and fake tensors cannot decide it
        h = self.fc(x)
        return h if mask is None else h * mask


def test_a_value_dependent_shortcut_is_run_as_compiled():
    g = tracer.trace(MaskShortcut(), [(3, 4), (3, 4)])
    # The general path, mask applied: fc (FC) and 12 multiplications by the mask.
    assert g.total() == FC + OpCount(multiplications=12)
    assert "DataDependentOutputException" in g.meta["run_as_compiled"]
    assert not torch.compiler.is_compiling()  # restored
    from flowprof.reports.tables import trace_notes

    assert any("it was run as torch.compile sees it" in line for line in trace_notes(g))
    # A branch on values that compiling does not remove still cannot be decided on shapes.
    with pytest.raises(FlowprofError, match="branches on tensor values"):
        tracer.trace(ValueBranch(), [(3, 4)])

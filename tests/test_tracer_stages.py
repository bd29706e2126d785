"""The tracer's staged API and the one builder both paths share (tracer/units.py).

Each behaviour is checked on the fx path (``hooks=None`` on an fx-traceable model) and on the
hooked path (``hooks=True``), against numbers and edges derived by hand in the test.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch import nn

from flowprof import tracer
from flowprof.tracer import OpCount, Phase, formulas

PATHS = pytest.mark.parametrize("hooks", [None, True], ids=["fx", "hooks"])
ROOT = Path(__file__).resolve().parents[1]

# A linear 4 -> 4 on 2 rows: 2*4 = 8 dot products of length 4, plus a bias each:
# 8*4 = 32 multiplications (and MACs), 8*3 + 8 = 32 additions.
FC_2x4 = OpCount(macs=32, multiplications=32, additions=32)


def _edges(g: tracer.BlockGraph) -> set[tuple[str, str]]:
    return {(e.src, e.dst) for e in g.edges()}


# --- a formula keyed on a user's module class -------------------------------------------------


class Gate(nn.Module):
    """A user's module: x * sigmoid(x), which fx would trace through."""

    def forward(self, x):
        return x * torch.sigmoid(x)


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.gate = Gate()

    def forward(self, x):
        return self.gate(self.fc(x))


def _gate_formula(call: formulas.Call) -> OpCount:
    """Three multiplications per output element (a made-up cost, unlike what it runs)."""
    return OpCount(multiplications=3 * call.out.numel())


@PATHS
def test_a_formula_for_a_user_module_class_applies_on_both_paths(hooks):
    formulas.formula(Gate)(_gate_formula)
    try:
        g = tracer.trace(Gated(), [(2, 4)], hooks=hooks)
    finally:
        formulas.unregister(Gate)
    assert formulas.formula_for_module(Gate()) is None  # the registration is undone
    # the gate is one block counted by its formula: 2x4 = 8 outputs * 3 = 24 multiplications
    gate = g.block("gate")
    assert gate.kind == "Gate"
    assert gate.count == OpCount(multiplications=24)
    assert [b.name for b in g.blocks()] == ["fc", "gate"]
    assert g.total() == FC_2x4 + OpCount(multiplications=24)
    assert _edges(g) == {("input:x", "fc"), ("fc", "gate"), ("gate", "output:out")}


def test_without_the_formula_the_user_module_is_traced_through():
    g = tracer.trace(Gated(), [(2, 4)])
    # x * sigmoid(x) on 8 elements: 8 multiplications; the sigmoid is counted by its own formula
    assert "gate" not in [b.name for b in g.blocks()]
    assert g.block("gate.mul").count == OpCount(multiplications=8)


def test_unregister_refuses_an_op_without_a_formula():
    with pytest.raises(KeyError, match="has no formula"):
        formulas.unregister(Gate)


# --- in-place tensor methods ------------------------------------------------------------------


class InPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        y = self.fc(x)
        y.add_(x)  # (result not used: y itself is changed)
        y.relu_()
        y += 1
        return y * 2


@PATHS
def test_in_place_ops_are_chained_on_both_paths(hooks):
    g = tracer.trace(InPlace(), [(2, 4)], hooks=hooks)
    # each elementwise op on the 2x4 = 8 elements: add_ 8 additions, relu_ 8 comparisons,
    # += 1 8 additions, * 2 8 multiplications; in-place ops are named as their twins
    assert [(b.name, b.count) for b in g.blocks()] == [
        ("fc", FC_2x4),
        ("add", OpCount(additions=8)),
        ("relu", OpCount(comparisons=8)),
        ("add@1", OpCount(additions=8)),
        ("mul", OpCount(multiplications=8)),
    ]
    # every in-place op reads the version of y the one before it made
    assert _edges(g) == {
        ("input:x", "fc"),
        ("input:x", "add"),
        ("fc", "add"),
        ("add", "relu"),
        ("relu", "add@1"),
        ("add@1", "mul"),
        ("mul", "output:out"),
    }
    assert all(e.shape == "2x4" for e in g.edges())


class InPlaceModule(nn.Module):
    """An in-place leaf whose result is not assigned: the tensor it changed is read after it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.fc(x)
        self.act(y)
        return y - x


@PATHS
def test_an_in_place_module_hands_its_tensor_on(hooks):
    g = tracer.trace(InPlaceModule(), [(2, 4)], hooks=hooks)
    # y - x on 8 elements: 8 additions (subtraction counts as addition)
    assert g.block("sub").count == OpCount(additions=8)
    assert _edges(g) == {
        ("input:x", "fc"),
        ("fc", "act"),
        ("act", "sub"),
        ("input:x", "sub"),
        ("sub", "output:out"),
    }


# --- work outside every block -----------------------------------------------------------------


class Linear4(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x)


def _with_hooks_on_the_model() -> nn.Module:
    model = Linear4()
    model.register_forward_pre_hook(lambda module, args: (args[0] * 0.5,))  # input scaled
    model.register_forward_hook(lambda module, args, out: out.exp())  # output exponentiated
    return model


@PATHS
def test_work_in_hooks_on_the_model_is_in_the_outside_bucket(hooks):
    g = tracer.trace(_with_hooks_on_the_model(), [(2, 4)], hooks=hooks)
    # the pre-hook: 2x4 = 8 multiplications; the forward hook: 8 exponentials; in no block
    outside = g.outside()
    assert outside.calls() == {"aten.exp": 1, "aten.mul": 1}
    assert outside.count == OpCount(multiplications=8, exponentials=8)
    assert [b.name for b in g.blocks()] == ["fc"]
    assert g.block("fc").count == FC_2x4
    # the totals include it: 32 + 8 multiplications, 32 additions, 8 exponentials
    assert g.total() == OpCount(macs=32, multiplications=40, additions=32, exponentials=8)
    d = g.to_dict()
    assert d["totals"]["multiplications"] == 40
    assert d["outside"]["ops"] == {"aten.exp": 1, "aten.mul": 1}
    assert d["outside"]["counts"]["exponentials"] == 8
    # the dataflow is the forward's: its input and output as forward sees them
    assert _edges(g) == {("input:x", "fc"), ("fc", "output:out")}
    # kept at every depth
    assert g.by_block(1).outside() == outside
    assert g.by_block(1).total() == g.total()


def test_a_graph_with_nothing_outside_has_no_outside_key():
    g = tracer.trace(Linear4(), [(2, 4)])
    assert g.outside().is_empty() and g.outside().calls() == {}
    assert "outside" not in g.to_dict()
    assert g.total() == FC_2x4


# --- counts by phase --------------------------------------------------------------------------


def _unit(name: str, stack, forward: OpCount, **phases: OpCount) -> tracer.Unit:
    other = tuple((Phase(p), c) for p, c in phases.items())
    return tracer.Unit(name, "Linear", stack, forward, other_phases=other)


def test_counts_by_phase_group_and_report():
    enc = ("enc", "enc", "Encoder")
    a = _unit("enc.a", (enc, ("enc.a", "enc.a", "Linear")), OpCount(multiplications=10),
              backward=OpCount(multiplications=20), optimizer=OpCount(additions=3))  # fmt: skip
    b = _unit("enc.b", (enc, ("enc.b", "enc.b", "Linear")), OpCount(multiplications=5),
              backward=OpCount(multiplications=10))  # fmt: skip
    c = _unit("head", (("head", "head", "Linear"),), OpCount(additions=7))
    g = tracer.group((a, b, c), (), tracer.Precision.FP16, 1, {})
    enc_block = g.block("enc")
    # forward 10 + 5; backward 20 + 10; optimizer 3 (only a has it)
    assert enc_block.count == OpCount(multiplications=15)
    assert enc_block.counts() == {
        Phase.FORWARD: OpCount(multiplications=15),
        Phase.BACKWARD: OpCount(multiplications=30),
        Phase.OPTIMIZER: OpCount(additions=3),
    }
    assert g.block("head").counts() == {Phase.FORWARD: OpCount(additions=7)}
    assert g.phases() == (Phase.FORWARD, Phase.BACKWARD, Phase.OPTIMIZER)
    assert g.total() == OpCount(multiplications=15, additions=7)  # forward, as before
    assert g.total(Phase.BACKWARD) == OpCount(multiplications=30)
    assert g.total(Phase.RECOMPUTE) == OpCount()
    d = g.to_dict()
    assert d["totals_by_phase"]["backward"]["multiplications"] == 30
    assert d["totals_by_phase"]["optimizer"]["additions"] == 3
    blocks = {b["name"]: b for b in d["blocks"]}
    assert blocks["enc"]["phases"]["backward"]["multiplications"] == 30
    assert "phases" not in blocks["head"]  # a forward-only block's dict is as it was


def test_a_forward_only_graph_has_no_phase_keys():
    g = tracer.trace(Linear4(), [(2, 4)])
    assert g.phases() == (Phase.FORWARD,)
    assert all(u.counts() == {Phase.FORWARD: u.count} for u in g.units)
    d = g.to_dict()
    assert "totals_by_phase" not in d
    assert all("phases" not in b for b in d["blocks"])


# --- the staged API ---------------------------------------------------------------------------


@PATHS
def test_the_stages_give_what_trace_gives(hooks):
    model, inputs = InPlace(), tracer.as_inputs(InPlace(), [(2, 4)])
    with tracer.eval_mode(model):
        structure = tracer.trace_structure(model, inputs, hooks=hooks)
        assert structure.hooked is bool(hooks)
        record = tracer.counting_run(structure, model, inputs)
    leaf = tracer.build_units(record)
    staged = tracer.group(leaf.units, leaf.crossings, tracer.Precision.FP32, None, {})
    whole = tracer.trace(model, [(2, 4)], hooks=hooks)
    assert [(b.name, b.count, b.params) for b in staged.blocks(include_io=True)] == [
        (b.name, b.count, b.params) for b in whole.blocks(include_io=True)
    ]
    assert _edges(staged) == _edges(whole)
    # fc's weight 4x4 = 16 and bias 4: 20 parameters, all run
    assert sum(u.params for u in leaf.units) == 20 and leaf.params_not_run == 0


def _private_tracer_names(path: Path) -> list[str]:
    """Underscore names taken from flowprof.tracer or its modules in ``path``, and names taken
    from the package that are not in its ``__all__``."""
    tree = ast.parse(path.read_text(), str(path))
    tracer_aliases: set[str] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("flowprof.tracer"):
                    if any(part.startswith("_") for part in a.name.split(".")):
                        found.append(a.name)
                    if a.asname:
                        tracer_aliases.add(a.asname)
        elif isinstance(node, ast.ImportFrom) and node.module:
            module = node.module
            from_tracer = module == "flowprof" and any(a.name == "tracer" for a in node.names)
            if module.startswith("flowprof.tracer"):
                if any(part.startswith("_") for part in module.split(".")):
                    found.append(module)
                elif module != "flowprof.tracer" and module.split(".")[2] not in _PUBLIC_MODULES:
                    found.append(f"{module} (not public)")
                for a in node.names:
                    if a.name.startswith("_"):
                        found.append(f"{module}.{a.name}")
                    elif module == "flowprof.tracer" and not _public_in_package(a.name):
                        found.append(f"{module}.{a.name} (not in __all__)")
                    tracer_aliases.add(a.asname or a.name)
            elif from_tracer:
                tracer_aliases.update(a.asname or a.name for a in node.names if a.name == "tracer")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in tracer_aliases
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append(f"{node.value.id}.{node.attr}")
    return found


# the tracer's modules a user may import (registering a formula, timing blocks, the records);
# the others (fx_trace, hook_trace, units, stages, measure, meta_shapes, blocks) are reached
# through the package's public names
_PUBLIC_MODULES = {"counts", "formulas", "graph", "hooks"}


def _public_in_package(name: str) -> bool:
    return name in tracer.__all__ or name in _PUBLIC_MODULES


def test_nothing_outside_the_tracer_uses_a_private_tracer_name():
    files = [ROOT / "cli.py", *sorted((ROOT / "bench").glob("*.py"))]
    files += [p for p in sorted((ROOT / "flowprof").rglob("*.py")) if "tracer" not in p.parts]
    assert len(files) > 20
    offences = {
        str(p.relative_to(ROOT)): names for p in files if (names := _private_tracer_names(p))
    }
    assert offences == {}


def test_the_private_name_check_catches_what_it_should(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from flowprof import tracer\n"
        "from flowprof.tracer import fx_trace, trace\n"
        "from flowprof.tracer.fx_trace import _Tracer\n"
        "tracer._gc_paused()\n"
    )
    assert _private_tracer_names(bad) == [
        "flowprof.tracer.fx_trace (not in __all__)",
        "flowprof.tracer.fx_trace (not public)",
        "flowprof.tracer.fx_trace._Tracer",
        "tracer._gc_paused",
    ]

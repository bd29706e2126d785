"""The laws the report states, derived by flowprof.formula (issue 18): Problem 3(b)'s
bits-versus-emb law checked at a sweep's traced points, and Problem 2(d)'s f derived from traces
of each LeNet convolution and its twin. Expected expressions are derived by hand below."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
import sympy
from torch import nn

import flowprof
from flowprof.analyses import comm_sweep, dws_derived, op_compare
from flowprof.analyses.dws_mapping import Biases, Quantity
from flowprof.analyses.formula import symbol
from flowprof.errors import BadSpecError
from flowprof.models.registry import BuiltModel, InputSpec

E = symbol("emb")
X, C_IN, C_OUT = dws_derived.X, dws_derived.C_IN, dws_derived.C_OUT


def test_bits_versus_emb_law_checked_at_the_sweeps_points():
    sw = comm_sweep.sweep("transformer", emb=[64, 200, 512], heads=8, dtype="fp16")
    law = comm_sweep.law(sw)
    assert law.held == {"seq_len": 128} and law.variable == "emb"
    # Weights: parameters 28E^2 + 32E (test_formula's hand derivation) at 16 bits.
    assert sympy.expand(law.weights - 16 * (28 * E**2 + 32 * E)) == 0
    # Activations at T = 128 (leaf blocks, post-norm, one encoder and one decoder layer, batch 1,
    # H = 8 heads, F = 4E, S = T), edges by family (comm_sweep's module doc), in elements:
    # T x E edges: model input 2, model output 1, residual stream 8 + 11, encoder memory 2,
    # sublayer output 2 + 3, Q/K/V 3 + 4 + 2, attention context 1 + 2: 41 TE; feed-forward
    # hidden 2 + 2 edges of T x 4E: 16 TE. 57 TE elements at 16 bits: 912 T E.
    # T x T edges: scores 2 + 3 + 2 and attention weights 1 + 1 + 1, each H T^2 = 8 T^2:
    # 80 T^2 elements at 16 bits = 1280 T^2; the causal mask T^2 bools at 8 bits: 1288 T^2.
    assert sympy.expand(law.activations - (912 * 128 * E + 1288 * 128**2)) == 0
    assert law.checked == 3 and law.mismatches == () and law.agrees
    # the families' laws add up to the activation law; scores do not grow with emb:
    # (2 + 3 + 2) edges x H T^2 = 7 x 8 x 128^2 elements x 16 bits
    assert sympy.expand(sum(law.families.values()) - law.activations) == 0
    assert law.families["attention scores"] == 7 * 8 * 128**2 * 16


def test_the_law_reports_a_point_that_disagrees():
    sw = comm_sweep.sweep("transformer", emb=[64, 128], heads=8, dtype="fp16")
    p = sw.points[1]
    wrong = comm_sweep.Amount(p.families[0].name, 1, p.families[0].bits + 16)
    bad = comm_sweep.Sweep(
        sw.model,
        sw.variable,
        sw.depth,
        sw.dtype,
        sw.bits_per_element,
        sw.options,
        (
            sw.points[0],
            comm_sweep.SweepPoint(
                p.value,
                p.config,
                (wrong, *p.families[1:]),
                p.weights,
                p.blocks,
                p.edges,
                p.distinct_bits,
            ),
        ),
    )
    law = comm_sweep.law(bad)
    assert not law.agrees
    assert law.mismatches[0].startswith("emb 128: activations: law ")


@pytest.fixture(scope="module")
def derivation():
    return dws_derived.derive(op_compare.compare("lenet5", "lenet5-dws", depth=1))


def test_problem_2d_f_derived_for_each_lenet_convolution(derivation):
    layers = {d.layer: d for d in derivation.layers}
    assert sorted(layers) == ["c1", "c3", "c5"]
    assert derivation.agree and all(f.agree for f in derivation.checks())
    # In the batch: y = x (C_in/M + 1/K) multiplications with K = 25 taps (5x5):
    # c1: C_in 1, M 6: 1/6 + 1/25 = 31/150; c3: C_in 6, M 60 (Table I): 1/10 + 1/25 = 7/50;
    # c5: C_in 16, M 1920: 1/120 + 1/25 = 29/600.
    expected = {"c1": Fraction(31, 150), "c3": Fraction(7, 50), "c5": Fraction(29, 600)}
    for name, c in expected.items():
        mul = next(f for f in layers[name].in_batch if f.quantity is Quantity.MUL)
        assert sympy.cancel(mul.derived / X) == sympy.Rational(c.numerator, c.denominator)
    # In the channels (dense c1, c5; c3's table is fixed): regular P*K*C_in*C_out mult.,
    # twin P*K*C_in (depthwise) + P*C_in*C_out (pointwise): y/x = 1/C_out + 1/25.
    # Additions with the regular and pointwise biases (lenet5-dws): regular P*K*C_in*C_out
    # (K*C_in - 1 per dot product + 1 bias), twin P*C_in*(K-1) + P*C_in*C_out:
    # y/x = (24 + C_out) / (25 C_out).
    assert layers["c3"].in_channels == ()
    for name in ("c1", "c5"):
        fs = {f.quantity: f.derived for f in layers[name].in_channels}
        assert sympy.cancel(fs[Quantity.MUL] - X * (1 / C_OUT + sympy.Rational(1, 25))) == 0
        assert sympy.cancel(fs[Quantity.ADD] - X * (24 + C_OUT) / (25 * C_OUT)) == 0


def test_a_wrong_hand_f_is_found_to_disagree(derivation):
    c1 = next(d for d in derivation.layers if d.layer == "c1")
    add = next(f for f in c1.in_channels if f.quantity is Quantity.ADD)
    # the hand f of a layer with no biases is a different function of C_in and C_out
    other = dws_derived.hand_f(Quantity.ADD, Biases(False, False, False), 25, {}, dense=True)
    assert sympy.cancel(sympy.together(add.derived - other)) != 0


# --- the sweep evaluates the formula -------------------------------------------------------------

EMBS = [64, 128, 200, 256, 400, 512, 1000, 2048]


@pytest.fixture(scope="module")
def formula_sweep():
    return comm_sweep.sweep(emb=EMBS, seq_len=16)


def test_sweep_from_one_formula_equals_hand_counts_and_traces(formula_sweep):
    sw = formula_sweep
    assert sw.method == "formula" and sw.values == EMBS
    # fitted on emb 8, 16, 24 (a quadratic, emb a multiple of the 8 heads), checked at the
    # largest, the middle and the smallest of the sweep's points: 6 traces for 8 points
    assert sw.checked_at == (64, 400, 2048) and sw.traces == 6
    assert "checked by tracing at emb 64, 400, 2048: equal" in sw.method_note
    p = sw.points[EMBS.index(1000)]  # evaluated, never traced by the sweep
    # weights 16 (28E^2 + 32E) at E = 1000: 16 x 28,032,000 = 448,512,000
    assert p.weight_bits == 448_512_000
    # activations 912 T E + 1288 T^2 (test above) at T = 16, E = 1000:
    # 14,592,000 + 329,728 = 14,921,728
    assert p.activation_bits == 14_921_728
    # the encoder's feed-forward hidden edge: 1 x T x 4E = 1x16x4000, 64,000 elements x 16 bits
    hidden = [e for e in p.edges if e.src == "encoder.layers.0.ffn.linear1"]
    assert [(e.shape, e.bits) for e in hidden] == [("1x16x4000", 1_024_000)]
    # and the whole point equals a concrete trace of that configuration
    traced = comm_sweep.sweep(emb=[1000], seq_len=16, method="trace")
    assert traced.method == "traced" and traced.points[0].to_dict() == p.to_dict()
    g = flowprof.trace("transformer", emb=1000, seq_len=16, dtype="fp16")
    assert sum(e.bits for e in g.edges()) == p.activation_bits
    assert sum(b.param_bits for b in g.blocks()) == p.weight_bits
    assert sw.mismatches() == []  # and the hand closed forms at every point


class Halving(nn.Module):
    """A linear layer on (1, seq_len, emb), then the mean of each pair of tokens (the last one
    alone when seq_len is odd): ceil(seq_len / 2) outputs, not a polynomial in seq_len."""

    def __init__(self, emb: int = 8) -> None:
        super().__init__()
        self.proj = nn.Linear(emb, emb)
        self.pool = nn.AvgPool1d(2, ceil_mode=True)

    def forward(self, x):  # (1, T, E)
        return self.pool(self.proj(x).transpose(1, 2))  # (1, E, ceil(T / 2))


def halving(emb: int = 8, seq_len: int = 8) -> BuiltModel:
    return BuiltModel("halving", Halving(emb), (InputSpec("x", (1, seq_len, emb)),), {})


def test_sweep_traces_each_point_when_not_polynomial():
    spec = "tests.test_formula_laws:halving"
    sw = comm_sweep.sweep(spec, seq_len=[8, 9, 10, 11, 12], emb=8)
    assert sw.method == "traced"
    assert "not polynomial in seq_len" in sw.method_note, sw.method_note
    # the pool's output: 1 x E x ceil(T/2) at 16 bits, E = 8: ceil(9/2) = 5 -> 640 bits
    out = [e for e in sw.points[1].edges if e.dst.startswith("output")]
    assert [(e.shape, e.bits) for e in out] == [("1x8x5", 8 * 5 * 16)]
    with pytest.raises(BadSpecError, match="no formula for this sweep"):
        comm_sweep.sweep(spec, seq_len=[8, 9, 10, 11, 12], emb=8, method="formula")
    # in emb the same model is polynomial: its sweep comes from the formula (built, not traced,
    # for its configuration), equal to tracing each point
    by_emb = comm_sweep.sweep(spec, emb=[4, 8, 12, 16, 20], seq_len=9)
    assert by_emb.method == "formula"
    each = comm_sweep.sweep(spec, emb=[4, 8, 12, 16, 20], seq_len=9, method="trace")
    assert by_emb.to_dict() == each.to_dict()
    # its law (in emb alone: a user's model): weights of Linear(E, E), E^2 + E at 16 bits
    law = comm_sweep.law(each)
    assert law.held == {} and law.agrees and law.checked == 5
    assert sympy.expand(law.weights - 16 * (E**2 + E)) == 0


def test_few_points_are_traced_and_the_cli_says_how(capsys):
    from flowprof.cli.main import main

    sw = comm_sweep.sweep(emb=[64, 128], seq_len=8)
    assert sw.method == "traced" and "fewer points than the 4 traces" in sw.method_note
    args = ["sweep", "transformer", "--emb", "64,128,256,512", "--seq-len", "8,16,24,32"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "emb sweep: evaluated from one formula in emb fitted on 6 traces" in out
    assert "seq_len sweep: evaluated from one formula in seq" in out
    assert main([*args, "--trace-each", "--format", "json"]) == 0
    each = json.loads(capsys.readouterr().out)
    auto = comm_sweep.sweep(emb=[64, 128, 256, 512], seq_len=8)
    assert auto.method == "formula" and each[0] == json.loads(json.dumps(auto.to_dict()))

"""The laws the report states, derived by flowprof.formula (issue 18): Problem 3(b)'s
bits-versus-emb law checked at a sweep's traced points, and Problem 2(d)'s f derived from traces
of each LeNet convolution and its twin. Expected expressions are derived by hand below."""

from __future__ import annotations

from fractions import Fraction

import pytest
import sympy

from flowprof.analyses import comm_sweep, dws_derived, op_compare
from flowprof.analyses.dws_mapping import Biases, Quantity
from flowprof.analyses.formula import symbol

E, T = symbol("emb"), symbol("seq")
X, C_IN, C_OUT = dws_derived.X, dws_derived.C_IN, dws_derived.C_OUT


def test_bits_versus_emb_law_checked_at_the_sweeps_points():
    sw = comm_sweep.sweep("transformer", emb=[64, 200, 512], heads=8, dtype="fp16")
    law = comm_sweep.law(sw)
    assert law.at == {"seq": 128} and law.variable == "emb"
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
    assert sympy.expand(law.formula.activation_bits - (912 * E * T + 1288 * T**2)) == 0
    assert law.checked == 3 and law.mismatches == () and law.agrees
    # the families' laws add up to the activation law
    assert sympy.expand(sum(law.families.values()) - law.activations) == 0


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

"""Tests of analyses/dws_mapping.py: f worked by hand, then checked against traced counts on a
thousand random layers (hypothesis), the tracer being the oracle of what the layers compute."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from flowprof.analyses import dws_mapping
from flowprof.analyses.dws_mapping import (
    Biases,
    BiasMode,
    Quantity,
    coefficient,
    derivation,
    f,
    formula_text,
    regular_counts,
    separable_counts,
)
from flowprof.tracer import trace

# --------------------------------------------------------------------------- by hand


def test_lenet5_c1_by_hand() -> None:
    # C1: 1 input map, 6 output maps, 5x5 kernel, 28x28 outputs, regular conv with bias.
    # x_mul = 28*28 * 6 * 25 = 117600;  x_add = 28*28*6*(25 - 1) + 28*28*6 = 117600.
    x = regular_counts(1, 6, 25, 28 * 28, bias=True)
    assert (x.multiplications, x.additions) == (117600, 117600)
    # Depthwise 1 map: 784*25 = 19600 mults, 784*24 = 18816 adds (no bias).
    # Pointwise 1 -> 6: 784*6*1 = 4704 mults, 784*6*0 + 4704 (bias) = 4704 adds.
    y = separable_counts(1, 6, 25, 28 * 28, biases=BiasMode.POINTWISE)
    assert (y.multiplications, y.additions) == (19600 + 4704, 18816 + 4704)
    # f_mul = x*(1/6 + 1/25): 117600/6 + 117600/25 = 19600 + 4704.
    assert f(117600, Quantity.MUL, 1, 6, 25) == 19600 + 4704
    # f_add (regular and pointwise biases) = x*(C_in*(K-1) + M)/(K*M) = x*(24 + 6)/(25*6).
    assert f(117600, Quantity.ADD, 1, 6, 25, biases=BiasMode.POINTWISE) == 117600 * 30 // 150


def test_lenet5_c3_partial_table_by_hand() -> None:
    # C3 (Table I): 6 maps of 3 inputs, 9 of 4, 1 of 6: M = 18 + 36 + 6 = 60 connections.
    # Regular: 10*10 positions * 25 taps * 60 = 150000 mults; adds with bias the same 150000.
    x = regular_counts(6, 16, 25, 100, connections=60, bias=True)
    assert (x.multiplications, x.additions) == (150000, 150000)
    # Depthwise on the 6 S2 maps: 100*6*25 = 15000 mults, 100*6*24 = 14400 adds.
    # Pointwise keeping the table: 100*60 = 6000 mults, 100*(60 - 16) + 1600 = 6000 adds.
    y = separable_counts(6, 16, 25, 100, connections=60, biases=BiasMode.POINTWISE)
    assert (y.multiplications, y.additions) == (15000 + 6000, 14400 + 6000)
    # f_mul = x*(C_in/M + 1/K) = 150000*(6/60 + 1/25) = 15000 + 6000 = 21000.
    assert coefficient(Quantity.MUL, 6, 16, 25, 60) == Fraction(6, 60) + Fraction(1, 25)
    assert f(150000, Quantity.MUL, 6, 16, 25, 60) == 21000
    # Dense f would say 150000*(1/16 + 1/25): not C3's replacement.
    assert f(150000, Quantity.MUL, 6, 16, 25) != 21000


def test_dense_coefficients_are_the_textbook_ones() -> None:
    for c_in, c_out, k in ((3, 8, 9), (16, 32, 25), (1, 1, 4)):
        assert coefficient("multiplications", c_in, c_out, k) == Fraction(1, c_out) + Fraction(1, k)
        # With all three biases every quantity has the multiplications' factor.
        for q in Quantity:
            assert coefficient(q, c_in, c_out, k, biases=BiasMode.ALL) == Fraction(
                1, c_out
            ) + Fraction(1, k)
        # No biases: (C_in*(K-1) + C_out*(C_in-1)) / (C_out*(C_in*K - 1)).
        if c_in * k > 1:
            expected = Fraction(c_in * (k - 1) + c_out * (c_in - 1), c_out * (c_in * k - 1))
            assert coefficient("additions", c_in, c_out, k, biases="none") == expected


def test_f_undefined_when_regular_layer_adds_nothing() -> None:
    # 1 input map, 1x1 kernel, no bias: every output is one product, no addition at all.
    assert regular_counts(1, 4, 1, 10, bias=False).additions == 0
    assert f(0, Quantity.ADD, 1, 4, 1, biases=BiasMode.NONE) is None


def test_formula_text_agrees_with_coefficient() -> None:
    # Evaluate the text with numbers substituted: it must give the same coefficient.
    values = {"C_in": 6, "C_out": 16, "K": 25, "M": 60}
    for q in Quantity:
        for mode in BiasMode:
            text = formula_text(q, mode)
            for name, value in values.items():
                text = text.replace(name, f"Fraction({value})")
            assert eval(text.replace("x", "Fraction(1)")) == coefficient(q, 6, 16, 25, 60, mode)


def test_bad_connections_rejected() -> None:
    with pytest.raises(ValueError, match="connections"):
        regular_counts(3, 4, 9, 1, connections=13)  # more than 3*4


def test_derivation_lines() -> None:
    text, latex = derivation("text"), derivation("latex")
    assert len(text) == len(latex) >= 10
    assert any("x*(1/C_out + 1/K)" in line for line in text)
    assert any(r"\frac{1}{C_{out}}" in line for line in latex)
    with pytest.raises(ValueError):
        derivation("html")


# --------------------------------------------------------------------------- against the tracer


class RegularAndSeparable(nn.Module):
    """A regular convolution and its depthwise-separable replacement, side by side."""

    def __init__(self, c_in, c_out, kernel, stride, padding, dilation, biases: Biases) -> None:
        super().__init__()
        common = {"stride": stride, "padding": padding, "dilation": dilation}
        self.regular = nn.Conv2d(c_in, c_out, kernel, bias=biases.regular, **common)
        self.depthwise = nn.Conv2d(c_in, c_in, kernel, groups=c_in, bias=biases.depthwise, **common)
        self.pointwise = nn.Conv2d(c_in, c_out, 1, bias=biases.pointwise)

    def forward(self, x):
        return self.regular(x), self.pointwise(self.depthwise(x))


def _out(n: int, k: int, s: int, p: int, d: int) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


@st.composite
def layers(draw):
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    # The smallest input each axis needs for at least one output position.
    min_h = max(1, dilation[0] * (kh - 1) + 1 - 2 * padding[0])
    min_w = max(1, dilation[1] * (kw - 1) + 1 - 2 * padding[1])
    return {
        "c_in": draw(st.integers(1, 8)),
        "c_out": draw(st.integers(1, 8)),
        "kernel": (kh, kw),
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
        "input": (
            draw(st.integers(1, 2)),
            draw(st.integers(min_h, min_h + 9)),
            draw(st.integers(min_w, min_w + 9)),
        ),
        "biases": Biases(draw(st.booleans()), draw(st.booleans()), draw(st.booleans())),
    }


@settings(max_examples=1000, deadline=None)
@given(layers())
def test_f_matches_traced_counts(layer) -> None:
    c_in, c_out, biases = layer["c_in"], layer["c_out"], layer["biases"]
    batch, h, w = layer["input"]
    with torch.device("meta"):
        model = RegularAndSeparable(
            c_in,
            c_out,
            layer["kernel"],
            layer["stride"],
            layer["padding"],
            layer["dilation"],
            biases,
        )
    graph = trace(model, [(batch, c_in, h, w)])
    counts = {b.name: b.count for b in graph.blocks()}
    x = counts["regular"]
    y = counts["depthwise"] + counts["pointwise"]

    k = math.prod(layer["kernel"])
    ho = _out(h, layer["kernel"][0], layer["stride"][0], layer["padding"][0], layer["dilation"][0])
    wo = _out(w, layer["kernel"][1], layer["stride"][1], layer["padding"][1], layer["dilation"][1])
    positions = batch * ho * wo
    # The closed forms of the layer's parameters agree with the tracer on x and y...
    assert regular_counts(c_in, c_out, k, positions, bias=biases.regular) == dws_mapping.Ops(
        x.multiplications, x.additions
    )
    assert separable_counts(c_in, c_out, k, positions, biases=biases) == dws_mapping.Ops(
        y.multiplications, y.additions
    )
    # ... and f maps the traced x to the traced y, exactly, without knowing the output size.
    for q, xq, yq in (
        (Quantity.MUL, x.multiplications, y.multiplications),
        (Quantity.ADD, x.additions, y.additions),
        (Quantity.SUM, x.multiplications + x.additions, y.multiplications + y.additions),
    ):
        predicted = f(xq, q, c_in, c_out, k, biases=biases)
        if predicted is None:  # the regular layer does no additions: x = 0 carries no P
            assert q is Quantity.ADD and xq == 0
        else:
            assert predicted == yq, (q, xq, yq, predicted)

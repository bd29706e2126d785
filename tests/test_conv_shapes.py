"""Tests of analyses/conv_shapes.py: docs/assignment.md Problem 1 worked by hand, torch as
oracle."""

from __future__ import annotations

import json
import subprocess
import sys
from itertools import product

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from torch import nn

from flowprof.analyses import conv_shapes
from flowprof.analyses.conv_shapes import (
    BadSpecError,
    LayerKind,
    LayerSpec,
    Shape,
    SolveBounds,
    TorchMismatchError,
    output_shape,
    parse_kernel,
    parse_layer,
    parse_shape,
    propagate,
    solve_conv,
)
from flowprof.reports.conv_tables import explanation_table, shape_table, solutions_table

# --------------------------------------------------------------------------- Problem 1b


def test_problem_1b_by_hand() -> None:
    steps = propagate("13x15x3", ["conv:7@4x6", "conv:8@3x4/s2/p1", "maxpool:2x2"])
    first, second, pool = steps

    # 7 filters 4x6, stride 1, no padding: n - k + 1 per axis.
    # H: 13 - 4 + 1 = 10;  W: 15 - 6 + 1 = 10;  C: 7 filters.
    assert first.output == Shape(10, 10, 7)
    assert first.height_formula == "H = floor((13 + 2*0 - 1*(4-1) - 1)/1) + 1 = 10"
    assert first.width_formula == "W = floor((15 + 2*0 - 1*(6-1) - 1)/1) + 1 = 10"
    # Weight (C_out, C_in, kh, kw) = (7, 3, 4, 6): 7*3*4*6 = 504 weights + 7 biases = 511.
    assert first.weight_shape == (7, 3, 4, 6)
    assert first.params == 511

    # 8 filters 3x4, stride 2, padding 1: floor((n + 2 - k)/2) + 1.
    # H: floor((10 + 2 - 3)/2) + 1 = floor(9/2) + 1 = 4 + 1 = 5
    # W: floor((10 + 2 - 4)/2) + 1 = floor(8/2) + 1 = 4 + 1 = 5
    assert second.output == Shape(5, 5, 8)
    assert second.height_formula == "H = floor((10 + 2*1 - 1*(3-1) - 1)/2) + 1 = 5"
    assert second.width_formula == "W = floor((10 + 2*1 - 1*(4-1) - 1)/2) + 1 = 5"
    # (8, 7, 3, 4): 8*7*3*4 = 672 weights + 8 biases = 680.
    assert second.weight_shape == (8, 7, 3, 4)
    assert second.params == 680

    # Max-pool 2x2, stride defaults to the kernel (2): floor((5 - 2)/2) + 1 = 1 + 1 = 2.
    assert pool.output == Shape(2, 2, 8)
    assert pool.height_formula == "H = floor((5 + 2*0 - 1*(2-1) - 1)/2) + 1 = 2"
    assert pool.layer.stride == (2, 2)
    assert (pool.weight_shape, pool.params) == (None, 0)

    # The final answer of Problem 1b: 2x2x8.
    assert str(steps[-1].output) == "2x2x8"


def test_propagate_accepts_parsed_specs_and_chains_shapes() -> None:
    specs = [parse_layer("conv:4@3x3/p1"), parse_layer("avgpool:2x2")]
    steps = propagate(Shape(6, 6, 1), specs)
    assert [str(step.output) for step in steps] == ["6x6x4", "3x3x4"]
    assert steps[1].input == steps[0].output


def test_transposed_and_avgpool_formulas() -> None:
    # convT 4 filters 3x3, stride 2, padding 1, output padding 1 on 5x5x8:
    # (5-1)*2 - 2*1 + 1*(3-1) + 1 + 1 = 8 - 2 + 2 + 1 + 1 = 10.
    (step,) = propagate("5x5x8", ["convT:4@3x3/s2/p1/op1"])
    assert step.output == Shape(10, 10, 4)
    assert step.height_formula == "H = (5-1)*2 - 2*1 + 1*(3-1) + 1 + 1 = 10"
    # Transposed layout (C_in, C_out/groups, kh, kw) = (8, 4, 3, 3): 288 + 4 biases.
    assert step.weight_shape == (8, 4, 3, 3)
    assert step.params == 292
    # avgpool 3x3 stride 2 on 7x7: floor((7 - 3)/2) + 1 = 3.
    (pool,) = propagate("7x7x2", ["avgpool:3x3/s2"])
    assert pool.output == Shape(3, 3, 2)
    assert pool.height_formula == "H = floor((7 + 2*0 - 3)/2) + 1 = 3"


def test_groups_weight_shape() -> None:
    # 8 -> 6 channels in 2 groups: each filter sees 8/2 = 4 channels: (6, 4, 3, 3).
    (step,) = propagate("5x5x8", ["conv:6@3x3/g2/nobias"])
    assert step.weight_shape == (6, 4, 3, 3)
    assert step.params == 6 * 4 * 3 * 3  # no bias


# --------------------------------------------------------------------------- Problem 1a


def _configs(solutions: conv_shapes.Solutions) -> set[tuple]:
    """(transposed, k, s, p, d, op) of square, axis-symmetric solutions."""
    found = set()
    for step in solutions:
        layer = step.layer
        assert len({layer.kernel, (layer.kernel[0],) * 2}) == 1, layer
        found.add(
            (
                layer.transposed,
                layer.kernel[0],
                layer.stride[0],
                layer.padding[0],
                layer.dilation[0],
                layer.output_padding[0],
            )
        )
    return found


def test_problem_1a_two_configurations() -> None:
    solutions = solve_conv("8x8x5", "5x5x3")
    first = solutions.configs[0]
    # Plain conv: 8 - k + 1 = 5 gives k = 4; weight (C_out, C_in, kh, kw) = (3, 5, 4, 4).
    assert str(first.layer) == "conv:3@4x4"
    assert first.weight_shape == (3, 5, 4, 4)
    assert first.params == 3 * 5 * 4 * 4 + 3  # 243
    # A second one: 3x3, stride 2, padding 2: floor((8 + 4 - 2 - 1)/2) + 1 = 4 + 1 = 5.
    second = next(step for step in solutions if str(step.layer) == "conv:3@3x3/s2/p2")
    assert second.weight_shape == (3, 5, 3, 3)
    assert second.output == Shape(5, 5, 3)


def test_problem_1a_kernel_3x3_exactly() -> None:
    # Conv per axis: floor((8 + 2p - 2d - 1)/s) + 1 = 5  <=>  4s <= 7 + 2p - 2d <= 5s - 1.
    #   s=1: 2d - 2p = 3, odd: impossible.
    #   s=2: 2d - 2p in [-2, -1] -> d = p - 1: (p=2, d=1), (p=3, d=2); (p=4, d=3) is out.
    #   s=3: 2d - 2p in [-7, -5] -> p = d + 3 >= 4: out.   s=4: p >= d + 5: out.
    # Transposed: 7s - 2p + 2d + op + 1 = 5. s=1: 2p - 2d - op = 3, op odd, so op = 1 with
    #   d >= 2 (op < max(s, d)), then p = d + 2 >= 4: out. s >= 2: p >= 6: out.
    solutions = solve_conv("8x8x5", "5x5x3", kernel=(3, 3))
    assert _configs(solutions) == {(False, 3, 2, 2, 1, 0), (False, 3, 2, 3, 2, 0)}
    assert solutions.possible
    assert solutions.explanation[0].startswith("Kernel 3x3: yes, 2 configuration(s)")
    text = "\n".join(solutions.explanation)
    assert "8 - 3 + 1 = 6, not 5" in text
    assert "stride 1: floor((8 + 2p - d*(3-1) - 1)/1) + 1 = 5 needs 2*d - 2*p = 3" in text
    assert "always even" in text
    assert "p=2, d=1; p=3, d=2" in text


def test_problem_1a_kernel_2x2_exactly() -> None:
    # Conv per axis: 4s <= 7 + 2p - d <= 5s - 1.
    #   s=1: d - 2p = 3: (p=0, d=3); (p=1, d=5) is out.
    #   s=2: d - 2p in [-2, -1]: (p=1, d=1), (p=2, d=2), (p=2, d=3); p=3 needs d >= 4.
    #   s=3: d - 2p in [-7, -5]: only (p=3, d=1), but then padding 3 > d*(k-1) = 1: the
    #        first output's window [-3, -2] sees only padding, so it is excluded.
    #   s=4: d - 2p in [-12, -9]: p >= 5: out.
    # Transposed: 7s - 2p + d + op + 1 = 5.  s=1: 2p - d - op = 3 with op < max(1, d):
    #   d=1: p=2, but 2 > d*(k-1) = 1; d=2: op=1, p=3 > 2; d=3: op=0, p=3 <= 3: yes.
    solutions = solve_conv("8x8x5", "5x5x3", kernel="2x2")
    assert _configs(solutions) == {
        (False, 2, 1, 0, 3, 0),
        (False, 2, 2, 1, 1, 0),
        (False, 2, 2, 2, 2, 0),
        (False, 2, 2, 2, 3, 0),
        (True, 2, 1, 3, 3, 0),
    }
    # Simplest first: the dilated 2x2 (a 4x4 footprint) at stride 1, no padding.
    assert str(solutions.configs[0].layer) == "conv:3@2x2/d3"
    assert solutions.configs[0].weight_shape == (3, 5, 2, 2)
    assert solutions.configs[-1].weight_shape == (5, 3, 2, 2)  # transposed layout
    assert "8 - 2 + 1 = 7, not 5" in "\n".join(solutions.explanation)

    # Without the padding rule the stride-3 window that sees only padding comes back.
    loose = solve_conv(
        "8x8x5", "5x5x3", kernel=(2, 2), bounds=SolveBounds(padding_within_kernel=False)
    )
    assert (False, 2, 3, 3, 1, 0) in _configs(loose)


def test_problem_1a_all_configurations_count() -> None:
    # Per axis 8 -> 5, conv, with e = d*(k-1) and 4s <= 7 + 2p - e <= 5s - 1, p <= e:
    #   s=1, e = 3 + 2p: p0: k4 | k2d3;  p1: k6;  p2: k8;  p3: k10 | k4d3      (6 fits)
    #   s=2, e in [2p-2, 2p-1]: p1: k2;  p2: k3 | k2d2 | k4 | k2d3;  p3: k5 | k3d2 | k6
    #   s=3, 4: nothing with p <= e.
    # Same (s, p, d) on both axes: kernels pair up within a group. Groups with two kernels,
    # (s2, p2, d1): {3, 4} and (s2, p3, d1): {5, 6}, give 4 each; ten groups give 1 each:
    # 4 + 4 + 10 = 18 convolutions. Transposed, s=1, 2p - op - e = 3 with p <= e forces
    # p=3, op=0, e=3: k4 or k2d3: 2 more. Channels 5 and 3 allow only groups=1. Total 20.
    solutions = solve_conv("8x8x5", "5x5x3")
    assert len(solutions) == 20
    assert sum(step.layer.transposed for step in solutions) == 2
    assert (
        "square kernels among them: 2x2, 3x3, 4x4, 5x5, 6x6, 8x8, 10x10"
        in (solutions.explanation[-1])
    )
    for step in solutions:
        assert step.output == Shape(5, 5, 3)


def test_kernel_that_cannot() -> None:
    # 7x7 on 8 -> 5: s=1 needs 6d - 2p = 3 (odd: impossible); s=2 needs 6d - 2p in [-2, -1]
    # so p >= 4 (p = 3d + 1): out of bounds. Transposed needs 2p >= 7s - 4 + 6d: p >= 5.
    solutions = solve_conv("8x8x5", "5x5x3", kernel=(7, 7))
    assert not solutions.possible
    assert solutions.explanation[0] == "Kernel 7x7: no configuration within the bounds."
    assert "nearest p=4, d=1 breaks padding 4 > 3" in "\n".join(solutions.explanation)


def test_groups_and_per_axis() -> None:
    # Channels 4 -> 8: groups 1, 2, 4 divide both.
    solutions = solve_conv("8x8x4", "5x5x8", kernel=(4, 4), bounds=SolveBounds(transposed=False))
    plain = {
        step.layer.groups: step.weight_shape for step in solutions if step.layer.stride == (1, 1)
    }
    assert plain[1] == (8, 4, 4, 4)
    assert plain[2] == (8, 2, 4, 4)
    assert plain[4] == (8, 1, 4, 4)
    ungrouped = solve_conv("8x8x4", "5x5x8", bounds=SolveBounds(max_groups=1))
    assert {step.layer.groups for step in ungrouped} == {1}

    # 8x16 -> 4x4 with a 3x3 kernel: the height wants stride <= 3, the width stride >= 3
    # without padding/dilation beyond the bounds; only per-axis settings meet both.
    shared = solve_conv("8x16x1", "4x4x1", kernel=(3, 3))
    assert not shared.possible
    assert "per_axis=True" in shared.explanation[-1]
    per_axis = solve_conv("8x16x1", "4x4x1", kernel=(3, 3), bounds=SolveBounds(per_axis=True))
    assert per_axis.possible
    assert all(step.output == Shape(4, 4, 1) for step in per_axis)


def _brute_force(n: int, m: int, bounds: SolveBounds) -> set[tuple]:
    """Every 1-axis (transposed, k, s, p, d, op) by trying all kernels, from the textbook
    formulas written out again here, independently of the module."""
    found = set()
    for s, p, d, k in product(
        range(1, bounds.max_stride + 1),
        range(bounds.max_padding + 1),
        range(1, bounds.max_dilation + 1),
        range(1, 40),
    ):
        if (k == 1 and d > 1) or p > d * (k - 1):
            continue
        if n + 2 * p >= d * (k - 1) + 1 and (n + 2 * p - d * (k - 1) - 1) // s + 1 == m:
            found.add((False, k, s, p, d, 0))
        for op in range(max(s, d)):
            if (n - 1) * s - 2 * p + d * (k - 1) + op + 1 == m:
                found.add((True, k, s, p, d, op))
    return found


@pytest.mark.parametrize(("n", "m"), [(8, 5), (5, 3), (4, 9), (7, 7), (3, 1), (1, 4)])
def test_solver_is_complete_against_brute_force(n: int, m: int) -> None:
    bounds = SolveBounds(max_stride=3, max_padding=2, max_dilation=2, max_groups=1)
    solutions = solve_conv(Shape(n, 1, 2), Shape(m, 1, 3), bounds=bounds)
    # Stride, padding and dilation are shared by both axes, so the solver's height settings
    # are the brute-force height fits whose settings also fit some width kernel (1 -> 1).
    heights = {
        (
            step.layer.transposed,
            step.layer.kernel[0],
            step.layer.stride[0],
            step.layer.padding[0],
            step.layer.dilation[0],
            step.layer.output_padding[0],
        )
        for step in solutions
    }
    width_ok = _brute_force(1, 1, bounds)
    expected = {
        fit
        for fit in _brute_force(n, m, bounds)
        if any(
            w[0] == fit[0] and w[2:] == fit[2:] for w in width_ok
        )  # same kind, stride, padding, dilation, output padding on the width axis
    }
    assert heights == expected


# --------------------------------------------------------------------------- torch as oracle


def _torch_shape(layer: LayerSpec, shape: Shape) -> Shape:
    """What torch itself says, on CPU with a real tensor, as a user would hit it."""
    if layer.kind is LayerKind.MAXPOOL:
        module = nn.MaxPool2d(layer.kernel, layer.stride, layer.padding, layer.dilation)
    elif layer.kind is LayerKind.AVGPOOL:
        module = nn.AvgPool2d(layer.kernel, layer.stride, layer.padding)
    else:
        cls = nn.ConvTranspose2d if layer.transposed else nn.Conv2d
        extra = {"output_padding": layer.output_padding} if layer.transposed else {}
        module = cls(
            shape.channels,
            layer.out_channels,
            layer.kernel,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            groups=layer.groups,
            **extra,
        )
    with torch.no_grad():
        y = module(torch.zeros(1, shape.channels, shape.height, shape.width))
    return Shape(y.shape[2], y.shape[3], y.shape[1])


pairs = st.tuples(st.integers(1, 4), st.integers(1, 4))


@st.composite
def layer_cases(draw: st.DrawFn) -> tuple[Shape, dict]:
    kind = draw(st.sampled_from(list(LayerKind)))
    shape = Shape(draw(st.integers(1, 12)), draw(st.integers(1, 12)), draw(st.integers(1, 4)))
    fields: dict = {"kind": kind, "kernel": draw(pairs), "stride": draw(pairs)}
    fields["padding"] = draw(st.tuples(st.integers(0, 3), st.integers(0, 3)))
    if kind is not LayerKind.AVGPOOL:
        fields["dilation"] = draw(st.tuples(st.integers(1, 3), st.integers(1, 3)))
    if kind.is_conv:
        fields["out_channels"] = draw(st.integers(1, 4))
        fields["groups"] = draw(st.integers(1, 2))
    if kind is LayerKind.CONV_T:
        fields["output_padding"] = draw(st.tuples(st.integers(0, 3), st.integers(0, 3)))
    return shape, fields


class _Unchecked:
    """A LayerSpec look-alike without validation, so torch judges the raw settings."""

    def __init__(self, fields: dict) -> None:
        self.kind = fields["kind"]
        self.kernel = fields["kernel"]
        self.stride = fields["stride"]
        self.padding = fields["padding"]
        self.dilation = fields.get("dilation", (1, 1))
        self.out_channels = fields.get("out_channels")
        self.groups = fields.get("groups", 1)
        self.output_padding = fields.get("output_padding", (0, 0))
        self.transposed = self.kind is LayerKind.CONV_T


def _unchecked(fields: dict) -> LayerSpec:
    return _Unchecked(fields)  # type: ignore[return-value]


@settings(max_examples=300, deadline=None)
@given(layer_cases())
def test_arithmetic_matches_torch(case: tuple[Shape, dict]) -> None:
    shape, fields = case
    try:
        layer = LayerSpec(**fields)
        ours: Shape | None = output_shape(shape, layer)
    except BadSpecError:
        ours = None
    try:
        theirs: Shape | None = _torch_shape(_unchecked(fields), shape)
    except (RuntimeError, ValueError):
        theirs = None
    if theirs is not None and 0 in (theirs.height, theirs.width, theirs.channels):
        # torch lets a transposed conv crop to an empty output; a shape tool calls a layer with
        # no output impossible, as it does for a regular conv
        theirs = None
    assert ours == theirs, (fields, shape)


@settings(max_examples=100, deadline=None)
@given(layer_cases())
def test_parse_round_trip(case: tuple[Shape, dict]) -> None:
    _, fields = case
    try:
        layer = LayerSpec(**fields)
    except BadSpecError:
        return
    assert parse_layer(str(layer)) == layer


@settings(max_examples=30, deadline=None)
@given(
    st.tuples(st.integers(1, 9), st.integers(1, 9)),
    st.tuples(st.integers(1, 9), st.integers(1, 9)),
    st.integers(1, 4),
    st.integers(1, 4),
)
def test_every_solution_maps_in_to_out(
    in_hw: tuple[int, int], out_hw: tuple[int, int], c_in: int, c_out: int
) -> None:
    source, target = Shape(*in_hw, c_in), Shape(*out_hw, c_out)
    bounds = SolveBounds(max_stride=3, max_padding=2, max_dilation=2)
    configs = solve_conv(source, target, bounds=bounds).configs
    assert all(step.output == target for step in configs)
    # Every one was confirmed on meta inside the solver; the simplest and the most
    # elaborate are run again on CPU, the path a user's model takes.
    for step in configs[:3] + configs[-3:]:
        assert _torch_shape(step.layer, source) == target


def test_torch_disagreement_is_an_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = conv_shapes._axis_output
    monkeypatch.setattr(conv_shapes, "_axis_output", lambda *args: real(*args) + 1)
    with pytest.raises(TorchMismatchError, match="torch gives 10x10x7"):
        propagate("13x15x3", ["conv:7@4x6"])


# --------------------------------------------------------------------------- parser errors


@pytest.mark.parametrize(
    ("text", "names", "expected"),
    [
        ("conv:7@4y6", "'4y6'", "conv:C@KHxKW"),
        ("conv:74x6", "lacks '@'", "conv:C@KHxKW"),
        ("conv:x@4x6", "'x'", "conv:C@KHxKW"),
        ("conv:7@4x6/q2", "'/q2'", "conv:C@KHxKW"),
        ("conv:7@4x6/s2/s3", "stride given twice", "conv:C@KHxKW"),
        ("conv:7@4x6/g2x2", "'/g2x2'", "conv:C@KHxKW"),
        ("conv:7@4x6/s0", "stride", "conv:C@KHxKW"),
        ("conv:7@4x6/g2", "not divisible by groups 2", "conv:C@KHxKW"),
        ("conv:7@0x6", "kernel 0x6", "conv:C@KHxKW"),
        ("pool:2x2", "unknown layer kind 'pool'", "maxpool:KHxKW"),
        ("maxpool:2x2/g2", "'/g2'", "maxpool:KHxKW"),
        ("maxpool:2x2/p2", "padding 2 is more than half the kernel 2", "maxpool:KHxKW"),
        ("avgpool:3x3/d2", "'/d2'", "avgpool:KHxKW"),
        ("convT:4@3x3/op1", "output padding 1 must be smaller than stride 1", "convT:C@KHxKW"),
        ("conv:7@4x6/op1", "'/op1'", "conv:C@KHxKW"),
        ("conv", "expected KIND:SIZE", "conv:C@KHxKW"),
    ],
)
def test_parser_errors_are_one_clear_line(text: str, names: str, expected: str) -> None:
    with pytest.raises(BadSpecError) as info:
        parse_layer(text)
    message = str(info.value)
    assert "\n" not in message
    assert f"'{text}'" in message
    assert names in message
    assert f"expected {expected}" in message or expected in message


@pytest.mark.parametrize("text", ["13x15", "13x15x0", "axbxc", "13x15x3x1", ""])
def test_bad_shapes(text: str) -> None:
    with pytest.raises(BadSpecError, match=r"expected HxWxC"):
        parse_shape(text)


def test_lenient_spellings() -> None:
    assert parse_shape(" 13X15×3 ") == Shape(13, 15, 3)
    assert parse_kernel("3") == (3, 3)
    assert parse_layer("CONV:7@4X6/S2") == parse_layer("conv:7@4x6/s2")
    assert parse_layer("maxpool:2").stride == (2, 2)  # pool stride defaults to the kernel
    assert parse_layer("conv:3@3x3/s1x2/p0x1").padding == (0, 1)
    with pytest.raises(BadSpecError, match="expected N or KHxKW"):
        parse_kernel("3y3")


def test_impossible_shapes_name_the_layer() -> None:
    with pytest.raises(BadSpecError) as info:
        propagate("4x4x3", ["conv:8@3x3", "conv:8@5x5"])
    message = str(info.value)
    # 2x2 input, 5x5 kernel: floor((2 + 0 - 4 - 1)/1) + 1 = -3 + 1 = -2.
    assert "'conv:8@5x5' cannot take 2x2x8" in message
    assert "H = floor((2 + 2*0 - 1*(5-1) - 1)/1) + 1 = -2 is not positive" in message
    with pytest.raises(BadSpecError, match="3 input channels are not divisible by groups 2"):
        propagate("4x4x3", ["conv:4@3x3/g2"])


# --------------------------------------------------------------------------- outputs


def test_json_dicts() -> None:
    solutions = solve_conv("8x8x5", "5x5x3", kernel=(3, 3))
    configs = json.loads(json.dumps(solutions.config_dicts()))
    assert configs[0]["kernel"] == [3, 3]
    assert configs[0]["stride"] == [2, 2]
    assert configs[0]["padding"] == [2, 2]
    assert configs[0]["dilation"] == [1, 1]
    assert configs[0]["transposed"] is False
    assert configs[0]["weight_shape"] == [3, 5, 3, 3]
    whole = json.loads(json.dumps(solutions.to_dict()))
    assert whole["possible"] is True
    assert whole["bounds"]["max_stride"] == 4
    steps = propagate("13x15x3", ["conv:7@4x6"])
    assert json.loads(json.dumps(steps[0].to_dict()))["output"] == {
        "height": 10,
        "width": 10,
        "channels": 7,
    }


def _render(table: object) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(table)
    return console.export_text()


def test_tables_render() -> None:
    steps = propagate("13x15x3", ["conv:7@4x6", "conv:8@3x4/s2/p1", "maxpool:2x2"])
    text = _render(shape_table(steps))
    assert "2x2x8" in text and "H = floor((10 + 2*1 - 1*(3-1) - 1)/2) + 1 = 5" in text
    solutions = solve_conv("8x8x5", "5x5x3", kernel="3x3")
    table = solutions_table(solutions)
    assert table.row_count == 2
    assert "conv:3@3x3/s2/p2" in _render(table)
    assert "always even" in _render(explanation_table(solutions))


def test_module_imports_neither_rich_nor_torch() -> None:
    code = (
        "import sys, flowprof.analyses.conv_shapes as m; m.parse_layer('conv:7@4x6'); "
        "print('rich' in sys.modules, 'torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]

"""Convolution and pooling shape arithmetic (docs/assignment.md Problem 1).

Three things, all returning data (no printing, no Rich):

- ``parse_shape`` / ``parse_layer``: the command-line syntax, e.g. ``13x15x3`` and
  ``conv:8@3x4/s2/p1`` (see ``LAYER_SYNTAX``).
- ``propagate``: the shape after each layer, with the formula written out in numbers.
- ``solve_conv``: every convolution (regular or transposed) that maps one shape to
  another inside stated bounds, and, for a given kernel, why it can or cannot.

Shapes are HxWxC (height x width x channels), the assignment's convention; kernels are
KHxKW. Every shape computed here by formula is confirmed by applying the real torch
layer to a tensor on the meta device (shapes only, nothing allocated); a disagreement
raises ``TorchMismatchError``, which is a bug in this module, never bad input.

torch is imported lazily, inside the functions that confirm shapes, so parsing and
bad-input errors stay fast (importing torch takes about 1.5 s).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import product
from typing import Any

from flowprof.errors import BadSpecError, TorchMismatchError

Pair = tuple[int, int]


class LayerKind(StrEnum):
    """The layer kinds the spec syntax knows."""

    CONV = "conv"
    CONV_T = "convT"
    MAXPOOL = "maxpool"
    AVGPOOL = "avgpool"

    @property
    def is_conv(self) -> bool:
        """True for the kinds with weights (regular and transposed convolution)."""
        return self in (LayerKind.CONV, LayerKind.CONV_T)


SHAPE_SYNTAX = "HxWxC (height x width x channels), e.g. 13x15x3"
KERNEL_SYNTAX = "N or KHxKW, e.g. 3 or 3x4"

# One line per kind, shown in every error about that kind. N may be written HxW for
# stride, padding, dilation and output padding (e.g. /s1x2).
LAYER_SYNTAX: dict[LayerKind, str] = {
    LayerKind.CONV: "conv:C@KHxKW[/sN][/pN][/dN][/gN][/nobias], e.g. conv:8@3x4/s2/p1",
    LayerKind.CONV_T: "convT:C@KHxKW[/sN][/pN][/opN][/dN][/gN][/nobias], e.g. convT:4@3x3/s2/p1",
    LayerKind.MAXPOOL: "maxpool:KHxKW[/sN][/pN][/dN], e.g. maxpool:2x2",
    LayerKind.AVGPOOL: "avgpool:KHxKW[/sN][/pN], e.g. avgpool:3x3/s2",
}
ANY_LAYER_SYNTAX = (
    "conv:C@KHxKW, convT:C@KHxKW, maxpool:KHxKW or avgpool:KHxKW, options /sN /pN /dN /gN /opN"
)

# The output-size formula per kind, in torch's documentation's notation (per axis).
SYMBOLIC_FORMULA: dict[LayerKind, str] = {
    LayerKind.CONV: "floor((n + 2p - d*(k-1) - 1)/s) + 1",
    LayerKind.CONV_T: "(n-1)*s - 2p + d*(k-1) + op + 1",
    LayerKind.MAXPOOL: "floor((n + 2p - d*(k-1) - 1)/s) + 1",
    LayerKind.AVGPOOL: "floor((n + 2p - k)/s) + 1",
}

_OPTIONS: dict[LayerKind, frozenset[str]] = {
    LayerKind.CONV: frozenset({"s", "p", "d", "g", "nobias"}),
    LayerKind.CONV_T: frozenset({"s", "p", "d", "g", "op", "nobias"}),
    LayerKind.MAXPOOL: frozenset({"s", "p", "d"}),
    LayerKind.AVGPOOL: frozenset({"s", "p"}),
}
_OPTION_NAMES = {
    "s": "stride",
    "p": "padding",
    "d": "dilation",
    "g": "groups",
    "op": "output padding",
}
_KINDS = {kind.value.lower(): kind for kind in LayerKind}
_LAYER_RE = re.compile(r"^(?P<kind>[A-Za-z]+):(?P<body>[^/]*)(?P<options>(?:/[^/]*)*)$")
# "op" before "p" so that /op1 is output padding, not a malformed padding.
_OPTION_RE = re.compile(r"^(?P<name>op|s|p|d|g)(?P<value>\d+(?:x\d+)?)$")
_PAIR_RE = re.compile(r"^(\d+)(?:x(\d+))?$")


# --------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class Shape:
    """A feature-map shape, height x width x channels (one sample, no batch axis)."""

    height: int
    width: int
    channels: int

    def __str__(self) -> str:
        return f"{self.height}x{self.width}x{self.channels}"

    def to_dict(self) -> dict[str, int]:
        """The three sizes by name."""
        return {"height": self.height, "width": self.width, "channels": self.channels}


def _normalise_x(text: str) -> str:
    # Accept 13X15, 13×15 and stray spaces: people copy shapes from papers.
    return text.strip().replace(" ", "").replace("×", "x").replace("X", "x")


def parse_shape(text: str) -> Shape:
    """Parse ``HxWxC`` (e.g. ``13x15x3``) into a Shape; BadSpecError if malformed."""
    parts = _normalise_x(text).split("x")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        raise BadSpecError(f"bad shape {text!r}: expected {SHAPE_SYNTAX}")
    height, width, channels = (int(part) for part in parts)
    if min(height, width, channels) < 1:
        raise BadSpecError(f"bad shape {text!r}: sizes must be positive; expected {SHAPE_SYNTAX}")
    return Shape(height, width, channels)


def _parse_pair(token: str) -> Pair | None:
    match = _PAIR_RE.match(_normalise_x(token))
    if match is None:
        return None
    first = int(match[1])
    return (first, int(match[2]) if match[2] is not None else first)


def parse_kernel(text: str) -> Pair:
    """Parse a kernel size ``N`` or ``KHxKW`` (e.g. ``3x3``) into (kh, kw)."""
    pair = _parse_pair(text)
    if pair is None or min(pair) < 1:
        raise BadSpecError(f"bad kernel {text!r}: expected {KERNEL_SYNTAX}")
    return pair


def _fmt_pair(pair: Pair) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


# --------------------------------------------------------------------------- layer specs


@dataclass(frozen=True)
class LayerSpec:
    """One layer: its kind, kernel (kh, kw) and hyperparameters, as (height, width) pairs.

    ``out_channels`` is the number of filters of a convolution and None for pooling,
    which keeps the channels. ``source`` is the text it was parsed from, quoted in
    error messages; it takes no part in equality.
    """

    kind: LayerKind
    kernel: Pair
    stride: Pair
    padding: Pair = (0, 0)
    dilation: Pair = (1, 1)
    out_channels: int | None = None
    groups: int = 1
    output_padding: Pair = (0, 0)
    bias: bool = True
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        # Accept "conv" as well as LayerKind.CONV; the code below compares with `is`.
        object.__setattr__(self, "kind", LayerKind(self.kind))
        _check_spec(self)

    @property
    def label(self) -> str:
        """The user's text when parsed, else the canonical spec."""
        return self.source or str(self)

    @property
    def transposed(self) -> bool:
        """True for a transposed convolution."""
        return self.kind is LayerKind.CONV_T

    @property
    def symbolic_formula(self) -> str:
        """The per-axis output-size formula of this kind, e.g. for conv
        ``floor((n + 2p - d*(k-1) - 1)/s) + 1``."""
        return SYMBOLIC_FORMULA[self.kind]

    def __str__(self) -> str:
        head = f"{self.kind}:"
        if self.kind.is_conv:
            head += f"{self.out_channels}@"
        # The kernel always as KHxKW, the way the assignment writes filters.
        head += _fmt_kernel(self.kernel)
        default_stride = (1, 1) if self.kind.is_conv else self.kernel
        options = []
        if self.stride != default_stride:
            options.append("s" + _fmt_pair(self.stride))
        if self.padding != (0, 0):
            options.append("p" + _fmt_pair(self.padding))
        if self.output_padding != (0, 0):
            options.append("op" + _fmt_pair(self.output_padding))
        if self.dilation != (1, 1):
            options.append("d" + _fmt_pair(self.dilation))
        if self.groups != 1:
            options.append(f"g{self.groups}")
        if not self.bias:
            options.append("nobias")
        return head + "".join("/" + option for option in options)

    def to_dict(self) -> dict[str, Any]:
        """Every field, pairs as [height, width] lists."""
        return {
            "layer": str(self),
            "kind": str(self.kind),
            "transposed": self.transposed,
            "kernel": list(self.kernel),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "dilation": list(self.dilation),
            "groups": self.groups,
            "output_padding": list(self.output_padding),
            "out_channels": self.out_channels,
            "bias": self.bias,
        }


def _bad_layer(spec_text: str, kind: LayerKind | None, why: str) -> BadSpecError:
    expected = LAYER_SYNTAX[kind] if kind is not None else ANY_LAYER_SYNTAX
    return BadSpecError(f"bad layer {spec_text!r}: {why}; expected {expected}")


def _check_spec(spec: LayerSpec) -> None:
    """The checks that need no input shape; the same rules torch applies."""
    kind, label = spec.kind, spec.label
    if min(spec.kernel) < 1:
        raise _bad_layer(label, kind, f"kernel {_fmt_pair(spec.kernel)} must be positive")
    if min(spec.stride) < 1 or min(spec.dilation) < 1:
        raise _bad_layer(label, kind, "stride and dilation must be at least 1")
    if min(spec.padding) < 0 or min(spec.output_padding) < 0:
        raise _bad_layer(label, kind, "padding must not be negative")
    if spec.groups < 1:
        raise _bad_layer(label, kind, "groups must be at least 1")
    if kind.is_conv:
        if spec.out_channels is None or spec.out_channels < 1:
            raise _bad_layer(label, kind, "the number of filters C must be at least 1")
        if spec.out_channels % spec.groups:
            raise _bad_layer(
                label,
                kind,
                f"{spec.out_channels} filters are not divisible by groups {spec.groups}",
            )
    elif spec.out_channels is not None:
        raise _bad_layer(label, kind, "pooling keeps the channels and takes no filter count")
    if kind is LayerKind.CONV_T:
        # torch (CPU/CUDA): "output padding must be smaller than either stride or dilation".
        for axis, op, s, d in zip(
            ("height", "width"), spec.output_padding, spec.stride, spec.dilation, strict=True
        ):
            if op >= max(s, d):
                raise _bad_layer(
                    label,
                    kind,
                    f"{axis} output padding {op} must be smaller than stride {s} or dilation {d}",
                )
    elif spec.output_padding != (0, 0):
        raise _bad_layer(label, kind, "output padding /op is for transposed convolution only")
    if not kind.is_conv:
        # torch's pool2d_shape_check: pad <= kernel // 2 on each axis.
        for axis, p, k in zip(("height", "width"), spec.padding, spec.kernel, strict=True):
            if p > k // 2:
                raise _bad_layer(
                    label, kind, f"{axis} padding {p} is more than half the kernel {k}"
                )
        if kind is LayerKind.AVGPOOL and spec.dilation != (1, 1):
            raise _bad_layer(label, kind, "average pooling has no dilation")
        if spec.groups != 1 or not spec.bias:
            raise _bad_layer(label, kind, "pooling has no groups and no bias")


def parse_layer(text: str) -> LayerSpec:
    """Parse one layer spec such as ``conv:8@3x4/s2/p1`` (syntax in ``LAYER_SYNTAX``).

    Pool stride defaults to the kernel size and conv stride to 1, as in torch.
    """
    spec_text = text.strip()
    match = _LAYER_RE.match(spec_text)
    if match is None:
        raise _bad_layer(spec_text, None, "expected KIND:SIZE[/OPTION...]")
    kind = _KINDS.get(match["kind"].lower())
    if kind is None:
        raise _bad_layer(spec_text, None, f"unknown layer kind {match['kind']!r}")

    body = match["body"]
    out_channels: int | None = None
    kernel_token = body
    if kind.is_conv:
        channels_token, at, kernel_token = body.partition("@")
        if not at:
            raise _bad_layer(spec_text, kind, f"{body!r} lacks '@' between filters and kernel")
        if not channels_token.isdigit():
            raise _bad_layer(
                spec_text,
                kind,
                f"the filter count {channels_token!r} must be a whole number of filters, 1 or more",
            )
        out_channels = int(channels_token)
    kernel = _parse_pair(kernel_token)
    if kernel is None:
        raise _bad_layer(spec_text, kind, f"kernel {kernel_token!r} is not {KERNEL_SYNTAX}")

    values: dict[str, Pair] = {}
    bias = True
    for option in match["options"].split("/")[1:]:
        normalised = _normalise_x(option).lower()
        if normalised == "nobias" and normalised in _OPTIONS[kind]:
            bias = False
            continue
        option_match = _OPTION_RE.match(normalised)
        if option_match is None or option_match["name"] not in _OPTIONS[kind]:
            raise _bad_layer(spec_text, kind, f"unknown option '/{option}'")
        name = option_match["name"]
        if name in values:
            raise _bad_layer(spec_text, kind, f"{_OPTION_NAMES[name]} given twice")
        pair = _parse_pair(option_match["value"])
        assert pair is not None  # _OPTION_RE only matches what _PAIR_RE accepts
        if name == "g" and "x" in option_match["value"]:
            raise _bad_layer(spec_text, kind, f"groups '/{option}' takes one number")
        values[name] = pair

    return LayerSpec(
        kind=kind,
        kernel=kernel,
        stride=values.get("s", (1, 1) if kind.is_conv else kernel),
        padding=values.get("p", (0, 0)),
        dilation=values.get("d", (1, 1)),
        out_channels=out_channels,
        groups=values.get("g", (1, 1))[0],
        output_padding=values.get("op", (0, 0)),
        bias=bias,
        source=spec_text,
    )


def parse_layers(texts: Iterable[str]) -> list[LayerSpec]:
    """Parse several layer specs, in order."""
    return [parse_layer(text) for text in texts]


# --------------------------------------------------------------------------- arithmetic


def _axis_output(kind: LayerKind, n: int, k: int, s: int, p: int, d: int, op: int) -> int:
    """Output size along one axis; the single source of the formulas in SYMBOLIC_FORMULA."""
    if kind is LayerKind.CONV_T:
        return (n - 1) * s - 2 * p + d * (k - 1) + op + 1
    if kind is LayerKind.AVGPOOL:
        return (n + 2 * p - k) // s + 1
    # Python's // floors like torch's div_rtn, also for negative numerators.
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _axis_formula(kind: LayerKind, n: int, k: int, s: int, p: int, d: int, op: int) -> str:
    """The formula of _axis_output written out with the numbers, ending in the result."""
    out = _axis_output(kind, n, k, s, p, d, op)
    if kind is LayerKind.CONV_T:
        return f"({n}-1)*{s} - 2*{p} + {d}*({k}-1) + {op} + 1 = {out}"
    if kind is LayerKind.AVGPOOL:
        return f"floor(({n} + 2*{p} - {k})/{s}) + 1 = {out}"
    return f"floor(({n} + 2*{p} - {d}*({k}-1) - 1)/{s}) + 1 = {out}"


@dataclass(frozen=True)
class Step:
    """One layer applied to one input: the output shape, how it was computed, its weights.

    ``weight_shape`` is in torch's layout, (C_out, C_in/groups, kh, kw) for a convolution
    and (C_in, C_out/groups, kh, kw) for a transposed one, None for pooling. ``params``
    counts weights and biases. ``torch_layer`` is the torch module that confirmed it.
    """

    layer: LayerSpec
    input: Shape
    output: Shape
    height_formula: str
    width_formula: str
    channels_formula: str
    weight_shape: tuple[int, int, int, int] | None
    params: int
    torch_layer: str

    @property
    def formulas(self) -> tuple[str, str, str]:
        """The H, W and C lines, e.g. ``H = floor((13 + 2*0 - 1*(4-1) - 1)/1) + 1 = 10``."""
        return (self.height_formula, self.width_formula, self.channels_formula)

    def to_dict(self) -> dict[str, Any]:
        """The layer's fields plus input, output, formulas, weight shape and params."""
        return {
            **self.layer.to_dict(),
            "input": self.input.to_dict(),
            "output": self.output.to_dict(),
            "formulas": {
                "height": self.height_formula,
                "width": self.width_formula,
                "channels": self.channels_formula,
            },
            "weight_shape": list(self.weight_shape) if self.weight_shape is not None else None,
            "params": self.params,
            "torch_layer": self.torch_layer,
        }


def _arithmetic(input_shape: Shape, layer: LayerSpec) -> tuple[Shape, str, str, str]:
    """Output shape and the H, W, C lines; BadSpecError when the input cannot take it."""
    kind = layer.kind
    if kind.is_conv and input_shape.channels % layer.groups:
        raise BadSpecError(
            f"layer {layer.label!r} cannot take {input_shape}: "
            f"{input_shape.channels} input channels are not divisible by groups {layer.groups}"
        )
    sizes, lines = [], []
    for axis, n, k, s, p, d, op in zip(
        ("H", "W"),
        (input_shape.height, input_shape.width),
        layer.kernel,
        layer.stride,
        layer.padding,
        layer.dilation,
        layer.output_padding,
        strict=True,
    ):
        out = _axis_output(kind, n, k, s, p, d, op)
        line = f"{axis} = {_axis_formula(kind, n, k, s, p, d, op)}"
        if out < 1:
            why = "too much padding" if kind is LayerKind.CONV_T else "kernel exceeds padded input"
            raise BadSpecError(
                f"layer {layer.label!r} cannot take {input_shape}: {line} is not positive ({why})"
            )
        sizes.append(out)
        lines.append(line)
    if kind is LayerKind.CONV:
        channels, channels_line = layer.out_channels, f"C = {layer.out_channels} (one per filter)"
    elif kind is LayerKind.CONV_T:
        channels, channels_line = layer.out_channels, f"C = {layer.out_channels} (out channels)"
    else:
        channels = input_shape.channels
        channels_line = f"C = {channels} (pooling keeps the channels)"
    assert channels is not None  # _check_spec guarantees filters for convolutions
    return Shape(sizes[0], sizes[1], channels), lines[0], lines[1], channels_line


def output_shape(input_shape: Shape, layer: LayerSpec) -> Shape:
    """The output shape by arithmetic alone (no torch); BadSpecError if impossible."""
    return _arithmetic(input_shape, layer)[0]


def _weights(in_channels: int, layer: LayerSpec) -> tuple[tuple[int, int, int, int] | None, int]:
    if not layer.kind.is_conv:
        return None, 0
    assert layer.out_channels is not None
    kh, kw = layer.kernel
    if layer.transposed:
        shape = (in_channels, layer.out_channels // layer.groups, kh, kw)
    else:
        shape = (layer.out_channels, in_channels // layer.groups, kh, kw)
    return shape, math.prod(shape) + (layer.out_channels if layer.bias else 0)


def _torch_module(layer: LayerSpec, in_channels: int) -> Any:
    # Lazy: parsing and bad-input errors must not pay torch's import time.
    from torch import nn

    if layer.kind is LayerKind.MAXPOOL:
        return nn.MaxPool2d(layer.kernel, layer.stride, layer.padding, layer.dilation)
    if layer.kind is LayerKind.AVGPOOL:
        return nn.AvgPool2d(layer.kernel, layer.stride, layer.padding)
    common = {
        "kernel_size": layer.kernel,
        "stride": layer.stride,
        "padding": layer.padding,
        "dilation": layer.dilation,
        "groups": layer.groups,
        "bias": layer.bias,
        "device": "meta",  # parameters without storage
    }
    if layer.transposed:
        return nn.ConvTranspose2d(
            in_channels, layer.out_channels, output_padding=layer.output_padding, **common
        )
    return nn.Conv2d(in_channels, layer.out_channels, **common)


def _confirm_with_torch(step: Step, module: Any) -> None:
    """Run the torch layer on a meta tensor; raise TorchMismatchError on any difference.

    The meta device computes shapes only. It skips one check the CPU kernel makes (output
    padding below stride or dilation), which _check_spec makes instead.
    """
    import torch

    from flowprof import limits

    for what, shape in (("the input", step.input), ("the output", step.output)):
        limits.check_size((1, shape.channels, shape.height, shape.width), f"{what} of {step.layer}")
    if step.weight_shape is not None:
        limits.check_size(step.weight_shape, f"the weight of {step.layer}")
    x = torch.empty((1, step.input.channels, step.input.height, step.input.width), device="meta")
    try:
        y = module(x)
    except RuntimeError as error:
        first_line = str(error).splitlines()[0]
        raise TorchMismatchError(
            f"torch rejected {step.layer} on {step.input}, which the arithmetic accepted: "
            f"{first_line}"
        ) from error
    got = Shape(y.shape[2], y.shape[3], y.shape[1])
    got_weight = tuple(module.weight.shape) if step.weight_shape is not None else None
    got_params = sum(parameter.numel() for parameter in module.parameters())
    if (got, got_weight, got_params) != (step.output, step.weight_shape, step.params):
        raise TorchMismatchError(
            f"{step.layer} on {step.input}: arithmetic gives {step.output}, weight "
            f"{step.weight_shape}, {step.params} params; torch gives {got}, {got_weight}, "
            f"{got_params}"
        )


def apply_layer(input_shape: Shape, layer: LayerSpec) -> Step:
    """Apply one layer to a shape by arithmetic, confirmed by torch on the meta device."""
    output, height_line, width_line, channels_line = _arithmetic(input_shape, layer)
    weight_shape, params = _weights(input_shape.channels, layer)
    module = _torch_module(layer, input_shape.channels)
    step = Step(
        layer=layer,
        input=input_shape,
        output=output,
        height_formula=height_line,
        width_formula=width_line,
        channels_formula=channels_line,
        weight_shape=weight_shape,
        params=params,
        torch_layer=repr(module),
    )
    _confirm_with_torch(step, module)
    return step


def propagate(input_shape: Shape | str, layers: Iterable[LayerSpec | str]) -> list[Step]:
    """The shape after each layer, each with its formula and confirmed by torch.

    Strings are parsed (``"13x15x3"``, ``"conv:7@4x6"``), so the CLI can pass its
    arguments straight through. BadSpecError on bad syntax or an impossible shape.
    """
    shape = parse_shape(input_shape) if isinstance(input_shape, str) else input_shape
    specs = [parse_layer(layer) if isinstance(layer, str) else layer for layer in layers]
    steps = []
    for spec in specs:
        step = apply_layer(shape, spec)
        steps.append(step)
        shape = step.output
    return steps


# --------------------------------------------------------------------------- solver


@dataclass(frozen=True)
class SolveBounds:
    """The search box of solve_conv, reported with every answer ("none" means none in here).

    Kernel sizes need no bound: for a convolution the dilated kernel must fit the padded
    input, and for a transposed one the formula fixes the kernel given the rest.
    """

    max_stride: int = 4
    max_padding: int = 3
    max_dilation: int = 3
    # None: every common divisor of the two channel counts; 1: ungrouped only.
    max_groups: int | None = None
    transposed: bool = True
    # False: one stride, padding, dilation (and output padding) for both axes, as layers
    # are usually written; True: each axis chooses its own.
    per_axis: bool = False
    # padding <= dilation*(kernel-1). For a convolution, no output then sees only zero
    # padding (those outputs are bias alone); for a transposed convolution, where padding
    # crops the output, the crop stays within the kernel's overhang.
    padding_within_kernel: bool = True
    bias: bool = True

    def __post_init__(self) -> None:
        if min(self.max_stride, self.max_dilation) < 1 or self.max_padding < 0:
            raise BadSpecError(
                "bad bounds: max stride and max dilation must be >= 1, max padding >= 0"
            )
        if self.max_groups is not None and self.max_groups < 1:
            raise BadSpecError("bad bounds: max groups must be >= 1 (or None for all)")

    def describe(self) -> tuple[str, ...]:
        """The bounds as sentences, for reports."""
        groups = (
            "every common divisor of the input and output channels"
            if self.max_groups is None
            else f"common divisors of the channel counts up to {self.max_groups}"
        )
        lines = [
            f"stride 1..{self.max_stride}, padding 0..{self.max_padding}, "
            f"dilation 1..{self.max_dilation} (dilation only on kernels larger than 1)",
            "kernel: any size whose dilated extent fits the padded input"
            + ("; for transposed convolution the formula fixes it" if self.transposed else ""),
            f"groups: {groups}",
            "the same stride, padding and dilation on both axes"
            if not self.per_axis
            else "stride, padding and dilation chosen per axis",
        ]
        if self.transposed:
            lines.append("transposed convolution included, output padding < max(stride, dilation)")
        else:
            lines.append("regular convolution only")
        if self.padding_within_kernel:
            lines.append(
                "padding <= dilation*(kernel-1): no output of a convolution sees only padding, "
                "and a transposed convolution crops no more than its kernel's overhang"
            )
        return tuple(lines)

    def to_dict(self) -> dict[str, Any]:
        """The bounds, and their description."""
        return {
            "max_stride": self.max_stride,
            "max_padding": self.max_padding,
            "max_dilation": self.max_dilation,
            "max_groups": self.max_groups,
            "transposed": self.transposed,
            "per_axis": self.per_axis,
            "padding_within_kernel": self.padding_within_kernel,
            "bias": self.bias,
            "description": list(self.describe()),
        }


@dataclass(frozen=True)
class _AxisFit:
    """One axis's kernel and hyperparameters that map n to m."""

    kernel: int
    stride: int
    padding: int
    dilation: int
    output_padding: int

    @property
    def hyper(self) -> tuple[int, int, int, int]:
        return (self.stride, self.padding, self.dilation, self.output_padding)


def _admissible(fit: _AxisFit, bounds: SolveBounds) -> bool:
    if fit.dilation > 1 and fit.kernel == 1:
        return False  # a 1-tap kernel has nothing to dilate: a duplicate of dilation 1
    return not (bounds.padding_within_kernel and fit.padding > fit.dilation * (fit.kernel - 1))


def _axis_fits(
    n: int,
    m: int,
    transposed: bool,
    bounds: SolveBounds,
    kernel: int | None = None,
    strides: Iterable[int] | None = None,
) -> list[_AxisFit]:
    """Every (k, s, p, d, op) on one axis with output size m from input size n.

    The kernel is solved for, not searched: with e = d*(k-1), a convolution needs
    s*(m-1) <= n + 2p - e - 1 <= s*(m-1) + s-1 (floor), a transposed one
    e = m - 1 - op + 2p - (n-1)*s exactly. Each fit is re-checked with _axis_output.
    """
    kind = LayerKind.CONV_T if transposed else LayerKind.CONV
    strides = range(1, bounds.max_stride + 1) if strides is None else strides
    paddings = range(bounds.max_padding + 1)
    dilations = range(1, bounds.max_dilation + 1)
    fits = []
    for s, p, d in product(strides, paddings, dilations):
        if transposed:
            # torch: output padding must be smaller than either stride or dilation.
            candidates = [(m - 1 - op + 2 * p - (n - 1) * s, op) for op in range(max(s, d))]
        else:
            high = n + 2 * p - 1 - s * (m - 1)
            candidates = [(e, 0) for e in range(max(high - (s - 1), 0), high + 1)]
        for e, op in candidates:
            if e < 0 or e % d:
                continue
            fit = _AxisFit(e // d + 1, s, p, d, op)
            if kernel is not None and fit.kernel != kernel:
                continue
            if not _admissible(fit, bounds):
                continue
            assert _axis_output(kind, n, fit.kernel, s, p, d, op) == m, fit
            fits.append(fit)
    return fits


def _group_choices(in_channels: int, out_channels: int, bounds: SolveBounds) -> list[int]:
    common = math.gcd(in_channels, out_channels)
    limit = common if bounds.max_groups is None else min(common, bounds.max_groups)
    return [g for g in range(1, limit + 1) if common % g == 0]


def _simplicity(step: Step) -> tuple[Any, ...]:
    """Sort key: regular before transposed, then fewest non-default settings (padding,
    stride, dilation, groups, output padding), then smaller settings, square kernels first."""
    layer = step.layer
    features = (
        layer.padding != (0, 0),
        layer.stride != (1, 1),
        layer.dilation != (1, 1),
        layer.groups != 1,
        layer.output_padding != (0, 0),
    )
    return (
        layer.transposed,
        sum(features),
        max(layer.stride),
        sum(layer.stride),
        max(layer.padding),
        sum(layer.padding),
        max(layer.dilation),
        sum(layer.dilation),
        layer.groups,
        sum(layer.output_padding),
        layer.kernel[0] != layer.kernel[1],
        layer.kernel[0] * layer.kernel[1],
        layer.kernel,
    )


@dataclass(frozen=True)
class Solutions:
    """solve_conv's answer: the configurations, simplest first, and why.

    ``explanation`` is generated from the arithmetic: the plain-convolution baseline and,
    when a kernel was asked about, the verdict and the equation each stride must solve.
    """

    input: Shape
    output: Shape
    kernel: Pair | None
    bounds: SolveBounds
    configs: tuple[Step, ...]
    explanation: tuple[str, ...]

    @property
    def possible(self) -> bool:
        """True when at least one configuration exists within the bounds."""
        return bool(self.configs)

    def __len__(self) -> int:
        return len(self.configs)

    def __iter__(self) -> Iterator[Step]:
        return iter(self.configs)

    def config_dicts(self) -> list[dict[str, Any]]:
        """One object per configuration (kernel, stride, padding, dilation, transposed,
        weight_shape, params, ...): what ``--format json`` prints."""
        return [step.to_dict() for step in self.configs]

    def to_dict(self) -> dict[str, Any]:
        """The whole answer: question, bounds, verdict, explanation and configurations."""
        return {
            "input": self.input.to_dict(),
            "output": self.output.to_dict(),
            "kernel": list(self.kernel) if self.kernel is not None else None,
            "bounds": self.bounds.to_dict(),
            "possible": self.possible,
            "explanation": list(self.explanation),
            "configs": self.config_dicts(),
        }


def solve_conv(
    in_shape: Shape | str,
    out_shape: Shape | str,
    kernel: Pair | str | None = None,
    bounds: SolveBounds | None = None,
) -> Solutions:
    """Every convolution and transposed convolution mapping in_shape to out_shape.

    Each configuration (kernel, stride, padding, dilation, groups, output padding) lies
    within ``bounds`` (default SolveBounds()) and is confirmed by the torch layer on the
    meta device. ``kernel`` (e.g. ``(3, 3)`` or ``"3x3"``) keeps only that kernel and
    adds to the explanation why it can or cannot do it.
    """
    source = parse_shape(in_shape) if isinstance(in_shape, str) else in_shape
    target = parse_shape(out_shape) if isinstance(out_shape, str) else out_shape
    wanted = parse_kernel(kernel) if isinstance(kernel, str) else kernel
    bounds = bounds or SolveBounds()

    configs = []
    for transposed in (False, True) if bounds.transposed else (False,):
        kh, kw = wanted if wanted is not None else (None, None)
        height_fits = _axis_fits(source.height, target.height, transposed, bounds, kh)
        width_fits = _axis_fits(source.width, target.width, transposed, bounds, kw)
        if bounds.per_axis:
            pairs = list(product(height_fits, width_fits))
        else:
            pairs = [(h, w) for h in height_fits for w in width_fits if h.hyper == w.hyper]
        for (h, w), groups in product(
            pairs, _group_choices(source.channels, target.channels, bounds)
        ):
            layer = LayerSpec(
                kind=LayerKind.CONV_T if transposed else LayerKind.CONV,
                kernel=(h.kernel, w.kernel),
                stride=(h.stride, w.stride),
                padding=(h.padding, w.padding),
                dilation=(h.dilation, w.dilation),
                out_channels=target.channels,
                groups=groups,
                output_padding=(h.output_padding, w.output_padding),
                bias=bounds.bias,
            )
            configs.append(apply_layer(source, layer))
    configs.sort(key=_simplicity)
    explanation = _explain(source, target, wanted, bounds, configs)
    return Solutions(source, target, wanted, bounds, tuple(configs), explanation)


# --------------------------------------------------------------------------- explanation


def _axes(source: Shape, target: Shape, kernel: Pair | None) -> list[tuple[str, int, int, int]]:
    """(name, n, m, k) per axis, merged into one when both axes pose the same problem."""
    kh, kw = kernel if kernel is not None else (0, 0)
    height = ("height", source.height, target.height, kh)
    width = ("width", source.width, target.width, kw)
    if height[1:] == width[1:]:
        return [("height and width", *height[1:])]
    return [height, width]


def _plain_lines(source: Shape, target: Shape, bounds: SolveBounds) -> list[str]:
    """What the plain layers (stride 1, no padding, no dilation) would need."""
    lines = []
    plain_conv = (source.height - target.height + 1, source.width - target.width + 1)
    if min(plain_conv) >= 1:
        weight = (target.channels, source.channels, *plain_conv)
        lines.append(
            "A plain convolution (stride 1, no padding, no dilation) gives n - k + 1, so it "
            f"needs k = n - m + 1: kernel ({source.height}-{target.height}+1)x"
            f"({source.width}-{target.width}+1) = {_fmt_kernel(plain_conv)}, weight {weight}."
        )
    else:
        lines.append(
            "A plain convolution gives n - k + 1 <= n, so it cannot grow "
            f"{source.height}x{source.width} to {target.height}x{target.width}; "
            "that takes a transposed convolution."
        )
    if bounds.transposed:
        plain_t = (target.height - source.height + 1, target.width - source.width + 1)
        if min(plain_t) >= 1:
            weight = (source.channels, target.channels, *plain_t)
            lines.append(
                "A plain transposed convolution gives n + k - 1, so it needs k = m - n + 1: "
                f"kernel {_fmt_kernel(plain_t)}, weight {weight}."
            )
        else:
            lines.append(
                "A plain transposed convolution gives n + k - 1 >= n, so it shrinks only "
                "through padding, which crops 2p: (n-1)*s - 2p + d*(k-1) + op + 1."
            )
    return lines


def _channel_line(source: Shape, target: Shape, bounds: SolveBounds) -> str:
    choices = _group_choices(source.channels, target.channels, bounds)
    listed = ", ".join(str(g) for g in choices)
    return (
        f"Channels {source.channels} -> {target.channels}: {target.channels} filters; "
        f"groups must divide both {source.channels} and {target.channels}, "
        f"so groups in {{{listed}}}."
    )


def _fmt_kernel(kernel: Pair) -> str:
    return f"{kernel[0]}x{kernel[1]}"


def _count_line(configs: Sequence[Step]) -> str:
    regular = sum(not step.layer.transposed for step in configs)
    square = sorted({step.layer.kernel[0] for step in configs if len(set(step.layer.kernel)) == 1})
    kernels = ", ".join(f"{k}x{k}" for k in square) or "none"
    return (
        f"{len(configs)} configurations within the bounds ({regular} convolutions, "
        f"{len(configs) - regular} transposed); square kernels among them: {kernels}."
    )


def _explain(
    source: Shape,
    target: Shape,
    kernel: Pair | None,
    bounds: SolveBounds,
    configs: Sequence[Step],
) -> tuple[str, ...]:
    lines = []
    if kernel is not None:
        lines.append(_verdict_line(kernel, configs))
    lines += _plain_lines(source, target, bounds)
    lines.append(_channel_line(source, target, bounds))
    if kernel is None:
        lines.append(_count_line(configs))
        return tuple(lines)
    axis_has_fits = []
    for name, n, m, k in _axes(source, target, kernel):
        transposed_options = (False, True) if bounds.transposed else (False,)
        axis_has_fits.append(any(_axis_fits(n, m, t, bounds, k) for t in transposed_options))
        for transposed in transposed_options:
            lines += _why_axis(name, n, m, k, transposed, bounds)
    if not configs and all(axis_has_fits) and not bounds.per_axis:
        lines.append(
            "Each axis alone has a solution, but none shares one stride, padding and "
            "dilation across both axes; per-axis settings (per_axis=True) would allow it."
        )
    return tuple(lines)


def _verdict_line(kernel: Pair, configs: Sequence[Step]) -> str:
    name = _fmt_kernel(kernel)
    if not configs:
        return f"Kernel {name}: no configuration within the bounds."
    simplest = configs[0]
    return (
        f"Kernel {name}: yes, {len(configs)} configuration(s); simplest {simplest.layer}: "
        f"{simplest.height_formula}; {simplest.width_formula}."
    )


def _why_axis(
    name: str, n: int, m: int, k: int, transposed: bool, bounds: SolveBounds
) -> list[str]:
    """One line per stride: the equation it must solve and its solutions or why none."""
    lines = []
    if not transposed:
        plain = n - k + 1
        verdict = "as needed" if plain == m else f"not {m}"
        lines.append(
            f"{name} {n} -> {m}: stride 1, no padding, no dilation gives "
            f"{n} - {k} + 1 = {plain}, {verdict}."
        )
    for s in range(1, bounds.max_stride + 1):
        if transposed:
            rhs = (n - 1) * s + 1 - m
            need = f"2*p - {k - 1}*d - op = {rhs} with 0 <= op < max({s}, d)"
            head = f"{name} {n} -> {m}, transposed, stride {s}: ({n}-1)*{s} - 2p + d*({k}-1) "
            head += f"+ op + 1 = {m} needs {need}"
        else:
            high = n - 1 - s * (m - 1)
            low = high - (s - 1)
            target = f"= {high}" if low == high else f"in [{low}, {high}]"
            need = f"{k - 1}*d - 2*p {target}"
            head = f"{name} {n} -> {m}, stride {s}: floor(({n} + 2p - d*({k}-1) - 1)/{s}) + 1 = "
            head += f"{m} needs {need}"
        fits = _axis_fits(n, m, transposed, bounds, k, strides=[s])
        if fits:
            found = "; ".join(_fit_text(fit, transposed) for fit in fits)
            lines.append(f"{head}: {found}.")
        else:
            lines.append(f"{head}: {_why_none(n, m, k, s, transposed, bounds)}.")
    return lines


def _fit_text(fit: _AxisFit, transposed: bool) -> str:
    text = f"p={fit.padding}, d={fit.dilation}"
    return text + f", op={fit.output_padding}" if transposed else text


def _kernel_fits(
    n: int, m: int, k: int, s: int, transposed: bool, max_dilation: int
) -> list[_AxisFit]:
    """Every (p, d, op) for kernel k at stride s with d <= max_dilation and any p >= 0.

    Here p is solved for: a convolution needs (k-1)*d - 2p = v for some v in the
    floor's window, a transposed one 2p = (n-1)*s + 1 - m + (k-1)*d + op.
    """
    kind = LayerKind.CONV_T if transposed else LayerKind.CONV
    fits = []
    for d in range(1, max_dilation + 1) if k > 1 else [1]:
        if transposed:
            twice_p = [((n - 1) * s + 1 - m + (k - 1) * d + op, op) for op in range(max(s, d))]
        else:
            high = n - 1 - s * (m - 1)
            twice_p = [((k - 1) * d - v, 0) for v in range(high - (s - 1), high + 1)]
        for value, op in twice_p:
            if value >= 0 and value % 2 == 0:
                fit = _AxisFit(k, s, value // 2, d, op)
                assert _axis_output(kind, n, k, s, fit.padding, d, op) == m, fit
                fits.append(fit)
    return fits


def _why_none(n: int, m: int, k: int, s: int, transposed: bool, bounds: SolveBounds) -> str:
    """Why no (p, d) in the bounds works at stride s: parity, or the nearest solution
    outside the bounds and which bound it breaks."""
    # Dilations well past the bound, to find the nearest solution outside it.
    reach = 4 * bounds.max_dilation + 8
    wide = _kernel_fits(n, m, k, s, transposed, reach)
    if not wide:
        if not transposed and k > 1 and (k - 1) % 2 == 0:
            return f"none: {k - 1}*d - 2*p is always even"
        return f"no solution with any padding and dilation up to {reach}"

    def broken(fit: _AxisFit) -> list[str]:
        reasons = []
        if fit.padding > bounds.max_padding:
            reasons.append(f"padding {fit.padding} > {bounds.max_padding}")
        if fit.dilation > bounds.max_dilation:
            reasons.append(f"dilation {fit.dilation} > {bounds.max_dilation}")
        overhang = fit.dilation * (fit.kernel - 1)
        if bounds.padding_within_kernel and fit.padding > overhang:
            reasons.append(f"padding {fit.padding} > d*(k-1) = {overhang}")
        return reasons

    def excess(fit: _AxisFit) -> tuple[int, int, int]:
        over = max(fit.padding - bounds.max_padding, 0) + max(fit.dilation - bounds.max_dilation, 0)
        if bounds.padding_within_kernel:
            over += max(fit.padding - fit.dilation * (fit.kernel - 1), 0)
        return (over, fit.padding, fit.dilation)

    nearest = min(wide, key=excess)
    return (
        f"none within the bounds; nearest {_fit_text(nearest, transposed)} "
        f"breaks {' and '.join(broken(nearest))}"
    )

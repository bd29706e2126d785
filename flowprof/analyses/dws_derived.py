"""Problem 2(d)'s mapping f derived by :func:`flowprof.formula` from traces, for each convolution
of a network and its depthwise-separable twin, beside the hand derivation of
:mod:`flowprof.analyses.dws_mapping`.

For each layer the comparison (:func:`flowprof.analyses.op_compare.compare`) pairs, two
derivations, both from concrete traces and exact:

1. **In the networks' own dimension, the batch.** ``formula(net, ["batch"])`` of both networks
   gives the layer's regular count x and its twin's count y as polynomials in the batch; their
   ratio is a constant c (the output positions cancel), so the derived f is ``y = c x``.
2. **In the layer's channels** (a dense layer): a layer under test (:class:`ConvUnderTest`) with
   the layer's kernel, stride, padding, dilation, biases and input size, and ``c_in``, ``c_out``
   free (constructor arguments, so dimensions of the formula), traced regular and separable:
   ``f(x, C_in, C_out) = x * y / x`` with y / x simplified as a rational function. The kernel
   stays the layer's (LeNet-5's C5 sees a 5x5 input: no larger kernel has an output).
   A partially connected layer (C3) has its connection table fixed: derivation 1 only.

Each derived f is compared with the hand f (:func:`dws_mapping.formula_text`, parsed by sympy, at
the layer's K, and C_in, C_out, M where they are not dimensions): ``agree`` is a sympy identity
(the difference simplifies to 0), never assumed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sympy
from torch import nn

from flowprof.analyses import dws_mapping
from flowprof.analyses.dws_mapping import Quantity

X = sympy.Symbol("x", positive=True)
C_IN = sympy.Symbol("C_in", positive=True, integer=True)
C_OUT = sympy.Symbol("C_out", positive=True, integer=True)
FACTORY = "flowprof.analyses.dws_derived:ConvUnderTest"


class ConvUnderTest(nn.Module):
    """A 1x1 stem from the one input map to ``c_in`` maps (so that ``c_in`` can vary with the
    input fixed), then one convolution ``c_in -> c_out`` (child ``conv``) or its
    depthwise-separable twin (children ``depthwise``, ``pointwise``), as a network builds it."""

    def __init__(
        self,
        c_in: int = 1,
        c_out: int = 1,
        kernel: Sequence[int] = (5, 5),
        stride: Sequence[int] = (1, 1),
        padding: Sequence[int] = (0, 0),
        dilation: Sequence[int] = (1, 1),
        separable: bool = False,
        biases: Sequence[bool] = (True, False, True),
    ) -> None:
        super().__init__()
        b = dws_mapping.Biases(*biases)  # regular, depthwise, pointwise
        spatial = {"stride": tuple(stride), "padding": tuple(padding)}
        spatial["dilation"] = tuple(dilation)
        self.stem = nn.Conv2d(1, c_in, 1)
        if separable:
            self.depthwise = nn.Conv2d(
                c_in, c_in, tuple(kernel), groups=c_in, bias=b.depthwise, **spatial
            )
            self.pointwise = nn.Conv2d(c_in, c_out, 1, bias=b.pointwise)
        else:
            self.conv = nn.Conv2d(c_in, c_out, tuple(kernel), bias=b.regular, **spatial)
        self.separable = separable

    def forward(self, x: Any) -> Any:  # (B, 1, H, W)
        x = self.stem(x)  # (B, c_in, H, W)
        if self.separable:
            return self.pointwise(self.depthwise(x))  # (B, c_out, H', W')
        return self.conv(x)  # (B, c_out, H', W')


def separable_under_test(c_in: int = 1, c_out: int = 1, **options: Any) -> ConvUnderTest:
    """:class:`ConvUnderTest`'s depthwise-separable twin (a factory for the command line)."""
    return ConvUnderTest(c_in, c_out, separable=True, **options)


@dataclass(frozen=True)
class DerivedF:
    """f for one quantity of one layer: derived from traces, and by hand, and whether they are
    the same function (``derived - hand`` simplifies to 0)."""

    quantity: Quantity
    derived: sympy.Expr  # in x, and C_in, C_out when they are dimensions
    hand: sympy.Expr
    agree: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "quantity": self.quantity.value,
            "derived": str(self.derived),
            "hand": str(self.hand),
            "agree": self.agree,
        }


@dataclass(frozen=True)
class LayerDerivation:
    """Both derivations of f for one layer (``in_channels`` is empty for a sparse layer)."""

    layer: str
    c_in: int
    c_out: int
    kernel_taps: int
    connections: int
    in_batch: tuple[DerivedF, ...]
    in_channels: tuple[DerivedF, ...]

    @property
    def dense(self) -> bool:
        return self.connections == self.c_in * self.c_out

    @property
    def agree(self) -> bool:
        return all(d.agree for d in (*self.in_batch, *self.in_channels))

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "c_in": self.c_in,
            "c_out": self.c_out,
            "kernel_taps": self.kernel_taps,
            "connections": self.connections,
            "in_batch": [d.to_dict() for d in self.in_batch],
            "in_channels": [d.to_dict() for d in self.in_channels],
            "agree": self.agree,
        }


def hand_f(
    quantity: Quantity, biases: dws_mapping.Biases, taps: int, numbers: dict[str, int], dense: bool
) -> sympy.Expr:
    """The hand f (:func:`dws_mapping.formula_text`) as a sympy expression in x, with K = taps and
    the other letters given in ``numbers`` (C_in, C_out, M) set; those not given stay symbols."""
    names = {"x": X, "C_in": C_IN, "C_out": C_OUT, "K": sympy.Integer(taps)}
    names["M"] = sympy.Symbol("M", positive=True, integer=True)
    expr = sympy.sympify(dws_mapping.formula_text(quantity, biases, dense=dense), locals=names)
    return expr.subs({names[k]: v for k, v in numbers.items()})


def _count(f: Any, blocks: Sequence[str], quantity: Quantity) -> sympy.Expr:
    kinds = ("multiplications", "additions") if quantity is Quantity.SUM else (quantity.value,)
    return sympy.Add(*(f.block(b, kind) for b in blocks for kind in kinds))


def _same(a: sympy.Expr, b: sympy.Expr) -> bool:
    """Whether two rational functions are the same (their difference cancels to 0)."""
    return sympy.cancel(sympy.together(a - b)) == 0


@dataclass(frozen=True)
class Derivation:
    """f derived for every convolution of a comparison, and the traces it took."""

    layers: tuple[LayerDerivation, ...]
    traces: int

    def checks(self) -> list[DerivedF]:
        return [d for layer in self.layers for d in (*layer.in_batch, *layer.in_channels)]

    @property
    def agree(self) -> bool:
        return all(d.agree for d in self.checks())


def derive(comparison: Any) -> Derivation:
    """f derived from traces for each convolution of ``comparison`` (its two models), with the
    hand f beside it (see the module docstring)."""
    import flowprof
    from flowprof.analyses.formula import formula, symbol

    nets = {"a": comparison.model_a, "b": comparison.model_b}
    by_batch = {side: formula(name, ["batch"]) for side, name in nets.items()}
    graphs = {side: flowprof.trace(name) for side, name in nets.items()}
    out = []
    traces = sum(f.traces for f in by_batch.values())
    for conv in comparison.convs:
        regular_side = conv.regular_model
        twin_side = "b" if regular_side == "a" else "a"
        taps, b = conv.kernel_taps, conv.biases
        numbers = {"C_in": conv.c_in, "C_out": conv.c_out, "M": conv.connections}
        twin_blocks = (*conv.depthwise, *conv.pointwise)
        in_batch = []
        for q in Quantity:
            x = _count(by_batch[regular_side], conv.regular, q)
            y = _count(by_batch[twin_side], twin_blocks, q)
            derived = sympy.cancel(y / x) * X
            hand = hand_f(q, b, taps, numbers, dense=False)
            in_batch.append(DerivedF(q, derived, hand, _same(derived, hand)))
        in_channels = []
        one = len(conv.regular) == len(conv.depthwise) == len(conv.pointwise) == 1
        if conv.connections == conv.c_in * conv.c_out and one:
            block = next(x for x in graphs[regular_side].blocks() if x.name == conv.regular[0])
            module = _module(comparison, regular_side, conv.regular[0])
            options = {
                "kernel": tuple(module.kernel_size),
                "stride": tuple(module.stride),
                "padding": tuple(module.padding),
                "dilation": tuple(module.dilation),
                "biases": (b.regular, b.depthwise, b.pointwise),
            }
            shape = [(1, 1, *block.input_shapes[0][2:])]
            fits = {
                s: formula(
                    FACTORY,
                    ["c_in", "c_out"],
                    shape,
                    degrees={"c_in": 1, "c_out": 1},
                    separable=s,
                    **options,
                )
                for s in (False, True)
            }
            traces += sum(f.traces for f in fits.values())
            rename = {symbol("c_in"): C_IN, symbol("c_out"): C_OUT}
            for q in Quantity:
                x = _count(fits[False], ["conv"], q).subs(rename)
                y = _count(fits[True], ["depthwise", "pointwise"], q).subs(rename)
                derived = sympy.cancel(y / x) * X
                hand = hand_f(q, b, taps, {}, dense=True)
                in_channels.append(DerivedF(q, derived, hand, _same(derived, hand)))
        out.append(
            LayerDerivation(
                conv.layer,
                conv.c_in,
                conv.c_out,
                taps,
                conv.connections,
                tuple(in_batch),
                tuple(in_channels),
            )
        )
    return Derivation(tuple(out), traces)


def _module(comparison: Any, side: str, path: str) -> nn.Module:
    from flowprof.models import registry

    name = comparison.model_a if side == "a" else comparison.model_b
    return registry.build(name, device="meta").module.get_submodule(path)

"""Operation counts of two models side by side (docs/assignment.md Problem 2c), and the check of the
mapping f (Problem 2d, :mod:`analyses.dws_mapping`) on every convolution they differ in.

Both models are built through the registry and traced on the meta device (nothing is allocated).
Layers are the blocks at ``depth`` (1: the model's children, for LeNet-5 c1, s2, c3, s4, c5, f6,
output) and are paired by name: a depthwise-separable twin keeps its original's top-level names.
A layer that only one model has is a row of its own, placed where that model has it.

Convolution checks: a paired layer that is a regular convolution in one model and
depthwise + pointwise in the other gets x (the regular convolutions' traced counts), y (the
separable ones') and y predicted by f(x) for multiplications, additions and their sum. A layer's
convolution parameters are read from its modules: C_out and the connections M from the regular
convolutions (a connection table such as LeNet-5's C3 is several grouped convolutions), C_in from
the depthwise stage, K from the kernels, P (output positions) from the traced output shape.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from flowprof.analyses import dws_mapping
from flowprof.analyses.dws_mapping import Biases, Quantity

# Layer kinds of the comparison table, in column order.
KINDS = ("macs", "multiplications", "additions", "other")


@dataclass(frozen=True)
class LayerCounts:
    """One model's counts for one layer (or its totals)."""

    kind: str
    macs: int
    multiplications: int
    additions: int
    other: int
    params: int

    @property
    def mul_add(self) -> int:
        """Multiplications plus additions."""
        return self.multiplications + self.additions

    def get(self, name: str) -> int:
        return self.mul_add if name == "mul_add" else getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "macs": self.macs,
            "multiplications": self.multiplications,
            "additions": self.additions,
            "other": self.other,
            "params": self.params,
        }


def _ratio(b: int | None, a: int | None) -> float | None:
    return None if a is None or b is None or a == 0 else b / a


@dataclass(frozen=True)
class LayerRow:
    """A layer of model A beside the layer of the same name in model B (either may be None)."""

    name: str
    a: LayerCounts | None
    b: LayerCounts | None

    def ratio(self, kind: str) -> float | None:
        """B / A for ``kind`` (macs, multiplications, additions, other, mul_add); None if A has
        none of it or a side is missing."""
        return _ratio(
            self.b.get(kind) if self.b else None,
            self.a.get(kind) if self.a else None,
        )

    @property
    def matched(self) -> bool:
        return self.a is not None and self.b is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.name,
            "a": self.a.to_dict() if self.a else None,
            "b": self.b.to_dict() if self.b else None,
            "ratio_b_over_a": {k: self.ratio(k) for k in (*KINDS, "mul_add", "params")},
        }


@dataclass(frozen=True)
class QuantityCheck:
    """x traced, y traced and y = f(x) predicted, for one quantity of one convolution."""

    quantity: Quantity
    x: int
    y: int
    y_predicted: Fraction | None  # None: f undefined (the regular layer does none of these)
    x_from_parameters: int  # x by the closed form of the layer's parameters
    formula: str  # f as an expression (dws_mapping.formula_text)

    @property
    def ok(self) -> bool:
        """f(x) equals the traced y, and the traced x equals the closed form."""
        return self.y_predicted == self.y and self.x == self.x_from_parameters

    @property
    def ratio(self) -> float | None:
        return _ratio(self.y, self.x)

    def to_dict(self) -> dict[str, Any]:
        predicted = self.y_predicted
        return {
            "quantity": self.quantity.value,
            "x_traced": self.x,
            "y_traced": self.y,
            "y_predicted": None
            if predicted is None
            else (int(predicted) if predicted.denominator == 1 else str(predicted)),
            "x_from_parameters": self.x_from_parameters,
            "ratio_y_over_x": self.ratio,
            "f": self.formula,
            "ok": self.ok,
        }


@dataclass(frozen=True)
class ConvCheck:
    """One convolution layer: regular in one model, depthwise-separable in the other."""

    layer: str
    regular_model: str  # "a" or "b": which model has the regular convolution
    regular: tuple[str, ...]  # module paths of the regular convolution(s)
    depthwise: tuple[str, ...]
    pointwise: tuple[str, ...]
    c_in: int
    c_out: int
    kernel: tuple[int, ...]
    connections: int  # M (dense: c_in * c_out)
    positions: int  # P = N * H_out * W_out
    biases: Biases
    checks: tuple[QuantityCheck, ...]

    @property
    def kernel_taps(self) -> int:
        return math.prod(self.kernel)

    @property
    def dense(self) -> bool:
        return self.connections == self.c_in * self.c_out

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def check(self, quantity: Quantity | str) -> QuantityCheck:
        q = Quantity(quantity)
        return next(c for c in self.checks if c.quantity is q)

    def to_dict(self) -> dict[str, Any]:
        mode = self.biases.mode()
        return {
            "layer": self.layer,
            "regular_model": self.regular_model,
            "regular": list(self.regular),
            "depthwise": list(self.depthwise),
            "pointwise": list(self.pointwise),
            "c_in": self.c_in,
            "c_out": self.c_out,
            "kernel": list(self.kernel),
            "kernel_taps": self.kernel_taps,
            "connections": self.connections,
            "dense": self.dense,
            "positions": self.positions,
            "biases": {
                "regular": self.biases.regular,
                "depthwise": self.biases.depthwise,
                "pointwise": self.biases.pointwise,
                "mode": mode.value if mode else None,
            },
            "checks": [c.to_dict() for c in self.checks],
            "ok": self.ok,
        }


@dataclass(frozen=True)
class Comparison:
    """Two models' counts, layer by layer at ``depth``, with totals and the f checks."""

    model_a: str
    model_b: str
    depth: int | None
    rows: tuple[LayerRow, ...]
    total: LayerRow
    convs: tuple[ConvCheck, ...]
    config_a: Mapping[str, Any] = field(default_factory=dict)
    config_b: Mapping[str, Any] = field(default_factory=dict)

    def row(self, name: str) -> LayerRow:
        return next(r for r in self.rows if r.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_a": self.model_a,
            "model_b": self.model_b,
            "config_a": dict(self.config_a),
            "config_b": dict(self.config_b),
            "depth": self.depth,
            "convention": _convention(),
            "layers": [r.to_dict() for r in self.rows],
            "total": self.total.to_dict(),
            "convolutions": [c.to_dict() for c in self.convs],
            "f_derivation": dws_mapping.derivation("text"),
        }


def _convention() -> str:
    from flowprof.tracer.counts import CONVENTION

    return CONVENTION


def pair_names(a: Sequence[str], b: Sequence[str]) -> list[str]:
    """A's names in order, with each name only B has placed after B's preceding name."""
    out = list(a)
    seen = set(a)
    for i, name in enumerate(b):
        if name in seen:
            continue
        previous = next((p for p in reversed(b[:i]) if p in out), None)
        out.insert(0 if previous is None else out.index(previous) + 1, name)
        seen.add(name)
    return out


def _counts(block: Any) -> LayerCounts:
    c = block.count
    return LayerCounts(
        block.kind, c.macs, c.multiplications, c.additions, c.other, int(block.params)
    )


@dataclass(frozen=True)
class Traced:
    """A built model with its leaf-level trace (what the comparison reads)."""

    name: str
    module: Any  # torch.nn.Module
    graph: Any  # tracer.BlockGraph at leaf depth
    config: Mapping[str, Any]


def trace_model(
    name: str,
    options: Mapping[str, Any] | None = None,
    input_shapes: Sequence[Sequence[int]] | None = None,
    dtype: str | None = None,
    input_dtypes: Sequence[str | None] | None = None,
) -> Traced:
    """Build ``name`` through the registry on meta and trace it at leaf depth."""
    from flowprof.models import registry
    from flowprof.tracer import trace

    built = registry.build(
        name,
        device="meta",
        input_shapes=input_shapes,
        input_dtypes=input_dtypes,
        **dict(options or {}),
    )
    graph = trace(built.module, built.example_inputs("meta"), dtype=dtype)
    return Traced(name, built.module, graph, dict(built.config))


def compare(
    model_a: str,
    model_b: str,
    *,
    depth: int | None = 1,
    options_a: Mapping[str, Any] | None = None,
    options_b: Mapping[str, Any] | None = None,
    input_shapes: Sequence[Sequence[int]] | None = None,
    input_dtypes: Sequence[str | None] | None = None,
    dtype: str | None = None,
) -> Comparison:
    """Compare ``model_a`` and ``model_b`` (registry names), layer by layer at ``depth``.

    ``options_a`` / ``options_b`` are model options (as ``registry.build`` takes them);
    ``input_shapes`` (and ``input_dtypes``) apply to both models.
    """
    a = trace_model(model_a, options_a, input_shapes, dtype, input_dtypes)
    b = trace_model(model_b, options_b, input_shapes, dtype, input_dtypes)
    return compare_traced(a, b, depth)


def compare_traced(a: Traced, b: Traced, depth: int | None = 1) -> Comparison:
    """The comparison of two already traced models (see :func:`compare`)."""
    blocks_a = {blk.name: blk for blk in a.graph.by_block(depth).blocks()}
    blocks_b = {blk.name: blk for blk in b.graph.by_block(depth).blocks()}
    rows = []
    for name in pair_names(list(blocks_a), list(blocks_b)):
        ba, bb = blocks_a.get(name), blocks_b.get(name)
        rows.append(LayerRow(name, _counts(ba) if ba else None, _counts(bb) if bb else None))
    total = LayerRow("total", _total(a.graph), _total(b.graph))
    convs = []
    for name in (r.name for r in rows if r.matched):
        check = _conv_check(name, a, blocks_a[name].path, b, blocks_b[name].path)
        if check is not None:
            convs.append(check)
    return Comparison(a.name, b.name, depth, tuple(rows), total, tuple(convs), a.config, b.config)


def _total(graph: Any) -> LayerCounts:
    c = graph.total()
    return LayerCounts("", c.macs, c.multiplications, c.additions, c.other, graph.params())


# --- convolution checks --------------------------------------------------------------------


@dataclass(frozen=True)
class _Conv:
    path: str
    module: Any

    @property
    def taps(self) -> int:
        return math.prod(self.module.kernel_size)

    @property
    def is_depthwise(self) -> bool:
        m = self.module
        return m.groups == m.in_channels == m.out_channels and self.taps > 1

    @property
    def is_pointwise(self) -> bool:
        return self.taps == 1

    @property
    def connections(self) -> int:
        m = self.module
        return (m.in_channels // m.groups) * m.out_channels

    @property
    def bias(self) -> bool:
        return self.module.bias is not None


def _convs(module: Any, path: str) -> list[_Conv]:
    from torch import nn

    if not path:
        return []
    layer = module.get_submodule(path)
    return [
        _Conv(f"{path}.{name}" if name else path, m)
        for name, m in layer.named_modules()
        if isinstance(m, nn.modules.conv._ConvNd) and not m.transposed
    ]


def _is_separable(convs: list[_Conv]) -> bool:
    depthwise = [c for c in convs if c.is_depthwise]
    rest = [c for c in convs if not c.is_depthwise]
    return bool(depthwise) and bool(rest) and all(c.is_pointwise for c in rest)


def _leaf_counts(graph: Any, paths: Sequence[str]):
    """Traced counts of the module calls at ``paths`` (each call of each module), and the
    output shapes of those calls."""
    from flowprof.tracer.counts import OpCount

    wanted = set(paths)
    blocks = [blk for blk in graph.blocks() if blk.path in wanted]
    shapes = [s for blk in blocks for s in blk.output_shapes]
    return OpCount.sum(blk.count for blk in blocks), shapes


def _conv_check(layer: str, a: Traced, path_a: str, b: Traced, path_b: str) -> ConvCheck | None:
    convs_a, convs_b = _convs(a.module, path_a), _convs(b.module, path_b)
    if not convs_a or not convs_b:
        return None
    sep_a, sep_b = _is_separable(convs_a), _is_separable(convs_b)
    if sep_a == sep_b:
        return None  # both regular or both separable: nothing for f to map
    regular_side, regular, separable = ("b", b, a) if sep_a else ("a", a, b)
    regular_convs, separable_convs = (convs_b, convs_a) if sep_a else (convs_a, convs_b)
    taps = {c.taps for c in regular_convs}
    kernels = {tuple(c.module.kernel_size) for c in regular_convs}
    depthwise = [c for c in separable_convs if c.is_depthwise]
    pointwise = [c for c in separable_convs if c.is_pointwise]
    if len(taps) != 1 or {c.taps for c in depthwise} != taps:
        return None  # mixed kernels: not one layer f describes
    k = taps.pop()
    c_out = sum(c.module.out_channels for c in regular_convs)
    m = sum(c.connections for c in regular_convs)
    c_in = sum(c.module.in_channels for c in depthwise)
    if sum(c.connections for c in pointwise) != m or m > c_in * c_out:
        return None  # the pointwise stage does not keep the regular layer's connections
    x, x_shapes = _leaf_counts(regular.graph, [c.path for c in regular_convs])
    y, _ = _leaf_counts(separable.graph, [c.path for c in separable_convs])
    positions = {math.prod(s) // s[1] for s in x_shapes if len(s) >= 2}
    if len(positions) != 1:
        return None
    p = positions.pop()
    biases = Biases(
        regular=all(c.bias for c in regular_convs),
        depthwise=all(c.bias for c in depthwise),
        pointwise=all(c.bias for c in pointwise),
    )
    x_params = dws_mapping.regular_counts(c_in, c_out, k, p, m, biases.regular)
    traced_x = dws_mapping.Ops(x.multiplications, x.additions)
    traced_y = dws_mapping.Ops(y.multiplications, y.additions)
    checks = tuple(
        QuantityCheck(
            q,
            traced_x.get(q),
            traced_y.get(q),
            dws_mapping.f(traced_x.get(q), q, c_in, c_out, k, m, biases),
            x_params.get(q),
            dws_mapping.formula_text(q, biases, dense=m == c_in * c_out),
        )
        for q in Quantity
    )
    return ConvCheck(
        layer=layer,
        regular_model=regular_side,
        regular=tuple(c.path for c in regular_convs),
        depthwise=tuple(c.path for c in depthwise),
        pointwise=tuple(c.path for c in pointwise),
        c_in=c_in,
        c_out=c_out,
        kernel=kernels.pop(),
        connections=m,
        positions=p,
        biases=biases,
        checks=checks,
    )

"""The data model: tensors on edges, blocks on nodes, and the BlockGraph that holds them.

A BlockGraph is a NetworkX DiGraph whose nodes are blocks (node attribute ``block``) and whose
edges are the tensors flowing between them (edge attribute ``edge``). It keeps the leaf-level
units and tensor crossings it was built from, so it can be regrouped at any depth with
:meth:`BlockGraph.by_block` and the counts stay consistent: a group's counts are the sums of its
members, and an edge between groups carries exactly what crosses the boundary.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import networkx as nx

from flowprof.errors import BadSpecError
from flowprof.tracer.counts import (
    CONVENTION,
    CONVENTION_VERSION,
    OTHER_KINDS,
    ZERO,
    OpCount,
    Phase,
    PhaseCounts,
    Tally,
    add_phases,
)


class Precision(StrEnum):
    """The precision that floating-point bits are accounted at."""

    FP64 = "fp64"
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    FP8 = "fp8"
    INT8 = "int8"

    @property
    def bits(self) -> int:
        return {"fp64": 64, "fp32": 32, "fp16": 16, "bf16": 16, "fp8": 8, "int8": 8}[self.value]

    @classmethod
    def parse(cls, text: str) -> Precision:
        try:
            return cls(text.lower())
        except ValueError:
            known = ", ".join(p.value for p in cls)
            raise BadSpecError(f"unknown dtype {text!r} (known: {known})") from None

    @classmethod
    def of_torch(cls, dtype_name: str) -> Precision | None:
        return {
            "float64": cls.FP64,
            "float32": cls.FP32,
            "float16": cls.FP16,
            "bfloat16": cls.BF16,
            "float8_e4m3fn": cls.FP8,
            "float8_e5m2": cls.FP8,
            "int8": cls.INT8,
        }.get(dtype_name)


# Bit widths of dtypes that no Precision names (a tensor in one keeps its own width).
_NATIVE_BITS = {
    "int64": 64,
    "int32": 32,
    "int16": 16,
    "int8": 8,
    "uint8": 8,
    "bool": 8,
    "complex64": 64,
    "complex128": 128,
}


_DTYPE_NAMES: dict[Any, str] = {}  # torch dtype -> its name without "torch."


@dataclass(frozen=True)
class TensorMeta:
    """Shape and traced dtype of one tensor."""

    shape: tuple[int, ...]
    dtype: str  # torch's name, e.g. "float16", "int64"

    @classmethod
    def of(cls, tensor: Any) -> TensorMeta:
        """The shape and dtype of a torch tensor (read without torch function modes: a caller
        inside a counting run wraps it in ``torch._C.DisableTorchFunction``)."""
        name = _DTYPE_NAMES.get(tensor.dtype)
        if name is None:  # (str() of a dtype runs Python: once per dtype)
            name = _DTYPE_NAMES[tensor.dtype] = str(tensor.dtype).removeprefix("torch.")
        return cls(tuple(map(int, tensor.shape)), name)

    @property
    def elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def is_floating(self) -> bool:
        return self.dtype.startswith(("float", "bfloat", "complex"))

    def is_accounted(self, model_dtype: str | None = None) -> bool:
        """Whether this tensor's bits follow the accounted precision: a floating tensor in the
        model's own floating dtype ``model_dtype`` (None: any floating tensor). A tensor the
        model itself made in another dtype (a cast written in it: ``y.to(torch.int8)``,
        ``x.half()`` in an fp32 model) is the model's own choice and keeps its width."""
        return self.is_floating and (model_dtype is None or self.dtype == model_dtype)

    def bit_width(self, precision: Precision, model_dtype: str | None = None) -> int:
        """Bits per element: the accounted precision for the model's own floating dtype (see
        :meth:`is_accounted`); every other tensor at its own dtype's width."""
        if self.is_accounted(model_dtype):
            return precision.bits
        own = Precision.of_torch(self.dtype)
        return own.bits if own is not None else _NATIVE_BITS.get(self.dtype, 64)

    def accounted_dtype(self, precision: Precision, model_dtype: str | None = None) -> str:
        """The dtype its bits are accounted at: the precision (``fp16``) for the model's own
        floating dtype; otherwise its own, by the precision's name where it has one (``fp16``,
        ``int8``), else by torch's (``int64``, ``bool``)."""
        if self.is_accounted(model_dtype):
            return precision.value
        own = Precision.of_torch(self.dtype)
        return own.value if own is not None else self.dtype

    def bits(self, precision: Precision, model_dtype: str | None = None) -> int:
        return self.elements * self.bit_width(precision, model_dtype)

    def shape_str(self) -> str:
        return "x".join(str(d) for d in self.shape) or "scalar"


class CountedOnce:
    """Elements of parameters and buffers, each tensor counted once however many units read it
    (tied weights are one tensor); ``not_counted`` gives the ones no unit read."""

    def __init__(self) -> None:
        self.seen: set[int] = set()

    def __call__(self, tensors: Any) -> int:
        total = 0
        for t in tensors:
            if id(t) not in self.seen:
                self.seen.add(id(t))
                total += t.numel()
        return total

    def split(self, tensors: Any) -> tuple[int, int]:
        """Like calling it, and also the elements of those that need a gradient (trainable)."""
        total = trainable = 0
        for t in tensors:
            if id(t) not in self.seen:
                self.seen.add(id(t))
                n = t.numel()
                total += n
                trainable += n if t.requires_grad else 0
        return total, trainable

    def not_counted(self, tensors: Any) -> int:
        return sum(t.numel() for t in tensors if id(t) not in self.seen)


@dataclass(frozen=True)
class Unit:
    """A leaf-level block: one call of a leaf module, or one computing function call.

    ``stack`` is the chain of module calls it sits in, outermost first, as (key, qualified name,
    class name); keys carry ``@k`` for the k-th call of a module that is called more than once.
    """

    name: str
    kind: str
    stack: tuple[tuple[str, str, str], ...]
    count: OpCount
    params: int = 0
    buffers: int = 0
    input_shapes: tuple[tuple[int, ...], ...] = ()
    output_shapes: tuple[tuple[int, ...], ...] = ()
    ops: tuple[tuple[str, int], ...] = ()  # counted op name -> calls
    uncounted: tuple[tuple[str, int], ...] = ()  # op name -> calls
    role: str = "block"  # "block", "input" or "output"
    seconds: float | None = None  # measured wall time (--measure), else None
    other_phases: PhaseCounts = ()  # counts of the phases besides forward (``count``)
    trainable: int = 0  # elements of its parameters that need a gradient (of ``params``)
    # a measured training step: seconds of the phases besides forward (``seconds``), by phase
    phase_seconds: tuple[tuple[Phase, float], ...] = ()

    def counts(self) -> dict[Phase, OpCount]:
        """Counts by phase: forward (``count``) first, then the other phases recorded."""
        return {Phase.FORWARD: self.count} | dict(self.other_phases)


@dataclass(frozen=True)
class Outside:
    """Work that ran outside every block (e.g. in a forward hook or pre-hook on the model
    itself, which runs before and after its forward): counted, reported by op name, and
    included in the graph's totals, but in no block and on no edge."""

    count: OpCount = ZERO  # forward
    ops: tuple[tuple[str, int], ...] = ()  # counted op name -> calls
    uncounted: tuple[tuple[str, int], ...] = ()  # op name -> calls
    other_phases: PhaseCounts = ()

    @classmethod
    def of(cls, tally: Tally) -> Outside:
        ops, uncounted = tally.all_ops()
        return cls(
            tally.count,
            tuple(sorted(ops.items())),
            tuple(sorted(uncounted.items())),
            tally.phase_counts(),
        )

    def is_empty(self) -> bool:
        return (
            self.count.is_zero() and not self.ops and not self.uncounted and not self.other_phases
        )

    def calls(self) -> dict[str, int]:
        """Every op that ran outside the blocks, counted or not, by name -> calls."""
        out = Counter(dict(self.ops))
        out.update(dict(self.uncounted))
        return dict(sorted(out.items()))

    def counts(self) -> dict[Phase, OpCount]:
        return {Phase.FORWARD: self.count} | dict(self.other_phases)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "counts": self.count.to_dict(),
            "other": self.count.other,
            "ops": dict(self.ops),
            "uncounted": dict(self.uncounted),
        }
        if self.other_phases:
            out["phases"] = _phases_dict(self.counts())
        return out


def _phases_dict(counts: Mapping[Phase, OpCount]) -> dict[str, Any]:
    return {p.value: c.to_dict() | {"other": c.other} for p, c in counts.items()}


@dataclass(frozen=True)
class Crossing:
    """One tensor value produced in unit ``src`` and consumed in unit ``dst``."""

    value: str  # fx node name of the value: identifies it, so a group counts it once
    root: str  # the value it was sliced from (itself when it is whole): a group that gets the
    # whole root does not get its slices again
    src: str
    dst: str
    tensors: tuple[TensorMeta, ...]
    measured_bytes: int | None = None  # bytes of the real tensors (--measure), else None
    unmeasured: str | None = (
        None  # why --measure has no bytes for it (None: measured, or not asked)
    )
    grad: bool = False  # (a training step) its gradient flows back from dst to src


@dataclass(frozen=True)
class Block:
    """A node of the block graph: a leaf unit, or a group of them at some depth."""

    name: str
    kind: str
    path: str  # module path (qualified name), "" for functions at the top level
    parents: tuple[str, ...]  # enclosing group keys, outermost first (diagram clusters)
    members: tuple[str, ...]  # the leaf units it groups
    count: OpCount
    params: int
    buffers: int
    param_bits: int
    input_shapes: tuple[tuple[int, ...], ...]
    output_shapes: tuple[tuple[int, ...], ...]
    activation_bits: int  # bits of the distinct tensors it sends to other blocks
    uncounted: tuple[tuple[str, int], ...]
    role: str = "block"
    seconds: float | None = None  # measured wall time (--measure)
    other_phases: PhaseCounts = ()  # counts of the phases besides forward (``count``)
    trainable: int = 0  # elements of its parameters that need a gradient (of ``params``)
    bits_per_element: int = 0  # of its parameter gradients: the accounted precision's
    # a measured training step (``trace(..., measure=True)`` with phases): seconds of the phases
    # besides forward (``seconds``: the forward in train mode), by phase
    phase_seconds: tuple[tuple[Phase, float], ...] = ()

    def seconds_of(self, phase: Phase | str) -> float | None:
        """Measured seconds of ``phase`` (None: not measured, or the block has no such work)."""
        phase = Phase(phase)
        if phase is Phase.FORWARD:
            return self.seconds
        return dict(self.phase_seconds).get(phase)

    def counts(self) -> dict[Phase, OpCount]:
        """Counts by phase: forward (``count``) first, then the other phases recorded."""
        return {Phase.FORWARD: self.count} | dict(self.other_phases)

    @property
    def param_grad_bits(self) -> int:
        """Bits of its parameters' gradients, one per trainable parameter element at the
        accounted precision: what a data-parallel all-reduce moves for this block each step (the
        ring algorithm sends and receives about twice that per replica)."""
        return self.trainable * self.bits_per_element

    @property
    def macs(self) -> int:
        return self.count.macs

    @property
    def multiplications(self) -> int:
        return self.count.multiplications

    @property
    def additions(self) -> int:
        return self.count.additions

    @property
    def other(self) -> int:
        return self.count.other

    def to_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "kind": self.kind,
            "role": self.role,
            "path": self.path,
            "parents": list(self.parents),
            "members": list(self.members),
            "counts": self.count.to_dict(),
            "other": self.count.other,
            "params": self.params,
            "buffers": self.buffers,
            "param_bits": self.param_bits,
            "input_shapes": [list(s) for s in self.input_shapes],
            "output_shapes": [list(s) for s in self.output_shapes],
            "activation_bits": self.activation_bits,
            "uncounted": dict(self.uncounted),
            "seconds": self.seconds,
        }
        if self.other_phases:  # (a forward-only block's dict is as it always was)
            out["phases"] = _phases_dict(self.counts())
            out["trainable_params"] = self.trainable
            out["param_grad_bits"] = self.param_grad_bits
        if self.phase_seconds:
            out["phase_seconds"] = {p.value: s for p, s in self.phase_seconds}
        return out


@dataclass(frozen=True)
class Edge:
    """The tensors flowing from block ``src`` to block ``dst``, accounted at ``precision``."""

    src: str
    dst: str
    tensors: tuple[TensorMeta, ...]
    precision: Precision
    measured_bits: int | None = None  # 8 x bytes of the real tensors (--measure)
    # the model's own floating dtype, accounted at ``precision`` (TensorMeta.is_accounted);
    # None: every floating tensor is
    model_dtype: str | None = None
    unmeasured: str | None = None  # why --measure has no measured_bits (None: it has, or not asked)
    # (a training step) the tensors whose gradients flow back along it, from dst to src
    grad_tensors: tuple[TensorMeta, ...] = ()

    @property
    def grad_bits(self) -> int:
        """Bits of the gradients flowing back along it (each the shape and dtype of its tensor)."""
        return sum(t.bits(self.precision, self.model_dtype) for t in self.grad_tensors)

    def gradient(self) -> Edge:
        """The edge of the backward: the gradients of ``grad_tensors``, from ``dst`` to ``src``."""
        return Edge(
            self.dst, self.src, self.grad_tensors, self.precision, model_dtype=self.model_dtype
        )

    @property
    def native_bits(self) -> int:
        """Bits at the traced dtypes: what a real run moves (compared with measured_bits)."""
        return sum(
            t.elements * (Precision.of_torch(t.dtype) or Precision.FP32).bits
            if t.is_floating
            else t.bits(self.precision, self.model_dtype)
            for t in self.tensors
        )

    @property
    def shape(self) -> str:
        return "+".join(t.shape_str() for t in self.tensors)

    @property
    def dtype(self) -> str:
        """The accounted dtype(s): the precision for the model's own floating tensors, the own
        dtype otherwise (:meth:`TensorMeta.accounted_dtype`)."""
        names = dict.fromkeys(
            t.accounted_dtype(self.precision, self.model_dtype) for t in self.tensors
        )
        return "+".join(names)

    @property
    def elements(self) -> int:
        return sum(t.elements for t in self.tensors)

    @property
    def bits(self) -> int:
        return sum(t.bits(self.precision, self.model_dtype) for t in self.tensors)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "src": self.src,
            "dst": self.dst,
            "shape": self.shape,
            "dtype": self.dtype,
            "elements": self.elements,
            "bits": self.bits,
            "measured_bits": self.measured_bits,
            "tensors": [
                {"shape": list(t.shape), "traced_dtype": t.dtype, "elements": t.elements}
                for t in self.tensors
            ],
        }
        if self.unmeasured is not None:
            out["unmeasured"] = self.unmeasured
        if self.grad_tensors:
            out["grad_bits"] = self.grad_bits
        return out


@dataclass
class BlockGraph:
    """Blocks and the tensors between them; see the module docstring."""

    graph: nx.DiGraph
    units: tuple[Unit, ...]
    crossings: tuple[Crossing, ...]
    precision: Precision
    depth: int | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    outside_blocks: Outside = field(default_factory=Outside)  # read with :meth:`outside`
    # the model's own floating dtype (torch's name): its tensors are accounted at ``precision``,
    # tensors the model cast to another dtype at their own width (TensorMeta.is_accounted)
    model_dtype: str | None = None

    # -- queries --

    def blocks(self, include_io: bool = False) -> list[Block]:
        """Blocks in execution order; inputs and the output only when asked."""
        out = [self.graph.nodes[n]["block"] for n in self.graph.nodes]
        return out if include_io else [b for b in out if b.role == "block"]

    def block(self, name: str) -> Block:
        return self.graph.nodes[name]["block"]

    def edges(self) -> list[Edge]:
        return [d["edge"] for _, _, d in self.graph.edges(data=True)]

    def gradient_edges(self) -> list[Edge]:
        """The edges of the backward of a training step: for each forward edge whose tensors
        need a gradient, the gradients flowing back from its destination to its source (same
        shapes and dtypes), in reverse execution order of the forward edges."""
        return [
            e.gradient()
            for e in reversed(self.edges())
            if e.grad_tensors and self.block(e.dst).role != "output"  # (the loss sends them)
        ]

    def outside(self) -> Outside:
        """The work that ran outside every block: op name -> calls (:meth:`Outside.calls`) and
        its counts. Included in :meth:`total`, :meth:`uncounted` and :meth:`coverage`."""
        return self.outside_blocks

    def total(self, phase: Phase = Phase.FORWARD) -> OpCount:
        """Operations of every block, and of the work outside them, in ``phase``."""
        if phase is Phase.FORWARD:
            blocks = OpCount.sum(b.count for b in self.blocks())
        else:
            blocks = OpCount.sum(dict(b.other_phases).get(phase, ZERO) for b in self.blocks())
        return blocks + self.outside_blocks.counts().get(phase, ZERO)

    def phases(self) -> tuple[Phase, ...]:
        """The phases counted: forward, and those a training step added."""
        other = add_phases(
            [b.other_phases for b in self.blocks()] + [self.outside_blocks.other_phases]
        )
        return (Phase.FORWARD, *(p for p, _ in other))

    def params(self) -> int:
        return sum(b.params for b in self.blocks())

    def by_kind(self) -> dict[str, int]:
        """Total operations by kind: macs, multiplications, additions and each other kind."""
        t = self.total()
        return {"macs": t.macs, "multiplications": t.multiplications, "additions": t.additions} | {
            k: getattr(t, k) for k in OTHER_KINDS
        }

    def uncounted(self) -> dict[str, int]:
        """Ops that ran but have no formula, by name, with how many times they ran."""
        calls: Counter[str] = Counter()
        for u in self.units:
            calls.update(dict(u.uncounted))
        calls.update(dict(self.outside_blocks.uncounted))
        return dict(sorted(calls.items()))

    def coverage(self) -> float:
        """Share of the non-free op calls that were counted by a formula (1.0 = all)."""
        out = self.outside_blocks
        counted = sum(n for u in self.units for _, n in u.ops) + sum(n for _, n in out.ops)
        missing = sum(n for u in self.units for _, n in u.uncounted)
        missing += sum(n for _, n in out.uncounted)
        return 1.0 if counted + missing == 0 else counted / (counted + missing)

    def by_block(self, depth: int | None) -> BlockGraph:
        """The same analysis grouped at ``depth`` (None: leaf units)."""
        from flowprof.tracer.blocks import group  # grouping lives beside the unit builder

        return group(
            self.units,
            self.crossings,
            self.precision,
            depth,
            self.meta,
            self.outside_blocks,
            model_dtype=self.model_dtype,
        )

    def with_precision(self, precision: Precision) -> BlockGraph:
        from flowprof.tracer.blocks import group

        meta = dict(self.meta) | {"precision": precision.value}
        return group(
            self.units,
            self.crossings,
            precision,
            self.depth,
            meta,
            self.outside_blocks,
            model_dtype=self.model_dtype,
        )

    # -- outputs (the reports do the work; imported on use, so the tracer loads no drawing or
    # printing package: like pandas' DataFrame.plot) --

    def table(self, name: str = "") -> Any:
        """The blocks, edges and totals as one Rich renderable (``rich.print(g.table())``; a
        notebook shows it too), titled with the model's ``name``."""
        from flowprof.reports.tables import summary

        return summary(self, name)

    def to_csv(self, out_dir: Any) -> list[Any]:
        """Write ``blocks.csv`` and ``edges.csv`` (docs/design.md's columns) to ``out_dir``, each
        atomically; returns their paths."""
        from flowprof.reports.export import write_csv

        return write_csv(self, out_dir)

    def to_json(self, path: Any) -> Any:
        """Write :meth:`to_dict` as JSON to ``path`` atomically; returns the path."""
        from flowprof.reports.export import write_json

        return write_json(self, path)

    def to_dot(self, title: str | None = None) -> Any:
        """The dataflow diagram as a ``graphviz.Digraph`` (``.source`` is the DOT text)."""
        from flowprof.reports.diagram import dataflow

        return dataflow(self, title=title)

    def to_dict(self) -> dict[str, Any]:
        total = self.total()
        out = {
            "meta": dict(self.meta)
            | {
                "depth": self.depth,
                "precision": self.precision.value,
                "bits_per_element": self.precision.bits,
                "convention": CONVENTION,
                "convention_version": CONVENTION_VERSION,
            },
            "totals": total.to_dict()
            | {"other": total.other, "flops_from_macs": 2 * total.macs, "params": self.params()},
            "coverage": {"share_counted": self.coverage(), "uncounted": self.uncounted()},
            "blocks": [b.to_dict() for b in self.blocks(include_io=True)],
            "edges": [e.to_dict() for e in self.edges()],
        }
        # (keys only where there is something: a forward-only graph's dict is as it always was)
        if not self.outside_blocks.is_empty():
            out["outside"] = self.outside_blocks.to_dict()
        phases = self.phases()
        if len(phases) > 1:
            out["totals_by_phase"] = _phases_dict({p: self.total(p) for p in phases})
        if "training_step" in self.meta:  # the backward's edges: gradients, dst -> src
            out["gradient_edges"] = [
                e.to_dict() | {"phase": "backward"} for e in self.gradient_edges()
            ]
        return out

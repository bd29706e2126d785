"""Leaf units and the tensors crossing between them, built from one record of a run.

Both tracing paths describe what a run did in the same record, a :class:`RunRecord`: the fx path
converts its graph's nodes and what running each one did (tracer/fx_trace.py), the hooked path
fills it as the model runs (tracer/hook_trace.py). :func:`build` turns a record into Units and
Crossings; it is the only place that does, so the two paths cannot disagree on the rules:

- a *call* is a unit: a model input (``input:NAME``), a leaf-module call (named by its module
  path, ``@k`` for its k-th repeated call), a computing function call (named after its enclosing
  module call, ``encoder.add@1``), the output (``output:out``), or the forward's work that no
  hook saw (``forward:rest``);
- a *value* is what a call produced (one tensor, or on the fx path one node's tensors); a view,
  copy or conversion of a single value (:meth:`RunRecord.is_fold`) makes no unit: its value is
  *folded* into the producer of what it read, and remembers that source; a tensor made from
  another's shape and dtype only (``x.new_zeros(...)``, ``torch.zeros_like(x)``) reads no data
  of it: it is a constant;
- a parameter or buffer read by a call counts in that call's parameters, each tensor once per run
  (tied weights are one tensor); a module call owns its module's; a constant (a tensor made in
  forward from Python numbers) has no producer and no edge;
- an edge (Crossing) runs from a value's producer to each other unit that reads it, once per
  value, carrying the *whole* value: a read of a folded view that keeps all the data (a reshape,
  a broadcast) is a read of what it was folded from; a slice is its own value, whose ``root``
  names the value it was sliced from; a fold that makes data of its own (a cast to another
  dtype, a copy that repeats elements: nearest upsampling, ``repeat``) is what crosses, at its
  own shape and dtype (:attr:`Value.new_data`), so the edge carries the tensor its reader reads;
- an op that rewrites a tensor in place (``x.add_(y)``, ``x += y``, ``x.relu_()``,
  ``nn.ReLU(inplace=True)``) is a unit that reads the tensor and produces its new version: later
  reads of the tensor read that version (:meth:`RunRecord.bind`), so in-place ops are chained.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from flowprof.tracer.counts import Tally
from flowprof.tracer.graph import CountedOnce, Crossing, Outside, TensorMeta, Unit

# Python's operator dunders as torch.fx names the same call (``x + y`` is operator.add there).
_REFLECTED = {
    "radd": "add",
    "rsub": "sub",
    "rmul": "mul",
    "rmatmul": "matmul",
    "rtruediv": "truediv",
    "rdiv": "div",
    "rfloordiv": "floordiv",
    "rmod": "mod",
    "rpow": "pow",
    "rand": "and",
    "ror": "or",
    "rxor": "xor",
    "rlshift": "lshift",
    "rrshift": "rshift",
}


def base_name(func: Any) -> str:
    """The name a function call's unit takes after its enclosing module: ``add`` for
    ``operator.add``, ``Tensor.__add__``, ``Tensor.__radd__``, ``Tensor.add_`` and ``torch.add``;
    ``relu`` for ``torch.relu_``; ``view`` for the method name ``"view"`` (fx names methods by
    string). An in-place op is named as its out-of-place twin (it computes the same), on both
    paths."""
    name = func if isinstance(func, str) else getattr(func, "__name__", None) or str(func)
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
        name = _REFLECTED.get(name, name)
    return name.removesuffix("_")


@dataclass(eq=False)
class Value:
    """A tensor value of the run: who produced it and, for a fold, what it was read from.

    ``tensors``: one tensor on the hooked path; on the fx path, every tensor of one node's output.
    """

    name: str  # unique in the run: what a Crossing's ``value`` names (fx: the node's name)
    producer: UnitCall | None  # None: a constant, or a parameter or buffer
    tensors: tuple[TensorMeta, ...]
    source: Value | None = None  # for a folded view or copy: the value it read
    weight: torch.Tensor | None = None  # a parameter or buffer (producer is None then)
    is_parameter: bool = False  # (a weight that is a parameter; else a buffer)
    # a fold whose data is not a part or rearrangement of its source's: a cast to another dtype,
    # or a copy with more elements than its source (not a broadcast view of it)
    new_data: bool = False
    requires_grad: bool = False  # (a training step) a gradient flows back to it

    @property
    def elements(self) -> int:
        return sum(t.elements for t in self.tensors)

    def whole(self) -> Value:
        """Back through folded views and copies that keep all the data and make none (view,
        expand, copy): the value whose tensors cross when this one is read."""
        v = self
        while v.source is not None and not v.new_data and v.elements >= v.source.elements:
            v = v.source
        return v

    def root(self) -> Value:
        """The value this one is a part of: back through folds that make no data of their own
        (a slice's root is the value it was sliced from)."""
        v = self
        while v.source is not None and not v.new_data:
            v = v.source
        return v

    def origin(self) -> Value:
        """The value a chain of folds ultimately reads (a weight, or a unit's output), through
        casts and copies too: a cast of a weight still reads the weight."""
        v = self
        while v.source is not None:
            v = v.source
        return v


@dataclass(eq=False)
class UnitCall:
    """One call of the run that is a unit (see the module doc)."""

    name: str
    kind: str  # the module's class, the function's base name, "input" or "output"
    stack: tuple[tuple[str, str, str], ...]  # enclosing module calls: (key, qualname, class)
    inputs: list[Value]  # the values it read, in order, each once
    role: str = "block"  # "block", "input" or "output"
    tally: Tally = field(default_factory=Tally)  # what the counting modes added while it ran
    # parameters and buffers of the module called (read when the call is recorded)
    parameters: tuple[torch.Tensor, ...] = ()
    buffers: tuple[torch.Tensor, ...] = ()
    outputs: list[TensorMeta] = field(default_factory=list)


@dataclass
class RunRecord:
    """What one run did, in the form :func:`build` reads: its unit calls in execution order, the
    values they read and produced, and the work that ran outside every unit (a hook on the model
    itself runs before and after its forward)."""

    calls: list[UnitCall] = field(default_factory=list)
    outside: Tally = field(default_factory=Tally)
    parameters: tuple[torch.Tensor, ...] = ()  # all of the model's (those no call read: idle)
    # how the path names its values: identity -> the value now bound to it (id(tensor) on the
    # hooked path, fx node names on the fx path); an in-place op rebinds its tensor
    bound: dict[Hashable, Value] = field(default_factory=dict)
    # fx path: fx node name -> the unit it belongs to (what --measure and a pipeline need)
    node_units: dict[str, str] = field(default_factory=dict)
    # a timed run (--measure on the hooked path): seconds per unit, bytes per value
    unit_seconds: dict[str, float] = field(default_factory=dict)
    value_bytes: dict[str, int] = field(default_factory=dict)
    value_tensors: dict[str, tuple[TensorMeta, ...]] = field(default_factory=dict)  # (the same)
    _names: Counter = field(default_factory=Counter, repr=False)

    # -- values ---------------------------------------------------------------------------

    def read(self, key: Hashable) -> Value | None:
        """The value now bound to ``key`` (None: not data, or never seen)."""
        return self.bound.get(key)

    def bind(self, key: Hashable, value: Value) -> Value:
        """``key`` now names ``value``: a new tensor, or a tensor's new version after an in-place
        op (later reads of the tensor read that version)."""
        self.bound[key] = value
        return value

    def weight(self, key: Hashable, name: str, t: torch.Tensor, is_parameter: bool) -> Value:
        """A parameter or buffer of the model (or a tensor attribute fx reads)."""
        return self.bind(key, Value(name, None, (_meta(t),), weight=t, is_parameter=is_parameter))

    def produced(
        self,
        call: UnitCall,
        name: str,
        tensors: tuple[TensorMeta, ...],
        requires_grad: bool = False,
    ) -> Value:
        """A value ``call`` produced (not yet bound: the path binds it to its identity);
        ``requires_grad``: in a training step, autograd sends a gradient back to it."""
        call.outputs.extend(tensors)
        return Value(name, call, tensors, requires_grad=requires_grad)

    @staticmethod
    def folded(
        name: str,
        func: Any,
        source: Value | None,
        tensors: tuple[TensorMeta, ...],
        is_view: bool = False,
        requires_grad: bool = False,
    ) -> Value:
        """The output of a fold, a call of ``func``: a view (``is_view``: it shares the data of
        what it read), copy or conversion of ``source`` (None: of no value, a constant made in
        forward). A tensor made from ``source``'s shape and dtype alone is a constant."""
        if source is None or base_name(func) in _FROM_METADATA:
            return Value(name, None, tensors)
        new_data = not {t.dtype for t in tensors} <= {t.dtype for t in source.tensors} or (
            not is_view and sum(t.elements for t in tensors) > source.elements
        )
        return Value(
            name, source.producer, tensors, source, new_data=new_data, requires_grad=requires_grad
        )

    # -- calls ----------------------------------------------------------------------------

    @staticmethod
    def is_data(has_tensors: bool, tally: Tally) -> bool:
        """A function call that made no tensor and counted nothing (sizes, flags) is not data."""
        return has_tensors or not tally.is_empty()

    @staticmethod
    def is_fold(tally: Tally, inputs: Sequence[Value]) -> bool:
        """A function call that counted nothing and read at most one value makes no unit."""
        return tally.is_empty() and len(inputs) <= 1

    def add(self, call: UnitCall) -> UnitCall:
        self.calls.append(call)
        return call

    def input(self, name: str, tensors: tuple[TensorMeta, ...]) -> tuple[UnitCall, Value]:
        """A tensor input of the model, parameter ``name`` of its forward."""
        call = self.add(UnitCall("input:" + name, "input", (), [], role="input"))
        return call, self.produced(call, name, tensors)

    def module_call(
        self,
        stack: tuple[tuple[str, str, str], ...],
        module: torch.nn.Module,
        inputs: list[Value],
        tally: Tally | None = None,
    ) -> UnitCall:
        """A call of a leaf module (or of a module a formula counts as a whole), named by its
        key in ``stack`` (the last entry: the module itself)."""
        key, _, kind = stack[-1]
        call = UnitCall(key, kind, stack, inputs, tally=Tally() if tally is None else tally)
        call.parameters = tuple(module.parameters())
        call.buffers = tuple(module.buffers())
        return self.add(call)

    def function_call(
        self,
        stack: tuple[tuple[str, str, str], ...],
        func: Any,
        inputs: list[Value],
        tally: Tally,
    ) -> UnitCall:
        """A computing function or method call outside leaf modules, named after its enclosing
        module call and :func:`base_name` (``@k`` for the k-th of the same name)."""
        base = base_name(func)
        name = self._fresh(f"{stack[-1][0]}.{base}" if stack else base)
        return self.add(UnitCall(name, base, stack, inputs, tally=tally))

    def output(self, inputs: list[Value]) -> UnitCall:
        return self.add(UnitCall("output:out", "output", (), inputs, role="output"))

    def rest(self, kind: str, tally: Tally) -> None:
        """Work inside the forward that no hook saw (a TorchScript function's ops): a block of its
        own, ``forward:rest`` (a name no module path can take), before the output."""
        if not tally.is_empty() or tally.phases:
            at = len(self.calls) - (self.calls and self.calls[-1].role == "output")
            self.calls.insert(at, UnitCall("forward:rest", kind, (), [], tally=tally))

    def _fresh(self, name: str) -> str:
        k = self._names[name]
        self._names[name] += 1
        return name if k == 0 else f"{name}@{k}"


@dataclass(frozen=True)
class LeafGraph:
    """Leaf units, the tensors crossing between them and the work outside every unit: what
    :func:`tracer.group` groups into a BlockGraph at any depth."""

    units: tuple[Unit, ...]
    crossings: tuple[Crossing, ...]
    outside: Outside
    params_not_run: int  # parameters no unit read (modules an inference pass never calls)
    node_units: dict[str, str]  # fx node name -> unit (fx path; empty on the hooked path)


def build(record: RunRecord) -> LeafGraph:
    """Units and crossings of ``record`` (see the module doc for the rules)."""
    own = CountedOnce()  # parameters and buffers, each counted once
    units: list[Unit] = []
    crossings: list[Crossing] = []
    for call in record.calls:
        params, trainable = own.split(call.parameters)
        buffers = own(call.buffers)
        sent: set[str] = set()
        input_shapes: list[tuple[int, ...]] = []
        for v in call.inputs:
            base = v.origin()
            if base.weight is not None:  # a weight read by a function (or a view of one)
                if base.is_parameter:
                    p, t = own.split((base.weight,))
                    params, trainable = params + p, trainable + t
                else:
                    buffers += own((base.weight,))
                continue
            if v.producer is None:
                continue  # a constant made in forward
            input_shapes.extend(t.shape for t in v.tensors)
            if v.producer is call:
                continue
            value = v.whole()
            if value.name in sent:
                continue
            sent.add(value.name)
            crossings.append(
                Crossing(
                    value.name,
                    value.root().name,
                    v.producer.name,
                    call.name,
                    value.tensors,
                    grad=value.requires_grad or v.requires_grad,
                )
            )
        tally = call.tally
        ops, uncounted = tally.all_ops()
        units.append(
            Unit(
                name=call.name,
                kind=call.kind,
                stack=call.stack,
                count=tally.count,
                params=params,
                buffers=buffers,
                input_shapes=tuple(dict.fromkeys(input_shapes)),
                output_shapes=tuple(dict.fromkeys(t.shape for t in call.outputs)),
                ops=tuple(sorted(ops.items())),
                uncounted=tuple(sorted(uncounted.items())),
                role=call.role,
                other_phases=tally.phase_counts(),
                trainable=trainable,
            )
        )
    return LeafGraph(
        tuple(units),
        tuple(crossings),
        Outside.of(record.outside),
        own.not_counted(record.parameters),
        dict(record.node_units),
    )


# Functions that make a tensor from another's shape, dtype and device only: they read none of
# its data, so what they make is a constant, not something sent by the tensor's producer.
_FROM_METADATA = frozenset(
    [
        "new_zeros",
        "new_ones",
        "new_empty",
        "new_full",
        "new_empty_strided",
        "zeros_like",
        "ones_like",
        "empty_like",
        "full_like",
        "rand_like",
        "randn_like",
        "randint_like",
    ]
)


def _meta(t: torch.Tensor) -> TensorMeta:
    with torch._C.DisableTorchFunction():  # reading shapes is not the model's work
        return TensorMeta.of(t)

"""Blocks of a model whose own forward torch.fx cannot trace, found by hooks while it runs.

torch.fx cannot trace a forward that branches on traced values, iterates over them or calls code
fx cannot see through (a Hugging Face model's cache and mask handling, a wrapper's scatter): the
model used to become a single block, counted in full but with no dataflow inside. Here the model
runs once, on the same meta (fake, or real) tensors as the fx counting run and under the same
counting modes, and the blocks are recorded as they happen:

- a call of a leaf module (torch.fx's default rule: a torch.nn module other than Sequential) is a
  unit, named by its module path (``h.0.attn.c_proj``; ``@k`` for its k-th repeated call), with
  everything it computes;
- outside leaf modules, each torch function or tensor method the forward calls is a unit named
  after its enclosing module call (``h.0.attn.addmm``) when it computes or joins several tensors;
  one that only views, copies or converts a single tensor folds into that tensor's producer;
- tensors are followed by identity: an edge runs from the unit that produced a tensor to each
  unit that reads it, with its shape and dtype, exactly as the fx path records them. Tensors the
  forward makes from Python numbers (positions, masks of a given length) have no producer and no
  edge, but the work on them is counted (it runs on every call).

This is the path these inputs take: a branch on the inputs' values or sizes may take another
with other inputs (so is it for fx, which specialises on the sizes it is given too).
"""

from __future__ import annotations

import dataclasses
import time
import weakref
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor

from flowprof.tracer.counts import Tally
from flowprof.tracer.graph import CountedOnce, Crossing, TensorMeta, Unit

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
    "rand": "and_",
    "ror": "or_",
    "rxor": "xor",
    "rlshift": "lshift",
    "rrshift": "rshift",
}


def base_name(func: Any) -> str:
    """The name fx would give a call of ``func``: ``add`` for ``Tensor.__add__`` and
    ``Tensor.__radd__``, ``relu`` for ``torch.relu_``, ``view`` for ``Tensor.view``."""
    name = getattr(func, "__name__", None) or str(func)
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
        return _REFLECTED.get(name, name)
    return name.removesuffix("_")


def parts(value: Any) -> Iterable[Any] | None:
    """What a container in a call's arguments or output holds: the items of tuples and lists,
    the values of dicts (a Hugging Face ModelOutput is a dict), the fields of dataclasses; None
    for anything else. Where both tracers look for tensors."""
    if isinstance(value, (tuple, list)):
        return value
    if isinstance(value, Mapping):
        return value.values()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [getattr(value, f.name) for f in dataclasses.fields(value)]
    return None


def tensors_in(value: Any) -> Iterator[torch.Tensor]:
    """The tensors in a call's arguments or output, in order (see :func:`parts`)."""
    if isinstance(value, torch.Tensor):
        yield value
    else:
        for v in parts(value) or ():
            yield from tensors_in(v)


@dataclass
class _Value:
    """A tensor the run made or was given: who produced it, and what it was read from."""

    name: str  # unique in the run; what a Crossing's ``value`` names
    unit: str | None  # the producing unit; None for a constant (no producer, no edge)
    meta: TensorMeta
    source: _Value | None = None  # for a view or copy folded into its producer: what it read
    param: torch.Tensor | None = None  # a parameter or buffer (unit is None then)


@dataclass
class _UnitRecord:
    name: str
    kind: str
    stack: tuple[tuple[str, str, str], ...]
    inputs: list[_Value]
    module: nn.Module | None = None
    tally: Tally = field(default_factory=Tally)  # what the counting modes added while it ran
    outputs: list[TensorMeta] = field(default_factory=list)
    role: str = "block"
    started: float = 0.0
    seconds: float = 0.0


@dataclass
class HookRecords:
    """What the hooked run found: leaf units and crossings in fx_trace.build_units' form."""

    units: tuple[Unit, ...]
    crossings: tuple[Crossing, ...]
    params_not_run: int
    # on a timed run (``clock``): seconds per unit, and bytes of every value (real tensors)
    unit_seconds: dict[str, float] = field(default_factory=dict)
    value_bytes: dict[str, int] = field(default_factory=dict)


class HookRun:
    """One hooked run of ``model``: module hooks for leaf calls and the module-call stack, and
    :meth:`function_call`, called by the function counting mode for each torch function the
    forward calls outside a leaf module."""

    def __init__(self, model: nn.Module, rec: Any, is_leaf, clock: bool = False) -> None:
        self.model = model
        self.clock = clock  # time each unit and weigh each value (a run on real tensors)
        self.value_bytes: dict[str, int] = {}
        self.rec = rec  # fx_trace._Recorder: counts go to rec.current
        self.qualnames = {id(m): name for name, m in model.named_modules()}
        self.is_leaf = is_leaf
        self.stack: list[tuple[str, str, str]] = []
        self.calls: Counter[str] = Counter()
        self.names: Counter[str] = Counter()
        self.depth_in_leaf = 0  # > 0 inside a leaf module call (and modules it calls)
        self.in_function = False
        self.values: dict[int, _Value] = {}
        # Values are keyed by id(tensor), so an id must not be reused by a new tensor while its
        # old value is still known: tensors without storage (meta, fake) are kept alive for the
        # run; a real one (a run on real tensors) is forgotten when it dies, so that the run
        # frees activations as the model would.
        self.keep: list[torch.Tensor] = []
        self.units: list[_UnitRecord] = []
        self.open: list[_UnitRecord] = []  # leaf units running
        # Work that runs outside any leaf module or function call the mode sees (none in a
        # Python forward): kept, as a block of its own, rather than lost.
        self.rest = Tally()
        rec.current = self.rest
        self.n_values = 0
        params = dict(model.named_parameters(remove_duplicate=False))
        buffers = dict(model.named_buffers(remove_duplicate=False))
        for name, t in (params | buffers).items():
            self.values.setdefault(id(t), _Value(name, None, _meta(t), param=t))
            self.keep.append(t)
        self.param_ids = {id(t) for t in params.values()}

    # -- values ---------------------------------------------------------------------------

    def _hold(self, t: torch.Tensor) -> None:
        with torch._C.DisableTorchFunction():  # (not the model's work)
            storage_free = t.is_meta or isinstance(t, FakeTensor)
        if storage_free:
            self.keep.append(t)
        else:  # (CPython runs the finalizer as the tensor dies, before its id can be reused)
            weakref.finalize(t, self.values.pop, id(t), None)

    def _value(self, t: torch.Tensor) -> _Value | None:
        return self.values.get(id(t))

    def _new_value(self, t: torch.Tensor, unit: str | None, source: _Value | None = None):
        self.n_values += 1
        name = f"{unit or 'constant'}#{self.n_values}"
        v = _Value(name, unit, _meta(t), source)
        self.values[id(t)] = v
        self._hold(t)
        if self.clock:
            self.value_bytes[name] = t.numel() * t.element_size()
        return v

    def inputs(self, names: Sequence[str], inputs: Sequence[Any]) -> None:
        """The model's tensor inputs, ``input:NAME`` units (other inputs are constants)."""
        for name, x in zip(names, inputs, strict=False):
            if not isinstance(x, torch.Tensor):
                continue
            unit = "input:" + name
            u = _UnitRecord(unit, "input", (), [], role="input", outputs=[_meta(x)])
            self.values[id(x)] = _Value(name, unit, _meta(x))
            self._hold(x)
            if self.clock:
                self.value_bytes[name] = x.numel() * x.element_size()
            self.units.append(u)

    def output(self, out: Any) -> None:
        seen = []
        for t in tensors_in(out):
            v = self._value(t)
            if v is not None and v not in seen:
                seen.append(v)
        self.units.append(_UnitRecord("output:out", "output", (), seen, role="output"))

    def _fresh(self, name: str) -> str:
        k = self.names[name]
        self.names[name] += 1
        return name if k == 0 else f"{name}@{k}"

    # -- module hooks ---------------------------------------------------------------------

    def pre(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self.depth_in_leaf or self.in_function:
            self.depth_in_leaf += 1
            return
        qualname = self.qualnames.get(id(module))
        if qualname is None:  # a module made during the run: part of its caller's work
            self.depth_in_leaf += 1
            return
        k = self.calls[qualname]
        self.calls[qualname] += 1
        key = qualname if k == 0 else f"{qualname}@{k}"
        self.stack.append((key, qualname, type(module).__name__))
        if self.is_leaf(module):
            self.depth_in_leaf = 1
            ins = [v for t in tensors_in((args, kwargs)) if (v := self._value(t)) is not None]
            unit = _UnitRecord(key, type(module).__name__, tuple(self.stack), ins, module)
            self.open.append(unit)
            self.units.append(unit)
            self.rec.current = unit.tally
            if self.clock:
                unit.started = time.perf_counter()

    def post(self, module: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
        if self.depth_in_leaf > 1 or (self.depth_in_leaf == 1 and not self.open):
            self.depth_in_leaf -= 1
            return
        if self.depth_in_leaf == 1:
            unit = self.open.pop()
            if self.clock:
                unit.seconds = time.perf_counter() - unit.started
            self.depth_in_leaf = 0
            self.rec.current = self.rest
            self._outputs(unit, out)
        self.stack.pop()

    def _outputs(self, unit: _UnitRecord, out: Any) -> None:
        for t in tensors_in(out):
            if id(t) in self.values and self.values[id(t)].unit == unit.name:
                continue  # returned twice
            self._new_value(t, unit.name)
            unit.outputs.append(_meta(t))

    # -- functions ------------------------------------------------------------------------

    def active(self) -> bool:
        """True when a function call now is the forward's own (not inside a leaf module, a
        formula or another function)."""
        return not self.depth_in_leaf and not self.in_function

    def function_call(self, func: Any, args: tuple, kwargs: dict, run) -> Any:
        """Run one torch function the forward calls (``run()``) and record it."""
        slot = Tally()
        self.rec.current, self.in_function = slot, True
        started = time.perf_counter() if self.clock else 0.0
        try:
            out = run()
        finally:
            self.rec.current, self.in_function = self.rest, False
        seconds = time.perf_counter() - started if self.clock else 0.0
        outs = list(tensors_in(out))
        if not outs and slot.is_empty():
            return out  # sizes, flags, dtypes: not data
        ins: list[_Value] = []
        for t in tensors_in((args, kwargs)):
            v = self._value(t)
            if v is not None and v not in ins:
                ins.append(v)
        if slot.is_empty() and len(ins) <= 1:  # a view, copy or conversion: no unit
            source = ins[0] if ins else None
            for t in outs:
                if id(t) not in self.values:  # (not the input itself, returned as it was)
                    self._new_value(t, source.unit if source is not None else None, source)
            return out
        base = base_name(func)
        enclosing = self.stack[-1][0] if self.stack else ""
        name = self._fresh(f"{enclosing}.{base}" if enclosing else base)
        unit = _UnitRecord(name, base, tuple(self.stack), ins, tally=slot, seconds=seconds)
        self.units.append(unit)
        for t in outs:
            self._new_value(t, name)
            unit.outputs.append(_meta(t))
        return out

    # -- result ---------------------------------------------------------------------------

    def records(self) -> HookRecords:
        if not self.rest.is_empty():  # (named with a colon, like the ends: no module path)
            rest = _UnitRecord("forward:rest", type(self.model).__name__, (), [], tally=self.rest)
            self.units.insert(-1, rest)  # before the output
        own = CountedOnce()  # parameters and buffers, each counted once

        def whole(v: _Value) -> _Value:
            """Back through folded views and copies that keep all the data (as fx_trace)."""
            while v.source is not None and v.meta.elements >= v.source.meta.elements:
                v = v.source
            return v

        def root(v: _Value) -> _Value:
            while v.source is not None:
                v = v.source
            return v

        units: list[Unit] = []
        crossings: list[Crossing] = []
        for u in self.units:
            params = buffers = 0
            if u.module is not None:
                params = own(u.module.parameters())
                buffers = own(u.module.buffers())
            sent: set[str] = set()
            input_shapes = []
            for v in u.inputs:
                base = root(v)
                if base.param is not None:  # a weight read by a function (or a view of one)
                    if id(base.param) in self.param_ids:
                        params += own([base.param])
                    else:
                        buffers += own([base.param])
                    continue
                if v.unit is None:
                    continue  # a constant made in forward
                input_shapes.append(v.meta.shape)
                if v.unit == u.name:
                    continue
                value = whole(v)
                if value.name in sent:
                    continue
                sent.add(value.name)
                crossings.append(
                    Crossing(value.name, root(value).name, v.unit, u.name, (value.meta,))
                )
            units.append(
                Unit(
                    name=u.name,
                    kind=u.kind,
                    stack=u.stack,
                    count=u.tally.count,
                    params=params,
                    buffers=buffers,
                    input_shapes=tuple(dict.fromkeys(input_shapes)),
                    output_shapes=tuple(dict.fromkeys(t.shape for t in u.outputs)),
                    ops=tuple(sorted(u.tally.ops.items())),
                    uncounted=tuple(sorted(u.tally.uncounted.items())),
                    role=u.role,
                )
            )
        idle = own.not_counted(self.model.parameters())
        seconds = {u.name: u.seconds for u in self.units if u.role == "block"} if self.clock else {}
        return HookRecords(tuple(units), tuple(crossings), idle, seconds, dict(self.value_bytes))


def _meta(t: torch.Tensor) -> TensorMeta:
    with torch._C.DisableTorchFunction():  # reading shapes is not the model's work
        return TensorMeta.of(t)

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
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor

from flowprof.tracer.counts import Tally
from flowprof.tracer.graph import TensorMeta
from flowprof.tracer.units import RunRecord, UnitCall, Value, base_name


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


class HookRun:
    """One hooked run of ``model``, recorded in a :class:`RunRecord` (tracer/units.py builds its
    units): module hooks for leaf calls and the module-call stack, and :meth:`function_call`,
    called by the function counting mode for each torch function the forward calls outside a
    leaf module.

    Hooks on the model itself mark where its forward starts and ends: work before (the model's
    own forward pre-hooks) and after (its forward hooks) is outside every block; the inputs are
    what the forward receives and the output what it returns, as on the fx path."""

    def __init__(self, model: nn.Module, rec: Any, is_leaf, clock: bool = False) -> None:
        self.model = model
        self.clock = clock  # time each unit and weigh each value (a run on real tensors)
        self.rec = rec  # fx_trace._Recorder: counts go to rec.current
        self.qualnames = {id(m): name for name, m in model.named_modules()}
        self.is_leaf = is_leaf
        self.stack: list[tuple[str, str, str]] = []
        self.calls: Counter[str] = Counter()
        self.depth_in_leaf = 0  # > 0 inside a leaf module call (and modules it calls)
        self.in_function = False
        self.in_forward = False  # between the model's forward pre-hooks and its forward hooks
        self.input_names: Sequence[str] = ()
        # Values are bound to id(tensor), so an id must not be reused by a new tensor while its
        # old value is still known: tensors without storage (meta, fake) are kept alive for the
        # run; a real one (a run on real tensors) is forgotten when it dies, so that the run
        # frees activations as the model would.
        self.keep: list[torch.Tensor] = []
        self.open: list[UnitCall] = []  # leaf units running
        self.started: dict[str, float] = {}
        params = dict(model.named_parameters(remove_duplicate=False))
        buffers = dict(model.named_buffers(remove_duplicate=False))
        self.record = RunRecord(parameters=tuple(model.parameters()))
        rec.current = self.record.outside  # (until the forward starts)
        # Work inside the forward that no leaf module or function call the mode sees (none in a
        # Python forward): kept, as a block of its own, rather than lost.
        self.rest = Tally()
        self.folds: Counter[str] = Counter()  # folds made so far, by source value and function
        self.fold_tallies: list[tuple[Tally, Tally]] = []  # (a fold's tally, its owner's)
        self.units_by_key: dict[str, UnitCall] = {}  # leaf units by their call's key
        self.recalls: Counter[str] = Counter()  # leaf calls recomputed so far, by module
        self.recompute_depth = 0  # > 0 inside a recomputed leaf call
        param_ids = {id(t) for t in params.values()}
        for name, t in (params | buffers).items():
            if id(t) not in self.record.bound:
                self.record.weight(id(t), name, t, id(t) in param_ids)
                self.keep.append(t)

    # -- values ---------------------------------------------------------------------------

    def _hold(self, t: torch.Tensor) -> None:
        with torch._C.DisableTorchFunction():  # (not the model's work)
            storage_free = t.is_meta or isinstance(t, FakeTensor)
        if storage_free:
            self.keep.append(t)
        else:  # (CPython runs the finalizer as the tensor dies, before its id can be reused)
            weakref.finalize(t, self.record.bound.pop, id(t), None)

    def _value(self, t: torch.Tensor) -> Value | None:
        return self.record.bound.get(id(t))

    def _bind(self, t: torch.Tensor, value: Value) -> None:
        self.record.bind(id(t), value)
        self._hold(t)
        if self.clock:
            self.record.value_bytes[value.name] = t.numel() * t.element_size()
            self.record.value_tensors[value.name] = value.tensors

    # A value is named by what it is, so that two runs of the model (the counting run on meta
    # tensors, --measure's on real ones) name the same tensor alike even where one of them made
    # tensors the other did not (a branch on values): a unit's output by the unit and its position
    # among the unit's outputs, a fold by its source's name, the function and its position among
    # the folds of that source by that function.

    @staticmethod
    def _output_name(unit: UnitCall) -> str:
        return f"{unit.name}#{len(unit.outputs)}"

    def _fold_name(self, source: Value | None, func: Any) -> str:
        stem = f"{source.name if source is not None else 'constant'}/{base_name(func)}"
        k = self.folds[stem]
        self.folds[stem] += 1
        return f"{stem}#{k}"

    def _reads(self, args: Any) -> list[Value]:
        ins: list[Value] = []
        for t in tensors_in(args):
            v = self._value(t)
            if v is not None and v not in ins:
                ins.append(v)
        return ins

    # -- the model itself: where its forward starts and ends ------------------------------

    def forward_starts(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """The model's forward pre-hook, run after the user's own: the inputs as the forward
        receives them are the ``input:NAME`` units (other inputs are constants)."""
        if torch._C._current_autograd_node() is not None:
            return  # (a checkpoint of the whole model, recomputed in the backward)
        for name, x in zip(self.input_names, args, strict=False):
            if isinstance(x, torch.Tensor):
                _, v = self.record.input(name, (_meta(x),))
                self._bind(x, v)
        self.in_forward = True
        self.rec.current = self.rest

    def forward_ends(self, module: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
        """The model's forward hook, run before the user's own: the output unit reads what the
        forward returned."""
        if torch._C._current_autograd_node() is not None:
            return
        self.in_forward = False
        self.rec.current = self.record.outside
        self.record.output(self._reads(out))

    # -- module hooks ---------------------------------------------------------------------

    def pre(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if torch._C._current_autograd_node() is not None:
            self._recompute_pre(module)
            return
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
            unit = self.record.module_call(tuple(self.stack), module, self._reads((args, kwargs)))
            self.units_by_key[key] = unit
            self.open.append(unit)
            self.rec.current = unit.tally
            if self.clock:
                self.started[unit.name] = time.perf_counter()

    def post(self, module: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
        if torch._C._current_autograd_node() is not None:
            self._recompute_post(out)
            return
        if self.depth_in_leaf > 1 or (self.depth_in_leaf == 1 and not self.open):
            self.depth_in_leaf -= 1
            return
        if self.depth_in_leaf == 1:
            unit = self.open.pop()
            if self.clock:
                self.record.unit_seconds[unit.name] = time.perf_counter() - self.started[unit.name]
            self.depth_in_leaf = 0
            self.rec.current = self.rest
            self._outputs(unit, out)
        self.stack.pop()

    # -- a checkpoint's recomputed forward (in the backward of a training step) --------------
    # Modules run again in the order they ran in the forward: the k-th recomputed call of a leaf
    # module is its k-th call, whose unit the recomputation is counted in (phase ``recompute``).

    def _recompute_pre(self, module: nn.Module) -> None:
        if self.recompute_depth:
            self.recompute_depth += 1
            return
        qualname = self.qualnames.get(id(module))
        if qualname is None or not self.is_leaf(module):
            return
        k = self.recalls[qualname]
        self.recalls[qualname] += 1
        unit = self.units_by_key.get(qualname if k == 0 else f"{qualname}@{k}")
        if unit is not None:
            self.rec.pinned = unit.tally
            self.recompute_depth = 1

    def _recompute_post(self, out: Any) -> None:
        if self.recompute_depth > 1:
            self.recompute_depth -= 1
        elif self.recompute_depth == 1:
            # the autograd nodes the recomputation made (a reentrant checkpoint runs its own
            # backward through them) are the unit's: no function mode runs inside the backward
            # to tag them as they are made
            from flowprof.tracer.training_step import tag

            tag(out, self.rec.pinned)
            self.recompute_depth = 0
            self.rec.pinned = None

    def _outputs(self, unit: UnitCall, out: Any) -> None:
        for t in tensors_in(out):
            v = self._value(t)
            if v is not None and v.producer is unit:
                continue  # returned twice
            # (a tensor the unit read and changed in place gets its new version here)
            name = self._output_name(unit)
            self._bind(t, self.record.produced(unit, name, (_meta(t),), _needs_grad(t)))

    # -- functions ------------------------------------------------------------------------

    def active(self) -> bool:
        """True when a function call now is the forward's own (not inside a leaf module, a
        formula or another function; not in a hook on the model itself)."""
        return self.in_forward and not self.depth_in_leaf and not self.in_function

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
        if not RunRecord.is_data(bool(outs), slot):
            return out  # sizes, flags, dtypes: not data
        ins = self._reads((args, kwargs))
        record = self.record
        if RunRecord.is_fold(slot, ins):  # a view, copy or conversion: no unit
            source = ins[0] if ins else None
            for t in outs:
                if id(t) not in record.bound:  # (not the input itself, returned as it was)
                    with torch._C.DisableTorchFunction():  # (not the model's work)
                        is_view = t._is_view()
                    name = self._fold_name(source, func)
                    value = record.folded(name, func, source, (_meta(t),), is_view, _needs_grad(t))
                    self._bind(t, value)
            # (a training step) the backward of a fold is its source producer's work
            owner = source.producer.tally if source and source.producer else self.rest
            self.fold_tallies.append((slot, owner))
            return out
        unit = record.function_call(tuple(self.stack), func, ins, slot)
        if self.clock:
            record.unit_seconds[unit.name] = seconds
        for t in outs:
            name = self._output_name(unit)
            self._bind(t, record.produced(unit, name, (_meta(t),), _needs_grad(t)))
        return out

    # -- result ---------------------------------------------------------------------------

    def records(self) -> RunRecord:
        """The record of the run (after the model returned, and a training step's backward)."""
        for slot, owner in self.fold_tallies:
            owner.absorb_phases(slot)
        self.record.rest(type(self.model).__name__, self.rest)
        if self.clock and not self.rest.is_empty():
            self.record.unit_seconds["forward:rest"] = 0.0  # (not timed: no hook sees it)
        return self.record


def _meta(t: torch.Tensor) -> TensorMeta:
    with torch._C.DisableTorchFunction():  # reading shapes is not the model's work
        return TensorMeta.of(t)


def _needs_grad(t: torch.Tensor) -> bool:
    """Whether autograd will send ``t`` a gradient (grad mode on, and it requires one)."""
    with torch._C.DisableTorchFunction():
        return torch.is_grad_enabled() and t.requires_grad

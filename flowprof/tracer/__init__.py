"""flowprof's tracer: a model in, a BlockGraph out (exact counts on nodes, tensors on edges).

:func:`trace` does it in one call. Its stages are public too (tracer/stages.py), for code that
needs one of them: :func:`trace_structure` (fx or hooks), :func:`counting_run` (the
:class:`RunRecord` of one meta run), :func:`build_units` (the :class:`LeafGraph` of units and
crossings) and :func:`group` (the :class:`BlockGraph` at a depth). Only the names in ``__all__``
are public; nothing outside the tracer uses another (a test checks it).

Units throughout: counts in elementary operations (``OpCount``: MACs, multiplications,
additions and the other kinds), parameters and buffers in elements, tensor sizes in elements and
bits (at a :class:`Precision`), time in seconds.

Imports torch, torch.fx and networkx only; drawing and printing live in ``reports``.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from flowprof.errors import BadSpecError, FlowprofError, UnsupportedModelError
from flowprof.tracer.blocks import group_key
from flowprof.tracer.counts import CONVENTION, CONVENTION_VERSION, OpCount, Phase
from flowprof.tracer.graph import (
    Block,
    BlockGraph,
    Crossing,
    Edge,
    Outside,
    Precision,
    TensorMeta,
    Unit,
)
from flowprof.tracer.lifetimes import CATEGORIES as MEMORY_CATEGORIES
from flowprof.tracer.lifetimes import Lifetimes, Segment
from flowprof.tracer.lifetimes import run as record_lifetimes
from flowprof.tracer.measure import clock as measure_clock
from flowprof.tracer.stages import (
    build_units,
    counting_run,
    eval_mode,
    group,
    trace_structure,
    train_mode,
)
from flowprof.tracer.training_step import TrainingStep, as_step
from flowprof.tracer.units import LeafGraph, RunRecord

__all__ = [
    "CONVENTION",
    "TOOL_VERSION",
    "BadSpecError",
    "Block",
    "BlockGraph",
    "Crossing",
    "Edge",
    "FlowprofError",
    "LeafGraph",
    "Lifetimes",
    "MEMORY_CATEGORIES",
    "OpCount",
    "Outside",
    "Phase",
    "Precision",
    "RunRecord",
    "TensorMeta",
    "Unit",
    "UnsupportedModelError",
    "Segment",
    "as_inputs",
    "as_step",
    "build_units",
    "counting_run",
    "eval_mode",
    "gc_paused",
    "group",
    "group_key",
    "record_lifetimes",
    "TrainingStep",
    "measure_clock",
    "trace",
    "trace_structure",
    "train_mode",
]

TOOL_VERSION = "0.1.0"


def _model_dtype(model: nn.Module) -> torch.dtype:
    for p in list(model.parameters()) + list(model.buffers()):
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def _unwrapped(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """The module a wrapper runs, and the wrappers peeled off it (outermost first).

    torch.compile's OptimizedModule runs ``_orig_mod`` (compiled, but the same arithmetic);
    DataParallel and DistributedDataParallel run ``module`` on each device's share of the batch,
    so the whole batch costs what ``module`` costs on it. torch.fx cannot trace the wrappers
    themselves (OptimizedModule has no ``forward`` of its own; the parallel wrappers scatter
    their inputs), so the model they wrap is traced in their place.
    """
    peeled = []
    while True:
        # OptimizedModule lives in torch._dynamo, which takes 0.7 s to import: a model can only
        # be one if the user's program has imported it already.
        eval_frame = sys.modules.get("torch._dynamo.eval_frame")
        if eval_frame is not None and isinstance(model, eval_frame.OptimizedModule):
            peeled.append("torch.compile (OptimizedModule)")
            model = model._orig_mod
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            peeled.append(type(model).__name__)
            model = model.module
        else:
            return model, peeled


def _by_position(model: nn.Module, inputs: Mapping[str, Any]) -> tuple[list[Any], set[int]]:
    """Inputs given by name, in the order of ``model.forward``'s parameters, and the positions
    filled with defaults: up to the last one given, a parameter not given takes its default (a
    None in a mask's place), so that keyword inputs (a Hugging Face encoder-decoder's
    ``decoder_input_ids``) reach the model by position, as every other input does."""
    from flowprof.tracer.fx_trace import _forward_parameters

    named, _, _ = _forward_parameters(model)
    names = [p.name for p in named]
    unknown = [k for k in inputs if k not in names]
    if unknown:
        raise BadSpecError(
            f"{type(model).__name__}.forward has no positional parameter {unknown[0]!r} "
            f"(it has: {', '.join(names) or 'none'})"
        )
    out, filled = [], set()
    for i, p in enumerate(named[: max(names.index(k) for k in inputs) + 1]):
        if p.name in inputs:
            out.append(inputs[p.name])
        elif p.default is p.empty:
            raise BadSpecError(f"give {type(model).__name__}.forward's input {p.name!r}")
        else:
            out.append(p.default)
            filled.add(i)
    return out, filled


def as_inputs(model: nn.Module, inputs: Any) -> list[Any]:
    """``model``'s example inputs as the stages take them, in forward's order. Tensors stay (only
    their shape and dtype are used); shapes (tuples of sizes, in elements) become meta tensors;
    None stays (an optional input given as absent). Inputs given by name (a mapping) are put in
    forward's order (:func:`_by_position`), with forward's defaults where a name is skipped."""
    if isinstance(inputs, torch.Tensor):
        return [inputs]
    filled: set[int] = set()
    if isinstance(inputs, Mapping) and inputs:
        inputs, filled = _by_position(model, inputs)
    if isinstance(inputs, Sequence) and inputs and all(isinstance(d, int) for d in inputs):
        inputs = [tuple(inputs)]
    if not isinstance(inputs, Sequence) or not inputs:
        raise BadSpecError("give the model's example inputs as tensors or shapes")
    dtype = _model_dtype(model)
    out = []
    for i, x in enumerate(inputs):
        if isinstance(x, torch.Tensor) or x is None or i in filled:
            out.append(x)
        elif isinstance(x, Sequence) and all(isinstance(d, int) and d > 0 for d in x):
            out.append(torch.empty(tuple(x), dtype=dtype, device="meta"))
        else:
            raise BadSpecError(f"not a tensor, a shape of positive sizes or None: {x!r}")
    return out


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector, paused for one trace (``trace`` runs its stages so).

    A trace makes thousands of short-lived objects (fx nodes and proxies, records), enough to
    trigger a dozen collections; every few traces one of them is a full collection, which walks
    every object the process holds (about 200,000 once torch is imported: 80-120 ms here). Measured
    on LeNet-5, collections cost more than the trace itself. Paused, the trace's garbage is
    collected at the end, in one pass over the young generation, which the trace pays for.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
            gc.collect(0)


def _measure(structure, model, tensors, node_units, units, crossings):
    import dataclasses

    from flowprof.tracer.measure import measure, measure_hooked

    if structure.hooked:
        m = measure_hooked(structure, model, tensors)
    else:
        values = {c.value for c in crossings}
        m = measure(structure.graph_module, model, tensors, node_units, values)
    units = tuple(dataclasses.replace(u, seconds=m.unit_seconds.get(u.name)) for u in units)

    # A value is matched by its name, which says what it is (hooked path: its producer and its
    # position among what that made; fx path: its node); one the measured run did not make is
    # said to be unmeasured, with the reason.
    def weighed(c: Crossing) -> Crossing:
        if c.value not in m.value_bytes:
            if not structure.hooked:
                return dataclasses.replace(c, unmeasured="its fx node did not run when measured")
            why = "the measured run made no such tensor"
        elif m.value_tensors is None or m.value_tensors.get(c.value) == c.tensors:
            return dataclasses.replace(c, measured_bytes=m.value_bytes[c.value])
        else:
            made = "+".join(f"{t.shape_str()} {t.dtype}" for t in m.value_tensors[c.value])
            why = f"the measured run's tensor of this name is another ({made})"
        return dataclasses.replace(
            c, unmeasured=f"{why}: it took another path than the counting run (a branch on values)"
        )

    return units, tuple(weighed(c) for c in crossings)


def _measure_step(structure, model, tensors, node_units, units, step):
    """The units with their measured seconds per phase of a real training step
    (tracer/measure_step.py): ``seconds`` the forward (train mode), ``phase_seconds`` the rest."""
    import dataclasses

    from flowprof.tracer.measure_step import measure_step

    if structure.hooked:
        raise UnsupportedModelError(
            "measuring a training step needs a model torch.fx traces whole; this one's blocks "
            "are recorded by hooks (trace the step without measure, or measure the forward)"
        )
    m = measure_step(structure.graph_module, model, tensors, node_units, step)
    summary = {
        "runs": m.runs,
        "backward_seconds": m.backward_seconds,
        "backward_attributed_seconds": m.backward_attributed,
        "optimizer_seconds": m.optimizer_seconds,
    }
    out = []
    for u in units:
        by_phase = m.unit_seconds.get(u.name, {})
        out.append(
            dataclasses.replace(
                u,
                seconds=by_phase.get(Phase.FORWARD, 0.0 if u.role == "block" else None),
                phase_seconds=tuple((p, s) for p, s in by_phase.items() if p is not Phase.FORWARD),
            )
        )
    return tuple(out), summary


def trace(
    model: nn.Module,
    inputs: Any,
    *,
    dtype: str | Precision | None = None,
    depth: int | None = None,
    meta: Mapping[str, Any] | None = None,
    measure: bool = False,
    hooks: bool | None = None,
    phases: Sequence[str] | None = None,
    optimizer: str | Any = None,
    loss: str | Any = None,
    input_grad: bool = False,
    amp: str | None = None,
) -> BlockGraph:
    """Trace ``model`` on ``inputs`` (tensors, or shapes, in forward's order; or a mapping of
    forward's parameter names to them) into a BlockGraph.

    Nothing is allocated: the graph is run on meta tensors (fake ones where meta cannot).
    ``dtype`` is the precision that floating-point bits are accounted at (default: the model's
    own dtype): that of the tensors in the model's own floating dtype, as if the model ran in
    ``dtype``; a tensor the model itself casts to another dtype keeps that dtype's width.
    ``depth`` groups the leaf units by module hierarchy (None: leaf modules and computing
    functions). The model is left as it was (its train/eval flags included). A model
    wrapped by torch.compile or (Distributed)DataParallel is traced as the model they wrap.
    ``measure`` also runs it for real (it needs real weights) and adds seconds per block and the
    measured bytes of every edge. ``hooks``: None (default) traces with torch.fx and records the
    blocks by hooks as the model runs where fx cannot trace all of it; True records them by hooks
    whatever fx could do (to compare the two, or to time the path fx's failures take); False
    keeps fx's one block per module it cannot trace.

    A training step: ``phases=("forward", "backward", "optimizer")`` (or any of ``optimizer``,
    ``loss``) counts forward, loss, backward and optimizer update as autograd and torch.optim run
    them, on meta tensors, in train mode; each block's ``counts()`` has them by phase and a
    ``loss`` block sits before the output. ``optimizer``: ``"sgd"`` (default), ``"adam"``,
    ``"adamw"`` or a function making one from a list of parameters; ``loss``: ``"auto"``,
    ``"cross-entropy"``, ``"mse"``, ``"sum"``; ``input_grad``: the inputs need a gradient too
    (see :class:`tracer.training_step.TrainingStep`); ``amp``: mixed precision, ``"bf16"`` or
    ``"fp16"`` (autocast over fp32 master weights; fp16 with torch.amp.GradScaler's loss
    scaling), run on fake tensors, as autocast has no meta backend. Edges then carry the
    gradients flowing back (:meth:`BlockGraph.gradient_edges`), blocks the bits of their
    parameter gradients. With ``measure`` (not with ``amp``; a model torch.fx traces whole), the
    step also runs for real on the CPU: each block's forward (train mode), backward and optimizer
    step timed (tracer/measure_step.py; ``Block.seconds_of(phase)``).
    """
    from flowprof.tracer.training_step import as_step

    step = as_step(phases, optimizer, loss, amp, input_grad)
    if step is not None and measure and step.amp is not None:
        raise BadSpecError(
            "measure times a training step in the model's own dtype; mixed precision (amp) is "
            "counted, not measured: drop one of the two"
        )
    model, wrappers = _unwrapped(model)
    tensors = as_inputs(model, inputs)  # (and the values, None, in optional inputs' places)
    given = [t for t in tensors if isinstance(t, torch.Tensor)]
    # The model's own floating dtype: its tensors are accounted at ``dtype``; tensors the model
    # casts to another dtype keep their own width (TensorMeta.is_accounted).
    float_inputs = [t.dtype for t in given if t.is_floating_point()]
    own = str(_model_dtype(model) if not float_inputs else float_inputs[0]).removeprefix("torch.")
    if dtype is None:
        precision = Precision.of_torch(own) or Precision.FP32
    else:
        precision = dtype if isinstance(dtype, Precision) else Precision.parse(dtype)
    with gc_paused():
        # Traced and run in eval mode (counts are of an inference pass), a training step in
        # train mode; flags restored after.
        with eval_mode(model) if step is None else train_mode(model):
            structure = trace_structure(model, tensors, hooks=hooks)
            leaf = build_units(counting_run(structure, model, tensors, step))
            units, crossings = leaf.units, leaf.crossings
            measured_step = None
            if measure and step is not None:
                units, measured_step = _measure_step(
                    structure, model, tensors, leaf.node_units, units, step
                )
            elif measure:
                units, crossings = _measure(
                    structure, model, tensors, leaf.node_units, units, crossings
                )
        info_meta = {
            "model_class": type(model).__name__,
            "inputs": [
                {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
                for t in given
            ],
            "precision": precision.value,
            "convention": CONVENTION,
            "convention_version": CONVENTION_VERSION,
            "tool_version": TOOL_VERSION,
            "untraceable_leaves": structure.leaves_added,
            "blocks_by_hooks": structure.hooked,
            "run_as_compiled": structure.run_as_compiled,
            "wrappers": wrappers,
            "params_not_run": leaf.params_not_run,
        } | dict(meta or {})
        if step is not None:
            info_meta["training_step"] = step.to_dict()
        if measured_step is not None:  # (the medians of the whole backward and of its nodes)
            info_meta["measured_step"] = measured_step
        return group(units, crossings, precision, depth, info_meta, leaf.outside, model_dtype=own)

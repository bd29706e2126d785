"""The tracer's stages, public: what ``tracer.trace`` runs, one step at a time.

1. :func:`trace_structure`: the model's structure, from torch.fx's symbolic trace (or, where fx
   cannot trace it or hooks are asked for, from hooks as it runs).
2. :func:`counting_run`: one run on meta tensors (nothing allocated) with the counting modes on:
   the :class:`RunRecord` of every unit call, the tensor values between them and the work
   outside every unit.
3. :func:`build_units`: leaf units and the tensors crossing between them (a :class:`LeafGraph`),
   by the one builder both paths share.
4. :func:`group`: the BlockGraph at a depth of the module hierarchy.

Run stages 1 and 2 inside :func:`eval_mode` (counts are of an inference pass), as ``trace`` does.
Torch.fx is imported on first use, not with the tracer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from torch import nn

from flowprof.tracer.blocks import group
from flowprof.tracer.units import LeafGraph, RunRecord, build

if TYPE_CHECKING:
    from flowprof.tracer.fx_trace import Structure
    from flowprof.tracer.training_step import TrainingStep

__all__ = ["build_units", "counting_run", "eval_mode", "group", "trace_structure", "train_mode"]


def trace_structure(
    model: nn.Module, inputs: Sequence[Any] | None = None, *, hooks: bool | None = None
) -> Structure:
    """Stage 1: the structure of ``model`` run on ``inputs`` (tensors, or None in an optional
    input's place; None when not known: every parameter of forward is then traced as an input).

    ``hooks``: None (default) traces with torch.fx and records the blocks by hooks where fx cannot
    trace all of the model; True records them by hooks (no fx trace); False keeps fx's graph (one
    leaf per module fx cannot trace: a pipeline runs the graph's nodes). The result's
    ``graph_module`` is the fx graph as a module, ``leaves_added`` the modules fx made leaves
    (qualified name -> why), ``hooked`` whether the counting run records blocks by hooks.
    """
    from flowprof.tracer import fx_trace

    n_inputs = None if inputs is None else len(inputs)
    if hooks:
        structure = fx_trace.whole_structure(model, n_inputs)
    else:
        structure = fx_trace.trace_structure(model, n_inputs, given=inputs or ())
    structure.hooked = fx_trace.uses_hooks(structure, model, hooks)
    return structure


def counting_run(
    structure: Structure, model: nn.Module, inputs: Sequence[Any], step: TrainingStep | None = None
) -> RunRecord:
    """Stage 2: run ``model`` once with the counters on, on meta tensors of ``inputs``' shapes
    and dtypes (fake ones where meta cannot; see ``fx_trace.run_counts``), and return the record
    of the run: unit calls in execution order with the operations each ran (counts by kind:
    multiplications, additions, ..., MACs), the tensor values they read and produced, and the
    work outside every unit. Nothing is allocated.

    ``step`` (a :class:`TrainingStep`): the run is a training step, forward, loss, backward and
    optimizer update (tracer/training_step.py); each unit's tally then holds its backward and
    optimizer work beside its forward, and a ``loss`` unit is added before the output. Run it
    inside :func:`train_mode` then."""
    from flowprof.tracer import fx_trace

    return fx_trace.run_counts(structure, model, inputs, structure.hooked, step)


def build_units(record: RunRecord) -> LeafGraph:
    """Stage 3: leaf units (counts in operations, parameters and buffers in elements, shapes)
    and the tensors crossing between them (shapes, traced dtypes), by the rules of
    tracer/units.py."""
    return build(record)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode for the duration (counts are of an inference pass); every module's
    train/eval flag is restored on exit."""
    from flowprof.tracer import fx_trace

    with fx_trace.eval_mode(model):
        yield


@contextmanager
def train_mode(model: nn.Module) -> Iterator[None]:
    """``model`` in train mode for the duration (a training step: dropout and batch statistics
    as training runs them); every module's train/eval flag is restored on exit."""
    from flowprof.tracer import fx_trace

    with fx_trace.train_mode(model):
        yield

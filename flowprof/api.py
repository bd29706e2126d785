"""The public entry points behind ``flowprof.trace``, ``flowprof.build`` and
``flowprof.model_names``: a model (yours, or one of flowprof's by name) in, a BlockGraph out.

The CLI's ``trace`` command is this function plus printing and files.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from flowprof.errors import BadInputError, UnsupportedModelError
from flowprof.models import registry
from flowprof.models.registry import BuiltModel
from flowprof.tracer import trace as _trace_module
from flowprof.tracer.graph import BlockGraph, Precision


def model_names() -> list[str]:
    """The built-in model names (``torchvision:NAME`` and ``package.module:factory`` work too)."""
    return registry.names()


def build(name: str, *, device: str = "meta", **options: Any) -> BuiltModel:
    """Build a model by name, on ``device`` (``meta``: no weights are allocated).

    ``name`` is a built-in model (:func:`model_names`), ``torchvision:NAME`` or
    ``package.module:factory`` / ``path/to/file.py:factory``. ``options`` are the model's own
    (e.g. ``emb=512, heads=8`` for the transformer), plus ``input_shapes`` to replace its example
    input shapes. Returns the module, its example inputs and its configuration.
    """
    return registry.build(name, device=device, **options)


def trace(
    model: nn.Module | str,
    inputs: Any = None,
    *,
    dtype: str | Precision | None = None,
    depth: int | None = None,
    measure: bool = False,
    hooks: bool | None = None,
    phases: Any = None,
    optimizer: Any = None,
    loss: str | Any = None,
    input_grad: bool = False,
    amp: str | None = None,
    **options: Any,
) -> BlockGraph:
    """Trace ``model`` on ``inputs`` into a BlockGraph: exact counts on the blocks, tensors on the
    edges.

    ``model`` is an ``nn.Module`` or a model name (``"transformer"``, ``"torchvision:resnet18"``,
    ``"package.module:factory"``; ``options`` then go to the model, e.g. ``emb=512``, and
    ``input_dtypes``, one dtype name per input, e.g. ``["int64"]`` for token ids).
    ``inputs``: one shape (``(1, 3, 224, 224)``), a list of shapes or example tensors in
    ``forward``'s order, or a mapping from ``forward``'s parameter names to them; optional for a
    model given by name (its example inputs). Shapes become meta tensors of the model's dtype:
    nothing is allocated.

    ``dtype``: the precision floating-point bits are accounted at (``"fp16"``: 16 bits per
    element; default the model's own). ``depth``: group blocks by module hierarchy (1 = the
    model's children; None = leaf modules and computing functions). ``measure``: also run the
    model for real on the CPU and add seconds per block and measured bytes per edge (a model
    given by name is then built with real weights). ``hooks``: see :func:`flowprof.tracer.trace`.

    A training step: ``phases=("forward", "backward", "optimizer")``, with ``optimizer``
    (``"sgd"``, ``"adam"``, ``"adamw"`` or a factory of a parameter list), ``loss`` (``"auto"``,
    ``"cross-entropy"``, ``"mse"``, ``"sum"``), ``input_grad`` and ``amp`` (mixed precision:
    ``"bf16"``, or ``"fp16"`` with a loss scaler): counts by phase on every
    block (``block.counts()``, ``g.total("backward")``), the gradients on the edges
    (``g.gradient_edges()``); see :func:`flowprof.tracer.trace`.

    Counts are operations (multiplications, additions, ... by kind; ``macs`` multiply-accumulates
    of conv/linear/matmul/attention), parameters are elements, bits are elements x bit width.
    Raises :class:`flowprof.BadInputError` for a malformed input or option and
    :class:`flowprof.UnsupportedModelError` for a model that cannot be analysed.
    """
    meta: dict[str, Any] = {}
    if isinstance(model, str):
        if measure:  # before the weights and inputs are allocated
            check_measure_memory(model, inputs, **options)
        built = _built(model, inputs, measure, options)
        meta = {"model": built.name, "config": dict(built.config)}
        examples = built.example_inputs("cpu" if measure else "meta")
        if isinstance(inputs, Mapping):  # names given: the shapes they name, by name
            examples = dict(zip(inputs, examples, strict=True))
        inputs, model = examples, built.module
    elif options:
        raise BadInputError(
            f"model options ({', '.join(sorted(options))}) apply to a model given by name"
        )
    elif not isinstance(model, nn.Module):
        raise BadInputError(f"not a torch.nn.Module or a model name: {type(model).__name__}")
    elif inputs is None:
        raise BadInputError("give the model's example inputs: shapes or tensors")
    return _trace_module(
        model,
        inputs,
        dtype=dtype,
        depth=depth,
        meta=meta,
        measure=measure,
        hooks=hooks,
        phases=phases,
        optimizer=optimizer,
        loss=loss,
        input_grad=input_grad,
        amp=amp,
    )


def measure_memory_bytes(name: str, inputs: Any = None, **options: Any) -> int:
    """The least memory a ``measure=True`` run of model ``name`` needs, from the model built and
    traced on meta (nothing allocated): its weights and buffers, its example inputs, and the
    largest tensor one block passes to another (alive with the weights and the inputs, which
    the caller holds; left out for a model that branches on values, which meta cannot trace).
    A lower bound: a run that needs more can still fail, but a run refused by it could not have
    fitted."""
    from itertools import chain

    built = _built(name, inputs, False, options)
    module = built.module
    weights = sum(
        t.numel() * t.element_size() for t in chain(module.parameters(), module.buffers())
    )
    examples = built.example_inputs("meta")
    held = weights + sum(x.numel() * x.element_size() for x in examples)
    if isinstance(inputs, Mapping):
        examples = dict(zip(inputs, examples, strict=True))
    try:
        graph = _trace_module(module, examples, meta={"model": built.name})
    except UnsupportedModelError:  # (one that branches on values: --measure's own case)
        return held
    passed = [e.native_bits // 8 for e in graph.edges() if not e.src.startswith("input:")]
    return held + max(passed, default=0)


def check_measure_memory(name: str, inputs: Any = None, **options: Any) -> None:
    """BadSpecError, before anything is allocated, when a ``measure=True`` run of model ``name``
    needs more memory than this machine has available (:mod:`flowprof.limits`)."""
    from flowprof import limits

    needed = measure_memory_bytes(name, inputs, **options)
    limits.check_memory(needed, f"--measure on {name}")


def _built(name: str, inputs: Any, measure: bool, options: dict[str, Any]) -> BuiltModel:
    """A model built by name, its example inputs replaced by the shapes given (if any)."""
    shapes = None
    values = list(inputs.values()) if isinstance(inputs, Mapping) else inputs
    if values is not None:
        if isinstance(values, tuple) and values and all(isinstance(d, int) for d in values):
            values = [values]  # one shape
        if not all(
            isinstance(s, (tuple, list)) and s and all(isinstance(d, int) for d in s)
            for s in values
        ):
            raise BadInputError("a model given by name takes input shapes, not tensors")
        shapes = [tuple(s) for s in values]
    return registry.build(name, device="cpu" if measure else "meta", input_shapes=shapes, **options)

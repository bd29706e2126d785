"""Memory, block by block: what each block holds (parameters, gradients, optimizer state, the
activations it saved for the backward, its temporaries), the live bytes over the run, and the
peak: ``flowprof.memory``.

The figures come from one run of the traced model on meta tensors (:mod:`tracer.lifetimes`):
nothing is allocated, so a 7-billion-parameter configuration takes seconds. ``measure=True``
runs the same step for real on the CPU, records every storage it allocates and frees, and lists
where the recorded live bytes at a block boundary differ from the predicted ones, with the ops
whose outputs differ (:func:`differences`).

A block's figures:

- ``parameters``, ``gradients``, ``optimizer state``: bytes of the parameters it owns (the first
  block that reads a parameter owns it), of their gradients, of their optimizer state;
- ``saved``: bytes its ops saved for the backward (a tensor saved by several blocks is charged to
  the first; the model's inputs count where a block saves them, as a layer's input is the
  activation of the layer before);
- ``temporaries``: per phase, the most bytes it had alive beyond what was alive when it started
  and when it ended (what the block needs for a moment: workspaces, intermediates);
- ``live after``: per phase, the live bytes of the whole run when the block's last stretch in the
  phase ended.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from flowprof.errors import BadInputError
from flowprof.tracer import MEMORY_CATEGORIES as CATEGORIES
from flowprof.tracer import Lifetimes, Segment, record_lifetimes

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class BlockMemory:
    """One block's bytes (see the module doc)."""

    name: str
    parameters: int = 0
    gradients: int = 0
    optimizer_state: int = 0
    saved: int = 0
    temporaries: dict[str, int] = field(default_factory=dict)  # phase -> bytes
    live_after: dict[str, int] = field(default_factory=dict)  # phase -> bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "block": self.name,
            "parameters": self.parameters,
            "gradients": self.gradients,
            "optimizer_state": self.optimizer_state,
            "saved_activations": self.saved,
            "temporaries": dict(self.temporaries),
            "live_after": dict(self.live_after),
        }


@dataclass(frozen=True)
class Difference:
    """Where the measured live bytes part from the predicted ones (at a block boundary), by how
    much from there on, and the allocations that differ in that stretch."""

    block: str
    phase: str
    predicted: int  # live bytes at the boundary
    measured: int
    ops: tuple[str, ...]  # ops whose outputs differ in size in the stretch
    why: str

    @property
    def bytes(self) -> int:
        return self.measured - self.predicted


@dataclass
class MemoryReport:
    """The memory of one forward pass or training step (see :func:`memory`)."""

    model: str
    step: dict[str, Any] | None
    dtype: str | None
    checkpoint: tuple[str, ...]
    depth: int | None
    predicted: Lifetimes
    blocks: list[BlockMemory]
    measured: Lifetimes | None = None
    differences: list[Difference] = field(default_factory=list)

    @property
    def peak(self) -> int:
        return self.predicted.peak

    @property
    def peak_at(self) -> tuple[str, str]:
        """The block and phase in which the live bytes reach the peak."""
        e = self.predicted.peak_at
        return ("(start)", "setup") if e is None else (e.block, e.phase)

    def at_peak(self) -> dict[str, int]:
        """Bytes alive at the peak, by category."""
        e = self.predicted.peak_at
        at = -1 if e is None else self.predicted.events.index(e)
        return self.predicted.live_by_category(at)

    def totals(self) -> dict[str, int]:
        """Bytes by category over the whole run: what was ever allocated of each (temporaries:
        the sum of every temporary allocation, not a peak)."""
        out = dict.fromkeys(CATEGORIES, 0)
        for s in self.predicted.storages:
            if s.died != -2:
                out[s.category] += s.nbytes
        return out

    def boundaries(self) -> list[tuple[str, str, int]]:
        """(block, phase, live bytes after) at every block boundary, in execution order."""
        return [(s.block, s.phase, s.live_after) for s in self.predicted.segments]

    def boundaries_equal(self) -> int:
        """How many block boundaries the measured live bytes equal the predicted at."""
        assert self.measured is not None
        pairs = zip(self.predicted.segments, self.measured.segments, strict=False)
        return sum(a.live_after == b.live_after for a, b in pairs)

    def to_dict(self) -> dict[str, Any]:
        e = self.predicted
        out: dict[str, Any] = {
            "model": self.model,
            "training_step": self.step,
            "dtype": self.dtype,
            "checkpoint": list(self.checkpoint),
            "depth": self.depth,
            "peak_bytes": self.peak,
            "peak_at": {"block": self.peak_at[0], "phase": self.peak_at[1]},
            "at_peak": self.at_peak(),
            "baseline_bytes": e.baseline,
            "blocks": [b.to_dict() for b in self.blocks],
            "boundaries": [
                {"block": s.block, "phase": s.phase, "live_after": s.live_after, "peak": s.peak}
                for s in e.segments
            ],
        }
        if self.measured is not None:
            out["measured"] = {
                "device": self.measured.device,
                "peak_bytes": self.measured.peak,
                "cuda_allocated_at_start": self.measured.cuda_allocated,
                "cuda_max_allocated": self.measured.cuda_max_allocated,
                "boundaries_equal": self.boundaries_equal(),
                "boundaries": len(e.segments),
                "differences": [
                    {
                        "block": d.block,
                        "phase": d.phase,
                        "predicted": d.predicted,
                        "measured": d.measured,
                        "bytes": d.bytes,
                        "ops": list(d.ops),
                        "why": d.why,
                    }
                    for d in self.differences
                ],
            }
        return out


def memory(
    model: nn.Module | str,
    inputs: Any = None,
    *,
    phases: Sequence[str] | None = None,
    optimizer: Any = None,
    loss: Any = None,
    amp: str | None = None,
    input_grad: bool = False,
    dtype: str | None = None,
    checkpoint: Iterable[str] = (),
    depth: int | None = None,
    measure: bool = False,
    measure_on: str = "cpu",
    **options: Any,
) -> MemoryReport:
    """The memory of ``model`` on ``inputs``: one forward pass (inference: eval mode, no grad), or
    one steady-state training step when ``phases``, ``optimizer``, ``loss`` or ``amp`` ask for
    it (as :func:`flowprof.trace` takes them).

    ``model`` and ``inputs``: as :func:`flowprof.trace` (a model name with its ``options``, e.g.
    ``batch=8``, or a module and shapes or tensors). What-ifs: ``dtype`` runs the model in
    ``"fp32"``, ``"fp16"`` or ``"bf16"`` (weights and floating inputs cast); ``amp`` is mixed
    precision over the weights' dtype; ``checkpoint`` names modules to recompute in the backward
    (``torch.utils.checkpoint``); the batch is the inputs' first dimension. ``depth`` groups
    blocks by module path (None: leaf modules and functions). ``measure``: also run the step for
    real on ``measure_on`` (``"cpu"``, or ``"cuda"`` where a GPU is present), record it, and
    list where it differs from the prediction; the prediction then gives that device's kernels
    (the CPU's where they differ from meta's; on CUDA, meta's own, which follow CUDA's).
    """
    from flowprof.api import _built
    from flowprof.tracer import as_inputs, as_step

    step = as_step(phases, optimizer, loss, amp, input_grad)
    if dtype is not None and dtype not in _DTYPES:
        raise BadInputError(f"unknown dtype {dtype!r} (known: {', '.join(_DTYPES)})")
    name = type(model).__name__
    if isinstance(model, str):
        built = _built(model, inputs, measure, options)
        name = built.name
        inputs, model = built.example_inputs("cpu" if measure else "meta"), built.module
    elif options:
        raise BadInputError(
            f"model options ({', '.join(sorted(options))}) apply to a model given by name"
        )
    elif inputs is None:
        raise BadInputError("give the model's example inputs: shapes or tensors")
    tensors = [t for t in as_inputs(model, inputs) if isinstance(t, torch.Tensor)]
    cast = _DTYPES.get(dtype) if dtype else None
    checkpoint = tuple(checkpoint)
    if measure_on not in ("cpu", "cuda"):
        raise BadInputError(f"measure_on is 'cpu' or 'cuda', not {measure_on!r}")
    if measure and measure_on == "cuda" and not torch.cuda.is_available():
        raise BadInputError("measure_on='cuda' needs a CUDA device; none is present")
    kernels = "meta" if measure and measure_on == "cuda" else "cpu"
    predicted = record_lifetimes(
        model, tensors, step, dtype=cast, checkpoint=checkpoint, kernels=kernels
    )
    report = MemoryReport(
        name,
        None if step is None else step.to_dict(),
        dtype,
        checkpoint,
        depth,
        predicted,
        by_block(predicted, depth),
    )
    if measure:
        report.measured = record_lifetimes(
            model, tensors, step, device=measure_on, dtype=cast, checkpoint=checkpoint
        )
        report.differences = differences(predicted, report.measured)
    return report


def group_of(rec: Lifetimes, block: str, depth: int | None) -> str:
    """The block ``block`` (a leaf block of the run) belongs to at ``depth``."""
    if depth is None or block not in rec.module_of:
        return block
    module = rec.module_of[block]
    parts = module.split(".") if module else []
    if len(parts) >= depth:
        return ".".join(parts[:depth])
    return block


def by_block(rec: Lifetimes, depth: int | None = None) -> list[BlockMemory]:
    """Each block's bytes (module doc), blocks in the order they first run, ``loss`` after the
    model's."""
    blocks: dict[str, BlockMemory] = {}

    def get(block: str) -> BlockMemory:
        key = group_of(rec, block, depth)
        if key not in blocks:
            blocks[key] = BlockMemory(key)
        return blocks[key]

    for b in rec.blocks:
        get(b)
    for s in rec.storages:
        if s.died == -2:
            continue
        if s.category == "parameters":
            get(s.block).parameters += s.nbytes
        elif s.category == "gradients":
            get(s.block).gradients += s.nbytes
        elif s.category == "optimizer state":
            get(s.block).optimizer_state += s.nbytes
        if s.saved_by is not None and s.category in ("saved activations", "inputs"):
            get(s.saved_by).saved += s.nbytes
    for seg in rec.segments:
        if seg.block in ("(start)", "(end)"):
            continue
        b = get(seg.block)
        extra = seg.peak - max(seg.live_before, seg.live_after)
        b.temporaries[seg.phase] = max(b.temporaries.get(seg.phase, 0), extra)
        b.live_after[seg.phase] = seg.live_after
    return list(blocks.values())


def differences(predicted: Lifetimes, measured: Lifetimes) -> list[Difference]:
    """The block boundaries where the measured live bytes part from the predicted by a new amount
    (a difference carried on unchanged from an earlier boundary is listed once, where it
    started), with the ops whose outputs differ in that stretch. (The CPU kernels' known
    differences from meta's are predicted already: tracer/lifetimes.py's _CPU_KERNELS.)"""
    out: list[Difference] = []
    carried = measured.baseline - predicted.baseline
    pairs = list(zip(predicted.segments, measured.segments, strict=False))
    for p, m in pairs:
        gap = m.live_after - p.live_after
        if gap == carried and (p.block, p.phase) == (m.block, m.phase):
            continue
        if gap == 0 and (p.block, p.phase) == (m.block, m.phase):  # (a difference that closed)
            carried = 0
            continue
        ops = _differing_ops(predicted, measured, p, m)
        why = ""
        if (p.block, p.phase) != (m.block, m.phase):
            why = f"the runs went apart: measured {m.block} ({m.phase}) here"
        out.append(Difference(p.block, p.phase, p.live_after, m.live_after, ops, why))
        carried = gap
    if len(predicted.segments) != len(measured.segments):
        out.append(
            Difference(
                "(end)",
                "",
                predicted.peak,
                measured.peak,
                (),
                f"{len(predicted.segments)} boundaries predicted, {len(measured.segments)} "
                "measured",
            )
        )
    return out


def _differing_ops(
    predicted: Lifetimes, measured: Lifetimes, p: Segment, m: Segment
) -> tuple[str, ...]:
    """The ops whose allocations in the stretch differ in size between the two runs."""
    a = [predicted.storages[e.storage] for e in predicted.events[p.start : p.end] if e.delta > 0]
    b = [measured.storages[e.storage] for e in measured.events[m.start : m.end] if e.delta > 0]
    ops: list[str] = []
    for x, y in zip(a, b, strict=False):
        if x.nbytes != y.nbytes or x.op != y.op:
            for op in (x.op, y.op):
                if op and op not in ops:
                    ops.append(op)
    for extra in a[len(b) :] + b[len(a) :]:
        if extra.op and extra.op not in ops:
            ops.append(extra.op)
    return tuple(ops)

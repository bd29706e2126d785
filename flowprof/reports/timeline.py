"""Predicted and measured per-block timelines as a Chrome / Perfetto trace (trace-event JSON).

The Trace Event Format (the JSON that ``chrome://tracing`` and https://ui.perfetto.dev open):
an object with ``traceEvents``, a list of events. Each block is a complete event (``"ph": "X"``)
with a start ``ts`` and a duration ``dur`` in microseconds, on one of two tracks (threads of
one process): ``predicted`` (on the device named) and ``measured`` (``--measure`` on this
machine), both laid end to end in execution order from 0, so that the two timelines can be read
side by side. Metadata events (``"ph": "M"``) name the process and the tracks. Each event's
``args`` carry the block's kind, FLOPs, bytes, intensity, bound and both times.

A training step (one prediction per phase) has a predicted and a measured track per phase
(``predicted: backward`` ...), and one time axis for the step: the forward's blocks in
execution order from 0, then the backward's in reverse order (autograd runs the blocks' backward
from the loss back to the first layer) from where the forward ended on the same side, then the
optimizer's, one block after another, from where the backward ended.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowprof.device.roofline import Prediction

PID = 1
PREDICTED_TID = 1
MEASURED_TID = 2


def _meta(name: str, tid: int | None, value: str, sort: int | None = None) -> list[dict]:
    event: dict[str, Any] = {"name": name, "ph": "M", "pid": PID, "args": {"name": value}}
    if tid is not None:
        event["tid"] = tid
    out = [event]
    if sort is not None and tid is not None:
        out.append(
            {
                "name": "thread_sort_index",
                "ph": "M",
                "pid": PID,
                "tid": tid,
                "args": {"sort_index": sort},
            }  # fmt: skip
        )
    return out


def _track_ids(phases: list[str]) -> dict[tuple[str, str], int]:
    """(side, phase) -> tid: the forward keeps the tids it always had (1 predicted, 2 measured),
    each further phase two more."""
    ids = {}
    for i, phase in enumerate(phases):
        ids[("predicted", phase)] = PREDICTED_TID + 2 * i
        ids[("measured", phase)] = MEASURED_TID + 2 * i
    return ids


def trace_events(predictions: Prediction | Sequence[Prediction]) -> dict[str, Any]:
    """The trace-event JSON object (``json.dump`` it) of the blocks of one prediction or of a
    training step's predictions, one per phase (module docstring)."""
    preds = [predictions] if not isinstance(predictions, Sequence) else list(predictions)
    first = preds[0]
    device = first.device
    training = len(preds) > 1
    events: list[dict[str, Any]] = []
    events += _meta("process_name", None, f"{first.model or 'model'} ({first.precision})")
    tids = _track_ids([p.phase for p in preds])
    ends = {"predicted": 0.0, "measured": 0.0}  # where the step's time axis has come to
    for sort, p in enumerate(preds):
        suffix = f": {p.phase}" if training else ""
        events += _meta(
            "thread_name", tids[("predicted", p.phase)], f"predicted on {device.title}{suffix}",
            sort=2 * sort,
        )  # fmt: skip
        if p.measured():
            events += _meta(
                "thread_name", tids[("measured", p.phase)], f"measured (--measure){suffix}",
                sort=2 * sort + 1,
            )  # fmt: skip
        blocks = list(reversed(p.blocks)) if p.phase == "backward" else list(p.blocks)
        for b in blocks:
            args = {
                "kind": b.kind,
                "phase": b.phase,
                "flops": b.flops,
                "bytes": b.bytes,
                "intensity": round(b.intensity, 4),
                "bound": b.bound.value,
                "predicted_us": b.predicted_seconds * 1e6,
                "measured_us": None if b.measured_seconds is None else b.measured_seconds * 1e6,
                "error": b.error,
            }
            for side, seconds in (
                ("predicted", b.predicted_seconds),
                ("measured", b.measured_seconds),
            ):
                if seconds is None:
                    continue
                dur = seconds * 1e6
                events.append(
                    {
                        "name": b.block,
                        "cat": side if not training else f"{side},{p.phase}",
                        "ph": "X",
                        "ts": ends[side],
                        "dur": dur,
                        "pid": PID,
                        "tid": tids[(side, p.phase)],
                        "args": args,
                    }  # fmt: skip
                )
                ends[side] += dur
    other: dict[str, Any] = {
        "model": first.model,
        "device": device.name,
        "precision": first.precision,
        "predicted_seconds": sum(p.predicted_seconds() for p in preds),
        "measured_seconds": _measured_total(preds),
    }
    if training:
        other["phases"] = {
            p.phase: {
                "predicted_seconds": p.predicted_seconds(),
                "measured_seconds": p.measured_seconds(),
            }
            for p in preds
        }
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": other}


def _measured_total(preds: list[Prediction]) -> float | None:
    totals = [p.measured_seconds() for p in preds]
    return None if any(t is None for t in totals) else sum(totals)  # type: ignore[misc]

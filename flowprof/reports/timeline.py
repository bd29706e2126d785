"""Predicted and measured per-block timelines as a Chrome / Perfetto trace (trace-event JSON).

The Trace Event Format (the JSON that ``chrome://tracing`` and https://ui.perfetto.dev open):
an object with ``traceEvents``, a list of events. Each block is a complete event (``"ph": "X"``)
with a start ``ts`` and a duration ``dur`` in microseconds, on one of two tracks (threads of
one process): ``predicted`` (on the device named) and ``measured`` (``--measure`` on this
machine), both laid end to end in execution order from 0, so that the two timelines can be read
side by side. Metadata events (``"ph": "M"``) name the process and the tracks. Each event's
``args`` carry the block's kind, FLOPs, bytes, intensity, bound and both times.
"""

from __future__ import annotations

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


def trace_events(prediction: Prediction) -> dict[str, Any]:
    """The trace-event JSON object (``json.dump`` it) of ``prediction``'s blocks."""
    device = prediction.device
    events: list[dict[str, Any]] = []
    events += _meta("process_name", None, f"{prediction.model or 'model'} ({prediction.precision})")
    events += _meta("thread_name", PREDICTED_TID, f"predicted on {device.title}", sort=0)
    measured = prediction.measured()
    if measured:
        events += _meta("thread_name", MEASURED_TID, "measured (--measure)", sort=1)
    t_pred = t_meas = 0.0
    for b in prediction.blocks:
        args = {
            "kind": b.kind,
            "flops": b.flops,
            "bytes": b.bytes,
            "intensity": round(b.intensity, 4),
            "bound": b.bound.value,
            "predicted_us": b.predicted_seconds * 1e6,
            "measured_us": None if b.measured_seconds is None else b.measured_seconds * 1e6,
            "error": b.error,
        }
        dur = b.predicted_seconds * 1e6
        events.append(
            {
                "name": b.block,
                "cat": "predicted",
                "ph": "X",
                "ts": t_pred,
                "dur": dur,
                "pid": PID,
                "tid": PREDICTED_TID,
                "args": args,
            }  # fmt: skip
        )
        t_pred += dur
        if b.measured_seconds is not None:
            dur = b.measured_seconds * 1e6
            events.append(
                {
                    "name": b.block,
                    "cat": "measured",
                    "ph": "X",
                    "ts": t_meas,
                    "dur": dur,
                    "pid": PID,
                    "tid": MEASURED_TID,
                    "args": args,
                }  # fmt: skip
            )
            t_meas += dur
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "model": prediction.model,
            "device": device.name,
            "precision": prediction.precision,
            "predicted_seconds": prediction.predicted_seconds(),
            "measured_seconds": prediction.measured_seconds(),
        },
    }

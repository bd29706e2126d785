"""Devices and time: what a block costs on a chip, predicted by the roofline model and checked
against measurement.

- :mod:`flowprof.device.table`: the :class:`Device` record and the datasheet GPUs (dense peaks,
  with sources);
- :mod:`flowprof.device.microbench`: this machine's CPU (or CUDA device) measured by
  micro-benchmarks, cached; ``python -m flowprof.device measure cpu`` measures it again;
- :mod:`flowprof.device.roofline`: per block FLOPs, bytes, intensity, bound and predicted time
  (:func:`predict_time`, also ``flowprof.predict_time``).

Importing this package loads no torch (the table is plain data); measuring and predicting do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flowprof.device.table import GPUS, MEASURED, Device, check_name, names

if TYPE_CHECKING:
    from flowprof.device.roofline import Prediction

__all__ = ["GPUS", "Device", "get", "get_with_notes", "names", "predict_time"]


def get_with_notes(name: str) -> tuple[Device, list[str]]:
    """The device ``name`` (:func:`names`), and notes for a person: a measured one is read from
    its cache, or measured now (some seconds) and cached, which a note says."""
    key = check_name(name)
    if key not in MEASURED:
        return GPUS[key], []
    from flowprof.device import microbench

    if key == "cuda":
        import torch

        if not torch.cuda.is_available():
            from flowprof.errors import BadSpecError

            raise BadSpecError("device cuda: no CUDA device is available")
    device, fresh = microbench.load(key)
    path = microbench.cache_path(key)
    if fresh:
        took = device.measured.get("seconds_taken")
        return device, [
            f"measured the {key} ceilings in {took} s, cached in {path} "
            f"(measure again: python -m flowprof.device measure {key})"
        ]
    return device, [f"{key} ceilings from {path}, measured {device.measured.get('date')}"]


def get(name: str) -> Device:
    """The device ``name``: ``cpu`` or ``cuda`` (measured here, cached), or a datasheet GPU
    (``a100``, ``h100``, ``h200``, ``l4``, ``rtx4090``)."""
    return get_with_notes(name)[0]


def predict_time(
    graph: Any, device: str | Device = "cpu", precision: str | None = None
) -> Prediction:
    """Predicted (and measured) time per block of ``graph`` on ``device``: see
    :func:`flowprof.device.roofline.predict_time`."""
    from flowprof.device.roofline import predict_time as predict

    return predict(graph, device, precision)

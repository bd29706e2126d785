"""flowprof: exact operation counts and block-to-block dataflow of PyTorch models.

The common job in three lines::

    import flowprof
    g = flowprof.trace(model, (1, 3, 224, 224), dtype="fp16")
    g.total().macs; g.table(); g.to_csv("out/"); g.graph  # graph: the NetworkX DiGraph

Only the names in ``__all__`` are public. The errors are importable without torch
(``from flowprof import FlowprofError``); everything else loads torch on first use, so that
``import flowprof`` itself stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flowprof.errors import BadInputError, FlowprofError, InternalError, UnsupportedModelError

__version__ = "0.1.0"

__all__ = [
    "CONVENTION",
    "BadInputError",
    "Block",
    "BlockGraph",
    "Edge",
    "FlowprofError",
    "InternalError",
    "OpCount",
    "Precision",
    "TensorMeta",
    "UnsupportedModelError",
    "__version__",
    "build",
    "formula",
    "memory",
    "model_names",
    "predict_phases",
    "predict_time",
    "trace",
]

# Public names that need torch, and the module that defines each: loaded on first access.
_LAZY = {
    "CONVENTION": "flowprof.tracer.counts",
    "OpCount": "flowprof.tracer.counts",
    "Block": "flowprof.tracer.graph",
    "BlockGraph": "flowprof.tracer.graph",
    "Edge": "flowprof.tracer.graph",
    "Precision": "flowprof.tracer.graph",
    "TensorMeta": "flowprof.tracer.graph",
    "build": "flowprof.api",
    "formula": "flowprof.analyses.formula",
    "memory": "flowprof.analyses.memory",
    "model_names": "flowprof.api",
    "trace": "flowprof.api",
    "predict_time": "flowprof.device.roofline",
    "predict_phases": "flowprof.device.roofline",
}

if TYPE_CHECKING:
    from flowprof.analyses.formula import formula
    from flowprof.analyses.memory import memory
    from flowprof.api import build, model_names, trace
    from flowprof.device.roofline import predict_phases, predict_time
    from flowprof.tracer.counts import CONVENTION, OpCount
    from flowprof.tracer.graph import Block, BlockGraph, Edge, Precision, TensorMeta


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'flowprof' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # (looked up once)
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

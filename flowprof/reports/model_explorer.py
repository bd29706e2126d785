"""Export to Google's Model Explorer: its graph JSON and its node-data JSON, as data.

Model Explorer (the ``ai-edge-model-explorer`` package) reads PyTorch models only through
``torch.export``, which fails on many Hugging Face models; flowprof traces those. This module
writes what its "load a JSON graph" and "node data" paths read (the field names are those of
``model_explorer.graph_builder`` and ``model_explorer.node_data_builder``, version 0.1.x):

- :func:`graph_json`: a graph collection ``{"label", "graphs": [graph]}``. One node per leaf
  block (inputs and the output included), each with its ``namespace`` from the module
  hierarchy (``decoder/layers.0/self_attn``), so Model Explorer draws modules as layers that
  open and close; its numbers (kind, module path, counts by kind, params, bits, measured time)
  as attributes; one incoming edge per tensor edge of the leaf graph, with the edge's shape,
  dtype and bits in the target's input metadata. Each module's own totals are in
  ``groupNodeAttributes``, keyed by its namespace.
- :func:`node_data_json`: one overlay per metric (:data:`METRICS`): ``{graph id: {"results":
  {node id: {"value": v}}, "gradient": [...]}}``, so Model Explorer colours the nodes by it.
"""

from __future__ import annotations

from typing import Any

from flowprof.reports.hierarchy import Hierarchy, TreeNode, hierarchy
from flowprof.tracer.counts import KINDS
from flowprof.tracer.graph import BlockGraph

# Overlay name -> what it is, per node. "bits": the bits of the distinct tensors a block sends.
METRICS = {
    "macs": "multiply-accumulates",
    "ops": "operations of every kind",
    "params": "parameters",
    "bits": "bits sent to other blocks",
    "seconds": "measured time (with --measure)",
}

_GRADIENT = [
    {"stop": 0, "bgColor": "#f4f7fb"},
    {"stop": 0.5, "bgColor": "#a9c4e8"},
    {"stop": 1, "bgColor": "#3b6ea8", "textColor": "#ffffff"},
]


def _graph_id(graph: BlockGraph, name: str | None) -> str:
    return name or str(graph.meta.get("model", "model"))


def _numbers(n: TreeNode) -> dict[str, str]:
    """A node's numbers as Model Explorer's string attributes (exact integers)."""
    out = {k: str(getattr(n.count, k)) for k in KINDS}
    out["ops"] = str(n.count.total)
    out["params"] = str(n.params)
    out["param_bits"] = str(n.param_bits)
    out["bits_sent"] = str(n.activation_bits)
    if n.seconds is not None:
        out["seconds"] = f"{n.seconds:.9g}"
    return out


def metric_value(n: TreeNode, metric: str) -> float | int | None:
    """The value of overlay ``metric`` (a key of :data:`METRICS`) on node ``n``."""
    return {
        "macs": n.count.macs,
        "ops": n.count.total,
        "params": n.params,
        "bits": n.activation_bits,
        "seconds": n.seconds,
    }[metric]


def _leaves(h: Hierarchy) -> list[TreeNode]:
    return [h.nodes[i] for i in h.leaf_index.values()]


def graph_json(graph: BlockGraph, name: str | None = None) -> dict[str, Any]:
    """Model Explorer's graph collection for ``graph`` (see the module doc)."""
    h = hierarchy(graph, fold=False)  # Model Explorer lays out big graphs itself: no folding
    leaf = h.leaf_graph
    incoming: dict[str, list] = {}
    for e in leaf.edges():
        incoming.setdefault(e.dst, []).append(e)
    nodes = []
    for n in _leaves(h):
        b = n.block
        assert b is not None
        attrs = {"kind": n.kind, "role": n.role, "module": b.path} | _numbers(n)
        edges = incoming.get(n.key, [])
        nodes.append(
            {
                "id": n.key,
                "label": n.label,
                "namespace": h.namespace(n.index),
                "attrs": [{"key": k, "value": v} for k, v in attrs.items()],
                "incomingEdges": [
                    {"sourceNodeId": e.src, "sourceNodeOutputId": "0", "targetNodeInputId": str(i)}
                    for i, e in enumerate(edges)
                ],
                "inputsMetadata": [
                    {
                        "id": str(i),
                        "attrs": [
                            {"key": "shape", "value": e.shape},
                            {"key": "dtype", "value": e.dtype},
                            {"key": "bits", "value": str(e.bits)},
                        ],
                    }
                    for i, e in enumerate(edges)
                ],
                "outputsMetadata": [
                    {
                        "id": "0",
                        "attrs": [
                            {"key": "shape", "value": ", ".join(_shapes(b.output_shapes))},
                            {"key": "bits_sent", "value": str(b.activation_bits)},
                        ],
                    }
                ],
            }
        )
    groups = {
        h.namespace(n.index) + ("/" if n.parent > 0 else "") + n.label: {"kind": n.kind}
        | _numbers(n)
        for n in h.nodes
        if n.role == "group"
    }
    graph_id = _graph_id(graph, name)
    return {
        "label": graph_id,
        "graphs": [{"id": graph_id, "nodes": nodes, "groupNodeAttributes": groups}],
    }


def _shapes(shapes: tuple[tuple[int, ...], ...]) -> list[str]:
    return ["x".join(map(str, s)) or "scalar" for s in shapes]


def node_data_json(graph: BlockGraph, metric: str, name: str | None = None) -> dict[str, Any]:
    """Model Explorer's node data for overlay ``metric`` (a key of :data:`METRICS`): the value on
    every leaf node that has one (inputs and the output left out)."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r} (known: {', '.join(METRICS)})")
    h = hierarchy(graph, fold=False)
    results = {}
    for n in _leaves(h):
        value = metric_value(n, metric)
        if n.role == "block" and value is not None:
            results[n.key] = {"value": value}
    return {
        _graph_id(graph, name): {
            "name": f"{metric}: {METRICS[metric]}",
            "results": results,
            "gradient": _GRADIENT,
        }
    }


def overlays(graph: BlockGraph) -> list[str]:
    """The overlays ``graph`` has data for (time only when it was measured)."""
    measured = any(b.seconds is not None for b in graph.blocks())
    return [m for m in METRICS if m != "seconds" or measured]

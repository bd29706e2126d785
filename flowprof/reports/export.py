"""CSV and JSON of a BlockGraph: as text (the CLI prints or writes it), or written to files
atomically (:func:`write_csv`, :func:`write_json`: the library's ``BlockGraph.to_csv``).

Columns are a contract (docs/design.md): blocks.csv starts
``block,kind,macs,multiplications,additions,other,params`` and edges.csv starts
``src,dst,shape,dtype,elements,bits``; more columns follow, never fewer.

Both have a ``phase`` column. A forward pass has one row per block (phase ``forward``) and per
edge. A training step has one row per block and phase (``forward``, ``backward``,
``optimizer``, ``recompute``: the counts are that phase's; the block's own columns, params and
shapes, repeat), and its edges.csv has the forward edges (phase ``forward``: activations) and
the backward's (phase ``backward``: gradients, from the forward edge's destination to its
source).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from flowprof import atomic
from flowprof.tracer.counts import OTHER_KINDS
from flowprof.tracer.graph import BlockGraph

BLOCK_COLUMNS = (
    "block",
    "kind",
    "macs",
    "multiplications",
    "additions",
    "other",
    "params",
    *OTHER_KINDS,
    "buffers",
    "param_bits",
    "activation_bits",
    "path",
    "input_shapes",
    "output_shapes",
    "uncounted",
    "phase",
    "trainable_params",
    "param_grad_bits",
)
EDGE_COLUMNS = ("src", "dst", "shape", "dtype", "elements", "bits", "traced_dtype", "phase")


def _shapes(shapes) -> str:
    return ";".join("x".join(str(d) for d in s) for s in shapes)


def blocks_csv(graph: BlockGraph) -> str:
    """One row per block (inputs and the output are not blocks)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(BLOCK_COLUMNS)
    for b in graph.blocks():
        for phase, c in b.counts().items():
            w.writerow(
                [b.name, b.kind, c.macs, c.multiplications, c.additions, c.other, b.params]
                + [getattr(c, k) for k in OTHER_KINDS]
                + [b.buffers, b.param_bits, b.activation_bits, b.path]
                + [_shapes(b.input_shapes), _shapes(b.output_shapes)]
                + [";".join(f"{k}={v}" for k, v in b.uncounted)]
                + [phase.value, b.trainable, b.param_grad_bits]
            )
    return buf.getvalue()


def edges_csv(graph: BlockGraph) -> str:
    """One row per edge; ``bits`` = elements x bit width of the accounted dtype."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(EDGE_COLUMNS)
    rows = [(e, "forward") for e in graph.edges()]
    rows += [(e, "backward") for e in graph.gradient_edges()]
    for e, phase in rows:
        traced = "+".join(dict.fromkeys(t.dtype for t in e.tensors))
        w.writerow([e.src, e.dst, e.shape, e.dtype, e.elements, e.bits, traced, phase])
    return buf.getvalue()


def graph_json(graph: BlockGraph, extra: dict[str, Any] | None = None) -> str:
    """The whole BlockGraph and its metadata (model config, convention, tool version)."""
    data = graph.to_dict()
    if extra:
        data["meta"] |= extra
    return json.dumps(data, indent=2, default=str) + "\n"


def write_csv(graph: BlockGraph, out_dir: str | Path) -> list[Path]:
    """``blocks.csv`` and ``edges.csv`` in ``out_dir`` (made if missing), each written to a
    temporary name and renamed; returns their paths."""
    out = Path(out_dir)
    paths = [out / "blocks.csv", out / "edges.csv"]
    for path, text in zip(paths, (blocks_csv(graph), edges_csv(graph)), strict=True):
        atomic.write_text(path, text)
    return paths


def write_json(graph: BlockGraph, path: str | Path) -> Path:
    """The whole BlockGraph as JSON at ``path``, written to a temporary name and renamed."""
    atomic.write_text(path, graph_json(graph))
    return Path(path)

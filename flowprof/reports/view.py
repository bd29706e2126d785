"""A self-contained HTML view of a BlockGraph: one file, no network, for models of any size.

The page shows the module tree (:mod:`flowprof.reports.hierarchy`) as a dataflow graph that
starts at depth 1: modules expand and collapse, repeated runs fold into one "×N" node that
opens, every node carries its counts, parameters and (when measured) time, and every edge its
shape and bits. A search box finds a block; a detail panel gives the selected block's exact
numbers. Nodes can be coloured by a chosen metric (MACs, operations, parameters, bits sent,
memory, time).

Edges are recomputed in the page for whatever is expanded, from the leaf-level tensor
crossings, by the rule :func:`flowprof.tracer.blocks.group` uses (each distinct value once per
pair of blocks; a slice dropped where its whole value crosses too), so an edge between two
modules carries what crosses the boundary, as ``graph.by_block(depth)`` reports it.

Layout is dagre's (MIT; vendored in ``view_assets/``, its licence kept in the page). Memory, in
the colour choice, is the bits a block holds or sends: its parameter bits plus the bits of the
distinct tensors it sends to other blocks.
"""

from __future__ import annotations

import html
import json
from functools import cache
from importlib import resources
from typing import Any

from flowprof.reports.hierarchy import Hierarchy, TreeNode, hierarchy
from flowprof.tracer.counts import KINDS
from flowprof.tracer.graph import BlockGraph

_ASSETS = ("view.css", "view.js", "dagre.min.js", "dagre.LICENSE.txt")


@cache
def _asset(name: str) -> str:
    return (resources.files("flowprof.reports") / "view_assets" / name).read_text("utf-8")


def _shapes(shapes: tuple[tuple[int, ...], ...]) -> list[str]:
    return ["x".join(map(str, s)) or "scalar" for s in shapes]


def _node(n: TreeNode) -> dict[str, Any]:
    b = n.block
    d: dict[str, Any] = {
        "key": n.key,
        "label": n.label,
        "role": n.role,
        "kind": n.kind,
        "parent": n.parent,
        "children": n.children,
        "depth": n.module_depth,
        "counts": [getattr(n.count, k) for k in KINDS],
        "params": n.params,
        "param_bits": n.param_bits,
        "activation_bits": n.activation_bits,
        "leaves": n.leaves,
    }
    if n.seconds is not None:
        d["seconds"] = n.seconds
    if n.copies > 1:
        d["copies"] = n.copies
    if b is not None:
        d["path"] = b.path
        d["inputs"] = _shapes(b.input_shapes)
        d["outputs"] = _shapes(b.output_shapes)
        if b.uncounted:
            d["uncounted"] = dict(b.uncounted)
    return d


def view_data(graph: BlockGraph, title: str | None = None, tree: Hierarchy | None = None) -> dict:
    """Everything the page shows, as JSON-ready data: the tree's nodes (index 0 the model), the
    tensor values with their bits and shapes, and the leaf-level crossings
    ``[value, root value, source leaf, destination leaf]`` (indices)."""
    h = tree or hierarchy(graph)
    leaf = h.leaf_graph
    precision = leaf.precision
    values: dict[str, int] = {}
    value_rows: list[list[Any]] = []

    def value(name: str, tensors: tuple = (), measured: int | None = None) -> int:
        if name not in values:
            values[name] = len(value_rows)
            value_rows.append([0, "", 0, None])
        i = values[name]
        if tensors and not value_rows[i][1]:
            value_rows[i] = [
                sum(t.bits(precision) for t in tensors),
                "+".join(t.shape_str() for t in tensors),
                sum(t.elements for t in tensors),
                None if measured is None else 8 * measured,
            ]
        return i

    crossings = []
    for c in leaf.crossings:
        v = value(c.value, c.tensors, c.measured_bytes)
        crossings.append([v, value(c.root), h.leaf_index[c.src], h.leaf_index[c.dst]])
    total = leaf.total()
    return {
        "title": title or str(leaf.meta.get("model", "model")),
        "precision": precision.value,
        "kinds": list(KINDS),
        "totals": {
            "counts": [getattr(total, k) for k in KINDS],
            "params": leaf.params(),
            "blocks": len(leaf.blocks()),
        },
        "measured": any(n.seconds is not None for n in h.nodes),
        "nodes": [_node(n) for n in h.nodes],
        "values": value_rows,
        "crossings": crossings,
    }


def _script_json(data: Any) -> str:
    # Inside <script>, "</" could end the element early; "\u003c" is the same JSON string.
    return json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")


def view_html(graph: BlockGraph, title: str | None = None) -> str:
    """The page for ``graph`` as one HTML string (the caller writes it)."""
    data = view_data(graph, title)
    licence = _asset("dagre.LICENSE.txt").replace("*/", "* /")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(data['title'])} · flowprof view</title>\n"
        f"<style>\n{_asset('view.css')}</style>\n</head>\n<body>\n"
        f"{_BODY}"
        f'<script type="application/json" id="flowprof-data">{_script_json(data)}</script>\n'
        f"<script>\n/*\n{licence}*/\n{_asset('dagre.min.js')}\n</script>\n"
        f"<script>\n{_asset('view.js')}</script>\n"
        "</body></html>\n"
    )


_BODY = """\
<header id="bar">
  <h1 id="title"></h1>
  <span id="totals"></span>
  <span class="spacer"></span>
  <label class="search"><input id="search" type="search" placeholder="find a block (name or kind)"
    autocomplete="off" aria-label="find a block"><ul id="results" hidden></ul></label>
  <label>depth <span id="depths"></span></label>
  <label><input id="folds" type="checkbox" checked> fold repeats</label>
  <label>colour by <select id="metric"></select></label>
  <button id="fit" type="button" title="fit the graph to the window">fit</button>
</header>
<main>
  <div id="canvas"><svg id="graph" xmlns="http://www.w3.org/2000/svg">
    <defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8"
      markerHeight="8" markerUnits="userSpaceOnUse" orient="auto">
      <path d="M0,0L10,5L0,10z"/></marker></defs>
    <g id="viewport"></g></svg>
    <div id="legend"></div>
    <div id="status" role="status"></div>
  </div>
  <aside id="detail"><p class="hint">Click a block for its numbers; click + or double-click
    to open a module; the header of an open module closes it. Drag to pan, wheel to
    zoom.</p></aside>
</main>
"""

"""Graphviz dataflow diagram of a BlockGraph: blocks as nodes, tensors as edges.

Nodes are labelled with kind and counts, edges with shape and bits; edge width grows with the
bits carried; enclosing module calls are drawn as clusters. Returns a ``graphviz.Digraph``; the
caller saves or renders it.
"""

from __future__ import annotations

import math

from reports.units import bits, si
from tracer.graph import Block, BlockGraph


def _node_id(name: str) -> str:
    # ':' would read as a port in DOT ("input:x"); the label keeps the real name.
    return name.replace(":", "/")


def _short(b: Block, cluster: tuple[str, ...]) -> str:
    """The name relative to the cluster it is drawn in (the cluster label shows the rest)."""
    if cluster and b.name.startswith(cluster[-1] + "."):
        return b.name[len(cluster[-1]) + 1 :]
    return b.name


def _label(b: Block, cluster: tuple[str, ...] = ()) -> str:
    if b.role != "block":
        shapes = b.output_shapes if b.role == "input" else b.input_shapes
        return f"{b.name}\\n" + ", ".join("x".join(map(str, s)) for s in shapes)
    lines = [_short(b, cluster), b.kind]
    c = b.count
    if c.macs:
        lines.append(f"{si(c.macs, 'MAC')}")
    ops = [f"mul {si(c.multiplications)}", f"add {si(c.additions)}"]
    if c.other:
        ops.append(f"other {si(c.other)}")
    lines.append(" · ".join(ops))
    if b.params:
        lines.append(f"{si(b.params)} params".replace("  ", " "))
    return "\\n".join(lines)


def dataflow(graph: BlockGraph, title: str | None = None, clusters: bool = True):
    """The block graph as a ``graphviz.Digraph``."""
    import graphviz  # imported where used

    dot = graphviz.Digraph("flowprof", graph_attr={"rankdir": "TB", "fontsize": "12"})
    dot.attr(
        "node",
        shape="box",
        style="rounded,filled",
        fillcolor="#eef3fb",
        fontsize="10",
        fontname="Helvetica",
    )
    dot.attr("edge", fontsize="9", fontname="Helvetica", color="#4a6fa5")
    if title:
        dot.attr(label=title, labelloc="t")
    blocks = graph.blocks(include_io=True)
    max_bits = max((e.bits for e in graph.edges()), default=1) or 1

    # Nest clusters by the enclosing module calls; a cluster around a single block and nothing
    # else is not drawn (the block is drawn in the cluster above it, with its full name).
    tree: dict[tuple[str, ...], list[Block]] = {}
    for b in blocks:
        tree.setdefault(b.parents if clusters else (), []).append(b)
    for key in sorted(tree, key=len, reverse=True):
        deeper = any(len(k) > len(key) and k[: len(key)] == key for k in tree)
        if key and len(tree[key]) == 1 and not deeper:
            tree.setdefault(key[:-1], []).extend(tree.pop(key))

    def emit(g, prefix: tuple[str, ...]) -> None:
        for b in tree.get(prefix, []):
            attrs = {}
            if b.role != "block":
                attrs = {"shape": "ellipse", "fillcolor": "#f5f5f5"}
            g.node(_node_id(b.name), _label(b, prefix), **attrs)
        children = sorted(
            {
                p[: len(prefix) + 1]
                for p in tree
                if len(p) > len(prefix) and p[: len(prefix)] == prefix
            }
        )
        for child in children:
            with g.subgraph(name=f"cluster_{'/'.join(child)}") as sub:
                sub.attr(label=child[-1], style="rounded", color="#9aa9bd", fontsize="10")
                emit(sub, child)

    emit(dot, ())
    for e in graph.edges():
        width = 0.6 + 3.4 * math.log1p(e.bits) / math.log1p(max_bits)
        dot.edge(
            _node_id(e.src),
            _node_id(e.dst),
            label=f"{e.shape}\\n{bits(e.bits)}",
            penwidth=f"{width:.2f}",
        )
    return dot

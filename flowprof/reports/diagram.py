"""Graphviz dataflow diagram of a BlockGraph: blocks as nodes, tensors as edges.

Nodes are labelled with kind and counts, edges with shape and bits; edge width grows with the
bits carried; enclosing module calls are drawn as clusters. Returns a ``graphviz.Digraph``; the
caller saves or renders it.

Folding (``fold=True``): consecutive sibling blocks or clusters with identical structure, named
``base.0``, ``base.1``, ... (e.g. ``encoder.layers.0`` .. ``encoder.layers.23``), are drawn once,
marked ``×N``. A folded node is labelled with the totals over its N copies (so the labels still
add up to the model's totals) and the count of one copy; edges into or out of several copies
become one edge labelled ``N × shape`` with the total bits; tensors passed from one copy to the
next are drawn as a dashed loop. :func:`fold` computes the folding as data, apart from drawing.
Whole layers fold as clusters only when clusters are drawn (``clusters=True``, the default);
without clusters only runs of single blocks fold.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from flowprof.reports.units import bits, si
from flowprof.tracer.counts import OpCount
from flowprof.tracer.graph import Block, BlockGraph, Edge

Tree = dict[tuple[str, ...], list[Block]]

# "encoder.layers.11" -> ("encoder.layers", "11")
_INDEXED = re.compile(r"^(?P<base>.+)\.(?P<index>\d+)$")


def _node_id(name: str) -> str:
    # ':' would read as a port in DOT ("input:x"); the label keeps the real name.
    return name.replace(":", "/")


def _short(name: str, cluster: tuple[str, ...]) -> str:
    """The name relative to the cluster it is drawn in (the cluster label shows the rest)."""
    if cluster and name.startswith(cluster[-1] + "."):
        return name[len(cluster[-1]) + 1 :]
    return name


def _label(b: Block, cluster: tuple[str, ...] = (), copies: int = 1, name: str = "") -> str:
    if b.role != "block":
        shapes = b.output_shapes if b.role == "input" else b.input_shapes
        return f"{b.name}\\n" + ", ".join("x".join(map(str, s)) for s in shapes)
    head = _short(name or b.name, cluster)
    lines = [f"{head} ×{copies}" if copies > 1 else head, b.kind]
    c = b.count.scale(copies)
    if c.macs:
        each = f"{copies} × {si(b.count.macs, 'MAC')} = " if copies > 1 else ""
        lines.append(f"{each}{si(c.macs, 'MAC')}")
    ops = [f"mul {si(c.multiplications)}", f"add {si(c.additions)}"]
    if c.other:
        ops.append(f"other {si(c.other)}")
    lines.append(" · ".join(ops))
    if b.other_phases:  # a training step: the other phases' operations, all kinds
        phases = {"backward": "bwd", "optimizer": "opt", "recompute": "recompute"}
        lines.append(
            " · ".join(
                f"{phases[p.value]} {si(n.total * copies)}" for p, n in b.other_phases if n.total
            )
            + " ops"
        )
    if b.params:
        each = f"{copies} × {si(b.params)} = " if copies > 1 else ""
        lines.append(f"{each}{si(b.params * copies)} params".replace("  ", " "))
    return "\\n".join(lines)


def _cluster_tree(blocks: list[Block], clusters: bool) -> Tree:
    """Blocks by the cluster they are drawn in; a cluster around a single block and nothing
    else is not drawn (the block is drawn in the cluster above it, with its full name)."""
    tree: Tree = {}
    for b in blocks:
        tree.setdefault(b.parents if clusters else (), []).append(b)
    for key in sorted(tree, key=len, reverse=True):
        deeper = any(len(k) > len(key) and k[: len(key)] == key for k in tree)
        if key and len(tree[key]) == 1 and not deeper:
            tree.setdefault(key[:-1], []).extend(tree.pop(key))
    return tree


def _children(tree: Tree, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
    return sorted(
        {p[: len(prefix) + 1] for p in tree if len(p) > len(prefix) and p[: len(prefix)] == prefix}
    )


def _subtree(tree: Tree, key: tuple[str, ...]) -> list[Block]:
    return [b for p, bs in tree.items() if p[: len(key)] == key for b in bs]


# --- folding (pure data) -----------------------------------------------------------------------


@dataclass(frozen=True)
class DrawnNode:
    """A node as drawn: the block it shows (the first copy) and the copies it stands for."""

    name: str
    copies: int
    count: OpCount  # total over the copies
    params: int  # total over the copies


@dataclass
class Folding:
    """Which block is drawn for which, and how many copies each drawn node or cluster stands
    for. Without folding every block stands for itself once."""

    node_of: dict[str, str] = field(default_factory=dict)  # block -> drawn block
    copies: dict[str, int] = field(default_factory=dict)  # drawn block -> copies
    cluster_copies: dict[tuple[str, ...], int] = field(default_factory=dict)  # drawn cluster
    names: dict[str, str] = field(default_factory=dict)  # folded block -> shown name
    cluster_names: dict[tuple[str, ...], str] = field(default_factory=dict)  # folded cluster
    hidden: set[tuple[str, ...]] = field(default_factory=set)  # clusters not drawn (copies)
    # block -> ((fold number, copy index), ...): tells edges between copies of a fold apart
    copy_path: dict[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)

    def drawn(self, graph: BlockGraph) -> list[DrawnNode]:
        """The drawn computing blocks (inputs and output left out), with their totals."""
        out = []
        for b in graph.blocks():
            if self.node_of.get(b.name, b.name) != b.name:
                continue
            n = self.copies.get(b.name, 1)
            out.append(DrawnNode(b.name, n, b.count.scale(n), b.params * n))
        return out

    def between_copies(self, src: str, dst: str) -> bool:
        """True when ``src`` and ``dst`` are in different copies of the same fold."""
        a = dict(self.copy_path.get(src, ()))
        b = dict(self.copy_path.get(dst, ()))
        return any(k in b and b[k] != j for k, j in a.items())


def _block_signature(b: Block) -> tuple:
    return (
        b.role,
        b.kind,
        b.count,
        b.params,
        b.input_shapes,
        b.output_shapes,
        b.uncounted,
    )


def _relative(name: str, base: str) -> str | None:
    return name[len(base) + 1 :] if name.startswith(base + ".") else None


def _cluster_signature(graph: BlockGraph, tree: Tree, key: tuple[str, ...]) -> tuple | None:
    """Everything inside cluster ``key``, named relative to it; None if a member's name is not
    under the cluster's name (then it is not folded)."""
    base = key[-1]
    members = []
    inside = set()
    for p in sorted(q for q in tree if q[: len(key)] == key):
        sub = tuple(_relative(s, base) for s in p[len(key) :])
        for b in tree[p]:
            rel = _relative(b.name, base)
            if rel is None or None in sub:
                return None
            members.append((sub, rel, _block_signature(b)))
            inside.add(b.name)
    edges = tuple(
        sorted(
            (_relative(e.src, base), _relative(e.dst, base), e.tensors)
            for e in graph.edges()
            if e.src in inside and e.dst in inside
        )
    )
    return (tuple(members), edges)


def fold(graph: BlockGraph, clusters: bool = True) -> Folding:
    """Find runs of identical consecutive sibling blocks or clusters (see the module doc)."""
    blocks = graph.blocks(include_io=True)
    order = {b.name: i for i, b in enumerate(blocks)}
    tree = _cluster_tree(blocks, clusters)
    result = Folding(node_of={b.name: b.name for b in blocks})
    runs = 0

    def items(prefix: tuple[str, ...]) -> list[tuple[int, str, object]]:
        """(first position, name, block or cluster key) of the items drawn directly in prefix."""
        out: list[tuple[int, str, object]] = [
            (order[b.name], b.name, b) for b in tree.get(prefix, [])
        ]
        for child in _children(tree, prefix):
            first = min(order[b.name] for b in _subtree(tree, child))
            out.append((first, child[-1], child))
        return sorted(out, key=lambda t: t[0])

    def signature(item: object) -> tuple | None:
        if isinstance(item, Block):
            return ("block", _block_signature(item)) if item.role == "block" else None
        return ("cluster", _cluster_signature(graph, tree, item))

    def same_run(prev: tuple[int, str, object], cur: tuple[int, str, object]) -> bool:
        a, b = _INDEXED.match(prev[1]), _INDEXED.match(cur[1])
        if a is None or b is None or a["base"] != b["base"]:
            return False
        if int(b["index"]) != int(a["index"]) + 1:
            return False
        sa, sb = signature(prev[2]), signature(cur[2])
        return sa is not None and sa[1] is not None and sa == sb

    def walk(prefix: tuple[str, ...], multiplier: int) -> None:
        nonlocal runs
        listed = items(prefix)
        groups: list[list[tuple[int, str, object]]] = []
        for item in listed:
            if groups and same_run(groups[-1][-1], item):
                groups[-1].append(item)
            else:
                groups.append([item])
        for group in groups:
            n = len(group)
            first, last = _INDEXED.match(group[0][1]), _INDEXED.match(group[-1][1])
            shown = f"{first['base']}.{first['index']}-{last['index']}" if n > 1 else ""
            rep = group[0][2]
            if n > 1:
                runs += 1
            if isinstance(rep, Block):
                for j, (_, _, b) in enumerate(group):
                    result.node_of[b.name] = rep.name
                    if n > 1:
                        result.copy_path[b.name] = (*result.copy_path.get(b.name, ()), (runs, j))
                result.copies[rep.name] = multiplier * n
                if n > 1:
                    result.names[rep.name] = shown
                continue
            # A cluster: map each copy's members onto the first copy's, then walk the first.
            rep_members = {_relative(b.name, rep[-1]): b.name for b in _subtree(tree, rep)}
            for j, (_, _, key) in enumerate(group):
                for b in _subtree(tree, key):
                    result.node_of[b.name] = rep_members[_relative(b.name, key[-1])]
                    if n > 1:
                        result.copy_path[b.name] = (*result.copy_path.get(b.name, ()), (runs, j))
                if j:
                    result.hidden.update(p for p in tree if p[: len(key)] == key)
            result.cluster_copies[rep] = multiplier * n
            if n > 1:
                result.cluster_names[rep] = shown
            walk(rep, multiplier * n)

    walk((), 1)
    return result


# --- drawing -----------------------------------------------------------------------------------


def _edge_label(edges: list[Edge], between: bool) -> str:
    total = sum(e.bits for e in edges)
    shapes = {e.shape for e in edges}
    if len(edges) == 1:
        head = edges[0].shape
    elif len(shapes) == 1:
        head = f"{len(edges)} × {edges[0].shape}"
    else:
        head = f"{len(edges)} tensors"
    label = f"{head}\\n{bits(total)}"
    return label + "\\ncopy to next copy" if between else label


def styled_digraph(name: str, title: str | None = None, rankdir: str = "TB"):
    """An empty ``graphviz.Digraph`` in flowprof's style: rounded boxes, blue edges."""
    import graphviz  # imported where used

    dot = graphviz.Digraph(
        name, graph_attr={"rankdir": rankdir, "fontsize": "12", "fontname": "Helvetica"}
    )
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
    return dot


def dataflow(
    graph: BlockGraph,
    title: str | None = None,
    clusters: bool = True,
    fold: bool = False,
    rankdir: str = "TB",
    backward: bool | None = None,
):
    """The block graph as a ``graphviz.Digraph``; ``fold`` draws repeated blocks once (×N);
    ``rankdir`` "TB" (top to bottom) or "LR" (left to right, e.g. for a long chain);
    ``backward``: also draw the backward's edges, the gradients flowing back between blocks, as
    dashed red arrows (None: when the graph is a training step's)."""
    dot = styled_digraph("flowprof", title, rankdir)
    blocks = graph.blocks(include_io=True)
    tree = _cluster_tree(blocks, clusters)
    folding = _fold(graph, clusters) if fold else Folding(node_of={b.name: b.name for b in blocks})

    def emit(g, prefix: tuple[str, ...]) -> None:
        for b in tree.get(prefix, []):
            if folding.node_of[b.name] != b.name:
                continue
            attrs = {}
            if b.role != "block":
                attrs = {"shape": "ellipse", "fillcolor": "#f5f5f5"}
            copies = folding.copies.get(b.name, 1)
            name = folding.names.get(b.name, "")
            g.node(_node_id(b.name), _label(b, prefix, copies, name), **attrs)
        for child in _children(tree, prefix):
            if child in folding.hidden:
                continue
            with g.subgraph(name=f"cluster_{'/'.join(child)}") as sub:
                copies = folding.cluster_copies.get(child, 1)
                label = _short(folding.cluster_names.get(child, child[-1]), prefix)
                if child in folding.cluster_names:
                    label += f" ×{copies}"
                sub.attr(
                    label=label,
                    style="rounded",
                    color="#9aa9bd",
                    fontsize="10",
                    fontname="Helvetica",
                )
                emit(sub, child)

    emit(dot, ())
    # One drawn edge per (drawn source, drawn destination, between copies or not).
    merged: dict[tuple[str, str, bool], list[Edge]] = {}
    for e in graph.edges():
        src, dst = folding.node_of[e.src], folding.node_of[e.dst]
        merged.setdefault((src, dst, folding.between_copies(e.src, e.dst)), []).append(e)
    max_bits = max((sum(e.bits for e in es) for es in merged.values()), default=1) or 1
    for (src, dst, between), edges in merged.items():
        total = sum(e.bits for e in edges)
        width = 0.6 + 3.4 * math.log1p(total) / math.log1p(max_bits)
        attrs: Mapping[str, str] = {}
        if between:
            attrs = {"style": "dashed", "constraint": "false"}
        dot.edge(
            _node_id(src),
            _node_id(dst),
            label=_edge_label(edges, between),
            penwidth=f"{width:.2f}",
            **attrs,
        )
    if backward is None:
        backward = "training_step" in graph.meta
    if backward:
        grads: dict[tuple[str, str], list[Edge]] = {}
        for e in graph.gradient_edges():
            src, dst = folding.node_of[e.src], folding.node_of[e.dst]
            if src != dst:
                grads.setdefault((src, dst), []).append(e)
        for (src, dst), edges in grads.items():
            dot.edge(
                _node_id(src),
                _node_id(dst),
                label="∇ " + _edge_label(edges, False),
                style="dashed",
                color="#c0392b",
                fontcolor="#c0392b",
                constraint="false",
            )
    return dot


_fold = fold  # ``dataflow``'s ``fold`` argument shadows the function inside it


# --- what to draw for a big model -------------------------------------------------------------

# dot's layout time grows faster than the node count: on the transformer, 254 blocks take 0.5 s,
# 506 blocks 15 s, 1,010 blocks more than 90 s. Above this many drawn nodes the default diagram
# is folded and, if still too big, drawn at a shallower depth.
MAX_DRAWN_NODES = 300


@dataclass(frozen=True)
class DiagramPlan:
    """The graph to draw and how: ``full`` when it is every block of the graph unfolded;
    otherwise folded (repeats drawn once) at ``depth``, ``drawn`` nodes for ``blocks`` blocks."""

    graph: BlockGraph
    fold: bool
    depth: int | None
    drawn: int
    blocks: int

    @property
    def full(self) -> bool:
        return not self.fold and self.drawn == self.blocks

    def reason(self) -> str:
        """One line saying what was drawn instead of the full diagram (empty when full)."""
        if self.full:
            return ""
        where = "" if self.depth is None else f" at depth {self.depth}"
        return (
            f"the diagram is folded (repeated blocks drawn once, ×N){where}: {self.drawn} nodes "
            f"for {self.blocks} blocks, which Graphviz could take very long to lay out"
        )


def drawn_nodes(graph: BlockGraph, fold_repeats: bool) -> int:
    """Nodes a diagram of ``graph`` draws (inputs and output included)."""
    io = sum(1 for b in graph.blocks(include_io=True) if b.role != "block")
    return (len(fold(graph).drawn(graph)) if fold_repeats else len(graph.blocks())) + io


def plan(graph: BlockGraph, max_nodes: int = MAX_DRAWN_NODES) -> DiagramPlan:
    """The diagram to draw by default: the full graph when it has at most ``max_nodes`` nodes,
    else folded, at the deepest depth (not deeper than the graph's) that fits."""
    blocks = len(graph.blocks(include_io=True))
    if blocks <= max_nodes:
        return DiagramPlan(graph, False, graph.depth, blocks, blocks)
    drawn = drawn_nodes(graph, True)
    if drawn <= max_nodes:
        return DiagramPlan(graph, True, graph.depth, drawn, blocks)
    deepest = graph.depth or max((len(b.parents) + 1 for b in graph.blocks()), default=1)
    regrouped = graph
    for depth in range(deepest - 1, 0, -1):
        regrouped = graph.by_block(depth)
        drawn = drawn_nodes(regrouped, True)
        if drawn <= max_nodes:
            break
    return DiagramPlan(regrouped, True, regrouped.depth, drawn, blocks)

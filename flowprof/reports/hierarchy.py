"""The module tree of a BlockGraph, with each module's numbers and its repeated runs folded.

Pure data for the viewers (the HTML view, the Model Explorer export): no drawing here.

The leaves are the BlockGraph's leaf blocks (leaf modules and computing functions, plus the
model's inputs and output); the inner nodes are the module calls that enclose them, taken from
each leaf's ``parents``. An inner node's numbers are the tracer's own: the block of that name in
``graph.by_block(depth)``, so a module's counts are the sums of its members exactly as the tables
report them.

Folding: consecutive siblings named ``base.0``, ``base.1``, ... with identical structure (same
kind, counts, parameters and shapes, and the same children, recursively, named relative to
them) are gathered under one extra node, a *fold*, standing for the N copies (``layers.0-31``,
×32). A fold's numbers are the sums over its copies. Edges are not part of the signature: two
copies with the same members, counts and shapes are treated as repeats.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from flowprof.tracer.counts import OpCount
from flowprof.tracer.graph import Block, BlockGraph

# "encoder.layers.11" -> ("encoder.layers", "11")
_INDEXED = re.compile(r"^(?P<base>.+)\.(?P<index>\d+)$")

ROLES = ("root", "group", "fold", "block", "input", "output")


@dataclass
class TreeNode:
    """One node of the module tree.

    ``role``: "root" (the model), "group" (a module call with members), "fold" (N identical
    consecutive siblings), or a leaf's role ("block", "input", "output"). ``block`` is the
    tracer's record for a leaf or a group (None for the root and folds). ``module_depth``: how
    many module calls enclose it plus one (the model's children are at 1; folds do not count).
    """

    index: int
    key: str
    label: str
    role: str
    kind: str
    parent: int
    module_depth: int
    block: Block | None = None
    children: list[int] = field(default_factory=list)
    copies: int = 1  # a fold: how many siblings it stands for
    count: OpCount = field(default_factory=OpCount)
    params: int = 0
    param_bits: int = 0
    activation_bits: int = 0
    seconds: float | None = None
    leaves: int = 0  # leaf blocks under it (1 for a leaf)

    @property
    def is_leaf(self) -> bool:
        return not self.children


@dataclass
class Hierarchy:
    """The tree (``nodes[0]`` is the root), the leaf-level graph it was built from, and the
    index of each leaf block by name."""

    nodes: list[TreeNode]
    leaf_graph: BlockGraph
    leaf_index: dict[str, int]

    def path(self, index: int) -> list[TreeNode]:
        """The nodes from the root's child down to ``index``."""
        out = []
        while index > 0:
            out.append(self.nodes[index])
            index = self.nodes[index].parent
        return out[::-1]

    def namespace(self, index: int, sep: str = "/") -> str:
        """The labels of the enclosing nodes (not the node itself), joined by ``sep``."""
        return sep.join(n.label for n in self.path(index)[:-1])


def _relative(name: str, base: str) -> str:
    return name[len(base) + 1 :] if name.startswith(base + ".") else name


def hierarchy(graph: BlockGraph, fold: bool = True) -> Hierarchy:
    """The module tree of ``graph`` (any depth: it is regrouped to its leaf blocks)."""
    leaf_graph = graph if graph.depth is None else graph.by_block(None)
    leaves = leaf_graph.blocks(include_io=True)
    max_depth = max((len(b.parents) for b in leaves), default=0)
    groups = {
        d: {b.name: b for b in leaf_graph.by_block(d).blocks()} for d in range(1, max_depth + 1)
    }

    nodes = [TreeNode(0, "", leaf_graph.meta.get("model", "model"), "root", "model", -1, 0)]
    by_key: dict[str, int] = {}
    leaf_index: dict[str, int] = {}

    def add(key: str, label: str, role: str, kind: str, parent: int, block: Block | None) -> int:
        node = TreeNode(len(nodes), key, label, role, kind, parent, nodes[parent].module_depth + 1)
        node.block = block
        nodes.append(node)
        nodes[parent].children.append(node.index)
        return node.index

    for b in leaves:
        parent = 0
        for d, key in enumerate(b.parents, start=1):
            if key not in by_key:
                group = groups[d][key]
                label = _relative(key, nodes[parent].key) if parent else key
                by_key[key] = add(key, label, "group", group.kind, parent, group)
            parent = by_key[key]
        label = _relative(b.name, nodes[parent].key) if parent else b.name
        leaf_index[b.name] = add(b.name, label, b.role, b.kind, parent, b)

    h = Hierarchy(nodes, leaf_graph, leaf_index)
    if fold:
        _fold(h)
    _totals(h, 0)
    return h


def _totals(h: Hierarchy, index: int) -> None:
    """Fill in each node's numbers: a leaf's and a group's from its block, a fold's and the
    root's as sums over their children."""
    node = h.nodes[index]
    for c in node.children:
        _totals(h, c)
    kids = [h.nodes[c] for c in node.children]
    node.leaves = sum(k.leaves for k in kids) if kids else 1
    if node.block is not None:
        b = node.block
        node.count, node.params, node.param_bits = b.count, b.params, b.param_bits
        node.activation_bits, node.seconds = b.activation_bits, b.seconds
        return
    blocks = [k for k in kids if k.role not in ("input", "output")]
    node.count = OpCount.sum(k.count for k in blocks)
    node.params = sum(k.params for k in blocks)
    node.param_bits = sum(k.param_bits for k in blocks)
    node.activation_bits = sum(k.activation_bits for k in blocks)
    seconds = [k.seconds for k in blocks]
    node.seconds = None if not seconds or None in seconds else sum(seconds)  # type: ignore[arg-type]
    if node.role == "fold":
        node.kind = kids[0].kind


def _signature(h: Hierarchy, index: int, memo: dict[int, tuple | None]) -> tuple | None:
    """What must match for two siblings to be repeats; None: never folds (a child named
    outside its parent, or an input or output)."""
    if index in memo:
        return memo[index]
    node = h.nodes[index]
    sig: tuple | None
    if node.role in ("input", "output"):
        sig = None
    elif node.is_leaf:
        b = node.block
        assert b is not None
        sig = ("leaf", b.kind, b.count, b.params, b.input_shapes, b.output_shapes, b.uncounted)
    else:
        children = []
        for c in node.children:
            child = h.nodes[c]
            sub = _signature(h, c, memo)
            if sub is None or not child.key.startswith(node.key + "."):
                sig = None
                break
            children.append((child.label, sub))
        else:
            b = node.block
            assert b is not None
            sig = ("group", b.kind, b.count, b.params, tuple(children))
    memo[index] = sig
    return sig


def _fold(h: Hierarchy) -> None:
    """Gather runs of identical consecutive indexed siblings under fold nodes (module doc)."""
    memo: dict[int, tuple | None] = {}

    def same_run(a: TreeNode, b: TreeNode) -> bool:
        ma, mb = _INDEXED.match(a.key), _INDEXED.match(b.key)
        if ma is None or mb is None or ma["base"] != mb["base"]:
            return False
        if int(mb["index"]) != int(ma["index"]) + 1:
            return False
        sa = _signature(h, a.index, memo)
        return sa is not None and sa == _signature(h, b.index, memo)

    for parent in list(h.nodes):  # folds appended while walking are not walked again
        if parent.role == "fold" or parent.is_leaf:
            continue
        runs: list[list[int]] = []
        for c in parent.children:
            if runs and same_run(h.nodes[runs[-1][-1]], h.nodes[c]):
                runs[-1].append(c)
            else:
                runs.append([c])
        if all(len(r) == 1 for r in runs):
            continue
        children = []
        for run in runs:
            if len(run) == 1:
                children.append(run[0])
                continue
            first, last = h.nodes[run[0]], h.nodes[run[-1]]
            index = _INDEXED.match(last.key)["index"]  # type: ignore[index]
            fold = TreeNode(
                len(h.nodes),
                f"{first.key}-{index}",
                f"{first.label}-{index}",
                "fold",
                first.kind,
                parent.index,
                parent.module_depth + 1,
                children=list(run),
                copies=len(run),
            )
            h.nodes.append(fold)
            for c in run:
                h.nodes[c].parent = fold.index
            children.append(fold.index)
        parent.children = children

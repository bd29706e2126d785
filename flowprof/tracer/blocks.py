"""Grouping leaf units into blocks by the module hierarchy.

At depth None every unit is a block. At depth d a unit whose module call stack is at least d deep
joins the group of its d-th enclosing module call (depth 1 = children of the model, e.g. encoder
and decoder); shallower units stay blocks of their own. Groups sum their members' counts, and an
edge between two groups carries each distinct tensor value crossing the boundary once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import networkx as nx

from flowprof.errors import BadSpecError
from flowprof.tracer.counts import OpCount, Phase, add_phases
from flowprof.tracer.graph import (
    Block,
    BlockGraph,
    Crossing,
    Edge,
    Outside,
    Precision,
    TensorMeta,
    Unit,
)


def group_key(unit: Unit, depth: int | None) -> str:
    """The block a unit belongs to at ``depth``."""
    if depth is None or unit.role != "block" or len(unit.stack) < depth:
        return unit.name
    return unit.stack[depth - 1][0]


def group(
    units: tuple[Unit, ...],
    crossings: tuple[Crossing, ...],
    precision: Precision,
    depth: int | None,
    meta: Mapping[str, Any],
    outside: Outside | None = None,
    *,
    model_dtype: str | None = None,
) -> BlockGraph:
    """The BlockGraph of leaf ``units`` and the ``crossings`` between them, grouped at ``depth``
    (None: every unit a block; see the module doc), with the bits of floating tensors in the
    model's own dtype ``model_dtype`` (torch's name; None: of every floating tensor) accounted
    at ``precision``, every other tensor at its own width; ``meta`` is kept as the graph's
    metadata, ``outside`` is the work that ran outside every unit (reported beside the blocks,
    in the totals)."""
    if depth is not None and depth < 1:
        raise BadSpecError(f"--depth must be a positive integer, got {depth}")
    key_of = {u.name: group_key(u, depth) for u in units}
    members: dict[str, list[Unit]] = {}
    for u in units:
        members.setdefault(key_of[u.name], []).append(u)

    # Tensors crossing between groups, each value once per (src group, dst group); a slice of a
    # value is dropped where the whole value crosses too.
    by_pair: dict[tuple[str, str], list[Crossing]] = {}
    for c in crossings:
        src, dst = key_of[c.src], key_of[c.dst]
        if src != dst:
            by_pair.setdefault((src, dst), []).append(c)
    edge_values: dict[tuple[str, str], dict[str, Crossing]] = {}
    sent: dict[str, dict[str, tuple[TensorMeta, ...]]] = {}
    received: dict[str, dict[str, tuple[TensorMeta, ...]]] = {}
    for (src, dst), cs in by_pair.items():
        whole = {c.root for c in cs if c.value == c.root}
        for c in cs:
            if c.value != c.root and c.root in whole:
                continue
            edge_values.setdefault((src, dst), {})[c.value] = c
            sent.setdefault(src, {})[c.value] = c.tensors
            received.setdefault(dst, {})[c.value] = c.tensors

    g = nx.DiGraph()
    for key, group_units in members.items():
        block = _block(key, group_units, depth, precision, model_dtype, sent, received)
        g.add_node(key, block=block)
    for (src, dst), values in edge_values.items():
        tensors = tuple(t for c in values.values() for t in c.tensors)
        measured = [c.measured_bytes for c in values.values()]
        measured_bits = None if None in measured else 8 * sum(measured)
        why = dict.fromkeys(c.unmeasured for c in values.values() if c.unmeasured is not None)
        grads = tuple(t for c in values.values() if c.grad for t in c.tensors)
        edge = Edge(
            src, dst, tensors, precision, measured_bits, model_dtype, "; ".join(why) or None, grads
        )
        g.add_edge(src, dst, edge=edge)
    return BlockGraph(
        g, units, crossings, precision, depth, dict(meta), outside or Outside(), model_dtype
    )


def _block(
    key: str,
    units: list[Unit],
    depth: int | None,
    precision: Precision,
    model_dtype: str | None,
    sent: dict[str, dict[str, tuple[TensorMeta, ...]]],
    received: dict[str, dict[str, tuple[TensorMeta, ...]]],
) -> Block:
    first = units[0]
    grouped = depth is not None and first.role == "block" and len(first.stack) >= depth
    out_values = sent.get(key, {})
    activation_bits = sum(t.bits(precision, model_dtype) for ts in out_values.values() for t in ts)
    params = sum(u.params for u in units)
    if grouped:
        level = first.stack[depth - 1]
        kind, path = level[2], level[1]
        parents = tuple(s[0] for s in first.stack[: depth - 1])
        inputs = tuple(dict.fromkeys(t.shape for ts in received.get(key, {}).values() for t in ts))
        outputs = tuple(dict.fromkeys(t.shape for ts in out_values.values() for t in ts))
    else:
        kind = first.kind
        is_module = bool(first.stack) and first.stack[-1][0] == first.name
        path = first.stack[-1][1] if is_module else ""
        parents = tuple(s[0] for s in (first.stack[:-1] if is_module else first.stack))
        inputs, outputs = first.input_shapes, first.output_shapes
    uncounted: dict[str, int] = {}
    for u in units:
        for name, n in u.uncounted:
            uncounted[name] = uncounted.get(name, 0) + n
    return Block(
        name=key,
        kind=kind,
        path=path,
        parents=parents,
        members=tuple(u.name for u in units),
        count=OpCount.sum(u.count for u in units),
        params=params,
        buffers=sum(u.buffers for u in units),
        param_bits=params * precision.bits,
        input_shapes=inputs,
        output_shapes=outputs,
        activation_bits=activation_bits,
        uncounted=tuple(sorted(uncounted.items())),
        role=first.role,
        seconds=None if any(u.seconds is None for u in units) else sum(u.seconds for u in units),
        other_phases=add_phases(u.other_phases for u in units),
        trainable=sum(u.trainable for u in units),
        bits_per_element=precision.bits,
        phase_seconds=_phase_seconds(units),
    )


def _phase_seconds(units: list[Unit]) -> tuple[tuple[Phase, float], ...]:
    """The members' measured seconds by phase, summed (a phase any member has; a member without
    it, e.g. no parameters to update, adds nothing), phases in :class:`Phase` order."""
    sums: dict[Phase, float] = {}
    for u in units:
        for phase, s in u.phase_seconds:
            sums[phase] = sums.get(phase, 0.0) + s
    return tuple((p, sums[p]) for p in Phase if p in sums)

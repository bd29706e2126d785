"""Pipeline partitions: leaf units cut into N consecutive stages, and what each cut carries.

A model's *block units* (the tracer's leaf units, role "block") run in a fixed execution order.
A cut at position ``p`` (1 <= p < number of units) separates units ``[0, p)`` from ``[p, B)``;
N - 1 increasing positions make N consecutive stages. The model's inputs live on the first stage
and its output leaves the last one.

**What a cut carries.** Every distinct tensor value produced at or before the cut and consumed
after it, once, whichever stage consumes it: a value that skips stages (the transformer's encoder
memory and its decoder input) crosses, and is forwarded through, every cut between its producer
and its last consumer. Values are the tracer's crossing values (``Crossing.value``): views of a
value are not sent again, they are recomputed (for free) where they are used; a slice is dropped
where the whole value it was sliced from crosses the same cut (as in ``tracer.blocks.group``).
Bits are elements x the bit width at the model's dtype (integers and bools at their own width).

**Which cuts a model can take.** Any position between two consecutive units, unless (a) ``depth``
groups units into blocks and the position falls inside one, or (b) a stage would need a
non-tensor value computed from a tensor that does not cross the cut (e.g. ``x.size(0)`` of an
input read after the cut by a unit that never receives ``x``): such cuts raise
:class:`PartitionError`.

**Objective of the balanced partition.** With ``compute(s)`` the elementary operations of stage
``s`` (or its MACs, ``measure="macs"``) and ``in_bits(s)``, ``out_bits(s)`` the bits of the cuts
before and after it::

    cost(s)   = compute(s) + comm_weight * (in_bits(s) + out_bits(s))
    minimise  max_s cost(s)            (the pipeline's bottleneck stage sets its throughput)
    then      sum of all cut bits      (among the partitions with that bottleneck)

``comm_weight`` is how many operations moving one bit is worth: 1.0 (the default) is a device
doing R operations per second on a link of R bits per second; set it from your hardware (0
balances compute alone). Solved exactly by dynamic programming over the allowed cut positions:
first the least bottleneck, then the least total cut bits under it; remaining ties go to the
earliest cuts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from flowprof import tracer
from flowprof.errors import PartitionError
from flowprof.tracer import Crossing, OpCount, Precision, TensorMeta, Unit


class ComputeMeasure(StrEnum):
    """What the partitioner balances."""

    OPS = "ops"  # every elementary operation (multiplications + additions + other kinds)
    MACS = "macs"  # multiply-accumulates of conv / linear / matmul / attention only


# --- the model's dataflow ----------------------------------------------------------------------


@dataclass
class Dataflow:
    """A traced model: its fx graph, leaf units in execution order, and the tensors crossing them.

    ``node_units`` maps an fx node name to the unit it belongs to (free ops fold into the unit that
    produced their input); nodes on parameters, sizes and constants have no unit.
    """

    name: str
    graph_module: fx.GraphModule
    units: tuple[Unit, ...]
    crossings: tuple[Crossing, ...]
    node_units: dict[str, str]
    precision: Precision
    # the traced floating dtype; a tensor the model cast to another dtype keeps its own width
    model_dtype: str | None = None

    @property
    def blocks(self) -> tuple[Unit, ...]:
        """The computing units (no inputs, no output), in execution order: what stages hold."""
        return tuple(u for u in self.units if u.role == "block")


def analyse(model: nn.Module, inputs: Sequence[torch.Tensor], name: str | None = None) -> Dataflow:
    """Trace ``model`` on ``inputs`` (tensors; only shapes and dtypes are used) into a Dataflow.

    Bits are accounted at the traced dtype: the first floating input's, else the model's own.
    """
    dtype = next((t.dtype for t in inputs if t.is_floating_point()), None)
    if dtype is None:
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    precision = Precision.of_torch(str(dtype).removeprefix("torch.")) or Precision.FP32
    with tracer.eval_mode(model):
        # the fx graph's own units: the stages run its nodes, even where fx made a module a leaf
        structure = tracer.trace_structure(model, list(inputs), hooks=False)
        leaf = tracer.build_units(tracer.counting_run(structure, model, list(inputs)))
    return Dataflow(
        name or type(model).__name__,
        structure.graph_module,
        leaf.units,
        leaf.crossings,
        dict(leaf.node_units),
        precision,
        str(dtype).removeprefix("torch."),
    )


# --- records -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CutValue:
    """One tensor value crossing a cut: its producer, its consumers after the cut, its bits."""

    value: str  # fx node name
    src: str  # the unit that produced it
    dst: tuple[str, ...]  # the units after the cut that read it
    tensors: tuple[TensorMeta, ...]
    bits: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "src": self.src,
            "dst": list(self.dst),
            "shape": "+".join(t.shape_str() for t in self.tensors),
            "dtype": "+".join(dict.fromkeys(t.dtype for t in self.tensors)),
            "elements": sum(t.elements for t in self.tensors),
            "bits": self.bits,
        }


@dataclass(frozen=True)
class Cut:
    """Cut ``index`` lies between stage ``index`` and stage ``index + 1``."""

    index: int
    position: int  # index (among block units) of the first unit after the cut
    after: str  # the last unit before the cut
    before: str  # the first unit after the cut
    values: tuple[CutValue, ...]

    @property
    def bits(self) -> int:
        return sum(v.bits for v in self.values)

    @property
    def elements(self) -> int:
        return sum(t.elements for v in self.values for t in v.tensors)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "position": self.position,
            "after": self.after,
            "before": self.before,
            "elements": self.elements,
            "bits": self.bits,
            "values": [v.to_dict() for v in self.values],
        }


@dataclass(frozen=True)
class Stage:
    """Consecutive block units run by one process."""

    index: int
    units: tuple[str, ...]
    count: OpCount
    params: int
    compute: int  # ops or macs, by the partition's measure
    in_bits: int  # bits of the cut before it (0 for the first stage)
    out_bits: int  # bits of the cut after it (0 for the last stage)
    cost: float  # compute + comm_weight * (in_bits + out_bits)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "first": self.units[0],
            "last": self.units[-1],
            "units": list(self.units),
            "counts": self.count.to_dict(),
            "ops": self.count.total,
            "params": self.params,
            "compute": self.compute,
            "in_bits": self.in_bits,
            "out_bits": self.out_bits,
            "cost": self.cost,
        }


@dataclass(frozen=True)
class Partition:
    """N consecutive stages of a model and the N - 1 cuts between them."""

    model: str
    precision: Precision
    measure: ComputeMeasure
    comm_weight: float
    chosen: str  # "balanced" or "explicit"
    stages: tuple[Stage, ...]
    cuts: tuple[Cut, ...]

    @property
    def positions(self) -> tuple[int, ...]:
        return tuple(c.position for c in self.cuts)

    @property
    def bottleneck(self) -> float:
        """The largest stage cost: what the balanced partition minimises."""
        return max(s.cost for s in self.stages)

    @property
    def cut_bits(self) -> int:
        return sum(c.bits for c in self.cuts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "precision": self.precision.value,
            "measure": self.measure.value,
            "comm_weight": self.comm_weight,
            "objective": "minimise max over stages of compute + comm_weight * (in_bits + "
            "out_bits), then the total cut bits",
            "chosen": self.chosen,
            "positions": list(self.positions),
            "bottleneck": self.bottleneck,
            "cut_bits": self.cut_bits,
            "stages": [s.to_dict() for s in self.stages],
            "cuts": [c.to_dict() for c in self.cuts],
        }


@dataclass(frozen=True)
class StagePlan:
    """What one pipeline process does per micro-batch: receive, run its fx nodes, send on."""

    index: int
    units: tuple[str, ...]
    nodes: tuple[str, ...]  # fx nodes it runs, in graph order (placeholders on the first stage)
    receive: tuple[str, ...]  # values from the previous stage, in wire order
    send: tuple[str, ...]  # values to the next stage, in wire order
    output: str | None  # the output node, on the last stage


# --- cut values and the stages' plans ----------------------------------------------------------


class _Layout:
    """Positions of units and values in execution order (inputs before, output after all)."""

    def __init__(self, flow: Dataflow) -> None:
        self.flow = flow
        self.blocks = flow.blocks
        n = len(self.blocks)
        self.order: dict[str, int] = {}
        for u in flow.units:
            self.order[u.name] = -1 if u.role == "input" else n if u.role == "output" else 0
        for i, u in enumerate(self.blocks):
            self.order[u.name] = i
        nodes = list(flow.graph_module.graph.nodes)
        self.node_index = {nd.name: i for i, nd in enumerate(nodes)}
        self.nodes = {nd.name: nd for nd in nodes}
        # The node that defines each unit is the first one mapped to it; later ones are free ops
        # folded into it.
        self.defining: dict[str, str] = {}
        seen: set[str] = set()
        for nd in nodes:
            unit = flow.node_units.get(nd.name)
            if unit is not None and unit not in seen:
                seen.add(unit)
                self.defining[nd.name] = unit
        self._cut_cache: dict[int, tuple[CutValue, ...]] = {}

    def cut_values(self, position: int) -> tuple[CutValue, ...]:
        if position in self._cut_cache:
            return self._cut_cache[position]
        live: dict[str, list[Crossing]] = {}
        for c in self.flow.crossings:
            if self.order[c.src] < position <= self.order[c.dst]:
                live.setdefault(c.value, []).append(c)
        whole = {v for v, cs in live.items() if cs[0].root == v}
        precision = self.flow.precision
        out = []
        for value, cs in sorted(live.items(), key=lambda kv: self.node_index[kv[0]]):
            root = cs[0].root
            if root != value and root in whole:
                continue  # the whole value crosses: the slice is recomputed after the cut
            tensors = cs[0].tensors
            bits = sum(t.bits(precision, self.flow.model_dtype) for t in tensors)
            dst = tuple(dict.fromkeys(c.dst for c in cs))
            out.append(CutValue(value, cs[0].src, dst, tensors, bits))
        self._cut_cache[position] = tuple(out)
        return self._cut_cache[position]

    def plans(self, positions: Sequence[int]) -> tuple[StagePlan, ...]:
        """The stages' plans; PartitionError where a stage cannot be run from what it receives."""
        bounds = [0, *positions, len(self.blocks)]
        n_stages = len(bounds) - 1
        cut_names = [tuple(v.value for v in self.cut_values(p)) for p in positions]
        out_node = next(nd for nd in self.nodes.values() if nd.op == "output")
        plans = []
        for s in range(n_stages):
            lo, hi = bounds[s], bounds[s + 1]
            units = tuple(u.name for u in self.blocks[lo:hi])
            mine = set(units)
            if s == 0:
                mine |= {u.name for u in self.flow.units if u.role == "input"}
            if s == n_stages - 1:
                mine |= {u.name for u in self.flow.units if u.role == "output"}
            receive = cut_names[s - 1] if s > 0 else ()
            send = cut_names[s] if s < n_stages - 1 else ()
            wanted = [n for n, unit in self.defining.items() if unit in mine] + list(send)
            run = self._resolve(wanted, set(receive), mine, lo, s)
            output = out_node.name if s == n_stages - 1 else None
            plans.append(StagePlan(s, units, run, receive, send, output))
        return tuple(plans)

    def _resolve(
        self, wanted: list[str], received: set[str], mine: set[str], position: int, stage: int
    ) -> tuple[str, ...]:
        """Every node the stage must run to produce ``wanted``, in graph order."""
        run: set[str] = set()
        stack = list(wanted)
        while stack:
            name = stack.pop()
            if name in received or name in run:
                continue
            nd = self.nodes[name]
            unit = self.defining.get(name)
            if unit is not None and unit not in mine:
                after = self.blocks[position - 1].name if position else "the inputs"
                raise PartitionError(
                    f"cannot cut before {self.blocks[position].name} (after {after}): stage "
                    f"{stage} would need {name} of unit {unit} from an earlier stage, and it does "
                    "not cross the cut as a tensor"
                )
            run.add(name)
            stack.extend(i.name for i in nd.all_input_nodes)
        return tuple(sorted(run, key=self.node_index.__getitem__))


# --- partitioning ------------------------------------------------------------------------------


def _compute_of(unit: Unit, measure: ComputeMeasure) -> int:
    return unit.count.macs if measure is ComputeMeasure.MACS else unit.count.total


def _allowed_positions(layout: _Layout, depth: int | None) -> list[int]:
    """Positions between blocks at ``depth`` (between any two units for None)."""
    if depth is not None and depth < 1:
        raise PartitionError(f"depth must be a positive integer, got {depth}")
    keys = [tracer.group_key(u, depth) for u in layout.blocks]
    last_of = {k: i for i, k in enumerate(keys)}
    allowed, reach = [], 0
    for p in range(1, len(keys)):
        reach = max(reach, last_of[keys[p - 1]])
        if reach < p:  # no group started before p continues at or after it
            allowed.append(p)
    return allowed


def _position_of(layout: _Layout, cut: int | str) -> int:
    if isinstance(cut, str):
        names = [u.name for u in layout.blocks]
        if cut not in names:
            raise PartitionError(f"no unit named {cut!r} to cut after")
        return names.index(cut) + 1
    if isinstance(cut, bool) or not isinstance(cut, int):
        raise PartitionError(f"a cut is a position or a unit name, got {cut!r}")
    return cut


def partition(
    flow: Dataflow,
    stages: int | None = None,
    *,
    cuts: Sequence[int | str] | None = None,
    comm_weight: float = 1.0,
    measure: ComputeMeasure | str = ComputeMeasure.OPS,
    depth: int | None = None,
) -> Partition:
    """Cut ``flow``'s block units into ``stages`` consecutive stages (see the module doc).

    ``cuts`` gives the cut positions explicitly instead: an int ``p`` cuts before block unit ``p``
    (1 <= p < number of units), a unit name cuts after that unit. ``depth`` allows cuts only
    between blocks grouped at that depth (as ``trace --depth``). Raises :class:`PartitionError`
    for a stage count out of range or a cut the model cannot take.
    """
    try:
        measure = ComputeMeasure(measure)
    except ValueError:
        raise PartitionError(f"unknown compute measure {measure!r}; use ops or macs") from None
    if not comm_weight >= 0:
        raise PartitionError(f"comm_weight must be a non-negative number, got {comm_weight!r}")
    layout = _Layout(flow)
    n_units = len(layout.blocks)
    allowed = _allowed_positions(layout, depth)
    n_blocks = len(allowed) + 1
    what = "units" if depth is None else f"blocks at depth {depth}"
    if cuts is not None:
        positions = [_position_of(layout, c) for c in cuts]
        if stages is not None and stages != len(positions) + 1:
            raise PartitionError(
                f"{len(positions)} cuts make {len(positions) + 1} stages, not {stages}"
            )
        if not positions:
            raise PartitionError("give at least one cut: a pipeline has 2 or more stages")
        for p in positions:
            if not 1 <= p < n_units:
                raise PartitionError(
                    f"cut position {p} is out of range: {flow.name} has {n_units} units, "
                    f"so a cut lies at 1..{n_units - 1}"
                )
            if p not in allowed:
                raise PartitionError(
                    f"cannot cut before {layout.blocks[p].name}: it is inside a block at depth "
                    f"{depth}"
                )
        if any(b <= a for a, b in zip(positions, positions[1:], strict=False)):
            raise PartitionError(f"cut positions must increase, got {positions}")
        layout.plans(positions)  # raises where a stage cannot be run
        chosen = "explicit"
    else:
        if stages is None or isinstance(stages, bool) or not isinstance(stages, int):
            raise PartitionError(f"give the number of stages as an integer, got {stages!r}")
        if n_blocks < 2:
            if depth is None:
                why = (
                    "1 unit, so it cannot be split into stages (a model torch.fx cannot trace, "
                    "e.g. one that branches on tensor values, is one unit here; `flowprof trace "
                    "MODEL --measure` still counts it block by block)"
                )
            else:
                why = f"1 block at depth {depth}: give a larger --depth, or none"
            raise PartitionError(f"{flow.name} has only {why}")
        if not 2 <= stages <= n_blocks:
            raise PartitionError(
                f"the number of stages must be from 2 to {n_blocks} (the number of {what} of "
                f"{flow.name}), got {stages}"
            )
        valid = [p for p in allowed if _takes(layout, p)]
        if len(valid) < stages - 1:
            raise PartitionError(
                f"{flow.name} can take only {len(valid)} cuts, too few for {stages} stages"
            )
        positions = _balance(layout, valid, stages, comm_weight, measure)
        layout.plans(positions)
        chosen = "balanced"
    return _make(layout, positions, comm_weight, measure, chosen)


def _takes(layout: _Layout, position: int) -> bool:
    try:
        layout.plans([position])
    except PartitionError:
        return False
    return True


def _balance(
    layout: _Layout,
    valid: list[int],
    stages: int,
    comm_weight: float,
    measure: ComputeMeasure,
) -> list[int]:
    n = len(layout.blocks)
    prefix = [0]
    for u in layout.blocks:
        prefix.append(prefix[-1] + _compute_of(u, measure))
    cand = [0, *valid, n]
    bits = {p: (sum(v.bits for v in layout.cut_values(p)) if 0 < p < n else 0) for p in cand}

    def cost(i: int, j: int) -> float:  # the stage holding units [cand[i], cand[j])
        a, b = cand[i], cand[j]
        return (prefix[b] - prefix[a]) + comm_weight * (bits[a] + bits[b])

    last = len(cand) - 1
    inf = float("inf")
    # 1. the least bottleneck: best[k][j] covers units [0, cand[j]) with k stages.
    best = [[inf] * len(cand) for _ in range(stages + 1)]
    best[0][0] = 0.0
    for k in range(1, stages + 1):
        for j in range(k, last + 1):
            best[k][j] = min(
                (max(best[k - 1][i], cost(i, j)) for i in range(k - 1, j) if best[k - 1][i] < inf),
                default=inf,
            )
    limit = best[stages][last]
    # 2. the least total cut bits among partitions whose every stage costs at most the limit;
    # strict improvement only, so ties keep the earliest cut.
    least = [[inf] * len(cand) for _ in range(stages + 1)]
    back = [[-1] * len(cand) for _ in range(stages + 1)]
    least[0][0] = 0
    for k in range(1, stages + 1):
        for j in range(k, last + 1):
            for i in range(k - 1, j):
                if least[k - 1][i] == inf or cost(i, j) > limit:
                    continue
                total = least[k - 1][i] + bits[cand[i]]
                if total < least[k][j]:
                    least[k][j], back[k][j] = total, i
    positions, j = [], last
    for k in range(stages, 0, -1):
        j = back[k][j]
        positions.append(cand[j])
    return sorted(p for p in positions if p > 0)


def _make(
    layout: _Layout,
    positions: Sequence[int],
    comm_weight: float,
    measure: ComputeMeasure,
    chosen: str,
) -> Partition:
    blocks = layout.blocks
    cuts = tuple(
        Cut(k, p, blocks[p - 1].name, blocks[p].name, layout.cut_values(p))
        for k, p in enumerate(positions)
    )
    bounds = [0, *positions, len(blocks)]
    stages = []
    for s in range(len(bounds) - 1):
        members = blocks[bounds[s] : bounds[s + 1]]
        in_bits = cuts[s - 1].bits if s > 0 else 0
        out_bits = cuts[s].bits if s < len(cuts) else 0
        compute = sum(_compute_of(u, measure) for u in members)
        stages.append(
            Stage(
                index=s,
                units=tuple(u.name for u in members),
                count=OpCount.sum(u.count for u in members),
                params=sum(u.params for u in members),
                compute=compute,
                in_bits=in_bits,
                out_bits=out_bits,
                cost=compute + comm_weight * (in_bits + out_bits),
            )
        )
    return Partition(
        layout.flow.name,
        layout.flow.precision,
        measure,
        comm_weight,
        chosen,
        tuple(stages),
        cuts,
    )


def stage_plans(flow: Dataflow, part: Partition) -> tuple[StagePlan, ...]:
    """What each stage's process runs, receives and sends (see :class:`StagePlan`)."""
    return _Layout(flow).plans(part.positions)


def cut_values(flow: Dataflow, position: int) -> tuple[CutValue, ...]:
    """The tensor values crossing a cut before block unit ``position``."""
    layout = _Layout(flow)
    if not 1 <= position < len(layout.blocks):
        raise PartitionError(f"cut position {position} is out of range 1..{len(layout.blocks) - 1}")
    return layout.cut_values(position)

"""Rich tables of a training step's BlockGraph: the phases as columns (forward, backward,
optimizer, recompute and the step in total), the gradients flowing back between blocks, and
each block's parameter gradients (what a data-parallel all-reduce moves). Returned, not
printed."""

from __future__ import annotations

from rich.table import Table

from flowprof.reports.fit import fit
from flowprof.reports.tables import block_name
from flowprof.reports.units import bits, count
from flowprof.tracer.counts import CONVENTION, KINDS, OpCount, Phase
from flowprof.tracer.graph import BlockGraph


def is_training(graph: BlockGraph) -> bool:
    return "training_step" in graph.meta


def _phases(graph: BlockGraph) -> list[Phase]:
    """The phases shown: forward, backward, the optimizer when it ran, recompute when a
    checkpoint made one."""
    shown = [Phase.FORWARD, Phase.BACKWARD]
    if graph.meta.get("training_step", {}).get("optimizer"):
        shown.append(Phase.OPTIMIZER)
    if Phase.RECOMPUTE in graph.phases():
        shown.append(Phase.RECOMPUTE)
    return shown


def _step(counts: dict[Phase, OpCount]) -> OpCount:
    return OpCount.sum(counts.values())


def phase_blocks_table(graph: BlockGraph, title: str = "Training step by block") -> Table:
    """One row per block: its operations (all kinds) in each phase and in the whole step, its
    backward-to-forward ratio, parameters and parameter-gradient bits."""
    shown = _phases(graph)
    totals = {p: graph.total(p) for p in shown}
    t = Table(
        title=title,
        show_footer=True,
        header_style="bold",
        footer_style="bold",
        caption="operations of every kind (multiplications, additions and the rest) per phase; "
        "bwd/fwd = backward over forward; grad bits = the parameter gradients a data-parallel "
        "all-reduce moves each step",
    )
    t.add_column("block", footer="total", overflow="fold")
    t.add_column("kind", footer="")
    for p in shown:
        t.add_column(p.value, justify="right", footer=count(totals[p].total))
    t.add_column("step", justify="right", footer=count(_step(totals).total))
    t.add_column(
        "bwd/fwd", justify="right", footer=_ratio(totals[Phase.BACKWARD], totals[Phase.FORWARD])
    )
    t.add_column("params", justify="right", footer=count(graph.params()))
    grad_bits = sum(b.param_grad_bits for b in graph.blocks())
    t.add_column("grad bits", justify="right", footer=bits(grad_bits))
    for b in graph.blocks():
        counts = b.counts()
        t.add_row(
            block_name(b),
            b.kind,
            *(count(counts[p].total) if p in counts else "-" for p in shown),
            count(_step(counts).total),
            _ratio(counts.get(Phase.BACKWARD), counts.get(Phase.FORWARD)),
            count(b.params),
            bits(b.param_grad_bits) if b.trainable else "-",
        )
    return fit(t)


def _ratio(num: OpCount | None, den: OpCount | None) -> str:
    if num is None or den is None or den.total == 0:
        return "-"
    return f"{num.total / den.total:.2f}"


def phase_totals_table(graph: BlockGraph, title: str = "Training step totals") -> Table:
    """Totals by kind (rows) and phase (columns), exact; FLOPs beside the MACs they come from."""
    shown = _phases(graph)
    totals = {p: graph.total(p) for p in shown}
    step = _step(totals)
    missing = graph.uncounted()
    t = Table(
        title=title,
        header_style="bold",
        caption=f"Convention: {CONVENTION}"
        + ("" if not missing else f"; uncounted ops: {', '.join(missing)}"),
    )
    t.add_column("quantity")
    for p in shown:
        t.add_column(p.value, justify="right")
    t.add_column("step (exact)" if not missing else "step (at least)", justify="right")
    for kind in KINDS:
        values = [getattr(totals[p], kind) for p in shown]
        if kind != "macs" and not any(values):
            continue
        label = "MACs (conv/linear/matmul/attention)" if kind == "macs" else kind.replace("_", " ")
        t.add_row(label, *(count(v) for v in values), count(getattr(step, kind)))
    t.add_row(
        "  = FLOPs at 1 MAC = 2 FLOPs",
        *(count(2 * totals[p].macs) for p in shown),
        count(2 * step.macs),
    )
    t.add_row("all operations", *(count(totals[p].total) for p in shown), count(step.total))
    trainable = sum(b.trainable for b in graph.blocks())
    t.add_row(
        "parameters needing a gradient",
        *([""] * len(shown)),
        f"{count(trainable)} of {count(graph.params())}",
    )
    grad = sum(b.param_grad_bits for b in graph.blocks())
    t.add_row(
        f"parameter gradients ({graph.precision.value}): a data-parallel all-reduce",
        *([""] * len(shown)),
        bits(grad),
    )
    fwd = sum(e.bits for e in graph.edges())
    back = sum(e.bits for e in graph.gradient_edges())
    t.add_row(
        "bits between blocks: activations forward, gradients backward",
        count(fwd),
        count(back),
        *([""] * (len(shown) - 2)),
        count(fwd + back),
    )
    return fit(t, names=(), keys=("quantity",))


def gradient_edges_table(graph: BlockGraph, title: str = "Gradients between blocks") -> Table:
    """The backward's edges: each forward edge's gradients, flowing back from its destination to
    its source, with the same shapes and dtypes."""
    edges = graph.gradient_edges()
    t = Table(title=title, show_footer=True, header_style="bold", footer_style="bold")
    t.add_column("from", footer="total", overflow="fold")
    t.add_column("to", overflow="fold")
    t.add_column("shape")
    t.add_column("dtype")
    t.add_column("elements", justify="right")
    t.add_column("bits", justify="right", footer=bits(sum(e.bits for e in edges)))
    for e in edges:
        t.add_row(e.src, e.dst, e.shape, e.dtype, count(e.elements), bits(e.bits))
    return fit(t, names=("from", "to"))


def step_notes(graph: BlockGraph) -> list[str]:
    """What the step counted: the optimizer, the loss, and how."""
    step = graph.meta.get("training_step", {})
    loss = next((b.kind for b in graph.blocks() if b.name == "loss"), step.get("loss"))
    opt = step.get("optimizer")
    lines = [
        f"note: one training step: forward, loss ({loss}), backward"
        + (f", {opt} update (its second step: the steady state)" if opt else "")
        + ", as autograd and torch.optim run them on meta tensors, each op in the block whose "
        "forward it differentiates"
    ]
    if not step.get("input_grad"):
        lines.append("note: the inputs need no gradient: the first layer computes none")
    return lines


def measured_step_table(
    graph: BlockGraph, title: str = "Measured training step (--measure), seconds"
) -> Table:
    """Seconds per block of each phase of a measured training step (tracer/measure_step.py):
    the forward in train mode, the backward's autograd nodes, the optimizer's step."""
    phases = [p for p in (Phase.FORWARD, Phase.BACKWARD, Phase.OPTIMIZER) if p in _phases(graph)]
    t = Table(title=title, header_style="bold")
    t.add_column("block", overflow="fold")
    for p in phases:
        t.add_column(p.value, justify="right")
    totals = dict.fromkeys(phases, 0.0)
    for b in graph.blocks():
        row = [block_name(b)]
        for p in phases:
            s = b.seconds_of(p)
            row.append("-" if s is None else f"{s:.6f}")
            totals[p] += s or 0.0
        t.add_row(*row)
    t.add_row("total", *(f"{totals[p]:.6f}" for p in phases), style="bold")
    return fit(t)

"""Rich tables of a BlockGraph: blocks, edges, totals. Returned, not printed."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from flowprof.reports.fit import fit
from flowprof.reports.units import bits, count
from flowprof.tracer.counts import CONVENTION, OTHER_KINDS
from flowprof.tracer.graph import Block, BlockGraph


def blocks_table(graph: BlockGraph, title: str = "Blocks") -> Table:
    """One row per block with exact counts; a totals row at the foot."""
    t = Table(title=title, show_footer=True, header_style="bold", footer_style="bold")
    total = graph.total()
    t.add_column("block", footer="total", overflow="fold")
    t.add_column("kind", footer="")
    t.add_column("macs", justify="right", footer=count(total.macs))
    t.add_column("mults", justify="right", footer=count(total.multiplications))
    t.add_column("adds", justify="right", footer=count(total.additions))
    t.add_column("other", justify="right", footer=count(total.other))
    t.add_column("params", justify="right", footer=count(graph.params()))
    t.add_column("out bits", justify="right", footer="")
    for b in graph.blocks():
        t.add_row(
            block_name(b),
            b.kind,
            count(b.macs),
            count(b.multiplications),
            count(b.additions),
            count(b.other),
            count(b.params),
            bits(b.activation_bits),
        )
    return fit(t)


def block_name(b: Block) -> Text:
    """A block's name, marked when some of its ops have no formula."""
    name = Text(b.name)
    if b.uncounted:
        name.append(" (uncounted ops)", style="red")
    return name


def edges_table(graph: BlockGraph, title: str = "Tensors between blocks") -> Table:
    t = Table(title=title, show_footer=True, header_style="bold", footer_style="bold")
    total = sum(e.bits for e in graph.edges())
    t.add_column("from", footer="total", overflow="fold")
    t.add_column("to", overflow="fold")
    t.add_column("shape")
    t.add_column("dtype")
    t.add_column("elements", justify="right")
    t.add_column("bits", justify="right", footer=bits(total))
    for e in graph.edges():
        t.add_row(e.src, e.dst, e.shape, e.dtype, count(e.elements), bits(e.bits))
    return fit(t, names=("from", "to"))


def totals_table(graph: BlockGraph, title: str = "Totals") -> Table:
    """Totals by kind, FLOPs only beside the MAC count they come from, and the coverage. The
    counts are headed "exact" only when every op was counted; otherwise they are lower bounds
    (an op without a formula adds nothing to them) and headed so."""
    missing = graph.uncounted()
    t = Table(title=title, header_style="bold", caption=f"Convention: {CONVENTION}")
    t.add_column("quantity")
    t.add_column("exact" if not missing else "at least (ops uncounted)", justify="right")
    t.add_column("", justify="right")
    total = graph.total()
    t.add_row("MACs (conv/linear/matmul/attention)", count(total.macs), "")
    t.add_row("  = FLOPs at 1 MAC = 2 FLOPs", count(2 * total.macs), "")
    t.add_row("multiplications", count(total.multiplications), "")
    t.add_row("additions", count(total.additions), "")
    for k in OTHER_KINDS:
        if getattr(total, k):
            t.add_row(k.replace("_", " "), count(getattr(total, k)), "")
    t.add_row("parameters", count(graph.params()), bits(graph.params() * graph.precision.bits))
    idle = graph.meta.get("params_not_run", 0)
    if idle:
        t.add_row("  + parameters of modules inference never runs", count(idle), "")
    edge_bits = sum(e.bits for e in graph.edges())
    t.add_row(f"bits between blocks ({graph.precision.value})", count(edge_bits), bits(edge_bits))
    coverage = f"{graph.coverage():.1%} of op calls counted"
    if missing:
        coverage += "; uncounted: " + ", ".join(f"{k} x{v}" for k, v in missing.items())
    t.add_row("coverage", coverage, "")
    return fit(t, names=(), keys=("quantity",))


def summary(graph: BlockGraph, name: str = "") -> Group:
    """What ``trace`` prints: the blocks, the tensors between them, the totals and the notes on
    how the graph was made, as one Rich renderable titled with the model's ``name``."""
    prefix = f"{name}: " if name else ""
    notes = [Text(line) for line in trace_notes(graph)]
    return Group(
        blocks_table(graph, title=f"{prefix}blocks"),
        edges_table(graph, title=f"{prefix}tensors between blocks"),
        totals_table(graph, title=f"{prefix}totals"),
        *notes,
    )


def trace_notes(graph: BlockGraph) -> list[str]:
    """One line per wrapper the tracer looked through (torch.compile, DataParallel), one if the
    model was run as torch.compile sees it (it branches on tensor values), and one per module
    torch.fx could not trace (its blocks recorded by hooks, or it is one block), so that how the
    graph was made is never left unsaid."""
    meta = graph.meta
    notes = [
        f"note: traced the model inside {wrapper}: the wrapper adds no arithmetic"
        for wrapper in meta.get("wrappers", [])
    ]
    if meta.get("run_as_compiled"):
        notes.append(
            f"note: the model branches on tensor values ({meta['run_as_compiled']}); it was run "
            "as torch.compile sees it (torch.compiler.is_compiling() true), which takes no "
            "value-dependent shortcut: the counts are of that general path"
        )
    for name, why in meta.get("untraceable_leaves", {}).items():
        if meta.get("blocks_by_hooks"):
            notes.append(
                f"note: torch.fx cannot trace {name} ({why}): the blocks were recorded by hooks "
                "as the model ran on these inputs"
            )
        else:
            notes.append(f"note: {name} is one block: torch.fx cannot trace it ({why})")
    return notes


def measured_table(graph: BlockGraph, title: str = "Measured (--measure)") -> Table:
    """Seconds per block, and measured edge bits beside the static figure at the traced dtype."""
    t = Table(title=title, header_style="bold")
    t.add_column("block / edge", overflow="fold")
    t.add_column("seconds", justify="right")
    t.add_column("static bits (traced dtype)", justify="right")
    t.add_column("measured bits", justify="right")
    t.add_column("agree")
    for b in graph.blocks():
        t.add_row(b.name, f"{b.seconds:.6f}" if b.seconds is not None else "-", "", "", "")
    for e in graph.edges():
        if e.measured_bits is None:  # not measured
            agree: Text | str = "-"
        elif e.measured_bits == e.native_bits:
            agree = Text("yes", style="green")
        else:
            agree = Text("NO", style="bold red")
        t.add_row(
            f"{e.src} -> {e.dst}",
            "",
            count(e.native_bits),
            count(e.measured_bits) if e.measured_bits is not None else "-",
            agree,
        )
    return fit(t)


def block_time_table(times, title: str = "Forward time per block") -> Table:
    """Seconds per leaf module from the forward hooks (``train --profile``), largest first."""
    t = Table(title=title, header_style="bold")
    t.add_column("block")
    t.add_column("kind")
    t.add_column("calls", justify="right")
    t.add_column("seconds", justify="right")
    t.add_column("share", justify="right")
    total = sum(b.seconds for b in times) or 1.0
    for b in sorted(times, key=lambda b: b.seconds, reverse=True):
        t.add_row(b.block, b.kind, count(b.calls), f"{b.seconds:.3f}", f"{b.seconds / total:.1%}")
    return fit(t)

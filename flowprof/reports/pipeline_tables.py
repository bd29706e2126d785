"""Pipeline partitions and runs as a Rich table and a Graphviz diagram (returned, not printed).

Imports only what it draws with; a :class:`~distributed.Partition` or a
:class:`~distributed.PipelineResult` in, a ``rich.table.Table`` or a ``graphviz.Digraph`` out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text

from flowprof.reports.fit import fit, short_name
from flowprof.reports.units import bits, count

if TYPE_CHECKING:
    from flowprof.distributed.partition import Cut, Partition, Stage
    from flowprof.distributed.pipeline import PipelineResult


def _units_text(stage: Stage) -> str:
    n = len(stage.units)
    if n == 1:
        return stage.units[0]
    return f"{stage.units[0]} … {stage.units[-1]} ({n} units)"


def _values_text(cut: Cut, limit: int = 4) -> str:
    # named by the unit that produced each value (fx value names such as mul_4 say little)
    parts = [f"{v.src} {'+'.join(t.shape_str() for t in v.tensors)}" for v in cut.values]
    if len(parts) > limit:
        parts = parts[:limit] + [f"+{len(parts) - limit} more"]
    return ", ".join(parts)


def _agree(ok: bool) -> Text:
    return Text("yes", style="green") if ok else Text("NO", style="bold red")


def partition_table(part: Partition, title: str | None = None) -> Table:
    """Stages (units, compute, cost) interleaved with the cuts between them (values, bits)."""
    t = Table(
        title=title or f"{short_name(part.model)}: {len(part.stages)} stages ({part.chosen})",
        header_style="bold",
        caption=(
            f"cost = {part.measure.value} + {part.comm_weight:g} x (in + out bits); "
            f"bottleneck {part.bottleneck:,.0f}; bits at {part.precision.value}"
        ),
    )
    t.add_column("stage / cut")
    t.add_column("units / values crossing", overflow="fold")
    t.add_column(part.measure.value, justify="right")
    t.add_column("bits", justify="right")
    t.add_column("cost", justify="right")
    for stage in part.stages:
        t.add_row(
            f"stage {stage.index}",
            _units_text(stage),
            count(stage.compute),
            "",
            f"{stage.cost:,.0f}",
        )
        if stage.index < len(part.cuts):
            cut = part.cuts[stage.index]
            t.add_row(
                f"cut {cut.index}|{cut.index + 1}", _values_text(cut), "", count(cut.bits), ""
            )
    return fit(t, names=("stage / cut", "units / values crossing"), keys=("stage / cut",))


def pipeline_table(result: PipelineResult, title: str | None = None) -> Table:
    """Stages (units, compute) and cuts (predicted bits, measured bytes x 8, agree yes/no)."""
    part = result.partition
    t = Table(
        title=title
        or f"{short_name(result.model)}: {result.world_size} processes, "
        f"{result.micro_batches} micro-batch"
        + ("es" if result.micro_batches != 1 else ""),
        header_style="bold",
        caption=(
            f"{result.backend} on {result.address}; bits per micro-batch at "
            f"{part.precision.value}; outputs equal to one process: "
            f"{'yes' if result.outputs_equal else 'NO'}"
        ),
    )
    t.add_column("stage / cut")
    t.add_column("units / values crossing", overflow="fold")
    t.add_column(part.measure.value, justify="right")
    t.add_column("predicted bits", justify="right")
    t.add_column("measured bytes x 8", justify="right")
    t.add_column("agree")
    for stage in part.stages:
        t.add_row(
            f"stage {stage.index} (rank {stage.index})",
            _units_text(stage),
            count(stage.compute),
            "",
            "",
            "",
        )
        if stage.index < len(result.cuts):
            check = result.cuts[stage.index]
            cut = check.cut
            t.add_row(
                f"cut {cut.index}|{cut.index + 1}",
                _values_text(cut),
                "",
                count(check.predicted_bits),
                count(check.measured_bits),
                _agree(check.agree),
            )
    return fit(t, names=("stage / cut", "units / values crossing"), keys=("stage / cut",))


def stages_diagram(subject: Partition | PipelineResult, title: str | None = None):
    """The stages as a ``graphviz.Digraph``: one box per stage, one edge per cut."""
    from flowprof.distributed.pipeline import PipelineResult
    from flowprof.reports.diagram import styled_digraph

    result = subject if isinstance(subject, PipelineResult) else None
    part = result.partition if result else subject
    dot = styled_digraph(
        "pipeline",
        title or f"{short_name(part.model)}: {len(part.stages)} pipeline stages",
        rankdir="LR",
    )
    dot.node("inputs", "inputs", shape="ellipse", fillcolor="#f5f5f5")
    dot.node("output", "output", shape="ellipse", fillcolor="#f5f5f5")
    for stage in part.stages:
        lines = [
            f"stage {stage.index} (rank {stage.index})",
            stage.units[0] if len(stage.units) == 1 else f"{stage.units[0]} …",
        ]
        if len(stage.units) > 1:
            lines.append(f"… {stage.units[-1]}")
        lines.append(f"{len(stage.units)} units · {count(stage.compute)} {part.measure.value}")
        dot.node(f"stage{stage.index}", "\\n".join(lines))
    dot.edge("inputs", "stage0")
    dot.edge(f"stage{len(part.stages) - 1}", "output")
    for cut in part.cuts:
        n = len(cut.values)
        label = [f"{n} value{'s' if n != 1 else ''} · {bits(cut.bits)}"]
        if result is not None:
            check = result.cuts[cut.index]
            mark = "=" if check.agree else "≠"
            label.append(f"measured {bits(check.measured_bits)} {mark} predicted")
        dot.edge(
            f"stage{cut.index}",
            f"stage{cut.index + 1}",
            label="\\n".join(label),
            color="#4a6fa5" if result is None or result.cuts[cut.index].agree else "#c0392b",
        )
    return dot

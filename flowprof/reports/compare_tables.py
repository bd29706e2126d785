"""Rich tables for the model comparison (analyses/op_compare.py, with the f check of
analyses/dws_mapping.py) and for the communication sweep (analyses/comm_sweep.py).

Each builder returns a ``rich.table.Table``; printing is the caller's business. Counts are exact
(thousands separators); bits are in SI units, the exact numbers being in CSV and JSON.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from rich.table import Table

from flowprof.analyses import dws_mapping
from flowprof.analyses.comm_sweep import Sweep
from flowprof.analyses.op_compare import Comparison, LayerCounts, LayerRow
from flowprof.reports.fit import fit, short_name
from flowprof.reports.units import bits, count


def _n(counts: LayerCounts | None, kind: str) -> str:
    return "-" if counts is None else count(counts.get(kind))


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def comparison_table(cmp: Comparison, title: str = "") -> Table:
    """One row per layer: multiplications and additions (and macs, other) of A and B with the
    ratio B/A; the totals as the last row. A layer only one model has shows "-" on the other."""
    a, b = cmp.model_a, cmp.model_b
    depth = "leaf units" if cmp.depth is None else f"depth {cmp.depth}"
    table = Table(
        title=title or f"{short_name(a)} vs {short_name(b)}: operations per layer ({depth})",
        caption="ratio = B / A; counting convention: dot product of length K = K mult. + "
        "K-1 add., bias +1 add.",
    )
    table.add_column("layer")
    for short in ("mults", "adds"):
        table.add_column(f"{short} A", justify="right")
        table.add_column(f"{short} B", justify="right")
        table.add_column("B/A", justify="right")
    for short in ("macs", "other", "params"):
        table.add_column(f"{short} A", justify="right")
        table.add_column(f"{short} B", justify="right")

    def add(row: LayerRow, **style: str) -> None:
        cells = [row.name]
        for kind in ("multiplications", "additions"):
            cells += [_n(row.a, kind), _n(row.b, kind), _ratio(row.ratio(kind))]
        for kind in ("macs", "other", "params"):
            cells += [_n(row.a, kind), _n(row.b, kind)]
        table.add_row(*cells, **style)

    for row in cmp.rows:
        add(row)
    table.add_section()
    add(cmp.total, style="bold")
    return fit(table)


def _fraction(value: Fraction | None) -> str:
    if value is None:
        return "undefined"
    return count(int(value)) if value.denominator == 1 else f"{float(value):,.2f}"


def conv_check_table(cmp: Comparison, title: str = "") -> Table:
    """For every convolution the two models differ in: its parameters, then x (regular, traced),
    y (depthwise-separable, traced) and f(x) for multiplications, additions and their sum."""
    table = Table(
        title=title or "f: regular convolution x -> depthwise-separable y",
        caption="M = connections (dense: C_in*C_out); biases r/d/p = regular, depthwise, "
        "pointwise; ok: f(x) = y traced and x traced = x by the layer's parameters",
    )
    for name in ("layer", "C_in", "C_out", "K", "M", "P", "biases", "quantity"):
        table.add_column(
            name, justify="left" if name in ("layer", "biases", "quantity") else "right"
        )
    for name in ("x traced", "y traced", "f(x)", "y/x"):
        table.add_column(name, justify="right")
    table.add_column("f")
    table.add_column("ok")
    for conv in cmp.convs:
        b = conv.biases
        flags = "".join(
            c if on else "-"
            for c, on in zip("rdp", (b.regular, b.depthwise, b.pointwise), strict=True)
        )
        for i, q in enumerate(conv.checks):
            head = [
                conv.layer,
                str(conv.c_in),
                str(conv.c_out),
                "x".join(map(str, conv.kernel)),
                str(conv.connections),
                count(conv.positions),
                flags,
            ]
            table.add_row(
                *(head if i == 0 else [""] * len(head)),
                q.quantity.value,
                count(q.x),
                count(q.y),
                _fraction(q.y_predicted),
                _ratio(q.ratio),
                q.formula,
                "yes" if q.ok else "NO",
                end_section=i == len(conv.checks) - 1,
            )
    return fit(table)


def mapping_table(title: str = "The mapping f, step by step") -> Table:
    """The derivation of f (analyses/dws_mapping.derivation), one step a row."""
    table = Table(title=title, show_header=False)
    table.add_column("#", justify="right")
    table.add_column("step")
    for i, line in enumerate(dws_mapping.derivation("text"), start=1):
        table.add_row(str(i), line)
    return fit(table)


# Up to this many swept values a sweep's table has one column per value; more, one row per value
# (a table 50 values wide is unreadable at any terminal width).
COLUMNS_UP_TO = 8


def _check(values: list[bool | None]) -> str:
    if any(v is None for v in values):
        return "-"
    return "yes" if all(values) else "NO"


def sweep_table(sw: Sweep, title: str = "") -> Table:
    """Families x swept values: bits per edge family, then activations, weights and total; the
    last column says whether every traced family equals its closed form. Over more than
    ``COLUMNS_UP_TO`` values, transposed: one row per value (:func:`sweep_points_table`)."""
    var = sw.variable.value
    depth = "leaf units" if sw.depth is None else f"depth {sw.depth}"
    title = title or f"{sw.model}: bits between consecutive blocks ({depth}, {sw.dtype}) vs {var}"
    if len(sw.points) > COLUMNS_UP_TO:
        return sweep_points_table(sw, title)
    table = Table(
        title=title,
        caption="edges: per forward pass at the last point; closed form: traced = formula at "
        "every point",
    )
    table.add_column("family")
    table.add_column("edges", justify="right")
    for v in sw.values:
        table.add_column(f"{var} {v}", justify="right")
    table.add_column("closed form")
    table.add_column("=", justify="center")
    last = sw.points[-1] if sw.points else None
    check = _check
    for fam in sw.families():
        amounts = [p.family(fam) for p in sw.points]
        table.add_row(
            fam.value,
            str(last.family(fam).items) if last else "",
            *(bits(a.bits) for a in amounts),
            last.family(fam).closed_form if last else "",
            check([a.matches for a in amounts]),
        )
    table.add_section()
    table.add_row(
        "activations (all edges)",
        str(len(last.edges)) if last else "",
        *(bits(p.activation_bits) for p in sw.points),
        "",
        "",
        style="bold",
    )
    for group in sw.weight_groups():
        amounts = [p.weight(group) for p in sw.points]
        table.add_row(
            f"weights: {group.value}",
            "",
            *(bits(a.bits) for a in amounts),
            last.weight(group).closed_form if last else "",
            check([a.matches for a in amounts]),
        )
    table.add_row(
        "weights (all blocks)", "", *(bits(p.weight_bits) for p in sw.points), "", "", style="bold"
    )
    table.add_section()
    table.add_row("total", "", *(bits(p.total_bits) for p in sw.points), "", "", style="bold")
    return fit(table)


def sweep_points_table(sw: Sweep, title: str = "") -> Table:
    """A sweep with one row per swept value: bits per edge family, all activations, each weight
    group, all weights and the total; below, how many edges (blocks) each family (group) has at
    the last value and whether the traced bits equal the closed form at every value."""
    var = sw.variable.value
    families, groups = sw.families(), sw.weight_groups()
    table = Table(
        title=title or f"{sw.model}: bits between consecutive blocks vs {var}",
        caption="closed form = traced: at every value (the formulas are in --format json)",
    )
    table.add_column(var, justify="right")
    for fam in families:
        table.add_column(fam.value, justify="right")
    table.add_column("activations (all edges)", justify="right")
    for group in groups:
        table.add_column(f"weights: {group.value}", justify="right")
    table.add_column("weights (all blocks)", justify="right")
    table.add_column("total", justify="right")
    for p in sw.points:
        table.add_row(
            str(p.value),
            *(bits(p.family(f).bits) for f in families),
            bits(p.activation_bits),
            *(bits(p.weight(g).bits) for g in groups),
            bits(p.weight_bits),
            bits(p.total_bits),
        )
    table.add_section()
    last = sw.points[-1]
    table.add_row(
        f"edges at {last.value}",
        *(str(last.family(f).items) for f in families),
        str(len(last.edges)),
        *(str(last.weight(g).items) for g in groups),
        "",
        "",
        style="dim",
    )
    table.add_row(
        "closed form",
        *(_check([p.family(f).matches for p in sw.points]) for f in families),
        "",
        *(_check([p.weight(g).matches for p in sw.points]) for g in groups),
        "",
        "",
    )
    return fit(table, names=(), keys=(var,))


def sweep_blocks_table(sw: Sweep, index: int = -1, title: str = "") -> Table:
    """One point of a sweep, block by block: bits received and sent, and weight bits loaded."""
    point = sw.points[index]
    var = sw.variable.value
    table = Table(
        title=title or f"{sw.model} at {var} {point.value}: traffic per block",
        caption="weights > in: loading the block's weights moves more bits than its inputs",
    )
    for name in ("block", "kind", "in", "out", "weights", "weights > in"):
        table.add_column(name, justify="left" if name in ("block", "kind") else "right")
    for b in point.blocks:
        table.add_row(
            b.name,
            b.kind,
            bits(b.input_bits),
            bits(b.output_bits),
            bits(b.weight_bits),
            "yes" if b.weight_dominated else "",
        )
    return fit(table)


def training_cost_table(costs: list[Any], title: str = "") -> Table:
    """Multiplications and additions of training each model (analyses.training_cost): per step
    and phase, per epoch, per run; B/A beside them."""
    from flowprof.reports.units import count as _count

    a, b = costs
    t = Table(title=title or f"Training cost: {a.model} (A) and {b.model} (B)", header_style="bold")
    t.add_column("training", overflow="fold")
    for c in (a, b):
        t.add_column(f"mult. {c.model}", justify="right")
        t.add_column(f"add. {c.model}", justify="right")
    t.add_column("mult. B/A", justify="right")
    t.add_column("add. B/A", justify="right")

    def row(label: str, x: Any, y: Any) -> None:
        t.add_row(
            label,
            _count(x.multiplications),
            _count(x.additions),
            _count(y.multiplications),
            _count(y.additions),
            _ratio(y.multiplications / x.multiplications if x.multiplications else None),
            _ratio(y.additions / x.additions if x.additions else None),
        )

    for phase, counts in a.step.phases.items():
        row(f"step ({a.batch}): {phase.value}", counts, b.step.phases[phase])
    row(f"step ({a.batch})", a.step.total, b.step.total)
    row(f"epoch ({a.samples:,} samples, {a.steps_per_epoch} steps)", a.epoch, b.epoch)
    if a.epochs:
        row(f"{a.epochs} epochs", a.run(), b.run())
    row(f"evaluation pass ({a.eval_samples:,} samples)", a.eval_forward, b.eval_forward)
    return fit(t)

"""Rich tables for the conv-shape analyses (analyses/conv_shapes.py).

Each builder returns a ``rich.table.Table``; printing is the caller's business.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from flowprof.analyses.conv_shapes import Solutions, Step
from flowprof.reports.fit import fit


def _pair(pair: tuple[int, int]) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


def _weight(step: Step) -> str:
    if step.weight_shape is None:
        return "-"
    return "(" + ", ".join(str(size) for size in step.weight_shape) + ")"


def shape_table(steps: Sequence[Step]) -> Table:
    """One row per layer: input and output HxWxC, the formulas with numbers, the weights.

    The first row is the input itself, so the table reads top to bottom like the network.
    """
    table = Table(title="Shape after each layer (H x W x C)", caption="confirmed by torch (meta)")
    table.add_column("#", justify="right")
    table.add_column("layer")
    table.add_column("input")
    table.add_column("output", style="bold")
    table.add_column("formula")
    table.add_column("weight")
    table.add_column("params", justify="right")
    if steps:
        table.add_row("0", "input", "", str(steps[0].input), "", "", "")
    for index, step in enumerate(steps, start=1):
        table.add_row(
            str(index),
            str(step.layer),
            str(step.input),
            str(step.output),
            "\n".join(step.formulas),
            _weight(step),
            f"{step.params:,}",
        )
    return fit(table)


def solutions_table(solutions: Solutions) -> Table:
    """One row per configuration, simplest first; the bounds searched are the caption."""
    kernel = ""
    if solutions.kernel is not None:
        kernel = f", kernel {solutions.kernel[0]}x{solutions.kernel[1]}"
    table = Table(
        title=f"Layers mapping {solutions.input} to {solutions.output}{kernel}: "
        f"{len(solutions)} found",
        caption="Bounds: " + "; ".join(solutions.bounds.describe()),
    )
    for name in ("#", "type", "kernel", "stride", "padding", "dilation", "groups", "out pad"):
        table.add_column(name, justify="right" if name == "#" else "left")
    table.add_column("weight shape")
    table.add_column("params", justify="right")
    table.add_column("spec")
    for index, step in enumerate(solutions.configs, start=1):
        layer = step.layer
        table.add_row(
            str(index),
            "transposed" if layer.transposed else "conv",
            f"{layer.kernel[0]}x{layer.kernel[1]}",
            _pair(layer.stride),
            _pair(layer.padding),
            _pair(layer.dilation),
            str(layer.groups),
            _pair(layer.output_padding) if layer.transposed else "-",
            _weight(step),
            f"{step.params:,}",
            str(layer),
        )
    return fit(table)


def explanation_table(solutions: Solutions) -> Table:
    """The solver's generated reasoning, one line per row (verdict first when a kernel
    was asked about)."""
    if solutions.kernel is None:
        title = f"Why: {solutions.input} -> {solutions.output}"
    else:
        verdict = "yes" if solutions.possible else "no"
        kh, kw = solutions.kernel
        title = f"Can a {kh}x{kw} kernel map {solutions.input} to {solutions.output}? {verdict}"
    table = Table(title=title, show_header=False)
    table.add_column("reason")
    for line in solutions.explanation:
        table.add_row(line)
    return fit(table)

"""A sweep over many points stays readable (issue 22, item 4): 50 embedding sizes give a table
with one row per point, every point's numbers shown whole at 80 columns, and plots whose
labelled ticks do not overprint."""

from __future__ import annotations

import math
import re
from collections import Counter

import pytest
from rich.console import Console

from flowprof.analyses.comm_sweep import sweep
from flowprof.reports.compare_tables import COLUMNS_UP_TO, sweep_table
from flowprof.reports.sweep_plots import family_figure, line_data, ticks
from flowprof.reports.units import bits

EMBS = [8 * i for i in range(1, 51)]  # 8, 16, ..., 400: the 50 points
_BITS = re.compile(r"(?<![\w.])\d+(?:\.\d+)? [kMGT]?bit\b")


@pytest.fixture(scope="module")
def sw():
    return sweep(emb=EMBS, seq_len=16)


def _draw(table, width: int) -> str:
    console = Console(width=width, record=True, color_system=None, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(table)
    return console.export_text()


def test_weights_by_hand(sw) -> None:
    # One encoder and one decoder layer, ffn 4E, no vocabulary: 3 attentions x 4 (E^2 + E),
    # 2 feed-forwards x (E x 4E + 4E + 4E x E + E), 5 layer norms x 2E = 28E^2 + 32E parameters;
    # at E = 400: 28 x 160,000 + 12,800 = 4,492,800 parameters x 16 bits = 71,884,800 bits.
    assert sw.points[-1].weight_bits == 71_884_800


@pytest.mark.parametrize("width", [80, 160])
def test_every_point_has_its_row_and_its_numbers(sw, width) -> None:
    assert len(sw.points) > COLUMNS_UP_TO
    text = _draw(sweep_table(sw), width)
    assert max(len(line) for line in text.splitlines()) <= width
    for v in EMBS:  # one row per point, on every page of the table
        assert re.search(rf"│\s+{v} │", text)
    want: Counter[str] = Counter()
    for p in sw.points:
        want.update(bits(p.family(f).bits) for f in sw.families())
        want.update(bits(p.weight(g).bits) for g in sw.weight_groups())
        want.update(bits(n) for n in (p.activation_bits, p.weight_bits, p.total_bits))
    got = Counter(_BITS.findall(text))
    assert {k: n for k, n in want.items() if got[k] < n} == {}
    assert "71.9 Mbit" in text  # the hand count above, in SI units
    assert "NO" not in text


def test_few_points_keep_one_column_per_point() -> None:
    few = sweep(emb=[32, 64], seq_len=8)
    text = _draw(sweep_table(few), 160)
    assert "emb 32" in text and "emb 64" in text


def test_plot_ticks_are_thinned(sw) -> None:
    shown = ticks(sw.values)
    assert shown[0] == 8 and shown[-1] == 400 and len(shown) <= 9
    span = math.log2(400 / 8)
    gaps = [math.log2(b / a) for a, b in zip(shown, shown[1:], strict=False)]
    assert min(gaps) >= span / 8 / 2  # no two labels closer than half a share of the axis
    fig = family_figure(sw)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(v) for v in shown]
    assert all(t.get_text() == "" for t in ax.get_xticklabels(minor=True))
    # every point is still plotted
    assert all(len(x) == 50 for x, _ in line_data(fig).values())
    assert ticks([64, 128, 256]) == [64, 128, 256]

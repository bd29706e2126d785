"""The totals table calls its counts exact only when every op was counted."""

from __future__ import annotations

import io

import torch
from rich.console import Console
from torch import nn

from flowprof import tracer
from flowprof.reports.tables import totals_table


def _text(table) -> str:
    out = io.StringIO()
    Console(file=out, width=160, color_system=None).print(table)
    return out.getvalue()


class Sorts(nn.Module):
    """torch.sort has no formula: reported as uncounted."""

    def forward(self, x):
        return torch.sort(x, dim=-1).values * 2


def test_counts_with_uncounted_ops_are_not_headed_exact():
    graph = tracer.trace(Sorts(), [(3, 4)])
    assert graph.uncounted() == {"aten.sort": 1}
    text = _text(totals_table(graph))
    assert "exact" not in text
    assert "at least (ops uncounted)" in text
    assert "aten.sort x1" in text


def test_fully_counted_totals_are_headed_exact():
    graph = tracer.trace(nn.Linear(4, 2), [(3, 4)])
    assert graph.uncounted() == {}
    assert "exact" in _text(totals_table(graph))

"""Tables never cut a number (reports/fit.py): the transformer's and resnet50's tables drawn at
60, 80 and 100 columns show every count of the BlockGraph whole, and no line is wider than the
terminal."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from rich.console import Console
from rich.table import Table

from flowprof.reports import tables
from flowprof.reports.fit import fit, short_name, shorten_name
from flowprof.reports.units import count

WIDTHS = (60, 80, 100)
# A whole number with thousands separators, not part of a longer token (a name's "layers.10"
# or a cut "8,388,…" is not one).
_NUMBER = re.compile(r"(?<![\w.,…])\d{1,3}(?:,\d{3})*(?![\w.,…])")


def _draw(renderable, width: int) -> str:
    console = Console(width=width, record=True, color_system=None, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(renderable)
    return console.export_text()


def _numbers(text: str) -> Counter[str]:
    return Counter(_NUMBER.findall(text))


def _expected(graph) -> Counter[str]:
    """Every exact count the block and totals tables show, from the BlockGraph's records."""
    want: Counter[str] = Counter()
    for b in graph.blocks():
        want.update(count(n) for n in (b.macs, b.multiplications, b.additions, b.other, b.params))
    total = graph.total()
    want.update(
        count(n)
        for n in (total.macs, total.multiplications, total.additions, total.other, graph.params())
    )
    return want


@pytest.fixture(scope="module")
def graphs():
    import flowprof

    return {
        "transformer": flowprof.trace("transformer"),
        "resnet50": flowprof.trace("torchvision:resnet50"),
    }


def _missing(want: Counter[str], got: Counter[str]) -> Counter[str]:
    return Counter({k: n - got[k] for k, n in want.items() if got[k] < n})


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("model", ["transformer", "resnet50"])
def test_every_count_is_shown_whole(graphs, model, width) -> None:
    graph = graphs[model]
    text = _draw(tables.blocks_table(graph, title=f"{model}: blocks"), width)
    assert max(len(line) for line in text.splitlines()) <= width
    assert _missing(_expected(graph), _numbers(text)) == Counter()
    assert not re.search(r"\d…|…\d,", text)  # nothing like "8,388,…"
    # Hand counts: the transformer's q_proj at emb 256, seq 128: 128 x 256 x 256 = 8,388,608
    # MACs (in all 6 projections: q, k, v, out of the encoder's self-attention and both of the
    # decoder's, 10 in all, each in the macs, mults and adds columns); resnet50's conv1: 112 x
    # 112 outputs x 64 maps x 7 x 7 x 3 taps = 118,013,952.
    if model == "transformer":
        assert _numbers(text)["8,388,608"] >= 10 * 3
    else:
        assert _numbers(text)["118,013,952"] >= 2  # macs and mults


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("model", ["transformer", "resnet50"])
def test_edges_and_totals_whole(graphs, model, width) -> None:
    graph = graphs[model]
    text = _draw(tables.edges_table(graph), width)
    assert max(len(line) for line in text.splitlines()) <= width
    want = Counter(count(e.elements) for e in graph.edges())
    assert _missing(want, _numbers(text)) == Counter()
    shapes = Counter(e.shape for e in graph.edges())
    for shape, n in shapes.items():  # a shape is never cut either
        assert len(re.findall(rf"(?<![\dx]){re.escape(shape)}(?![\dx])", text)) == n
    text = _draw(tables.totals_table(graph), width)
    assert max(len(line) for line in text.splitlines()) <= width
    total = graph.total()
    for n in (total.macs, 2 * total.macs, total.multiplications, total.additions):
        assert count(n) in _numbers(text)


def test_a_table_that_fits_is_drawn_as_rich_draws_it() -> None:
    t = Table(title="t")
    t.add_column("block")
    t.add_column("macs", justify="right")
    t.add_row("conv1", "118,013,952")
    assert _draw(fit(t), 100) == _draw(t, 100)


def test_columns_that_do_not_fit_are_folded_below_with_the_key() -> None:
    t = Table(title="wide", caption="a caption under the last page only")
    t.add_column("block")
    for i in range(8):
        t.add_column(f"count {i}", justify="right")
    # 8 x "1,000,000,000,000" (17 cells) + padding and borders: about 170 columns
    t.add_row("encoder.layers.11.self_attn.out_proj", *["1,000,000,000,000"] * 8)
    text = _draw(fit(t), 60)
    assert max(len(line) for line in text.splitlines()) <= 60
    assert _numbers(text)["1,000,000,000,000"] == 8
    assert "wide (continued)" in text
    headers = [f"count {i}" for i in range(8)]
    assert all(h in text for h in headers)
    # the row's name is on every page, its index whole
    pages = text.count("wide")
    assert len(re.findall(r"\.11\.", text)) == pages
    assert text.count("a caption under the last page only") == 1
    assert text.rstrip().endswith("a caption under the last page only")


def test_names_are_abbreviated_outer_parts_first() -> None:
    name = "encoder.layers.0.self_attn.out_proj"  # 35 characters
    assert shorten_name(name, 35) == name
    # enc (31), lay (28), sel (22): fits 24
    assert shorten_name(name, 24) == "enc.lay.0.sel.out_proj"
    short = shorten_name(name, 18)
    assert len(short) <= 18 and short.endswith("out_proj") and ".0." in short
    # a single word too long: its middle gives way
    assert shorten_name("a_very_long_block_name", 9) == "a_ve…name"  # 4 + 1 + 4 cells


def test_titles_name_a_file_factory_by_its_file() -> None:
    assert short_name("/home/me/proj/nets.py:unet") == "nets.py:unet"
    assert short_name("mypkg.net:make") == "mypkg.net:make"
    assert short_name("torchvision:resnet50") == "torchvision:resnet50"
    assert short_name("transformer") == "transformer"


@pytest.mark.parametrize("width", WIDTHS)
def test_the_training_step_tables_show_every_phase_count_whole(width) -> None:
    import flowprof
    from flowprof.reports import training_tables
    from flowprof.tracer.counts import OpCount

    graph = flowprof.trace(
        "transformer", phases=("forward", "backward", "optimizer"), optimizer="adam"
    )
    shown = training_tables._phases(graph)
    text = _draw(training_tables.phase_blocks_table(graph), width)
    assert max(len(line) for line in text.splitlines()) <= width
    want: Counter[str] = Counter()
    for b in graph.blocks():
        counts = b.counts()
        want.update(count(counts[p].total) for p in shown if p in counts)
        want[count(OpCount.sum(counts.values()).total)] += 1
        want[count(b.params)] += 1
    assert _missing(want, _numbers(text)) == Counter()
    text = _draw(training_tables.phase_totals_table(graph), width)
    assert max(len(line) for line in text.splitlines()) <= width
    for p in shown:
        assert count(graph.total(p).macs) in _numbers(text)
    text = _draw(training_tables.gradient_edges_table(graph), width)
    assert max(len(line) for line in text.splitlines()) <= width
    grads = Counter(count(e.elements) for e in graph.gradient_edges())
    assert _missing(grads, _numbers(text)) == Counter()


def test_trace_titles_a_file_model_by_its_file_name(tmp_path) -> None:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "net.py").write_text(
        "from torch import nn\n\n\ndef make():\n    return nn.Sequential(nn.Linear(4, 3))\n"
    )
    out = subprocess.run(
        [sys.executable, str(root / "cli.py"), "trace", f"{tmp_path / 'net.py'}:make"]
        + ["--input", "2x4"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "net.py:make: blocks" in out.stdout
    assert str(tmp_path) not in out.stdout
    # 2 rows x 3 outputs x 4 taps = 24 multiply-accumulates
    assert "24" in _numbers(out.stdout)

"""Tests of analyses/op_compare.py and its Rich tables: LeNet-5 against its depthwise-separable
twin, every expected number derived by hand from the layer sizes (docs/assignment.md Problem 2c)."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from flowprof.analyses.dws_mapping import Biases, Quantity
from flowprof.analyses.op_compare import compare, pair_names
from flowprof.reports.compare_tables import comparison_table, conv_check_table, mapping_table

# The paper's LeNet-5, per layer, (multiplications, additions), from the layer sizes:
# - squash f(a) = A*tanh(S*a): 2 multiplications per element (S*a, A*tanh);
# - a subsampling map: 3 additions for the 2x2 sum, x coefficient, + bias, then the squash.
LENET5 = {
    # 6 maps 28x28 = 4704 outputs; dot of 25 taps + bias: 25 mults, 24 + 1 adds; squash 2 mults
    "c1": (4704 * 25 + 2 * 4704, 4704 * 24 + 4704),
    # 6 maps 14x14 = 1176 outputs: 1 coefficient + 2 squash mults, 3 window adds + 1 bias
    "s2": (1176 * (1 + 2), 1176 * (3 + 1)),
    # 10x10 outputs, Table I: 60 connections of 25 taps; bias per output; 1600 outputs squashed
    "c3": (100 * 60 * 25 + 2 * 1600, 100 * (60 * 25 - 16) + 1600),
    # 16 maps 5x5 = 400 outputs, like s2
    "s4": (400 * (1 + 2), 400 * (3 + 1)),
    # 120 outputs, dot of 16*25 = 400 taps + bias, squash
    "c5": (120 * 400 + 2 * 120, 120 * 399 + 120),
    # 84 outputs, dot of 120 + bias, squash
    "f6": (84 * 120 + 2 * 84, 84 * 119 + 84),
    # RBF: 10 classes x 84: subtract (add), square (mult), sum of 84 (83 adds)
    "output": (10 * 84, 10 * 84 + 10 * 83),
}

# lenet5-dws: depthwise (no bias) then pointwise (bias); the rest as in lenet5.
LENET5_DWS = {
    # depthwise 1 map 28x28: 784*25 mults, 784*24 adds; pointwise 1 -> 6: 4704 mults,
    # 4704*0 + 4704 (bias) adds; squash 2*4704 mults
    "c1": (784 * 25 + 4704 + 2 * 4704, 784 * 24 + 4704),
    "s2": LENET5["s2"],
    # depthwise 6 maps 10x10: 600*25 mults, 600*24 adds; pointwise keeps Table I: 100*60 mults,
    # 100*(60 - 16) + 1600 adds; squash 2*1600 mults
    "c3": (600 * 25 + 100 * 60 + 2 * 1600, 600 * 24 + 100 * (60 - 16) + 1600),
    "s4": LENET5["s4"],
    # depthwise 16 maps 1x1: 16*25 mults, 16*24 adds; pointwise 16 -> 120: 120*16 mults,
    # 120*15 + 120 adds; squash 2*120
    "c5": (16 * 25 + 120 * 16 + 2 * 120, 16 * 24 + 120 * 15 + 120),
    "f6": LENET5["f6"],
    "output": LENET5["output"],
}


@pytest.fixture(scope="module")
def lenet() -> object:
    return compare("lenet5", "lenet5-dws")


def test_layers_by_hand(lenet) -> None:
    assert [r.name for r in lenet.rows] == list(LENET5)
    for row in lenet.rows:
        assert (row.a.multiplications, row.a.additions) == LENET5[row.name], row.name
        assert (row.b.multiplications, row.b.additions) == LENET5_DWS[row.name], row.name


def test_totals_by_hand(lenet) -> None:
    # Problem 2c: 344264 mults and 333654 adds regular; 76288 and 64278 depthwise-separable.
    assert lenet.total.a.multiplications == sum(m for m, _ in LENET5.values()) == 344264
    assert lenet.total.a.additions == sum(a for _, a in LENET5.values()) == 333654
    assert lenet.total.b.multiplications == sum(m for m, _ in LENET5_DWS.values()) == 76288
    assert lenet.total.b.additions == sum(a for _, a in LENET5_DWS.values()) == 64278
    assert lenet.total.ratio("multiplications") == pytest.approx(76288 / 344264)
    assert lenet.total.ratio("additions") == pytest.approx(64278 / 333654)
    # Parameters: the paper's 60,000; the twin (c1 1*25 + 6*1 + 6, c3 6*25 + 60 + 16,
    # c5 16*25 + 16*120 + 120; s2, s4, f6 unchanged).
    assert lenet.total.a.params == 60000
    assert lenet.total.b.params == 60000 - (156 + 1516 + 48120) + (37 + 226 + 2440)


def test_rows_add_up_to_totals(lenet) -> None:
    for side in ("a", "b"):
        total = getattr(lenet.total, side)
        for kind in ("macs", "multiplications", "additions", "other", "params"):
            assert sum(getattr(getattr(r, side), kind) for r in lenet.rows) == total.get(kind)


def test_conv_checks(lenet) -> None:
    assert [c.layer for c in lenet.convs] == ["c1", "c3", "c5"]
    c1, c3, c5 = lenet.convs
    assert all(c.ok for c in lenet.convs)
    assert all(
        c.biases == Biases(regular=True, depthwise=False, pointwise=True) for c in lenet.convs
    )
    assert (c1.c_in, c1.c_out, c1.kernel, c1.connections, c1.positions) == (1, 6, (5, 5), 6, 784)
    # C3 is Table I: 6*3 + 9*4 + 1*6 = 60 connections, not 6*16 = 96.
    assert (c3.c_in, c3.c_out, c3.connections, c3.positions) == (6, 16, 60, 100)
    assert not c3.dense
    assert (c5.c_in, c5.c_out, c5.connections, c5.positions) == (16, 120, 16 * 120, 1)
    # x and y of the convolutions alone (no squash): C3 150000 -> 15000 + 6000 mults.
    mul = c3.check(Quantity.MUL)
    assert (mul.x, mul.y, mul.y_predicted) == (100 * 60 * 25, 600 * 25 + 100 * 60, 21000)
    add = c3.check(Quantity.ADD)
    assert (add.x, add.y) == (100 * (60 * 25 - 16) + 1600, 600 * 24 + 100 * (60 - 16) + 1600)
    total = c1.check(Quantity.SUM)
    assert (total.x, total.y) == (4704 * 25 + 4704 * 25, 784 * 25 + 4704 + 784 * 24 + 4704)


def test_modern_dense_c3() -> None:
    cmp = compare("lenet5-modern", "lenet5-modern-dws")
    c3 = next(c for c in cmp.convs if c.layer == "c3")
    assert c3.dense and c3.connections == 6 * 16
    # 10x10 outputs * 16 maps * 6*25 taps = 240000 -> 600*25 + 100*96 = 24600.
    mul = c3.check(Quantity.MUL)
    assert (mul.x, mul.y, mul.y_predicted) == (240000, 15000 + 9600, 24600)
    assert all(c.ok for c in cmp.convs)


def test_reversed_order_finds_the_regular_side() -> None:
    cmp = compare("lenet5-dws", "lenet5")
    assert [c.regular_model for c in cmp.convs] == ["b", "b", "b"]
    assert cmp.convs[1].check(Quantity.MUL).x == 150000


def test_unmatched_layers_stand_alone() -> None:
    cmp = compare("lenet5", "transformer", options_b={"emb": 16, "heads": 2, "seq_len": 4})
    assert not any(r.matched for r in cmp.rows)
    assert [r.name for r in cmp.rows if r.a] == list(LENET5)
    assert all(r.ratio("multiplications") is None for r in cmp.rows)
    assert cmp.convs == ()


def test_pair_names() -> None:
    assert pair_names(["a", "b", "c"], ["a", "x", "c", "y"]) == ["a", "x", "b", "c", "y"]
    assert pair_names(["a"], ["z", "a"]) == ["z", "a"]
    assert pair_names([], ["p", "q"]) == ["p", "q"]


def test_json(lenet) -> None:
    data = json.loads(json.dumps(lenet.to_dict()))
    assert data["total"]["a"]["multiplications"] == 344264
    assert data["total"]["b"]["additions"] == 64278
    assert data["layers"][0]["layer"] == "c1"
    conv = data["convolutions"][1]
    assert conv["layer"] == "c3" and conv["connections"] == 60
    assert conv["checks"][0] == conv["checks"][0] | {
        "quantity": "multiplications",
        "x_traced": 150000,
        "y_traced": 21000,
        "y_predicted": 21000,
        "ok": True,
    }
    assert data["f_derivation"]


def _render(table) -> str:
    console = Console(width=260, record=True, color_system=None)
    console.print(table)
    return console.export_text()


def test_tables(lenet) -> None:
    table = comparison_table(lenet)
    assert table.row_count == len(lenet.rows) + 1
    text = _render(table)
    assert "344,264" in text and "76,288" in text and "0.222" in text
    checks = conv_check_table(lenet)
    assert checks.row_count == 3 * 3
    text = _render(checks)
    assert "150,000" in text and "21,000" in text and "NO" not in text
    assert mapping_table().row_count >= 10

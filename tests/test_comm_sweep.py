"""Tests of analyses/comm_sweep.py, its plots and tables (docs/assignment.md Problem 3b): bits
per edge family written out by hand from the transformer's sizes, closed forms against the trace,
and the generated explanation against numbers derived here."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
from rich.console import Console

from flowprof.analyses.comm_sweep import (
    Family,
    Variable,
    WeightGroup,
    classify,
    explain,
    sweep,
)
from flowprof.reports.compare_tables import sweep_blocks_table, sweep_table
from flowprof.reports.sweep_plots import (
    ACTIVATIONS_LABEL,
    WEIGHTS_LABEL,
    family_figure,
    figures,
    line_data,
    seq_len_figure,
    totals_figure,
)

# Defaults of Problem 3: batch 1, 8 heads, d_ff = 4*emb, 1 encoder + 1 decoder layer, fp16.
HIDDEN = 1 * 8 * 256 * 16  # one (B, L, E) tensor at emb 256, seq 8: 32768 bits
SCORES = 1 * 8 * 8 * 8 * 16  # one (B, H, L, L) tensor at seq 8: 8192 bits, whatever emb
FFN = 1 * 8 * 1024 * 16  # one (B, L, 4*emb) tensor at emb 256: 131072 bits


@pytest.fixture(scope="module")
def emb_sweep():
    return sweep(emb=[64, 256, 512], seq_len=8)


def test_per_edge_bits_by_hand(emb_sweep) -> None:
    point = emb_sweep.points[1]
    assert point.value == 256 and HIDDEN == 32768
    bits_of = {
        Family.RESIDUAL: {HIDDEN},
        Family.QKV: {HIDDEN},
        Family.CONTEXT: {HIDDEN},  # (B, H, L, E/H): B*L*E elements
        Family.SUBLAYER: {HIDDEN},
        Family.MEMORY: {HIDDEN},
        Family.INPUT: {HIDDEN},
        Family.OUTPUT: {HIDDEN},
        Family.SCORES: {SCORES},
        Family.WEIGHTS: {SCORES},
        Family.FFN_HIDDEN: {FFN},
        # the (L, L) bool mask at 8 bits (the mask function reads only the scores' sizes)
        Family.MASK: {8 * 8 * 8},
    }
    for edge in point.edges:
        assert edge.bits in bits_of[edge.family], (edge.src, edge.dst, edge.bits)


def test_families_by_hand(emb_sweep) -> None:
    point = emb_sweep.points[1]
    expected = {
        # per encoder layer: x -> q, k, v, add; add -> norm; norm -> linear1, add; add -> norm = 8
        # per decoder layer: 4 + 1 + 2 (norm -> cross q, add) + 1 + 2 + 1 = 11
        Family.RESIDUAL: (8 + 11) * HIDDEN,
        # encoder q, k, v; decoder self q, k, v, cross q, k, v
        Family.QKV: (3 + 6) * HIDDEN,
        # matmul -> divide -> softmax (2 edges) in encoder and cross; + masked_fill in decoder
        Family.SCORES: (2 + 3 + 2) * SCORES,
        Family.WEIGHTS: 3 * SCORES,
        Family.MASK: 8 * 8 * 8,
        Family.CONTEXT: 3 * HIDDEN,
        Family.SUBLAYER: (2 + 3) * HIDDEN,  # out_proj and linear2 into the residual adds
        Family.FFN_HIDDEN: 4 * FFN,  # linear1 -> relu -> linear2, encoder and decoder
        Family.MEMORY: 2 * HIDDEN,  # encoder output -> cross-attention k_proj, v_proj
        Family.INPUT: 2 * HIDDEN,
        Family.OUTPUT: HIDDEN,
        Family.EMBEDDING: 0,
        Family.OTHER: 0,
    }
    for family, bits in expected.items():
        assert point.family(family).bits == bits, family
    # 41 hidden-size edges, 4 FFN edges, 10 score-sized edges, 1 mask edge: 56 edges in all.
    assert len(point.edges) == 56
    assert point.activation_bits == 41 * HIDDEN + 4 * FFN + 10 * SCORES + 8 * 8 * 8 == 1950208


def test_weights_by_hand(emb_sweep) -> None:
    point = emb_sweep.points[1]
    e, f = 256, 1024
    attention = 3 * 4 * (e * e + e)  # encoder self, decoder self and cross: q, k, v, out
    ffn = 2 * (e * f + f + f * e + e)  # encoder and decoder
    norms = 5 * 2 * e  # 2 encoder + 3 decoder LayerNorms, gain and shift
    assert point.weight(WeightGroup.ATTENTION).bits == attention * 16
    assert point.weight(WeightGroup.FFN).bits == ffn * 16
    assert point.weight(WeightGroup.NORM).bits == norms * 16
    assert point.weight_bits == (attention + ffn + norms) * 16 == 29491200
    # Each block's weight bits are its parameters at 16 bits: q_proj E*E + E.
    q = next(b for b in point.blocks if b.name == "encoder.layers.0.self_attn.q_proj")
    assert q.weight_bits == (e * e + e) * 16
    assert q.input_bits == HIDDEN


def test_scores_do_not_depend_on_emb_and_others_scale(emb_sweep) -> None:
    first, _, last = emb_sweep.points  # emb 64 and 512: x8
    assert first.family(Family.SCORES).bits == last.family(Family.SCORES).bits == 7 * SCORES
    assert last.family(Family.RESIDUAL).bits == 8 * first.family(Family.RESIDUAL).bits
    assert last.family(Family.FFN_HIDDEN).bits == 8 * first.family(Family.FFN_HIDDEN).bits


def test_closed_forms_checked_and_equal(emb_sweep) -> None:
    assert emb_sweep.checked
    assert emb_sweep.mismatches() == []
    form = emb_sweep.points[1].family(Family.RESIDUAL)
    assert form.closed_form_bits == (8 + 11) * HIDDEN
    assert form.closed_form == "8*Le x B*S*E*16 + 11*Ld x B*T*E*16"


@pytest.mark.parametrize("depth", [None, 4, 3, 2, 1])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"norm": "pre"},
        {"vocab": 50},
        {
            "norm": "pre",
            "vocab": 50,
            "enc_layers": 2,
            "dec_layers": 3,
            "batch": 2,
            "src_len": 5,
            "tgt_len": 7,
        },
    ],  # fmt: skip
    ids=["post", "pre", "vocab", "mixed"],
)
def test_every_edge_classified_and_closed_forms_hold(depth, options) -> None:
    sw = sweep(emb=[16, 32], depth=depth, heads=2, seq_len=6, **options)
    assert sw.unclassified() == []
    assert sw.checked and sw.mismatches() == []


def test_pre_norm_and_vocab_by_hand() -> None:
    sw = sweep(emb=[32], seq_len=4, heads=2, norm="pre", vocab=10)
    point = sw.points[0]
    hidden = 1 * 4 * 32 * 16
    # pre-norm: x -> norm1, add1; norm1 -> q, k, v; add1 -> norm2, add2; norm2 -> linear1 (8),
    # decoder 11 likewise, + the stacks' final norms (2), + decoder norm -> generator (1)
    assert point.family(Family.RESIDUAL).bits == (8 + 11 + 2 + 1) * hidden
    assert point.family(Family.INPUT).bits == 2 * 4 * 64  # int64 token ids
    assert point.family(Family.OUTPUT).bits == 4 * 10 * 16  # logits (B, T, V)
    assert point.family(Family.EMBEDDING).bits == 2 * 2 * hidden  # lookup -> scale -> pos add
    assert point.weight(WeightGroup.EMBEDDING).bits == 2 * 10 * 32 * 16
    assert point.weight(WeightGroup.GENERATOR).bits == (10 * 32 + 10) * 16
    assert point.weight(WeightGroup.NORM).bits == (5 + 2) * 2 * 32 * 16


def test_classify_rules() -> None:
    assert classify("input:src", "src_pos.add") is Family.INPUT
    assert classify("decoder.layers.0.add_norm3.norm", "output:out") is Family.OUTPUT
    assert (
        classify("encoder.layers.1.add_norm2.norm", "decoder.layers.0.cross_attn.k_proj")
        is Family.MEMORY
    )
    assert classify("enc.x", "dec.y") is Family.OTHER


def test_seq_len_sweep() -> None:
    sw = sweep(emb=64, seq_len=[8, 16])
    assert sw.variable is Variable.SEQ_LEN and sw.values == [8, 16]
    short, long = sw.points
    # (B, H, L, L): doubling L quadruples every score; (B, L, E) doubles; weights stay.
    assert long.family(Family.SCORES).bits == 4 * short.family(Family.SCORES).bits
    assert long.family(Family.WEIGHTS).bits == 4 * short.family(Family.WEIGHTS).bits
    assert long.family(Family.RESIDUAL).bits == 2 * short.family(Family.RESIDUAL).bits
    assert long.weight_bits == short.weight_bits
    text = " ".join(explain(sw))
    assert "attention scores" in text and "grows quadratically with seq_len" in text


def test_explanation_from_numbers() -> None:
    sw = sweep(emb=[64, 128, 256, 512, 1024], seq_len=128)
    lines = explain(sw)
    by_family = {line.split(" (")[0]: line for line in lines}
    assert "does not depend on emb" in by_family["attention scores"]
    assert "grows linearly with emb" in by_family["residual stream"]
    weights = next(line for line in lines if line.startswith("Weights loaded"))
    assert "quadratically" in weights
    # Crossover by hand, L = 128, H = 8, one layer each, F = 4E, 16 bits:
    #   activations/16 = 57*L*E (41 hidden-size + 4 FFN edges of 4E) + 10*H*L*L + L*L/2 (mask)
    #   weights/16 = 3*4*(E*E + E) + 2*(8*E*E + 5*E) + 5*2*E = 28*E*E + 32*E
    # weights > activations once 28E^2 - 7264E - 1318912 > 0, E > 382.6: emb 383.
    root = (7264 + math.sqrt(7264**2 + 4 * 28 * 1318912)) / (2 * 28)
    assert math.ceil(root) == 383
    crossing = next(line for line in lines if line.startswith("Crossover"))
    assert "between emb 256 and 512" in crossing and "emb = 383" in crossing
    assert lines[-1].startswith("The closed forms agree")


def test_bad_sweeps() -> None:
    from flowprof.errors import BadSpecError

    with pytest.raises(BadSpecError):
        sweep(emb=[64, 128], seq_len=[8, 16])
    with pytest.raises(BadSpecError):
        sweep(emb=[])
    with pytest.raises(BadSpecError):
        sweep(emb=64, seq_len=8)


def test_csv_and_json(emb_sweep) -> None:
    rows = list(csv.DictReader(io.StringIO(emb_sweep.to_csv())))
    per_point = len(Family) + len(WeightGroup) + 3
    assert len(rows) == 3 * per_point
    residual = next(r for r in rows if r["emb"] == "256" and r["name"] == Family.RESIDUAL.value)
    assert int(residual["bits"]) == 19 * HIDDEN and residual["matches"] == "true"
    total = next(r for r in rows if r["emb"] == "256" and r["what"] == "total")
    assert int(total["bits"]) == 1950208 + 29491200
    data = json.loads(json.dumps(emb_sweep.to_dict()))
    assert data["values"] == [64, 256, 512] and data["mismatches"] == []
    assert data["points"][1]["activation_bits"] == 1950208
    assert data["explanation"]


def test_plots_show_the_sweep(emb_sweep) -> None:
    lines = line_data(family_figure(emb_sweep))
    for family in emb_sweep.families():
        assert lines[family.value] == (
            [64.0, 256.0, 512.0],
            [float(b) for b in emb_sweep.series(family)],
        )
    assert lines[WEIGHTS_LABEL][1] == [float(b) for b in emb_sweep.weight_series()]
    fig = totals_figure(emb_sweep)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert line_data(fig)[ACTIVATIONS_LABEL][1] == [1.0 * b for b in emb_sweep.activation_series()]
    with pytest.raises(ValueError):
        seq_len_figure(emb_sweep)
    assert set(figures(emb_sweep)) == {"sweep_families", "sweep_totals"}


def test_seq_len_figure() -> None:
    sw = sweep(emb=32, heads=2, seq_len=[4, 8])
    fig = seq_len_figure(sw)
    data = line_data(fig)
    assert data[Family.SCORES.value][1] == [float(b) for b in sw.series(Family.SCORES)]
    assert len(fig.axes) == 2


def test_tables(emb_sweep) -> None:
    table = sweep_table(emb_sweep)
    # 11 families with bits, all activations, 3 weight groups, all weights, total
    assert table.row_count == len(emb_sweep.families()) + 1 + 3 + 1 + 1
    console = Console(width=260, record=True, color_system=None)
    console.print(table)
    text = console.export_text()
    assert "emb 256" in text and "residual stream" in text and "NO" not in text
    assert sweep_blocks_table(emb_sweep, 1).row_count == len(emb_sweep.points[1].blocks)

"""Pipeline partitions (hand-derived cut bits, the balancing objective, errors) and real runs over
torch.distributed (gloo, 127.0.0.1) whose measured bytes must equal the predicted bits / 8."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest
import torch
from rich.console import Console
from torch import nn

from flowprof.distributed import (
    PartitionError,
    PipelineError,
    analyse,
    cut_values,
    partition,
    run_module_pipeline,
    run_pipeline,
)
from flowprof.models.registry import build
from flowprof.reports.pipeline_tables import partition_table, pipeline_table, stages_diagram
from flowprof.tracer import trace

SMALL = {"emb": 32, "heads": 4, "seq_len": 8}  # the transformer the tests cut: E=32, H=4, T=S=8


def _flow(name: str, **options):
    built = build(name, device="cpu", **options)
    return analyse(built.module, built.example_inputs("cpu"), name=name)


@pytest.fixture(scope="module")
def lenet5():
    return _flow("lenet5")


@pytest.fixture(scope="module")
def transformer():
    return _flow("transformer", **SMALL)


def _bits_after(flow, unit: str) -> int:
    return partition(flow, cuts=[unit]).cuts[0].bits


# --- cut bits, derived by hand -------------------------------------------------------------------


def test_lenet5_cut_after_c1(lenet5):
    # c1's output: 6 maps of 28*28 at fp32 -> 6*28*28 elements * 32 bits = 150528 bits
    assert _bits_after(lenet5, "c1.conv") == 6 * 28 * 28 * 32 == 150528
    # after S2 the 6 maps are 14*14; C3 reads them three times, but they cross once
    assert _bits_after(lenet5, "s2.squash.mul@1") == 6 * 14 * 14 * 32 == 37632


def test_lenet5_cut_inside_c3_carries_the_input_and_the_finished_part(lenet5):
    # C3's fan-in-3 maps are done (6*10*10); fan-in-4 and fan-in-6 still need S2's output (6*14*14)
    assert _bits_after(lenet5, "c3.conv.fan_in3") == (6 * 10 * 10 + 6 * 14 * 14) * 32 == 56832


def test_transformer_cut_after_encoder_forwards_the_decoder_input(transformer):
    # memory (1*8*32) and the untouched decoder input tgt (1*8*32), fp16
    cut = partition(transformer, cuts=["encoder.layers.0.add_norm2.norm"]).cuts[0]
    assert cut.bits == 2 * (1 * 8 * 32) * 16 == 8192
    assert {v.value for v in cut.values} == {"encoder_layers_0_add_norm2_norm", "tgt"}


def test_transformer_cut_at_the_causal_mask_counts_the_bool_mask_at_8_bits(transformer):
    # scores (1*4*8*8), V (1*8*32), the residual (1*8*32) and memory (1*8*32) at 16 bits,
    # plus the 8*8 bool mask at 8 bits: 4*256*16 + 64*8 = 16896
    bits = _bits_after(transformer, "decoder.layers.0.self_attn.mask.causal_mask")
    assert bits == 4 * 256 * 16 + 8 * 8 * 8 == 16896


def test_a_value_skipping_stages_crosses_every_cut_in_between(transformer):
    part = partition(transformer, cuts=["src_pos.add", "encoder.layers.0.add_norm2.norm"])
    # cut 0: the encoder's input and tgt; cut 1: memory and tgt again (stage 1 forwards it)
    assert [c.bits for c in part.cuts] == [2 * 256 * 16, 2 * 256 * 16]
    assert all("tgt" in {v.value for v in c.values} for c in part.cuts)


# --- invariants and the objective ----------------------------------------------------------------


@pytest.mark.parametrize("stages", [2, 3, 5])
def test_stages_cover_the_units_in_order_and_sum_to_the_total(lenet5, stages):
    part = partition(lenet5, stages)
    units = [u for s in part.stages for u in s.units]
    assert units == [u.name for u in lenet5.blocks]
    built = build("lenet5", device="cpu")
    total = trace(built.module, built.example_inputs("cpu")).total().total
    assert sum(s.compute for s in part.stages) == total
    for cut in part.cuts:
        assert cut.bits == sum(v.bits for v in cut.values)
        for v in cut.values:  # bits = elements * 32 at fp32
            assert v.bits == sum(t.elements for t in v.tensors) * 32


@pytest.mark.parametrize("weight", [0.0, 1.0, 10.0])
def test_balanced_partition_is_the_brute_force_optimum(lenet5, weight):
    """Least bottleneck of compute + weight * (in + out bits), then least cut bits."""
    ops = [u.count.total for u in lenet5.blocks]
    n = len(ops)
    bits = {p: sum(v.bits for v in cut_values(lenet5, p)) for p in range(1, n)}
    bits[0] = bits[n] = 0

    def score(cuts):
        bounds = [0, *cuts, n]
        costs = [
            sum(ops[a:b]) + weight * (bits[a] + bits[b]) for a, b in itertools.pairwise(bounds)
        ]
        return max(costs), sum(bits[p] for p in cuts)

    best = min(score(c) for c in itertools.combinations(range(1, n), 2))
    part = partition(lenet5, 3, comm_weight=weight)
    assert (part.bottleneck, part.cut_bits) == best
    assert score(part.positions) == best


def test_macs_measure_balances_macs(lenet5):
    part = partition(lenet5, 2, measure="macs", comm_weight=0)
    assert sum(s.compute for s in part.stages) == sum(u.count.macs for u in lenet5.blocks)


def test_every_unit_its_own_stage(transformer):
    n = len(transformer.blocks)
    part = partition(transformer, n)
    assert [len(s.units) for s in part.stages] == [1] * n


def test_depth_allows_cuts_only_between_blocks(transformer):
    # at depth 1 the transformer is src_pos, encoder, tgt_pos, decoder: 4 blocks, 3 cut positions
    part = partition(transformer, 4, depth=1)
    assert [s.units[0] for s in part.stages] == [
        "src_pos.add",
        "encoder.layers.0.self_attn.q_proj",
        "tgt_pos.add",
        "decoder.layers.0.self_attn.q_proj",
    ]
    with pytest.raises(PartitionError, match="from 2 to 4"):
        partition(transformer, 5, depth=1)
    with pytest.raises(PartitionError, match="inside a block"):
        partition(transformer, cuts=[3], depth=1)


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stages", "cuts", "message"),
    [
        (1, None, "from 2 to 36"),
        (37, None, "from 2 to 36"),
        (None, None, "number of stages"),
        (None, [0], "out of range"),
        (None, [36], "out of range"),
        (None, [5, 5], "must increase"),
        (None, [9, 3], "must increase"),
        (None, ["c9"], "no unit named"),
        (None, [], "at least one cut"),
        (3, [5], "make 2 stages"),
    ],
)
def test_bad_stage_counts_and_cuts_are_one_line_value_errors(lenet5, stages, cuts, message):
    with pytest.raises(ValueError, match=message) as info:
        partition(lenet5, stages, cuts=cuts)
    assert isinstance(info.value, PartitionError)
    assert "\n" not in str(info.value)


class SizeAcrossTheCut(nn.Module):
    """``x.shape[0]`` is read after the second layer: no cut between the layers can supply it,
    since ``x`` itself never crosses (only sizes of it are needed there)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x):
        return self.b(self.a(x)).reshape(x.shape[0], -1)


def test_a_cut_the_model_cannot_take_is_a_clear_error():
    flow = analyse(SizeAcrossTheCut(), [torch.randn(2, 4)])
    with pytest.raises(PartitionError, match="cannot cut before b") as info:
        partition(flow, cuts=["a"])
    assert "\n" not in str(info.value)
    with pytest.raises(PartitionError, match="can take only 0 cuts"):
        partition(flow, 2)


def test_partition_table_has_a_row_per_stage_and_cut(lenet5):
    text = _render(partition_table(partition(lenet5, 3)))
    assert text.count("stage ") >= 3 and "cut 0|1" in text and "cut 1|2" in text


# --- real runs over several processes ------------------------------------------------------------


def _children() -> set[int]:
    """Live child processes of this one (from /proc; multiprocessing's own list elsewhere)."""
    me = os.getpid()
    proc = Path("/proc")
    if not proc.is_dir():
        return {p.pid for p in multiprocessing.active_children()}
    found = set()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == me:  # fields: state, ppid, ...
            found.add(int(entry.name))
    return found


def _render(table) -> str:
    console = Console(width=200, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(table)
    return console.export_text()


_RUNS: dict = {}  # (model, stages) -> result, so that the report test need not start a run

needs_gloo = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available",
)


@needs_gloo
@pytest.mark.multiproc
@pytest.mark.parametrize(
    ("model", "options", "stages", "cuts", "micro_batches"),
    [
        ("transformer", SMALL, 2, None, 2),
        # tgt crosses both cuts: stage 1 forwards it
        ("transformer", SMALL, 3, ["src_pos.add", "encoder.layers.0.add_norm2.norm"], 1),
        ("lenet5", {}, 2, None, 1),
        ("lenet5", {}, 3, None, 2),
    ],
)
def test_measured_bytes_equal_predicted_bits(model, options, stages, cuts, micro_batches):
    before = _children()
    start = time.monotonic()
    result = run_pipeline(model, stages, micro_batches, options, cuts=cuts, timeout_s=60)
    _RUNS[model, stages] = result
    assert result.world_size == stages and len(result.cuts) == stages - 1
    for check in result.cuts:
        expected = check.predicted_bits // 8
        assert check.predicted_bits % 8 == 0
        assert check.sent_bytes == (expected,) * micro_batches
        assert check.received_bytes == (expected,) * micro_batches
        assert check.agree
    assert result.outputs_equal and result.max_abs_diff == 0.0
    assert result.ok
    assert time.monotonic() - start < 60
    assert _children() - before == set()
    summary = json.loads(json.dumps(result.to_dict()))
    assert summary["ok"] is True and summary["cuts"][0]["agree"] is True


@needs_gloo
@pytest.mark.multiproc
def test_report_objects_of_a_run():
    result = _RUNS.get(("lenet5", 2)) or run_pipeline("lenet5", 2, timeout_s=60)
    assert result.ok
    text = _render(pipeline_table(result))
    check = result.cuts[0]
    assert f"{check.predicted_bits:,}" in text and "yes" in text and "NO" not in text
    pytest.importorskip("graphviz")
    source = stages_diagram(result).source
    assert "stage0 -> stage1" in source and "inputs -> stage0" in source


class FailsInWorkers(nn.Module):
    """Runs in the parent (tracing, the reference); raises in any other process."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.parent = os.getpid()

    def forward(self, x):
        return self.b(self.a(x))

    def __setstate__(self, state):
        super().__setstate__(state)
        if os.getpid() != self.parent:
            self.b.register_forward_hook(_boom)


def _boom(module, args, out):
    raise RuntimeError("boom in a stage")


@needs_gloo
@pytest.mark.multiproc
def test_a_failing_stage_is_reported_and_no_process_is_left_behind():
    before = _children()
    start = time.monotonic()
    with pytest.raises(PipelineError, match="boom in a stage"):
        run_module_pipeline(FailsInWorkers(), [(torch.randn(2, 4),)], 2, timeout_s=60)
    assert time.monotonic() - start < 30
    assert _children() - before == set()

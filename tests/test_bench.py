"""The benchmark's own sanity: exact totals, each adapter's number and unit on a tiny model, the
child process's statuses, the scale schedule, and the generated tables and summary.

No timing is asserted: these check what the benchmark parses and reports, not how fast it is.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench import peers, scale
from bench import run as bench_run
from flowprof import tracer

# --- a tiny model every peer can run: conv 1 -> 2 (3x3, no bias), ReLU, linear 18 -> 4 ----------

TINY_INPUT = (1, 1, 5, 5)
TINY_MACS = 3 * 3 * 2 * (1 * 3 * 3) + 18 * 4  # 9 outputs x 2 maps x 9 taps + 18 x 4 = 234
TINY_RELU_ELEMENTS = 2 * 3 * 3


def tiny_model() -> nn.Module:
    """A user factory (``tests.test_bench:tiny_model``) for the registry's ``module:factory``."""
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(18, 4, bias=False)
    )


def failing_model() -> nn.Module:
    raise RuntimeError("this factory always fails")


class _AllocationFails(nn.Module):
    def forward(self, x):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB")


def allocation_fails_model() -> nn.Module:
    return _AllocationFails()


def big_model() -> nn.Module:
    """Needs 400 MB of weights: more than the child's memory limit in the test below."""
    return nn.Linear(10_000, 10_000, bias=False)


TINY = peers.ModelSpec(
    "tiny", "tests.test_bench:tiny_model", {"input_shapes": [TINY_INPUT]}, TINY_MACS
)


def test_exact_totals_are_the_hand_counts():
    assert peers.lenet5_macs() == 325_680
    assert peers.lenet5_dws_macs() == 57_704
    # 12 L E^2 + 6 L^2 E + 4 L E F at L = 128, E = 256, F = 1024
    assert peers.transformer_macs(256, 128) == 12 * 128 * 256**2 + 6 * 128**2 * 256 + 4 * 128 * (
        256 * 1024
    )
    assert peers.transformer_macs(256, 128) == 260_046_848


@pytest.mark.parametrize(("emb", "seq_len", "heads"), [(64, 16, 8), (256, 32, 2)])
def test_transformer_closed_form_is_flowprofs_trace(emb, seq_len, heads):
    model, inputs = peers.build(peers.transformer_spec(emb, seq_len, heads), "meta")
    assert tracer.trace(model, list(inputs)).total().macs == peers.transformer_macs(emb, seq_len)


def test_scale_weight_bytes_count_every_parameter():
    model, _ = peers.build(scale.spec(256, seq_len=16), "meta")
    params = sum(p.numel() for p in model.parameters())
    assert scale.weight_bytes(256) == 2 * params  # fp16
    assert scale.heads_for(256) == 8 and scale.heads_for(12288) == 96


def test_every_tool_has_an_adapter():
    assert set(peers.COUNTERS) == set(peers.TOOLS)
    assert peers.TOOLS["FlopCounterMode"].per_mac == 2


# Each adapter's number on the tiny model, in MACs after the unit conversion. ptflops' pytorch
# backend counts ReLU twice (its nn.ReLU hook and the patched F.relu): tests/test_peers.py.
EXPECTED_TINY = {tool: TINY_MACS for tool in peers.TOOLS} | {
    "ptflops": TINY_MACS + 2 * TINY_RELU_ELEMENTS
}


@pytest.mark.parametrize("tool", list(peers.TOOLS))
def test_adapter_counts_on_a_tiny_model(tool):
    result = peers.measure(tool, TINY, repeats=2, warmup=1, threads=1)
    assert result["status"] == "ok", result.get("error")
    assert result["macs"] == EXPECTED_TINY[tool]
    assert result["raw_count"] == EXPECTED_TINY[tool] * peers.TOOLS[tool].per_mac
    assert result["consistent"]
    assert len(result["seconds"]) == 2 and all(s > 0 for s in result["seconds"])
    assert result["device"] == ("meta" if tool == "flowprof" else "cpu")
    for key in ("import_s", "build_s", "first_s", "peak_bytes", "import_rss_bytes"):
        assert key in result


def test_flop_counter_reports_two_flops_per_mac():
    model = tiny_model()
    x = torch.randn(TINY_INPUT)
    assert peers.count_flop_counter(model, [x]) == 2 * TINY_MACS


def test_proc_status_reads_memory_in_bytes():
    status = peers.proc_status()
    assert status["VmHWM"] >= status["VmRSS"] > 10 * 2**20
    assert peers.proc_status(2**22 + 12345) == {}  # no such process


def test_out_of_memory_is_recognised():
    assert peers.is_out_of_memory(MemoryError())
    assert peers.is_out_of_memory(
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"
        )
    )
    assert not peers.is_out_of_memory(RuntimeError("shape mismatch"))


def test_a_tool_error_is_a_result():
    spec = peers.ModelSpec("bad", "tests.test_bench:failing_model", {"input_shapes": [(1, 4)]})
    result = peers.measure("thop", spec, repeats=1, warmup=0, threads=1)
    assert result["status"] == "error" and "always fails" in result["error"]
    assert result["stage"] == "build"


@pytest.mark.parametrize("tool", ["ptflops", "fvcore", "FlopCounterMode"])
def test_running_out_of_memory_is_recognised_even_when_the_peer_swallows_it(tool):
    """ptflops catches the model's exception, prints it and returns None: read what it printed."""
    spec = peers.ModelSpec(
        "oom", "tests.test_bench:allocation_fails_model", {"input_shapes": [(1, 4)]}
    )
    result = peers.measure(tool, spec, repeats=1, warmup=0, threads=1)
    assert result["status"] == "out of memory", result
    assert result["stage"] == "analysis"


@pytest.mark.slow
def test_isolated_run_reports_ok_timeout_and_out_of_memory():
    ok = peers.run_isolated("fvcore", TINY, repeats=1, warmup=1, time_limit_s=120)
    assert ok["status"] == "ok" and ok["macs"] == TINY_MACS and ok["error_pct"] == 0
    late = peers.run_isolated("fvcore", TINY, repeats=1, warmup=1, time_limit_s=0.3)
    assert late["status"] == "timeout"
    big = peers.ModelSpec("big", "tests.test_bench:big_model", {"input_shapes": [(1, 10_000)]})
    oom = peers.run_isolated("thop", big, repeats=1, warmup=0, mem_limit_bytes=100 << 20)
    assert oom["status"] == "out of memory", oom


def test_scale_schedule_stops_a_peer_after_it_fails(monkeypatch):
    calls = []

    def fake(tool, spec, **kwargs):
        calls.append((tool, spec.key))
        emb = spec.options["emb"]
        status = "timeout" if tool == "fvcore" and emb >= 1024 else "ok"
        return {"status": status, "macs": spec.exact_macs, "first_s": 1.0, "peak_bytes": 1}

    monkeypatch.setattr(peers, "run_isolated", fake)
    cells = scale.run(
        embs=(256, 512, 1024, 2048), peer_embs=(256, 1024, 2048), tools=("flowprof", "fvcore")
    )
    assert len(cells) == scale.planned(
        (256, 512, 1024, 2048), (256, 1024, 2048), ("flowprof", "fvcore")
    )
    by = {(c["tool"], c["emb"]): c for c in cells}
    assert by[("fvcore", 512)]["reason"] == "size not selected for this tool"
    assert by[("fvcore", 1024)]["status"] == "timeout"
    assert by[("fvcore", 2048)]["reason"] == "timeout at emb 1024"
    assert ("fvcore", scale.spec(2048).key) not in calls
    assert all(by[("flowprof", e)]["status"] == "ok" for e in (256, 512, 1024, 2048))


# --- the generated report ------------------------------------------------------------------------


def _result(tool, model, macs, exact, median, status="ok", **extra):
    r = {"tool": tool, "model": model, "status": status, "exact_macs": exact}
    if status == "ok":
        r.update(
            macs=macs,
            error_pct=100 * (macs - exact) / exact,
            median_s=median,
            min_s=median,
            max_s=median,
            first_s=median,
            peak_bytes=10**7,
            first_peak_bytes=10**6,
            analysis_peak_bytes=10**5,
            device="cpu",
        )
    return r | extra


def _results():
    analysis = [
        _result("flowprof", "m1", 100, 100, 0.02),
        _result("fvcore", "m1", 101, 100, 0.001),
        _result("FlopCounterMode", "m1", 100, 100, 0.01),
        _result("flowprof", "m2", 50, 50, 0.1),
        _result("fvcore", "m2", 40, 50, 0.5),
        _result("thop", "m2", 0, 50, None, status="error", error="TypeError: boom"),
    ]
    cells = [
        {
            "tool": "flowprof",
            "emb": 256,
            "seq_len": 2048,
            "heads": 8,
            "status": "ok",
            "macs": 9,
            "exact_macs": 9,
            "first_s": 0.2,
            "median_s": 0.1,
            "peak_bytes": 10**8,
            "weight_bytes": 10**6,
        },
        {
            "tool": "fvcore",
            "emb": 256,
            "seq_len": 2048,
            "heads": 8,
            "status": "timeout",
            "error": "killed after 120 s",
            "seen_peak_rss_bytes": 5 * 10**9,
            "exact_macs": 9,
            "weight_bytes": 10**6,
        },
    ]
    # bench/bench_training.py's cells: rates per round, train's share of the ceiling per round
    # (990 / 1100 = 90%), their medians, and the condition's best ceiling
    rates = {"train": [990.0], "ceiling": [1100.0], "bare": [1000.0], "plain": [400.0]}
    training = {
        "model": "lenet5",
        "batch_size": 128,
        "criterion": "eq. (9)",
        "data": "MNIST",
        "variants": list(rates),
        "cells": [
            {
                "condition": "as found",
                "threads": 1,
                "load": [0.5, 0.5, 0.5],
                "rounds": 1,
                "samples_per_round": 1280,
                "ceiling_layout": "contiguous",
                "rates": rates,
                "median_samples_per_s": {k: v[0] for k, v in rates.items()},
                "best_samples_per_s": {k: v[0] for k, v in rates.items()},
                "train_to_ceiling": [0.9],
                "median_train_to_ceiling": 0.9,
                "best_ceiling": {
                    "threads": 1,
                    "layout": "contiguous",
                    "median_samples_per_s": 1100.0,
                },
                "train_to_best_ceiling": 0.9,
            }
        ],
    }
    return {
        "command": "bench/run.py",
        "started": "2026-01-01T00:00:00+00:00",
        "duration_s": 60.0,
        "machine": {
            "cpu": "a CPU",
            "logical_cpus": 2,
            "usable_cpus": 2,
            "memory_bytes": 2**34,
            "os": "Linux",
            "python": "3.11",
            "versions": {"torch": "2"},
            "commit": "abc",
        },
        "settings": {"repeats": 5, "warmup": 1, "time_limit_s": 120, "mem_limit_gb": 12},
        "load": {"start": [0.5, 0.5, 0.5]},
        "source_digest": {"start": "abc", "end": "abc"},
        "analysis": analysis,
        "phases": [
            {
                "model": "m1",
                "fx_nodes": 40,
                "phases_s": {
                    "fx symbolic trace": 0.012,
                    "counting run": 0.004,
                    "units and edges": 0.002,
                    "grouping": 0.001,
                },
                "trace_s": 0.02,
                "stock_fx_s": 0.011,
                "hooks_s": 0.015,
                "repeats": 20,
            }
        ],
        "scale": cells,
        "training": training,
    }


def test_a_source_change_during_the_run_is_flagged():
    results = _results()
    assert "unchanged during the run" in bench_run.render(results, "p.png")
    results["source_digest"]["end"] = "def"
    assert "CHANGED during the run" in bench_run.render(results, "p.png")
    assert len(bench_run.source_digest()) == 16


def test_comparisons_pick_the_fastest_exact_peer():
    comps = {c["model"]: c for c in bench_run.comparisons(_results()["analysis"])}
    assert comps["m1"]["fastest_peer"] == "fvcore"  # fastest, but wrong
    assert comps["m1"]["fastest_exact_peer"] == "FlopCounterMode"
    assert comps["m1"]["ratio_fastest_exact"] == pytest.approx(2.0)
    assert comps["m2"]["fastest_exact_peer"] is None
    assert comps["m2"]["ratio_fastest"] == pytest.approx(0.2)


def test_summary_states_where_flowprof_is_slower():
    text = "\n".join(bench_run.summary(_results()))
    assert "exact MACs on 2 of 2 models" in text
    assert "slower on m1" in text and "FlopCounterMode" in text
    assert "no peer is exact on m2" in text
    assert "fvcore is exact on 0 of 2; its largest error is -20.00% (m2)" in text
    assert "thop is exact on 0 of 1; it failed on m2" in text
    assert "timeout at emb 256" in text
    # 990 / 1100 = 90% of the ceiling
    assert "`train` 990 samples/s, 90% of the ceiling (1,100)" in text
    # m1: flowprof 20 ms vs FlopCounterMode 10 ms; its fx trace alone is 12 ms of it
    assert (
        "the fx symbolic trace alone (40 nodes) takes 12 ms, longer than FlopCounterMode's whole "
        "analysis (10 ms); the counting run 4 ms, units, edges and grouping 3 ms. torch.fx's "
        "own Tracer on this model, without flowprof, takes 11 ms, longer than the peer's whole "
        "analysis. Without torch.fx (blocks recorded by hooks) the whole call takes 15 ms, "
        "longer than the peer's." in text
    )


def test_markdown_has_every_section_and_failure(tmp_path):
    results = _results()
    md = bench_run.render(results, "plot.png")
    for heading in (
        "## Machine",
        "## Summary",
        "## Exactness",
        "### m1",
        "## Where flowprof's time goes",
        "## Scale",
        "## Training",
    ):
        assert heading in md
    # 12 ms over 40 nodes = 300 us a node
    assert (
        "| m1 | 40 | 12 ms | 4 ms | 2 ms | 1 ms | 20 ms | 15 ms | 300 us | 11 ms "
        "| FlopCounterMode 10 ms |" in md
    )
    assert "**timeout** (killed after 120 s; 5 GB resident when killed)" in md
    assert "thop: error: TypeError: boom" in md
    assert "| m1 | 100 | **exact** | +1.00% | - | **exact** |" in md
    paths = bench_run.plot(results, tmp_path / "plot")
    assert [p.suffix for p in paths] == [".png", ".svg"] and all(p.stat().st_size for p in paths)


@pytest.mark.parametrize(
    ("value", "text"), [(0.0123, "12.3 ms"), (2.5, "2.5 s"), (None, "-"), (123.4, "123 s")]
)
def test_seconds_format(value, text):
    assert bench_run.fmt_s(value) == text


def test_phases_of_a_real_trace_are_reported():
    from bench import phases

    r = phases.measure("lenet5", repeats=1)
    assert r["model"] == "lenet5"
    assert r["fx_nodes"] > 2  # the input, the output and the layers between

    assert set(r["phases_s"]) == set(bench_run.PHASES)
    assert all(t > 0 for t in r["phases_s"].values()) and r["trace_s"] > 0
    assert r["stock_fx_s"] > 0  # the stock torch.fx Tracer traces LeNet-5
    assert r["hooks_s"] > 0

"""bench/timing.py's arithmetic and its BENCHMARKS.md section (no timing is asserted), and the
GPT-2-small-shaped decoder of its GPU check, traced on meta."""

from __future__ import annotations

import pytest
import torch

import flowprof
from bench import timing
from bench.gpt2_shaped import GPT2Shape, GPT2Shaped
from flowprof.device import GPUS


def _row(block, error, bound="compute", measured_bound="compute", gemm=True):
    return {
        "block": block, "kind": "Linear", "flops": 2e9, "bytes": 4e6, "intensity": 500.0,
        "bound": bound, "measured_bound": measured_bound, "predicted_seconds": 1e-3,
        "measured_seconds": 1e-3 / (1 + error), "error": error, "gemm": gemm,
    }  # fmt: skip


def _results():
    device = GPUS["h100"].to_dict()
    device["measured"] = {"stream_copy": [[8e6, 9e9]]}
    return {
        "command": "bench/timing.py",
        "started": "2026-12-01T00:00:00+00:00",
        "load": {"start": [1.0, 1.0, 1.0], "end": [2.0, 2.0, 2.0]},
        "cpu": {
            "device": device,
            "repeats": 3,
            "models": {
                "a": [_row("a.fc1", -0.1), _row("a.fc2", 0.2), _row("a.relu", 0.9, gemm=False)],
                "b": [_row("b.mm", -0.4, measured_bound="memory")],
            },
        },
        "gpu": None,
    }


def test_stats_by_hand():
    rows = [_row("x", -0.1), _row("y", 0.2), _row("z", -0.4, measured_bound="memory")]
    s = timing.stats(rows)
    # |errors| 0.1, 0.2, 0.4: median 0.2; p90 at position 0.9 * 2 = 1.8: 0.2 + 0.8 * 0.2 = 0.36
    assert s["blocks"] == 3 and s["median"] == pytest.approx(0.2)
    assert s["p90"] == pytest.approx(0.36) and s["max"] == pytest.approx(0.4)
    assert s["signed_median"] == pytest.approx(-0.1)  # of -0.4, -0.1, 0.2
    assert s["agree"] == pytest.approx(2 / 3)


def test_markdown_section_and_its_place():
    md = timing.markdown(_results())
    assert md.startswith(timing.BEGIN) and md.rstrip().endswith(timing.END)
    # the three GEMM blocks: |errors| 0.1, 0.2, 0.4 -> median 20%, agreement 2 of 3 = 67%
    assert "median |predicted - measured| / measured: **20%** (target at most 25%: met)" in md
    assert "agrees with the measurement on **67%** (target at least 90%: **not met**)" in md
    assert "not run, no CUDA device" in md
    old = "# Benchmarks\n\nintro\n"
    once = timing.insert_section(old, md)
    assert once == old + "\n" + md
    twice = timing.insert_section(once + "\n## after\n", md.replace("20%", "21%"))
    assert twice.count(timing.BEGIN) == 1 and "**21%**" in twice and twice.endswith("## after\n")


def test_training_step_section():
    results = _results()
    assert "Training step (backward, optimizer): not measured" in timing.markdown(results)

    def row(*args, **kwargs):
        terms = {"compute_seconds": 8e-4, "memory_seconds": 1e-4, "overhead_seconds": 2e-4}
        return _row(*args, **kwargs) | terms

    back = [row("a.fc1", -0.3), row("a.fc2", 0.1), row("a.relu", 2.0, gemm=False)]
    opt = [row("a.fc1", -0.5), row("a.fc2", -0.1)]
    results["cpu"]["step"] = {
        "repeats": 2,
        "optimizer": "adam",
        "models": {"a": {"forward": [], "backward": back, "optimizer": opt}},
    }
    md = timing.markdown(results)
    # backward over the two GEMM rows: |errors| 0.3, 0.1: median 20%, met; the ReLU's 200%
    # is not among them. Optimizer: 0.5, 0.1: median 30%, not met.
    assert "- backward: 2 blocks, median |predicted - measured| / measured **20%**" in md
    assert "(the forward's target, at most 25%: met)" in md
    assert "- optimizer: 2 blocks, median |predicted - measured| / measured **30%**" in md
    # the worst backward block first: a.fc1 at -30%
    worst = md.split("Worst backward blocks:")[1].splitlines()[4]
    assert worst.startswith("| a | a.fc1 |") and worst.endswith("| -30% |")


def test_gpt2_shaped_decoder_counts():
    s = GPT2Shape(hidden=64, layers=2, heads=4, mlp=256, vocab=100, positions=32)
    with torch.device("meta"):
        model = GPT2Shaped(s)
    graph = flowprof.trace(model, [torch.zeros(2, 16, dtype=torch.int64, device="meta")])
    n, e, f, t, v = 2 * 16, 64, 256, 16, 100  # tokens, hidden, mlp, seq, vocab
    per_layer = 4 * n * e * e + 2 * n * e * f + 2 * 2 * 4 * t * t * (e // 4)  # proj, mlp, attn
    # q/k/v/out: 4 N E^2; fc, proj: 2 N E F; scores and context: 2 x (B H T T D), B=2, H=4, D=16
    assert graph.total().macs == 2 * per_layer + n * e * v  # + the tied LM head

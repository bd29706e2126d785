"""bench/formula_speed.py's BENCHMARKS.md section (no timing is asserted): its sentences come
from the numbers, and it has its own place beside the other scripts' sections."""

from __future__ import annotations

from bench import formula_speed, timing


def _results(sweep_s: float = 0.2, layers_s: float = 3.8):
    return {
        "command": "bench/formula_speed.py",
        "started": "2026-12-02T00:00:00+00:00",
        "load": {"start": [1.0, 1.0, 1.0], "end": [2.0, 2.0, 2.0]},
        "sweep": {
            "configurations": 10_000, "quantities": 2, "fit_seconds": 1.5, "traces": 33,
            "sweep_seconds": sweep_s, "under_1_s": sweep_s < 1, "traced_points_equal": True,
            "traced_points": 5,
        },
        "llama_2_7b_shaped": {
            "direct": {"seconds": 31.6, "traces": 12, "under_5_s": False, "macs": "m",
                       "equals_trace_at_4096_2048": True},
            "layers": {"seconds": layers_s, "traces": 30, "under_5_s": layers_s < 5,
                       "macs": "2*hidden", "equals_trace_at_4096_2048": True},
        },
        "comm_sweep": {
            "points": 50, "emb": [8, 400], "seq_len": 16, "traced_seconds": 4.0,
            "traced_traces": 50, "formula_seconds": 1.6, "formula_traces": 6,
            "method": "formula", "method_note": "evaluated from one formula", "identical": True,
        },
    }  # fmt: skip


def test_markdown_states_the_numbers_and_the_targets():
    md = formula_speed.markdown(_results())
    assert md.startswith(formula_speed.BEGIN) and md.rstrip().endswith(formula_speed.END)
    assert "**Sweep of 10,000 configurations**" in md
    assert "**0.200 s** (target under 1 s: met)" in md
    assert "**3.80 s** (30 traces); fitted on the 32-layer model itself 31.60 s" in md
    assert "Target under 5 s: met (with layers as a dimension)" in md
    # 4.0 s traced / 1.6 s from the formula = 2.5x
    assert "2.5x faster" in md and "identical" in md
    slow = formula_speed.markdown(_results(sweep_s=1.5, layers_s=6.0))
    assert "(target under 1 s: **not met**)" in slow and "Target under 5 s: **not met**" in slow


def test_section_keeps_the_other_sections(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(f"# Benchmarks\n\n{timing.BEGIN}\n## Time\nkept\n{timing.END}\n")
    formula_speed.write(_results(), tmp_path / "r.json", path)
    formula_speed.write(_results(sweep_s=0.3), tmp_path / "r.json", path)  # replaced, not added
    text = path.read_text()
    assert "## Time\nkept" in text
    assert text.count(formula_speed.BEGIN) == 1 and "**0.300 s**" in text

"""The training step's outputs: CSV and JSON phase columns, the CLI's --train, and the training
cost of a run (per step, per epoch, per run).

The numbers checked here are hand counts of a two-layer model (derivations inline) and the
arithmetic of epochs and steps; the per-op formulas are tested in tests/test_training_step.py.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from flowprof import tracer
from flowprof.reports import export
from flowprof.tracer import OpCount, Phase

ROOT = Path(__file__).resolve().parents[1]


def _graph():
    # Linear(4 -> 3) on a batch of 2, loss = sum, SGD with momentum.
    # forward: 2*3 dot products of length 4 + bias: 24 mults, 2*3*3 + 6 = 24 adds
    # backward (no input gradient): dW 3*4 dot products of length 2 (24 mults, 12 adds),
    #   db 3 sums of 2 (3 adds)
    # optimizer: 15 parameters, buf*0.9 + g (1 mult, 1 add), p - lr*buf (1 mult, 1 add)
    model = nn.Sequential(nn.Linear(4, 3))
    return tracer.trace(model, [(2, 4)], phases=("forward", "backward", "optimizer"), loss="sum")


def test_blocks_csv_has_one_row_per_block_and_phase():
    rows = list(csv.DictReader(io.StringIO(export.blocks_csv(_graph()))))
    by = {(r["block"], r["phase"]): r for r in rows}
    assert set(by) == {
        ("0", "forward"),
        ("0", "backward"),
        ("0", "optimizer"),
        ("loss", "forward"),
    }
    assert (by["0", "forward"]["multiplications"], by["0", "forward"]["additions"]) == ("24", "24")
    assert (by["0", "backward"]["multiplications"], by["0", "backward"]["additions"]) == (
        "24",
        "15",
    )
    assert (by["0", "optimizer"]["multiplications"], by["0", "optimizer"]["additions"]) == (
        "30",
        "30",
    )
    # the contract's first columns are unchanged; params and trainable on every row
    assert list(rows[0])[:7] == [
        "block",
        "kind",
        "macs",
        "multiplications",
        "additions",
        "other",
        "params",
    ]
    assert {r["trainable_params"] for r in rows if r["block"] == "0"} == {"15"}
    assert {r["param_grad_bits"] for r in rows if r["block"] == "0"} == {str(15 * 32)}


def test_edges_csv_and_json_carry_the_gradients_back():
    g = _graph()
    rows = list(csv.DictReader(io.StringIO(export.edges_csv(g))))
    back = [(r["src"], r["dst"], r["shape"], r["bits"]) for r in rows if r["phase"] == "backward"]
    # the loss sends the gradient of the 2x3 output (fp32) back to the Linear; the input needs
    # none
    assert back == [("loss", "0", "2x3", str(6 * 32))]
    data = json.loads(export.graph_json(g))
    assert [(e["src"], e["dst"], e["bits"], e["phase"]) for e in data["gradient_edges"]] == [
        ("loss", "0", 6 * 32, "backward")
    ]
    assert data["totals_by_phase"]["optimizer"]["multiplications"] == 30
    block = next(b for b in data["blocks"] if b["name"] == "0")
    assert block["phases"]["backward"]["additions"] == 15
    assert block["param_grad_bits"] == 15 * 32


def test_a_forward_trace_is_unchanged_but_for_the_phase_column():
    g = tracer.trace(nn.Sequential(nn.Linear(4, 3)), [(2, 4)])
    rows = list(csv.DictReader(io.StringIO(export.blocks_csv(g))))
    assert [(r["block"], r["phase"]) for r in rows] == [("0", "forward")]
    assert "gradient_edges" not in g.to_dict()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True, cwd=ROOT
    )


def test_cli_trace_train_prints_the_phases_and_writes_them(tmp_path):
    out = tmp_path / "t"
    r = _cli(
        "trace",
        "lenet5-modern",
        "--train",
        "--optimizer",
        "adam",
        "--out",
        str(out),
        "--diagram",
        "none",
    )
    assert r.returncode == 0, r.stderr
    for heading in ("training step by block", "gradients between blocks", "training step totals"):
        assert heading in r.stdout
    assert "backward" in r.stdout and "optimizer" in r.stdout
    rows = list(csv.DictReader((out / "blocks.csv").open()))
    assert {r["phase"] for r in rows} == {"forward", "backward", "optimizer"}
    data = json.loads((out / "graph.json").read_text())
    assert data["meta"]["training_step"]["optimizer"] == "adam"
    # Adam on lenet5-modern's 61,706 parameters: 13 operations each (5 multiplications,
    # 5 additions, 2 divisions, 1 square root) and one addition per tensor (10 tensors)
    opt = data["totals_by_phase"]["optimizer"]
    assert opt["multiplications"] == 5 * 61_706
    assert opt["additions"] == 5 * 61_706 + 10


def test_cli_train_options_need_train_and_refuse_measure_with_amp():
    r = _cli("trace", "lenet5", "--optimizer", "adam")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--train" in r.stderr
    # (--train --measure times the step: tests/test_step_timing.py; with --amp it is refused)
    r = _cli("trace", "lenet5", "--train", "--amp", "bf16", "--measure")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--measure" in r.stderr
    r = _cli("trace", "lenet5", "--train", "--optimizer", "lamb")
    assert r.returncode == 2 and "lamb" in r.stderr


def test_training_cost_composes_steps_epochs_and_runs():
    from flowprof.analyses.training_cost import training_cost
    from flowprof.training.loop import TrainConfig

    # 10 samples in batches of 4: two steps of 4 and one of 2; three epochs
    config = TrainConfig(model="lenet5-modern", batch_size=4).validate()
    cost = training_cost("lenet5-modern", config, samples=10, eval_samples=3, epochs=3)
    assert (cost.full_steps, cost.steps_per_epoch, cost.last_step.batch) == (2, 3, 2)
    assert cost.epoch == cost.step.total.scale(2) + cost.last_step.total
    assert cost.run() == cost.epoch.scale(3)
    # the per-sample work is linear in the batch: forward MACs of 4 images = 2 x those of 2
    fwd4, fwd2 = cost.step.phases[Phase.FORWARD], cost.last_step.phases[Phase.FORWARD]
    assert fwd4.macs == 2 * fwd2.macs
    # the update is not: Adam's operations depend on the parameters only (61,706 of them,
    # 13 operations each, + one step addition per tensor)
    opt = cost.step.phases[Phase.OPTIMIZER]
    assert opt == cost.last_step.phases[Phase.OPTIMIZER]
    assert opt.total == 13 * 61_706 + 10
    # lenet5-modern's forward of one 32x32 image: conv1 6*28*28 outputs x 25 taps, conv2
    # 16*10*10 x 150, fc 120x400, 84x120, 10x84 MACs
    one_image = 6 * 28 * 28 * 25 + 16 * 10 * 10 * 150 + 120 * 400 + 84 * 120 + 10 * 84
    assert cost.eval_forward.macs == 3 * one_image
    assert fwd4.macs == 4 * one_image
    # backward: every layer but the first computes its input gradient too
    first = 6 * 28 * 28 * 25
    assert cost.step.phases[Phase.BACKWARD].macs == 4 * (2 * one_image - first)
    assert isinstance(cost.to_dict()["run"]["total"], int)


def test_forward_only_phases_are_a_forward_pass():
    g = tracer.trace(nn.Sequential(nn.Linear(4, 3)), [(2, 4)], phases=("forward",))
    assert g.phases() == (Phase.FORWARD,) and "training_step" not in g.meta
    assert g.total() == OpCount(macs=24, multiplications=24, additions=24)
    # the model's own parameters get no gradient from a training-step trace (stand-ins do)
    model = nn.Sequential(nn.Linear(4, 3))
    tracer.trace(model, [torch.randn(2, 4)], phases=("forward", "backward", "optimizer"))
    assert all(p.grad is None for p in model.parameters())
    assert model.training  # and its mode is restored


def test_the_readme_training_example():
    import flowprof

    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    g = flowprof.trace(
        model, (32, 784), phases=("forward", "backward", "optimizer"), optimizer="adam"
    )
    # first Linear: weight gradient only (32 x 784 x 256); last: weight and input gradients
    assert g.total("backward").macs == 32 * 784 * 256 + 2 * 32 * 256 * 10 == 6586368
    assert set(g.block("2").counts()) == {Phase.FORWARD, Phase.BACKWARD, Phase.OPTIMIZER}
    assert [(e.src, e.dst) for e in g.gradient_edges()] == [("loss", "2"), ("2", "1"), ("1", "0")]

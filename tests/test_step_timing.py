"""The training step's time: the backward and optimizer roofline by hand on a toy device, the
measured step (every block's backward and update timed, the model left as it was), the
Perfetto timeline and roofline plot with phases, and ``trace --train --device --measure``."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from torch import nn

import flowprof
from flowprof import cli
from flowprof.device import Device, microbench
from flowprof.device.roofline import Bound, predict_phases, predict_time
from flowprof.errors import BadSpecError, UnsupportedModelError
from flowprof.reports.roofline_plot import PREDICTED_LABEL, roofline_figure
from flowprof.reports.timeline import trace_events
from flowprof.tracer.counts import Phase
from tests.test_device_timing import TOY, _cached_toy_cpu, check_trace_event_json

STEP = ("forward", "backward", "optimizer")


def _mlp_step(**kwargs):
    """Linear(4, 3), ReLU, Linear(3, 2) on 2 rows of 4, one SGD step (momentum 0.9)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    return flowprof.trace(model, (2, 4), phases=STEP, optimizer="sgd", **kwargs)


def _by_block(prediction):
    return {b.block: b for b in prediction.blocks}


# --- the roofline of the backward and the optimizer, by hand ------------------------------------


def test_backward_roofline_by_hand():
    back = _by_block(predict_time(_mlp_step(), TOY, phase="backward"))
    first, relu, last = back["0"], back["1"], back["2"]
    assert {b.phase for b in back.values()} == {"backward"}

    # First Linear(4, 3); its input needs no gradient, so autograd computes only the weight
    # gradient grad_out^T (3x2) @ x (2x4): 12 dot products of length 2 = 24 MACs (24
    # multiplications, 12 additions), and the bias gradient, the column sums of grad_out (2x3):
    # 3 additions. Matrix FLOPs 2 x 24 = 48; the count's 24 + 15 = 39 operations are no more
    # than that, so nothing beyond the product: other 0.
    assert (first.matrix_flops, first.other_flops) == (48, 0)
    # Bytes (fp32): reads the incoming gradient (2x3 x 4 = 24 B) and the saved input (2x4 x 4
    # = 32 B); writes no input gradient; reads no weight (no input gradient to make); writes
    # the weight and bias gradients (12 + 3) x 4 = 60 B. 116 B.
    assert (first.input_bytes, first.output_bytes, first.weight_bytes) == (24 + 32, 0, 60)
    # On the toy (1000 FLOP/s, 10 vector FLOP/s, 100 B/s, no cache figure: everything from
    # memory): compute 48 / 1000 = 0.048 s, memory 116 / 100 = 1.16 s: memory-bound.
    assert first.compute_seconds == pytest.approx(0.048)
    assert first.memory_seconds == pytest.approx(1.16)
    assert first.bound is Bound.MEMORY
    # Overhead: one autograd node (the toy has no measured one: its fx-node cost, 0.5 s) and
    # one more aten op (AddmmBackward0 runs mm for the weight gradient and sum for the bias:
    # 2 ops), 0.25 s: 1.16 + 0.75.
    assert first.predicted_seconds == pytest.approx(1.16 + 0.5 + 0.25)

    # Last Linear(3, 2); its input (the ReLU's output) needs a gradient: grad_out (2x2) @ W
    # (2x3) = 6 dots of length 2 = 12 MACs, and the weight gradient grad_out^T (2x2) @ h (2x3),
    # 6 dots of length 2 = 12 MACs: 24 MACs, 48 matrix FLOPs; additions 6 + 6 + 2 (bias) = 14:
    # 24 + 14 = 38 < 48, other 0.
    assert (last.matrix_flops, last.other_flops) == (48, 0)
    # Reads the incoming gradient 2x2 x 4 = 16 B (from the loss; the edge to the output node
    # carries none of its own) and the saved input 2x3 x 4 = 24 B; writes the input gradient
    # 24 B; reads its weights (6 + 2) x 4 = 32 B and writes their gradients, 32 B.
    assert (last.input_bytes, last.output_bytes, last.weight_bytes) == (16 + 24, 24, 32 + 32)
    assert last.memory_seconds == pytest.approx(128 / 100)
    # 3 backward ops (mm for the input gradient, mm for the weight gradient, sum): 0.5 + 2 x
    # 0.25 = 1.0 s of overhead.
    assert last.overhead_seconds == pytest.approx(1.0)
    assert last.predicted_seconds == pytest.approx(1.28 + 1.0)

    # ReLU's backward: threshold_backward on 6 elements, a comparison and a select each: 12
    # operations on the vector units, 12 / 10 = 1.2 s; bytes 24 in (gradient) + 24 (saved) +
    # 24 out = 72 B, 0.72 s: compute-bound. One op: 0.5 s.
    assert relu.other_flops == 12 and relu.bytes == 72
    assert relu.bound is Bound.COMPUTE
    assert relu.predicted_seconds == pytest.approx(1.2 + 0.5)


def test_backward_rate_is_read_from_the_backward_ladder_at_the_forward_size():
    curves = {"fp32/matmul_backward": ((10.0, 100.0), (1000.0, 1000.0))}
    toy = dataclasses.replace(TOY, matrix_curves=curves)
    last = _by_block(predict_time(_mlp_step(), toy, phase="backward"))["2"]
    # The last linear's forward is 12 MACs = 24 FLOPs: each of its two backward products has
    # that size, and the rate is read there: log10(24) = 1.380, (1.380 - 1) / 2 = 0.1901 of
    # the way from 100 to 1000 FLOP/s = 271.1 FLOP/s; its 48 backward FLOPs take 0.1770 s.
    rate = 100 + (math.log10(24) - 1) / 2 * 900
    assert last.compute_seconds == pytest.approx(48 / rate)


def test_optimizer_roofline_by_hand():
    opt = _by_block(predict_time(_mlp_step(), TOY, phase="optimizer"))
    assert set(opt) == {"0", "2"}  # the ReLU and the loss have no parameters to update
    first = opt["0"]
    # SGD with momentum on 15 parameters: buf.mul_(0.9) (1 multiplication), buf.add_(grad)
    # (1 addition), param.add_(buf, alpha=-lr) (1 multiplication, 1 addition): 4 operations
    # each, 60, on the vector units: 60 / 10 = 6 s.
    assert first.other_flops == 60 and first.compute_seconds == pytest.approx(6.0)
    # Bytes as torch.optim's for-loop streams them: mul_ reads and writes the buffer (2), add_
    # reads buffer and gradient and writes the buffer (3), the update reads the parameter and
    # the buffer and writes the parameter (3): 8 accesses x 15 elements x 4 B = 480 B, 4.8 s.
    assert first.bytes == 480 and first.memory_seconds == pytest.approx(4.8)
    assert first.bound is Bound.COMPUTE
    # Overhead (no measured optimizer costs on the toy: a call 0.5 s, each op 0.25 s): 3 ops per
    # tensor (mul_, add_, add_), weight and bias: 6 ops, 0.5 + 1.5 = 2 s.
    assert first.predicted_seconds == pytest.approx(6.0 + 2.0)

    # With the optimizer's measured rate and costs (refinements 5 and 9): 15 elements on the
    # curve (10 -> 5 elements/s, 1000 -> 50): (log10(15) - 1) / 2 = 0.0880 of the way: 8.962
    # elements/s, 1.674 s; a step call 0.1 s and 0.01 s per op: 0.1 + 6 x 0.01 = 0.16 s.
    measured = {
        "optimizer_curves": {"sgd": [[10, 5.0], [1000, 50.0]]},
        "optimizer_seconds": {"sgd": [0.1, 0.01]},
    }
    toy = dataclasses.replace(TOY, measured=measured)
    first = _by_block(predict_time(_mlp_step(), toy, phase="optimizer"))["0"]
    rate = 5 + (math.log10(15) - 1) / 2 * 45
    assert first.compute_seconds == pytest.approx(15 / rate)
    assert first.overhead_seconds == pytest.approx(0.16)


def test_phases_of_a_grouped_step_and_bad_phases():
    graph = _mlp_step()
    preds = flowprof.predict_phases(graph, TOY)  # (the public name)
    assert [p.phase for p in preds] == ["forward", "backward", "optimizer"]
    # the forward of a training step pays only its own op (addmm), not the backward's
    assert _by_block(preds[0])["0"].predicted_seconds == pytest.approx(
        max(48 / 1000, (32 + 24 + 60) / 100) + 0.5
    )
    with pytest.raises(BadSpecError, match="no backward phase"):
        predict_time(flowprof.trace(nn.Linear(4, 3), (2, 4)), TOY, phase="backward")
    with pytest.raises(BadSpecError, match="unknown phase"):
        predict_time(graph, TOY, phase="sideways")


# --- the measured step ----------------------------------------------------------------------------


def _small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 10),
    )


def test_measured_step_covers_every_block_and_leaves_the_model_as_it_was():
    model = _small_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    graph = flowprof.trace(model, (2, 3, 8, 8), phases=STEP, optimizer="adam", measure=True)
    # every block that has backward work has a measured backward; every block with trainable
    # parameters a measured optimizer step; the others none
    for b in graph.blocks():
        assert b.seconds_of("forward") is not None and b.seconds_of("forward") >= 0
        if Phase.BACKWARD in dict(b.other_phases):
            assert b.seconds_of("backward") is not None and b.seconds_of("backward") >= 0, b.name
        if b.trainable:
            assert b.seconds_of("optimizer") > 0, b.name
        else:
            assert b.seconds_of("optimizer") is None, b.name
    trainable = {b.name for b in graph.blocks() if b.trainable}
    assert trainable == {"0", "1", "4"}  # conv, batch norm, linear
    # the convolution's and the linear's backward run real products: they take time
    assert graph.block("0").seconds_of("backward") > 0
    assert graph.block("4").seconds_of("backward") > 0
    # what the blocks' autograd nodes account for is part of the whole backward
    m = graph.meta["measured_step"]
    assert 0 < m["backward_attributed_seconds"] <= m["backward_seconds"]
    # the model is as it was: weights, batch norm's running statistics, no gradients, eval flags
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
    assert model.training  # (a new module is in train mode; trace restores it)


class _Branchy(nn.Module):
    """A forward that branches on a size: torch.fx cannot trace it (a size is a proxy there),
    hooks record its blocks; on meta tensors the size is known and the step runs."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        y = self.fc(x)
        return y.relu() if y.shape[0] > 1 else y


def test_measured_step_refuses_what_it_cannot_time():
    with pytest.raises(BadSpecError, match="amp"):
        flowprof.trace(_small_cnn(), (2, 3, 8, 8), phases=STEP, amp="bf16", measure=True)
    with pytest.raises(UnsupportedModelError, match="torch.fx traces whole"):
        flowprof.trace(_Branchy(), [torch.randn(2, 4)], phases=STEP, measure=True)


# --- the timeline and the plot with phases ----------------------------------------------------


def test_timeline_has_a_track_per_phase_and_one_time_axis():
    graph = flowprof.trace(_small_cnn(), (2, 3, 8, 8), phases=STEP, optimizer="sgd", measure=True)
    preds = predict_phases(graph, TOY)
    doc = json.loads(json.dumps(trace_events(preds)))
    check_trace_event_json(doc)
    names = {e["tid"]: e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "thread_name"}
    assert sorted(names.values()) == sorted(
        f"{side}: {phase}"
        for phase in ("forward", "backward", "optimizer")
        for side in (f"predicted on {TOY.title}", "measured (--measure)")
    )
    events = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    for side in ("predicted", "measured"):
        track = [e for e in events if e["cat"].startswith(side)]
        # one axis: forward, then backward, then optimizer, each event where the last ended
        assert track[0]["ts"] == 0
        for a, b in zip(track, track[1:], strict=False):
            assert b["ts"] == pytest.approx(a["ts"] + a["dur"])
        phases = [e["args"]["phase"] for e in track]
        assert phases == sorted(phases, key=["forward", "backward", "optimizer"].index)
        # the backward runs from the last block back to the first
        backward = [e["name"] for e in track if e["args"]["phase"] == "backward"]
        assert backward == [b.block for b in reversed(preds[1].blocks)]
    assert doc["otherData"]["phases"]["backward"]["predicted_seconds"] == pytest.approx(
        sum(b.predicted_seconds for b in preds[1].blocks)
    )


def test_roofline_plot_marks_phases(tmp_path):
    preds = predict_phases(_mlp_step(), TOY)
    fig = roofline_figure(preds)
    labels = {c.get_label(): c for c in fig.axes[0].collections}
    assert PREDICTED_LABEL in labels  # the forward keeps its label
    back = labels[f"{PREDICTED_LABEL} (backward)"]
    shown = [b for b in preds[1].blocks if b.flops > 0 and b.bytes > 0]
    assert [float(v) for x in back.get_offsets() for v in x] == pytest.approx(
        [v for b in shown for v in (b.intensity, b.flops / b.predicted_seconds)]
    )
    assert f"{PREDICTED_LABEL} (optimizer)" in labels


# --- the command line -----------------------------------------------------------------------------


def test_trace_train_device_measure(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FLOWPROF_DATA", str(tmp_path / "data"))
    microbench.save(Device.from_dict(_cached_toy_cpu(tmp_path)), microbench.cache_path("cpu"))
    out = tmp_path / "out"
    rc = cli.main(["trace", "lenet5", "--train", "--optimizer", "adam", "--device", "cpu",
                   "--measure", "--out", str(out), "--diagram", "none"])  # fmt: skip
    assert rc == 0
    captured = capsys.readouterr()
    text = captured.out
    for phase in ("backward", "optimizer"):
        assert f"(fp32, {phase}, roofline)" in text
        assert f"{phase}: median |predicted - measured| / measured" in text
    assert "in the blocks' autograd nodes" in captured.err + text
    doc = json.loads((out / "timeline.json").read_text())
    check_trace_event_json(doc)
    assert set(doc["otherData"]["phases"]) == {"forward", "backward", "optimizer"}
    assert (out / "roofline.png").stat().st_size > 0
    rc = cli.main(["trace", "lenet5", "--train", "--device", "h200", "--format", "json"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["timing_phases"]) == {"forward", "backward", "optimizer"}
    assert data["timing"] == data["timing_phases"]["forward"]


def test_microbench_training_costs_quick():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert 0 < microbench.autograd_node_seconds(nodes=20) < 1e-2
        call, per_op = microbench.optimizer_seconds("adam", tensors=4)
        assert call >= 0 and 0 <= per_op < 1e-2 and call + per_op > 0
        ((n, rate),) = microbench.optimizer_curve("sgd", (1 << 8, 1 << 12), budget=0.05)
        assert n == 1 << 12 and rate > 0
        ladder = microbench.backward_curve("cpu", torch.float32, "conv", [4, 8], budget=0.05)
        # the forward's FLOPs of a 3x3 conv c -> c on 32x32: 2 x 9 c^2 x 1024
        assert [s for s, _ in ladder] == [2.0 * 9 * c * c * 1024 for c in (4, 8)]
    finally:
        torch.set_num_threads(threads)

"""The device model and the time prediction: datasheet table, roofline arithmetic by hand, the
Perfetto timeline's trace-event schema, the roofline plot, trace --device, and CUDA timing
(skipped without a CUDA device)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import flowprof
from flowprof import cli
from flowprof.device import GPUS, Device, microbench, names
from flowprof.device.roofline import Bound, error_summary, percentile, predict_time
from flowprof.device.table import check_name, interpolate
from flowprof.errors import BadSpecError
from flowprof.reports.roofline_plot import MEASURED_LABEL, PREDICTED_LABEL, roofline_figure
from flowprof.reports.timeline import MEASURED_TID, PREDICTED_TID, trace_events

ROOT = Path(__file__).resolve().parent.parent
T = 1e12

# A toy device with round numbers, so that every predicted figure below is hand arithmetic.
TOY = Device(
    name="toy",
    title="toy chip",
    kind="cpu",
    matrix_flops={"fp32": 1000.0, "fp16": 2000.0},
    vector_flops=10.0,
    bandwidth=100.0,
    sources=("made up for the test",),
    call_seconds=0.5,
    op_seconds=0.25,
)


# --- the device table ----------------------------------------------------------------------------


def test_datasheet_figures_are_the_dense_ones():
    # the H100 SXM datasheet prints BF16 1,979 TFLOPS "with sparsity": dense is half, 989.4
    assert GPUS["h100"].peak("bf16") == pytest.approx(989.4 * T)
    assert GPUS["h100"].peak("fp8") == pytest.approx(1978.9 * T)
    # the H200 is the H100's GH100 compute with HBM3e: 4.8 TB/s against 3.35 TB/s
    assert GPUS["h200"].matrix_flops == GPUS["h100"].matrix_flops
    assert GPUS["h200"].bandwidth == pytest.approx(4.8e12)
    assert GPUS["h100"].bandwidth == pytest.approx(3.35e12)
    assert GPUS["a100"].peak("bf16") == pytest.approx(312 * T)  # (624 sparse)
    assert GPUS["a100"].bandwidth == pytest.approx(2.039e12)
    assert GPUS["l4"].peak("fp16") == pytest.approx(121 * T)  # (242 sparse)
    assert GPUS["l4"].bandwidth == pytest.approx(300e9)
    assert GPUS["rtx4090"].peak("bf16") == pytest.approx(165.2 * T)  # FP32 accumulate
    assert GPUS["rtx4090"].bandwidth == pytest.approx(1008e9)


def test_device_table_sanity():
    assert {"a100", "h100", "h200", "l4", "rtx4090"} <= set(GPUS)
    assert names()[:2] == ["cpu", "cuda"]
    for d in GPUS.values():
        assert d.kind == "gpu" and d.sources and all(s.strip() for s in d.sources)
        assert {"fp32", "fp16", "bf16"} <= set(d.matrix_flops)
        # tensor-core 16-bit products are faster than fp32 ones on every one of these chips
        assert d.peak("bf16") > d.peak("fp32") and d.peak("fp16") == d.peak("bf16")
        assert d.vector_flops == d.peak("fp32")  # fp32 on CUDA cores, no TF32 by default
        assert 1e11 < d.bandwidth < 1e13
        # ridge points (FLOPs per byte where the roofs meet) of modern GPUs: tens to hundreds
        assert 10 < d.ridge("bf16") < 1000
        assert Device.from_dict(json.loads(json.dumps(d.to_dict()))) == d


def test_unknown_device_and_precision_are_one_line_errors():
    with pytest.raises(BadSpecError, match="unknown device 'tpu'"):
        check_name("tpu")
    assert check_name("H100") == "h100"
    with pytest.raises(BadSpecError, match="no figure for fp8"):
        GPUS["a100"].peak("fp8")


def test_interpolation_is_linear_in_log_size():
    curve = ((10.0, 1.0), (1000.0, 3.0))
    assert interpolate(curve, 100.0) == pytest.approx(2.0)  # halfway in log10: 1 -> 2 -> 3
    assert interpolate(curve, 1.0) == 1.0 and interpolate(curve, 1e6) == 3.0  # ends held


def test_percentile_by_hand():
    # positions 0..4; 0.9 * 4 = 3.6: 4 + 0.6 * (10 - 4) = 7.6
    assert percentile([1, 2, 3, 4, 10], 0.9) == pytest.approx(7.6)


# --- the roofline by hand ------------------------------------------------------------------------


def _linear_relu_graph(dtype=None, depth=None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Sequential(nn.Linear(4, 3), nn.ReLU()))
    return flowprof.trace(model, (2, 4), dtype=dtype, depth=depth)


def test_roofline_of_a_tiny_linear_by_hand():
    p = predict_time(_linear_relu_graph(), TOY)
    lin, relu = p.blocks
    # Linear(4, 3) on 2 rows: 2*3 dot products of length 4 = 24 MACs = 48 FLOPs; the count's
    # 24 multiplications + (2*3*3 + 6 bias) = 24 additions = 48 operations: nothing beyond them
    assert lin.matrix_flops == 48 and lin.other_flops == 0
    # bytes at fp32: input 2*4*4 = 32, output 2*3*4 = 24, weights (4*3 + 3)*4 = 60: 116
    assert (lin.input_bytes, lin.output_bytes, lin.weight_bytes) == (32, 24, 60)
    assert lin.bytes == 116 and lin.intensity == pytest.approx(48 / 116)
    # compute 48 / 1000 = 0.048 s; memory 116 / 100 = 1.16 s: memory-bound
    assert lin.compute_seconds == pytest.approx(0.048)
    assert lin.memory_seconds == pytest.approx(1.16)
    assert lin.bound is Bound.MEMORY
    # + one call (0.5 s; the linear is one aten op, addmm, so no further op costs)
    assert lin.predicted_seconds == pytest.approx(1.16 + 0.5)
    # ReLU of 6 elements: 6 comparisons on the vector units, 6 / 10 = 0.6 s; bytes 24 in,
    # 24 out: 48 / 100 = 0.48 s: compute-bound, 0.6 + 0.5
    assert relu.matrix_flops == 0 and relu.other_flops == 6 and relu.bytes == 48
    assert relu.bound is Bound.COMPUTE
    assert relu.predicted_seconds == pytest.approx(0.6 + 0.5)
    assert p.predicted_seconds() == pytest.approx(1.66 + 1.1)


def test_roofline_at_fp16_halves_the_bytes_and_uses_the_fp16_peak():
    p = predict_time(_linear_relu_graph(dtype="fp16"), TOY)
    lin = p.blocks[0]
    assert p.precision == "fp16"
    assert lin.bytes == 116 / 2  # 16 + 12 + 30
    assert lin.compute_seconds == pytest.approx(48 / 2000)
    with pytest.raises(BadSpecError):
        predict_time(_linear_relu_graph(dtype="fp8"), TOY)  # the toy lists no fp8 figure


def test_a_group_is_the_sum_of_its_leaf_blocks():
    leaf = predict_time(_linear_relu_graph(), TOY)
    group = predict_time(_linear_relu_graph(depth=1), TOY)
    assert len(group.blocks) == 1
    (g,) = group.blocks
    assert g.members == 2
    assert g.predicted_seconds == pytest.approx(sum(b.predicted_seconds for b in leaf.blocks))
    # the linear (1.16 s roofline, memory) holds more time than the ReLU (0.6 s, compute)
    assert g.bound is Bound.MEMORY
    assert g.flops == 54


def test_a_fast_device_makes_the_linear_compute_bound_and_curves_refine_it():
    fast_memory = Device(
        "toy2", "toy", "cpu", {"fp32": 1000.0}, 10.0, 1e6, ("test",),
        matrix_curves={"fp32/matmul": ((10.0, 100.0), (1000.0, 1000.0))},
    )  # fmt: skip
    lin = predict_time(_linear_relu_graph(), fast_memory).blocks[0]
    # 48 FLOPs on the matmul curve: log10(48) = 1.681, (1.681 - 1) / 2 = 0.3406 of the way
    # from 100 to 1000 FLOP/s: 100 + 0.3406 * 900 = 406.5 FLOP/s
    rate = 100 + (math.log10(48) - 1) / 2 * 900
    assert lin.compute_seconds == pytest.approx(48 / rate)
    assert lin.bound is Bound.COMPUTE


def test_error_and_measured_bound():
    graph = flowprof.trace(nn.Sequential(nn.Linear(4, 3)), (2, 4), measure=False)
    p = predict_time(graph, TOY)
    import dataclasses

    b = dataclasses.replace(p.blocks[0], measured_seconds=2.0)
    # predicted 1.66 s, measured 2.0 s: error (1.66 - 2) / 2 = -17%
    assert b.error == pytest.approx(-0.17)
    # 2.0 - 0.5 overhead = 1.5 s: |ln(1.5/1.16)| = 0.26 < |ln(1.5/0.048)| = 3.44: memory, agrees
    assert b.measured_bound is Bound.MEMORY
    fast = dataclasses.replace(b, measured_seconds=0.55)  # 0.05 s after the call: compute's
    assert fast.measured_bound is Bound.COMPUTE
    s = error_summary([b, fast])
    assert s["blocks"] == 2 and s["bound_agree"] == 0.5
    assert s["median_abs_error"] == pytest.approx((0.17 + abs(1.66 - 0.55) / 0.55) / 2)


def test_predict_time_is_public_and_uses_the_measured_seconds():
    graph = flowprof.trace(nn.Sequential(nn.Linear(8, 8), nn.ReLU()), (4, 8), measure=True)
    p = flowprof.predict_time(graph, device="h100")
    assert [b.block for b in p.blocks] == [b.name for b in graph.blocks()]
    assert all(
        b.measured_seconds == g.seconds for b, g in zip(p.blocks, graph.blocks(), strict=True)
    )
    # on the H100 at fp32 a tiny linear is memory-bound: 2*4*8*8 = 1024 FLOPs / 67e12 is less
    # than its (4*8 + 4*8 + 72) * 4 = 544 bytes / 3.35e12
    assert p.blocks[0].bound is Bound.MEMORY
    assert p.blocks[0].memory_seconds == pytest.approx(544 / 3.35e12)


# --- the outputs ---------------------------------------------------------------------------------


def _measured_prediction():
    graph = flowprof.trace(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)), (4, 8),
                           measure=True)  # fmt: skip
    return predict_time(graph, TOY)


def check_trace_event_json(doc: dict) -> None:
    """The JSON Object Format of the Trace Event Format (the document chrome://tracing and
    Perfetto load): ``traceEvents`` a list of events; every event has a string ``name``, a
    one-letter ``ph`` and integer ``pid``; complete events (``X``) a numeric ``ts`` and ``dur``
    >= 0 (microseconds) and an integer ``tid``; metadata events (``M``) one of the metadata names
    with their ``args``; ``args`` an object; ``displayTimeUnit`` "ms" or "ns"."""
    assert isinstance(doc, dict) and isinstance(doc["traceEvents"], list)
    assert doc.get("displayTimeUnit", "ms") in ("ms", "ns")
    for e in doc["traceEvents"]:
        assert isinstance(e["name"], str) and isinstance(e["pid"], int)
        assert e["ph"] in ("X", "M")
        assert isinstance(e.get("args", {}), dict)
        if e["ph"] == "X":
            assert isinstance(e["tid"], int)
            assert isinstance(e["ts"], (int, float)) and isinstance(e["dur"], (int, float))
            assert e["ts"] >= 0 and e["dur"] >= 0
        else:
            assert e["name"] in ("process_name", "thread_name", "thread_sort_index")
            key = "sort_index" if e["name"] == "thread_sort_index" else "name"
            assert key in e["args"]


def test_timeline_is_valid_trace_event_json_with_two_tracks(tmp_path):
    p = _measured_prediction()
    doc = json.loads(json.dumps(trace_events(p)))  # (what is written: JSON, round trip)
    check_trace_event_json(doc)
    events = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    for tid, seconds in (
        (PREDICTED_TID, [b.predicted_seconds for b in p.blocks]),
        (MEASURED_TID, [b.measured_seconds for b in p.blocks]),
    ):
        track = [e for e in events if e["tid"] == tid]
        assert [e["name"] for e in track] == [b.block for b in p.blocks]
        assert [e["dur"] for e in track] == pytest.approx([s * 1e6 for s in seconds])
        # end to end from 0: each starts where the one before ended
        assert track[0]["ts"] == 0
        for a, b in zip(track, track[1:], strict=False):
            assert b["ts"] == pytest.approx(a["ts"] + a["dur"])
    names = {e["tid"]: e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "thread_name"}
    assert names[PREDICTED_TID].startswith("predicted") and names[MEASURED_TID].startswith("meas")


def test_roofline_plot_data_and_file(tmp_path):
    from flowprof.cli.emit import save_figure

    p = _measured_prediction()
    fig = roofline_figure(p)
    ax = fig.axes[0]
    shown = [b for b in p.blocks if b.flops > 0]
    by_label = {c.get_label(): c.get_offsets() for c in ax.collections}
    pred = by_label[PREDICTED_LABEL]
    assert [float(v) for x in pred for v in x] == pytest.approx(
        [v for b in shown for v in (b.intensity, b.flops / b.predicted_seconds)]
    )
    meas = by_label[MEASURED_LABEL]
    assert [float(v) for x in meas for v in x] == pytest.approx(
        [v for b in shown for v in (b.intensity, b.flops / b.measured_seconds)]
    )
    roof = next(line for line in ax.lines if line.get_label() == "roofline")
    assert max(roof.get_ydata()) == TOY.peak("fp32")
    written = save_figure(fig, tmp_path / "roofline")
    assert [w.name for w in written] == ["roofline.png", "roofline.svg"]
    assert written[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in written[1].read_bytes()[:400]


# --- the measured CPU and the command line -------------------------------------------------------


def test_cpu_micro_benchmarks_quick(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWPROF_DATA", str(tmp_path))
    d = microbench.measure("cpu", quick=True)
    assert d.kind == "cpu" and d.peak("fp32") > 1e8  # any CPU of this century: > 0.1 GFLOP/s
    curve = d.matrix_curves["fp32/matmul"]
    assert [s for s, _ in curve] == [2.0 * n**3 for n in (64, 256, 1024)]  # 2 n^3 FLOPs
    assert d.peak("fp32") == max(r for _, r in curve)
    # triad moves 3 arrays of 4-byte floats: 12 bytes per element, for 2^12 and 2^20 elements
    assert [s for s, _ in d.bandwidth_curve] == [12.0 * 2**12, 12.0 * 2**20]
    assert d.bandwidth == d.bandwidth_curve[-1][1] > 1e8
    assert 0 < d.op_seconds < 1e-2 and 0 < d.call_seconds < 1e-2
    path = microbench.save(d, microbench.cache_path("cpu"))
    assert path.parent == tmp_path / "device"
    again, fresh = microbench.load("cpu")
    assert not fresh and again == d  # read back from the cache, not measured again


def _cached_toy_cpu(tmp_path) -> dict:
    """A cached 'cpu' measurement of this machine (its fingerprint), with the toy's figures."""
    d = Device.from_dict(TOY.to_dict() | {"name": "cpu"})
    d = Device.from_dict(d.to_dict() | {"measured": {"fingerprint": microbench.fingerprint("cpu")}})
    return d.to_dict()


def test_trace_device_measure_writes_plot_and_timeline(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FLOWPROF_DATA", str(tmp_path / "data"))
    microbench.save(Device.from_dict(_cached_toy_cpu(tmp_path)), microbench.cache_path("cpu"))
    out = tmp_path / "out"
    rc = cli.main(["trace", "lenet5", "--measure", "--device", "cpu", "--out", str(out),
                   "--diagram", "none"])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "predicted" in text and "measured" in text and "error" in text
    assert "toy chip" in text
    check_trace_event_json(json.loads((out / "timeline.json").read_text()))
    assert (out / "roofline.png").stat().st_size > 0 and (out / "roofline.svg").is_file()


def test_trace_device_json_and_bad_name(capsys):
    assert cli.main(["trace", "lenet5", "--device", "h200", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    timing = doc["timing"]
    assert timing["device"]["name"] == "h200" and timing["precision"] == "fp32"
    assert len(timing["blocks"]) == len(doc["blocks"]) - sum(
        b["role"] != "block" for b in doc["blocks"]
    )
    bad = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "trace", "lenet5", "--device", "tpu9"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("flowprof") and "unknown device 'tpu9'" in bad.stderr


def test_device_package_imports_no_torch():
    code = "import sys, flowprof.device; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == "False"


# --- a CUDA device, when there is one ------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_measure_on_cuda_times_blocks_with_cuda_events():
    model = nn.Sequential(nn.Linear(1024, 4096), nn.ReLU(), nn.Linear(4096, 1024)).cuda()
    x = torch.randn(64, 1024, device="cuda")
    graph = flowprof.trace(model, [x], measure=True)
    assert all(b.seconds is not None and b.seconds > 0 for b in graph.blocks())
    d = microbench.measure("cuda", quick=True)
    assert d.kind == "gpu" and d.peak("bf16") > d.peak("fp32") > 1e11
    p = predict_time(graph, d)
    assert all(b.error is not None for b in p.blocks)


def test_on_a_gpu_the_launch_overlaps_the_kernels():
    gpu = Device.from_dict(TOY.to_dict() | {"kind": "gpu"})
    lin, relu = predict_time(_linear_relu_graph(), gpu).blocks
    # the linear's kernel (1.16 s, memory) outlasts its launch (0.5 s): 1.16 s, not 1.66 s;
    # the ReLU's 0.6 s too
    assert lin.predicted_seconds == pytest.approx(1.16)
    assert relu.predicted_seconds == pytest.approx(0.6)
    slow_host = Device.from_dict(gpu.to_dict() | {"call_seconds": 2.0})
    lin = predict_time(_linear_relu_graph(), slow_host).blocks[0]
    assert lin.predicted_seconds == pytest.approx(2.0)  # the GPU waits for the host
    (group,) = predict_time(_linear_relu_graph(depth=1), slow_host).blocks
    assert group.predicted_seconds == pytest.approx(2.0 + 2.0)  # the sum of its two blocks


def test_thread_clock_times_blocks_and_needs_one_thread():
    from flowprof.tracer import measure_clock

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with pytest.raises(ValueError, match="set_num_threads"), measure_clock("thread"):
            pass
        torch.set_num_threads(1)
        with measure_clock("thread"):
            graph = flowprof.trace(nn.Sequential(nn.Linear(64, 64)), (8, 64), measure=True)
        assert all(b.seconds is not None and b.seconds >= 0 for b in graph.blocks())
        with pytest.raises(ValueError, match="unknown clock"), measure_clock("sundial"):
            pass
    finally:
        torch.set_num_threads(threads)

"""How close flowprof's predicted block times come to measured ones: writes the error
distribution into BENCHMARKS.md (the section between the ``timing`` markers) and
bench/timing_results.json.

Run: ``.venv/bin/python bench/timing.py`` (about eight minutes on two shared cores;
``--repeats 2 --budget 0.3`` for a quicker one). On this CPU in fp32, for resnet18
(1x3x224x224) and the transformer at emb 1024 (seq 128, 8 heads, fp32 weights), it

1. measures the CPU's ceilings afresh before each model (flowprof/device/microbench.py: matmul,
   batched-matmul and conv ladders, STREAM, call overhead), at one thread;
2. traces each model with ``measure=True`` ``--repeats`` times and keeps each block's fastest
   measurement (each the median of the tracer's 3 runs; the ceilings are the fastest of their
   repeats too: the cores are shared with other work, and the least disturbed run is the one
   that says what the chip does; with other work running all along, a block of a few
   milliseconds needs many traces for one undisturbed measurement);
3. predicts every block (flowprof.predict_time) and compares, over the GEMM-dominated blocks
   (conv, linear, matmul: matrix products hold most of their FLOPs): the median and 90th
   percentile of |predicted - measured| / measured, and the share whose compute- or memory-bound
   label the measurement agrees with (BlockTime.measured_bound).

One thread: with torch's two threads on two cores that other work shares, every parallel region
waits for the thread that lost its core, and a 50 us add measures 7 ms; one thread is what this
machine can time. And by the thread's CPU time (``--clock thread``, the default; the blocks under
``flowprof.tracer.measure_clock("thread")``, the micro-benchmarks likewise): the time another
process held the core is not the block's, and with the other work here the load average stays
at 3 to 5 on two cores for hours; memory bandwidth and caches are still shared.

4. the training step (forward, loss, backward and Adam, flowprof.trace with ``phases=`` and
   ``measure=True``: each block's backward timed by autograd-node hooks, each block's
   optimizer step on its own, tracer/measure_step.py) ``--step-repeats`` times per model, each
   block's fastest per phase kept, and predicted per phase (flowprof.device.roofline
   .predict_phases): the backward over the same GEMM-dominated blocks (their backward's matrix
   products hold most of its FLOPs), the optimizer over the blocks with parameters among them.

With a CUDA device at hand it also runs the GPU check (a GPT-2-small-shaped
decoder, batch 8, seq 1024, bf16 forward; bench/gpt2_shaped.py) against the measured ``cuda``
device and the ``h200`` datasheet.

``--render-only`` rewrites the section from bench/timing_results.json without measuring.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "timing_results.json"
MARKDOWN = ROOT / "BENCHMARKS.md"
COMMAND = ".venv/bin/python bench/timing.py"
BEGIN, END = "<!-- timing:begin -->", "<!-- timing:end -->"
TARGETS = {"median": 0.25, "agree": 0.90, "gpu_median": 0.15, "gpu_p90": 0.30}


def _resnet18(device: str = "cpu"):
    import flowprof

    return flowprof.trace("torchvision:resnet18", measure=True)


def _transformer(device: str = "cpu"):
    import flowprof

    built = flowprof.build(
        "transformer", device="cpu", emb=1024, seq_len=128, heads=8, dtype="fp32"
    )
    return flowprof.trace(built.module, built.example_inputs("cpu"), measure=True)


CPU_MODELS: dict[str, Callable[[], Any]] = {
    "resnet18": _resnet18,
    "transformer-e1024": _transformer,
}

STEP = {"phases": ("forward", "backward", "optimizer"), "optimizer": "adam"}


def _resnet18_step():
    import flowprof

    return flowprof.trace("torchvision:resnet18", measure=True, **STEP)


def _transformer_step():
    import flowprof

    built = flowprof.build(
        "transformer", device="cpu", emb=1024, seq_len=128, heads=8, dtype="fp32"
    )
    return flowprof.trace(built.module, built.example_inputs("cpu"), measure=True, **STEP)


STEP_MODELS: dict[str, Callable[[], Any]] = {
    "resnet18": _resnet18_step,
    "transformer-e1024": _transformer_step,
}


def fastest_of(graphs: list[Any], device: Any) -> Any:
    """The prediction of ``graphs[0]`` with each block's fastest measured time of ``graphs``."""
    from flowprof.device.roofline import predict_time

    preds = [predict_time(g, device) for g in graphs]
    blocks = tuple(
        dataclasses.replace(
            b,
            measured_seconds=min(p.blocks[i].measured_seconds for p in preds),
        )
        for i, b in enumerate(preds[0].blocks)
    )
    return dataclasses.replace(preds[0], blocks=blocks)


def block_rows(prediction: Any) -> list[dict[str, Any]]:
    return [b.to_dict() | {"gemm": b.gemm_dominated} for b in prediction.blocks]


def fastest_step(graphs: list[Any], device: Any) -> dict[str, list[dict[str, Any]]]:
    """Phase -> the rows of ``graphs[0]``'s prediction of that phase, each block's measured time
    the fastest of ``graphs``; a row is GEMM-dominated (``gemm``) when the block's forward is
    (the same blocks as the forward's comparison; their backward is GEMM-dominated too)."""
    from flowprof.device.roofline import predict_phases

    per_graph = [predict_phases(g, device) for g in graphs]
    forward_gemm = {b.block for b in per_graph[0][0].blocks if b.gemm_dominated}
    out: dict[str, list[dict[str, Any]]] = {}
    for i, first in enumerate(per_graph[0]):
        rows = []
        for j, b in enumerate(first.blocks):
            times = [p[i].blocks[j].measured_seconds for p in per_graph]
            best = min((t for t in times if t is not None), default=None)
            fastest = dataclasses.replace(b, measured_seconds=best)
            rows.append(fastest.to_dict() | {"gemm": b.block in forward_gemm})
        out[first.phase] = rows
    return out


def run_cpu(
    repeats: int, budget: float, clock: str, say: Callable[[str], None], step_repeats: int = 0
) -> dict[str, Any]:
    import torch

    from flowprof.device import microbench
    from flowprof.tracer import measure_clock

    torch.set_num_threads(1)
    models, devices, steps = {}, {}, {}
    for key, trace in CPU_MODELS.items():
        # the ceilings measured again right before each model's traces: the other work on the
        # shared cores comes and goes, and both sides of the comparison should see the same
        say(f"{key}: measuring the CPU's ceilings (one thread), then {repeats} measured traces")
        device = microbench.measure("cpu", budget=budget, clock=clock)
        with measure_clock(clock):
            graphs = [trace() for _ in range(repeats)]
        models[key] = block_rows(fastest_of(graphs, device))
        devices[key] = device.to_dict()
        if step_repeats:
            say(f"{key}: {step_repeats} measured training steps (Adam)")
            with measure_clock(clock):
                graphs = [STEP_MODELS[key]() for _ in range(step_repeats)]
            steps[key] = fastest_step(graphs, device)
    # (not cached for trace --device cpu: that one is timed by the wall clock, as --measure is)
    return {
        "device": device.to_dict(),  # the last one
        "devices": devices,
        "threads": 1,
        "clock": clock,
        "repeats": repeats,
        "models": models,
        "step": {"repeats": step_repeats, "optimizer": STEP["optimizer"], "models": steps},
    }


def run_gpu(repeats: int, say: Callable[[str], None]) -> dict[str, Any] | None:
    """The GPT-2-small-shaped decoder on the CUDA device at hand; None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    import flowprof
    from bench.gpt2_shaped import GPT2Shaped
    from flowprof.device import GPUS, microbench

    say("measuring the CUDA device's ceilings")
    measured = microbench.measure("cuda")
    model = GPT2Shaped().to(device="cuda", dtype=torch.bfloat16).eval()
    ids = torch.randint(0, 50257, (8, 1024), device="cuda")
    say(f"gpt2-small b8 s1024 bf16: {repeats} measured traces")
    graphs = [flowprof.trace(model, [ids], measure=True) for _ in range(repeats)]
    return {
        "gpu": torch.cuda.get_device_name(),
        "device": measured.to_dict(),
        "repeats": repeats,
        "models": {
            "gpt2-small-b8-s1024 (measured cuda)": block_rows(fastest_of(graphs, measured)),
            "gpt2-small-b8-s1024 (h200 datasheet)": block_rows(fastest_of(graphs, GPUS["h200"])),
        },
    }


# --- the summary ----------------------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float:
    from flowprof.device.roofline import percentile

    return percentile(values, q)


def stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Over ``rows`` (BlockTime dicts): |error| quantiles, signed median, bound agreement."""
    measured = [r for r in rows if r["error"] is not None]
    if not measured:
        return {"blocks": 0}
    errors = [abs(r["error"]) for r in measured]
    return {
        "blocks": len(measured),
        "median": quantile(errors, 0.5),
        "p10": quantile(errors, 0.1),
        "p25": quantile(errors, 0.25),
        "p75": quantile(errors, 0.75),
        "p90": quantile(errors, 0.9),
        "max": max(errors),
        "signed_median": quantile([r["error"] for r in measured], 0.5),
        "agree": sum(r["bound"] == r["measured_bound"] for r in measured) / len(measured),
        "compute_bound": sum(r["bound"] == "compute" for r in measured),
    }


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}" if abs(x) >= 0.1 else f"{x:.1%}"


def us(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:.2f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.0f} us"


def markdown(results: dict[str, Any]) -> str:
    """The BENCHMARKS.md section, between the markers; every sentence from the numbers."""
    cpu = results["cpu"]
    dev = cpu["device"]
    gemm = [r for rows in cpu["models"].values() for r in rows if r["gemm"]]
    s = stats(gemm)
    ok_median = s["median"] <= TARGETS["median"]
    ok_agree = s["agree"] >= TARGETS["agree"]
    peaks = dev["matrix_flops"]
    triad = dev["bandwidth"]
    copy = dev["measured"]["stream_copy"][-1][1]
    per_model = "; ".join(
        f"before {k}: {d['matrix_flops']['fp32'] / 1e9:.1f} GFLOP/s, "
        f"{d['bandwidth'] / 1e9:.1f} GB/s"
        for k, d in cpu.get("devices", {}).items()
    )
    out = [
        BEGIN,
        "## Time: predicted vs measured per block",
        "",
        f"Generated by `bench/timing.py` (`{results['command']}`) on {results['started']}; load "
        f"average {'/'.join(f'{x:.2f}' for x in results['load']['start'])} at the start, "
        f"{'/'.join(f'{x:.2f}' for x in results['load']['end'])} at the end (the two cores are "
        "shared with other work).",
        "",
        f"- Device `cpu`, measured: {dev['title']}; matrix peak (largest-GEMM ceiling) "
        f"{peaks['fp32'] / 1e9:.1f} GFLOP/s fp32; STREAM triad {triad / 1e9:.1f} GB/s, copy "
        f"{copy / 1e9:.1f} GB/s (main memory); call overhead {dev['call_seconds'] * 1e6:.1f} us "
        f"per block, {dev['op_seconds'] * 1e6:.1f} us per further op"
        + (f" (measured before each model: {per_model})." if per_model else "."),
        f"- GEMM-dominated blocks (conv, linear, matmul) of resnet18 and the transformer at emb "
        f"1024, fp32, one thread, timed by "
        f"{'the thread' + chr(39) + 's CPU time' if cpu.get('clock') == 'thread' else 'wall time'}"
        f", each block's fastest of {cpu['repeats']} measured traces: {s['blocks']} blocks.",
        f"  - median |predicted - measured| / measured: **{pct(s['median'])}** (target at most "
        f"{pct(TARGETS['median'])}: {'met' if ok_median else '**not met**'}); 90th percentile "
        f"{pct(s['p90'])}; signed median {s['signed_median']:+.0%} (negative: predicted too "
        "fast).",
        f"  - bound label agrees with the measurement on **{pct(s['agree'])}** (target at least "
        f"{pct(TARGETS['agree'])}: {'met' if ok_agree else '**not met**'}); "
        f"{s['compute_bound']} of {s['blocks']} are predicted compute-bound.",
        "",
        "Error distribution, |predicted - measured| / measured:",
        "",
        "| blocks | n | p10 | p25 | median | p75 | p90 | max | signed median | bound agrees |",
        "| :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def row(name: str, rows: list[dict[str, Any]]) -> str:
        t = stats(rows)
        if not t["blocks"]:
            return f"| {name} | 0 | | | | | | | | |"
        return (
            f"| {name} | {t['blocks']} | {pct(t['p10'])} | {pct(t['p25'])} | {pct(t['median'])} "
            f"| {pct(t['p75'])} | {pct(t['p90'])} | {pct(t['max'])} | {t['signed_median']:+.0%} "
            f"| {pct(t['agree'])} |"
        )

    out.append(row("GEMM-dominated, both models", gemm))
    for key, rows in cpu["models"].items():
        out.append(row(f"{key}, GEMM-dominated", [r for r in rows if r["gemm"]]))
        out.append(row(f"{key}, every block", rows))
    gpu = results.get("gpu")
    out += [""]
    if gpu:
        out += [f"On {gpu['gpu']}, the GPT-2-small-shaped decoder (batch 8, seq 1024, bf16):", ""]
        out += [
            "| blocks | n | p10 | p25 | median | p75 | p90 | max | signed median | bound agrees |",
            "| :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for key, rows in gpu["models"].items():
            out.append(row(key, rows))
        out.append("")
    else:
        out += [
            "GPU check (GPT-2-small-shaped decoder, batch 8, seq 1024, bf16, on an H200): not run, "
            "no CUDA device on this machine; `bench/timing.py` runs it where there is one.",
            "",
        ]
    out += step_markdown(cpu.get("step"))
    out += [
        "GEMM-dominated blocks, one by one (forward):",
        "",
        "| model | block | kind | GFLOP | MB moved | FLOP/B | bound (pred / meas) | predicted "
        "| measured | error |",
        "| :--- | :--- | :--- | ---: | ---: | ---: | :--- | ---: | ---: | ---: |",
    ]
    for key, rows in cpu["models"].items():
        for r in rows:
            if r["gemm"]:
                out.append(
                    f"| {key} | {r['block']} | {r['kind']} | {r['flops'] / 1e9:.3f} | "
                    f"{r['bytes'] / 1e6:.2f} | {r['intensity']:.1f} | {r['bound']} / "
                    f"{r['measured_bound']} | {us(r['predicted_seconds'])} | "
                    f"{us(r['measured_seconds'])} | {r['error']:+.0%} |"
                )
    out += [
        "",
        "How: each block's predicted time is the roofline, max(FLOPs / rate, bytes / "
        "bandwidth), plus the call overhead, with the rate read from the measured matmul or "
        "conv ladder at the block's FLOPs and the bandwidth from the STREAM-triad ladder at its "
        "bytes (flowprof/device/roofline.py explains each refinement). Bytes are inputs, "
        "outputs and weights at fp32. The measured bound is the roofline term the measured time "
        "(less the call overhead) is nearer to, in ratio. The training step's backward: the "
        "same roofline on the backward's counts, its bytes the incoming gradients, the saved "
        "inputs, the input gradients written, the weights read (when an input gradient is "
        "computed) and the weight gradients written, its matrix rate read from the measured "
        "backward ladders; the optimizer's: its operations over the vector rate, its bytes the "
        "passes torch.optim's for-loop makes over parameters, gradients and state, plus the "
        "measured per-step and per-op costs of the optimizer's Python loop.",
        END,
    ]
    return "\n".join(out) + "\n"


def _table_rows(name: str, rows: list[dict[str, Any]]) -> str:
    t = stats(rows)
    if not t["blocks"]:
        return f"| {name} | 0 | | | | | | | | |"
    return (
        f"| {name} | {t['blocks']} | {pct(t['p10'])} | {pct(t['p25'])} | {pct(t['median'])} "
        f"| {pct(t['p75'])} | {pct(t['p90'])} | {pct(t['max'])} | {t['signed_median']:+.0%} "
        f"| {pct(t['agree'])} |"
    )


WORST = 6  # worst blocks listed per phase


def step_markdown(step: dict[str, Any] | None) -> list[str]:
    """The training step's lines: the backward's and the optimizer's error distributions over
    the GEMM-dominated blocks, and the worst blocks of each."""
    if not step or not step.get("models"):
        return [
            "Training step (backward, optimizer): not measured in this run (`--step-repeats 0`).",
            "",
        ]
    models = step["models"]
    out = [
        f"### Training step: backward and optimizer ({step['optimizer']}), predicted vs measured",
        "",
        "The same models traced as a training step (`phases=(forward, backward, optimizer)`, "
        f"`optimizer={step['optimizer']!r}`, `measure=True`), each block's fastest of "
        f"{step['repeats']} measured steps per phase: the backward timed per block by "
        "autograd-node hooks (pre-hook to post-hook of the nodes each block's forward made), the "
        "optimizer by one optimizer per block's parameters, each `step()` timed "
        "(flowprof/tracer/measure_step.py). The blocks are those of the forward's comparison "
        "(GEMM-dominated forward); the optimizer's are the ones among them with parameters "
        "(attention's products have none).",
        "",
    ]
    for phase in ("backward", "optimizer"):
        rows = [r for m in models.values() for r in m.get(phase, []) if r["gemm"]]
        s = stats(rows)
        if not s["blocks"]:
            continue
        ok = s["median"] <= TARGETS["median"]
        out.append(
            f"- {phase}: {s['blocks']} blocks, median |predicted - measured| / measured "
            f"**{pct(s['median'])}** (the forward's target, at most {pct(TARGETS['median'])}: "
            f"{'met' if ok else '**not met**'}); 90th percentile {pct(s['p90'])}; signed "
            f"median {s['signed_median']:+.0%}; bound label agrees on {pct(s['agree'])}."
        )
    out += [
        "",
        "| blocks | n | p10 | p25 | median | p75 | p90 | max | signed median | bound agrees |",
        "| :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for phase in ("forward", "backward", "optimizer"):
        both = [r for m in models.values() for r in m.get(phase, []) if r["gemm"]]
        if phase == "forward":
            label = "forward in train mode (for reference), both models"
        else:
            label = f"{phase}, both models"
        out.append(_table_rows(label, both))
        for key, m in models.items():
            if phase != "forward":
                out.append(
                    _table_rows(f"{phase}, {key}", [r for r in m.get(phase, []) if r["gemm"]])
                )
    for phase in ("backward", "optimizer"):
        rows = [(k, r) for k, m in models.items() for r in m.get(phase, []) if r["gemm"]]
        rows = [(k, r) for k, r in rows if r["error"] is not None]
        if not rows:
            continue
        worst = sorted(rows, key=lambda kr: -abs(kr[1]["error"]))[:WORST]
        out += [
            "",
            f"Worst {phase} blocks:",
            "",
            "| model | block | kind | GFLOP | MB moved | compute | memory | overhead | predicted "
            "| measured | error |",
            "| :--- | :--- | :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for key, r in worst:
            out.append(
                f"| {key} | {r['block']} | {r['kind']} | {r['flops'] / 1e9:.3f} | "
                f"{r['bytes'] / 1e6:.2f} | {us(r['compute_seconds'])} | "
                f"{us(r['memory_seconds'])} | {us(r['overhead_seconds'])} | "
                f"{us(r['predicted_seconds'])} | {us(r['measured_seconds'])} | "
                f"{r['error']:+.0%} |"
            )
    out.append("")
    return out


def insert_section(text: str, section: str, begin: str = BEGIN, end: str = END) -> str:
    """``text`` with the section between the markers replaced (appended if it has none); other
    scripts' sections (bench/formula_speed.py) pass their own markers."""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        return head + section + ("\n" + tail if tail else "")
    return text.rstrip("\n") + "\n\n" + section


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def wait_for_load(threshold: float, max_wait_s: float, say: Callable[[str], None]) -> None:
    """Wait until the 1-minute load average is below ``threshold`` or ``max_wait_s`` passed."""
    deadline = time.time() + max_wait_s
    while os.getloadavg()[0] >= threshold and time.time() < deadline:
        say(f"load average {os.getloadavg()[0]:.2f} >= {threshold}: waiting")
        time.sleep(15)


def write(results: dict[str, Any], results_path: Path, markdown_path: Path) -> None:
    from flowprof import atomic

    atomic.write_bytes(results_path, (json.dumps(results, indent=1) + "\n").encode())
    old = markdown_path.read_text() if markdown_path.is_file() else ""
    atomic.write_bytes(markdown_path, insert_section(old, markdown(results)).encode())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=20, help="measured traces per model (20)")
    p.add_argument(
        "--budget",
        type=float,
        default=1.0,
        help="seconds each micro-benchmark point repeats for (1.0; the fastest repeat counts)",
    )
    p.add_argument(
        "--wait-for-load",
        type=float,
        metavar="L",
        help="first wait (up to --max-wait s) until the 1-minute load average is below L",
    )
    p.add_argument("--max-wait", type=float, default=600.0)
    p.add_argument(
        "--clock",
        choices=("thread", "wall"),
        default="thread",
        help="time the CPU (blocks and micro-benchmarks alike) by this thread's CPU time "
        "(default: other processes on the shared cores do not count) or by wall time",
    )
    p.add_argument(
        "--step-repeats",
        type=int,
        default=10,
        help="measured training steps per model (10; 0: the forward only)",
    )
    p.add_argument("--render-only", action="store_true")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--markdown", type=Path, default=MARKDOWN)
    args = p.parse_args(argv)

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.render_only:
        write(json.loads(args.results.read_text()), args.results, args.markdown)
        say(f"rewrote the timing section of {args.markdown} from {args.results}")
        return 0
    started = time.time()
    results: dict[str, Any] = {
        "command": " ".join([COMMAND, *(argv if argv is not None else sys.argv[1:])]),
    }
    if args.wait_for_load is not None:
        wait_for_load(args.wait_for_load, args.max_wait, say)
    results["started"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    results["load"] = {"start": load_average()}
    results["cpu"] = run_cpu(args.repeats, args.budget, args.clock, say, args.step_repeats)
    results["gpu"] = run_gpu(args.repeats, say)
    results["load"]["end"] = load_average()
    results["duration_s"] = round(time.time() - started, 1)
    write(results, args.results, args.markdown)
    for line in markdown(results).splitlines()[3:9]:
        say(line)
    say(f"wrote {args.markdown} (timing section) and {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

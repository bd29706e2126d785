"""flowprof and its peers, one adapter per tool, each measured in a fresh subprocess.

An adapter takes a constructed model and its example inputs and returns the number of
multiply-accumulates (MACs) the tool reports, converted to MACs: fvcore's "flops", thop's "ops",
ptflops' "MACs" and torchinfo's "mult-adds" count one per multiply-accumulate, while
FlopCounterMode reports FLOPs = 2 x MACs (tests/test_peers.py reads each peer's source for where
its number differs from the truth; this file reuses those calls).

:func:`run_isolated` runs one tool on one model in a child process (``python bench/peers.py
--child``), so that each tool's peak memory is its own and a crash, an out-of-memory or a hang of
one tool does not stop the benchmark. The child:

1. imports torch, the model registry and the tool (timed: ``import_s``), then reads its resident
   high-water mark (VmHWM in /proc/self/status): the import baseline;
2. optionally caps its address space at that footprint plus ``mem_limit_bytes`` (RLIMIT_AS), so a
   tool that needs more fails with an allocation error, recorded as "out of memory";
3. builds the model (on ``meta`` for flowprof, which allocates no weights; on ``cpu`` with real
   weights for the peers, which run the model), timed (``build_s``);
4. resets the high-water mark (writing 5 to /proc/self/clear_refs), runs the analysis ``warmup``
   times untimed and ``repeats`` times timed, and reads VmHWM again.

Memory is reported as bytes above the import baseline: ``peak_bytes`` over the whole child
(weights included), ``analysis_peak_bytes`` over the resident size just before the analysis.
The parent polls the child's VmHWM too, so a child killed for taking too long still reports the
memory it had reached.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# --- the tools -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tool:
    """A tool: how it is labelled, which module it imports, what unit it reports."""

    name: str
    module: str  # imported (and timed) before the model is built
    unit: str  # what the raw number counts
    per_mac: int  # raw units per multiply-accumulate
    meta: bool  # True: traces a model on the meta device (no weights, nothing run)


TOOLS: dict[str, Tool] = {
    t.name: t
    for t in (
        Tool("flowprof", "flowprof.tracer", "MACs", 1, meta=True),
        Tool("fvcore", "fvcore.nn", "flops (= MACs)", 1, meta=False),
        Tool("thop", "thop", "ops (= MACs)", 1, meta=False),
        Tool("ptflops", "ptflops", "MACs", 1, meta=False),
        Tool("ptflops-aten", "ptflops", "MACs", 1, meta=False),
        Tool("torchinfo", "torchinfo", "mult-adds (= MACs)", 1, meta=False),
        Tool("FlopCounterMode", "torch.utils.flop_counter", "FLOPs (= 2 x MACs)", 2, meta=False),
    )
}
PEERS = [name for name, tool in TOOLS.items() if not tool.meta]


@contextlib.contextmanager
def quiet():
    """Peers print tables, progress and warnings: keep the benchmark's output clean.

    Yields the buffer that holds what they printed (ptflops prints the exceptions it catches).
    """
    logging.disable(logging.WARNING)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            yield printed
    finally:
        logging.disable(logging.NOTSET)


def count_flowprof(model, inputs: Sequence[Any]) -> int:
    from flowprof import tracer

    return tracer.trace(model, list(inputs)).total().macs


def count_fvcore(model, inputs: Sequence[Any]) -> int:
    from fvcore.nn import FlopCountAnalysis

    with quiet():
        analysis = FlopCountAnalysis(model, tuple(inputs))
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        return int(analysis.total())


def count_thop(model, inputs: Sequence[Any]) -> int:
    import thop

    with quiet():
        ops, _params = thop.profile(model, inputs=tuple(inputs), verbose=False)
    return int(ops)


def _ptflops(model, inputs: Sequence[Any], backend: str) -> int:
    import ptflops

    names = _forward_names(model, len(inputs))
    with quiet() as printed:
        macs, _params = ptflops.get_model_complexity_info(
            model,
            tuple(inputs[0].shape[1:]),  # ignored: the constructor below gives the real inputs
            input_constructor=lambda _res: dict(zip(names, inputs, strict=True)),
            as_strings=False,
            print_per_layer_stat=False,
            backend=backend,
        )
    if macs is None:  # ptflops catches the model's exception, prints it and returns None
        lines = printed.getvalue().strip().splitlines()
        cause = next(
            (line for line in lines if line.startswith("<class")), lines[-1] if lines else ""
        )
        raise RuntimeError(f"ptflops ({backend} backend) returned no count: {cause[:300]}")
    return int(macs)


def count_ptflops(model, inputs: Sequence[Any]) -> int:
    return _ptflops(model, inputs, "pytorch")


def count_ptflops_aten(model, inputs: Sequence[Any]) -> int:
    return _ptflops(model, inputs, "aten")


def count_torchinfo(model, inputs: Sequence[Any]) -> int:
    import torchinfo

    with quiet():
        return int(torchinfo.summary(model, input_data=list(inputs), verbose=0).total_mult_adds)


def count_flop_counter(model, inputs: Sequence[Any]) -> int:
    """FLOPs as PyTorch documents the call: grad mode left as it is (enabled)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model(*inputs)
    return int(counter.get_total_flops())


COUNTERS: dict[str, Callable[[Any, Sequence[Any]], int]] = {
    "flowprof": count_flowprof,
    "fvcore": count_fvcore,
    "thop": count_thop,
    "ptflops": count_ptflops,
    "ptflops-aten": count_ptflops_aten,
    "torchinfo": count_torchinfo,
    "FlopCounterMode": count_flop_counter,
}


def _forward_names(model, n: int) -> list[str]:
    """The names of the first ``n`` parameters of ``model.forward`` (ptflops passes kwargs)."""
    import inspect

    params = list(inspect.signature(model.forward).parameters)
    return params[:n]


# --- the models and their exact totals -----------------------------------------------------------


def lenet5_macs() -> int:
    """The paper's LeNet-5 (1x1x32x32): convolution and full-connection MACs, no biases."""
    c3_connections = 6 * 3 + 6 * 4 + 3 * 4 + 1 * 6  # Table I: input maps read by the 16 maps: 60
    return (
        28 * 28 * 6 * 25  # C1: 28x28 outputs x 6 maps x 5x5 taps = 117,600
        + 10 * 10 * c3_connections * 25  # C3: 10x10 outputs x 60 map connections x 25 = 150,000
        + 120 * 16 * 25  # C5: 120 units x 16 maps x 5x5 = 48,000
        + 84 * 120  # F6: 10,080 (the RBF output is distances, not MACs)
    )  # = 325,680


def lenet5_dws_macs() -> int:
    """The depthwise-separable twin: each KxK convolution is a depthwise KxK on its input maps
    then a pointwise 1x1 (C3's pointwise keeps Table I)."""
    return (
        28 * 28 * 1 * 25
        + 28 * 28 * 6 * 1  # C1: depthwise on 1 map + pointwise 1 -> 6 = 24,304
        + 10 * 10 * 6 * 25
        + 10 * 10 * 60  # C3: depthwise on 6 maps + Table I pointwise = 21,000
        + 1 * 1 * 16 * 25
        + 120 * 16  # C5: depthwise on 16 maps + pointwise 16 -> 120 = 2,320
        + 84 * 120  # F6: 10,080
    )  # = 57,704


def transformer_macs(emb: int, seq_len: int, ffn: int | None = None) -> int:
    """One encoder and one decoder layer, source and target of ``seq_len`` tokens, batch 1.

    Encoder: q, k, v, out projections 4 L E^2, Q K^T and A V 2 L^2 E, FFN 2 L E F. Decoder:
    the same self-attention and FFN, plus cross-attention (q and out from the target, k and v
    from the memory: 4 L E^2; scores and context 2 L^2 E). Heads split E, not the products.
    """
    f, e, n = ffn or 4 * emb, emb, seq_len
    encoder = 4 * n * e * e + 2 * n * n * e + 2 * n * e * f
    decoder = 4 * n * e * e + 2 * n * n * e + 4 * n * e * e + 2 * n * n * e + 2 * n * e * f
    return encoder + decoder


# torchvision's totals are derived by hand in tests/test_peers.py (stage tables walked layer by
# layer, checked against the built modules) and written out there:
RESNET18_MACS = 1_814_073_344
MOBILENET_V2_MACS = 300_774_272
VIT_B_16_MACS = 17_563_828_224


@dataclass(frozen=True)
class ModelSpec:
    """A benchmark model: a key, the registry name and options it is built from, its truth."""

    key: str
    name: str
    options: dict[str, Any] = field(default_factory=dict)
    exact_macs: int | None = None


def transformer_spec(emb: int, seq_len: int = 128, heads: int = 8) -> ModelSpec:
    key = f"transformer-e{emb}" + (f"-s{seq_len}" if seq_len != 128 else "")
    options = {"emb": emb, "seq_len": seq_len, "heads": heads}
    return ModelSpec(key, "transformer", options, transformer_macs(emb, seq_len))


MODELS: dict[str, ModelSpec] = {
    m.key: m
    for m in (
        ModelSpec("lenet5", "lenet5", {}, lenet5_macs()),
        ModelSpec("lenet5-dws", "lenet5-dws", {}, lenet5_dws_macs()),
        transformer_spec(256),
        transformer_spec(1024),
        ModelSpec("resnet18", "torchvision:resnet18", {}, RESNET18_MACS),
        ModelSpec("mobilenet_v2", "torchvision:mobilenet_v2", {}, MOBILENET_V2_MACS),
        ModelSpec("vit_b_16", "torchvision:vit_b_16", {}, VIT_B_16_MACS),
    )
}


def build(spec: ModelSpec, device: str):
    """Build ``spec`` on ``device``; returns (module, example inputs on that device).

    The transformer is fp16: it is built with fp16 as the default dtype so that real weights are
    allocated once, in fp16 (the registry would otherwise create fp32 weights and cast them, which
    needs three times the memory at construction).
    """
    import torch

    from flowprof.models import registry

    dtype = spec.options.get("dtype", torch.float16) if spec.name == "transformer" else None
    previous = torch.get_default_dtype()
    if dtype is not None and device != "meta":
        torch.set_default_dtype(dtype)
    try:
        built = registry.build(spec.name, device=device, **spec.options)
    finally:
        torch.set_default_dtype(previous)
    generator = torch.Generator().manual_seed(0)
    return built.module, built.example_inputs(device, generator)


# --- memory --------------------------------------------------------------------------------------


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """The Vm* lines of /proc/PID/status, in bytes (empty when the process is gone)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Vm") and line.rstrip().endswith("kB"):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def reset_peak() -> bool:
    """Reset this process's VmHWM to its current resident size (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def is_out_of_memory(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    return isinstance(exc, MemoryError) or any(
        s in text for s in ("can't allocate memory", "cannot allocate memory", "bad_alloc", "oom")
    )


# --- the child: one tool on one model ------------------------------------------------------------


class _Peaks:
    """The resident high-water mark over the whole child, across resets of VmHWM."""

    def __init__(self) -> None:
        self.base = proc_status().get("VmHWM", 0)
        self.overall = self.base

    def reset(self) -> int:
        """Start a new phase; returns the resident size it starts from."""
        self.overall = max(self.overall, proc_status().get("VmHWM", 0))
        reset_peak()
        return proc_status().get("VmRSS", 0)

    def since(self, start: int) -> int:
        """Bytes above ``start`` at this phase's peak."""
        return proc_status().get("VmHWM", 0) - start

    def total(self) -> int:
        """Bytes above the import baseline at the child's peak."""
        return max(self.overall, proc_status().get("VmHWM", 0)) - self.base


def measure(
    tool: str,
    spec: ModelSpec,
    repeats: int = 5,
    warmup: int = 1,
    mem_limit_bytes: int | None = None,
    threads: int | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Import, build, count (see the module docstring); run in the child, or in-process by tests.

    ``threads``: torch's CPU threads; None tries 1 and torch's default after the first call and
    keeps the faster (on a shared machine, a second thread that is not scheduled stalls every
    parallel region of a small model; a big model gains from it). ``on_phase`` is told "build"
    and "analysis" as each starts (the parent's time limit applies to each phase).

    The first analysis call is timed on its own (``first_s``: it also pays the tool's lazy
    imports and caches); the ``repeats`` calls after ``warmup`` are the warm ``seconds``.
    """
    import importlib

    started = time.perf_counter()
    import torch

    import flowprof.models.registry  # noqa: F401  (building a model is the user's step, not the tool's)

    if spec.name.startswith("torchvision:"):
        import torchvision  # noqa: F401
    torch_s = time.perf_counter() - started
    importlib.import_module(TOOLS[tool].module)
    peaks = _Peaks()
    result: dict[str, Any] = {
        "tool": tool,
        "model": spec.key,
        "torch_import_s": torch_s,
        "import_s": time.perf_counter() - started,
        "import_rss_bytes": peaks.base,
        "default_threads": torch.get_num_threads(),
        "device": "meta" if TOOLS[tool].meta else "cpu",
        "peak_reset": reset_peak(),
    }
    if threads is not None:
        torch.set_num_threads(threads)
    if mem_limit_bytes is not None:
        import resource

        limit = proc_status().get("VmSize", 0) + mem_limit_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        result["address_space_limit_bytes"] = limit
    counter = COUNTERS[tool]
    stage = "build"
    phase = on_phase or (lambda name: None)
    try:
        phase(stage)
        t = time.perf_counter()
        model, inputs = build(spec, result["device"])
        result["build_s"] = time.perf_counter() - t
        result["build_peak_bytes"] = peaks.since(peaks.base)
        stage = "analysis"
        phase(stage)
        start = peaks.reset()
        t = time.perf_counter()
        counts = [counter(model, inputs)]
        result["first_s"] = time.perf_counter() - t
        result["first_peak_bytes"] = peaks.since(start)
        seconds = [] if warmup else [result["first_s"]]
        if warmup:
            if threads is None:
                result["thread_trials_s"] = _pick_threads(counter, model, inputs)
            for _ in range(warmup - 1):
                counter(model, inputs)
            start = peaks.reset()
        while len(seconds) < repeats:
            t = time.perf_counter()
            counts.append(counter(model, inputs))
            seconds.append(time.perf_counter() - t)
        result["threads"] = torch.get_num_threads()
        result.update(
            status="ok",
            raw_count=counts[-1],
            consistent=len(set(counts)) == 1,
            macs=counts[-1] // TOOLS[tool].per_mac,
            seconds=seconds,
            analysis_peak_bytes=peaks.since(start),
        )
    except Exception as exc:  # a tool failing on a model is a result, not a crash of the bench
        message = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        result.update(
            status="out of memory" if is_out_of_memory(exc) else "error",
            stage=stage,
            error=f"{type(exc).__name__}: {message}",
        )
    finally:
        torch.set_num_threads(result["default_threads"])
    result["peak_bytes"] = peaks.total()
    return result


def _pick_threads(counter, model, inputs) -> dict[int, float]:
    """Time a call at torch's default thread count and one at 1 thread; keep the faster."""
    import torch

    trials = {}
    for n in sorted({1, torch.get_num_threads()}, reverse=True):
        torch.set_num_threads(n)
        t = time.perf_counter()
        counter(model, inputs)
        trials[n] = time.perf_counter() - t
    torch.set_num_threads(min(trials, key=trials.__getitem__))
    return trials


def _child(argv: list[str]) -> None:
    job = json.loads(argv[0])  # run_isolated's job: measure's arguments, the spec as a dict
    spec = ModelSpec(**job.pop("spec"))
    out = Path(argv[1])
    phases = out.with_suffix(".phase")

    def on_phase(name: str) -> None:
        with open(phases, "a") as f:
            f.write(f"{name} {time.perf_counter()}\n")

    result = measure(job.pop("tool"), spec, on_phase=on_phase, **job)
    out.write_text(json.dumps(result))


# --- the parent ----------------------------------------------------------------------------------


def _last_phase(path: Path) -> str | None:
    """The phase the child last announced (see :func:`measure`'s ``on_phase``)."""
    try:
        words = path.read_text().split()
    except FileNotFoundError:
        return None
    return words[-2] if len(words) >= 2 else None


def run_isolated(
    tool: str,
    spec: ModelSpec,
    repeats: int = 5,
    warmup: int = 1,
    time_limit_s: float | None = None,
    mem_limit_bytes: int | None = None,
    threads: int | None = None,
    poll_s: float = 0.1,
) -> dict[str, Any]:
    """Measure ``tool`` on ``spec`` in a fresh Python process; always returns a result dict.

    ``status`` is "ok", "out of memory", "timeout" (killed after ``time_limit_s`` of wall time
    for imports and build, or as long again for the analysis), "error" (the tool raised;
    ``error`` says what) or "crashed" (the process died without a result, e.g. by a signal).
    ``threads``: see :func:`measure`.
    """
    job = {
        "tool": tool,
        "spec": {"key": spec.key, "name": spec.name, "options": spec.options},
        "repeats": repeats,
        "warmup": warmup,
        "mem_limit_bytes": mem_limit_bytes,
        "threads": threads,
    }
    with tempfile.TemporaryDirectory(prefix="flowprof-bench-") as tmp:
        out = Path(tmp) / "result.json"
        log = Path(tmp) / "log.txt"
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
        )
        started = time.perf_counter()
        with open(log, "wb") as log_file:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--child",
                    json.dumps(job),
                    str(out),
                ],
                cwd=ROOT,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
            seen_peak, timed_out, phase, phase_started = 0, False, "build", started
            while proc.poll() is None:
                seen_peak = max(seen_peak, proc_status(proc.pid).get("VmHWM", 0))
                if phase == "build" and _last_phase(out.with_suffix(".phase")) == "analysis":
                    phase, phase_started = "analysis", time.perf_counter()  # its own time limit
                if time_limit_s is not None and time.perf_counter() - phase_started > time_limit_s:
                    proc.kill()
                    timed_out = True
                    proc.wait()
                    break
                time.sleep(poll_s)
        wall_s = time.perf_counter() - started
        if out.exists():
            result = json.loads(out.read_text())
        else:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            result = {"tool": tool, "model": spec.key}
            if timed_out:
                what = "of analysis" if phase == "analysis" else "of import and build"
                result.update(
                    status="timeout", stage=phase, error=f"killed after {time_limit_s:.0f} s {what}"
                )
            else:
                result.update(
                    status="crashed",
                    error=f"exit status {proc.returncode}: " + " | ".join(tail)[-300:],
                )
            result["seen_peak_rss_bytes"] = seen_peak
    result["wall_s"] = wall_s
    result["exact_macs"] = spec.exact_macs
    if result.get("status") == "ok" and spec.exact_macs:
        result["error_pct"] = 100 * (result["macs"] - spec.exact_macs) / spec.exact_macs
    if result.get("seconds"):
        s = sorted(result["seconds"])
        result["median_s"] = statistics.median(s)
        result["min_s"], result["max_s"] = s[0], s[-1]
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.path.insert(0, str(ROOT))
        _child(sys.argv[2:])
    else:
        sys.exit("usage: run bench/run.py; this module is its adapters (--child is internal)")

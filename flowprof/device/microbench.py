"""Ceilings of a device at hand, measured by micro-benchmarks, and the file they are cached in.

What is measured (:func:`measure`), each the fastest of several timed repeats after a warm-up (a
ceiling is what the chip does when nothing else runs; the fixed call costs take the median):

- **matrix products**: square matmuls ``(n, n) @ (n, n)`` for a ladder of ``n`` (2 n^3 FLOPs
  each; the second operand, the weight, cold: each repeat reads the next of several copies that
  together overflow the last-level cache, as each layer of a model reads its own weight, which
  the rest of the pass has evicted), batched ones ``(8, n, n) @ (8, n, n)`` (attention's
  per-head products: 16 n^3; both operands warm, as activations just written are) and 3x3
  convolutions of ``c`` to ``c`` channels on a 32x32 image (weights cold too) for a ladder of
  ``c`` (2 x 9 c^2 x 32^2 FLOPs): achieved FLOP/s by FLOPs, one curve per op class. The peak is the
  best rate of the ladder (the large-GEMM ceiling). Small products reach less of it (the curve
  is the "efficiency by op size" refinement). The convolution ladder runs again on 8 x 8 and
  16 x 16 images (``conv@8``, ``conv@16``): at the same FLOPs, a convolution over few pixels
  and many channels (a GEMM with a short side) reaches less than one over many pixels.
- **the backward of the matrix products** (``matmul_backward``, ``conv_backward``,
  ``bmm_backward``): the same three ladders run backward by autograd (input and weight
  gradients, twice the forward's FLOPs), achieved FLOP/s by the forward's FLOPs: a backward's
  products (a transposed convolution, a weight gradient that sums over the whole batch and
  image) do not reach the forward's rate.
- **memory**: STREAM's copy (``a = b``, 2 x 4 bytes per fp32 element) and triad
  (``a = b + s c``, 3 x 4 bytes) for a ladder of array sizes from in-cache to well beyond the
  last-level cache: achieved bytes/s by bytes moved. The peak bandwidth is the triad at the
  largest size (main memory); the curve lets a block whose tensors fit in cache run faster.
- **elementwise ops**: ``mul`` of arrays of 2^18 fp32 elements (3 MiB in all, in the last-level
  cache; big enough that the call's fixed cost is a small part): the vector rate, one FLOP per
  element.
- **the last-level cache's size** (Linux sysfs): whether a model's weights stay in cache
  from one forward pass to the next.
- **call overhead**: one fx node of a trivial op, timed as ``--measure`` times a node
  (tracer/measure.py: ``perf_counter`` around the interpreter's ``run_node``), and one more
  aten op called directly: the fixed costs a block pays whatever its size.
- **the training step's fixed costs** (CPU): one autograd node of a trivial op (``y * 2``'s
  ``MulBackward0``), timed as a measured training step times a node (tracer/measure_step.py:
  from its pre-hook to its post-hook); and, per optimizer (``sgd``, ``adam``, ``adamw``, as
  flowprof's training step makes them), the fixed seconds of one ``step()`` call and of each
  aten op it dispatches, from steps over 1 and 32 one-element parameters (ops counted by a
  dispatch mode): torch.optim's for-loop implementation pays Python work per call and around
  each op that a bare aten call does not; and the rate (parameter elements per second) of each
  optimizer's step over one parameter of 2^14 to 2^18 elements, less the step over 2^10 (the
  fixed costs).

On a CUDA device the same ladders run (bigger), timed with CUDA events. The result is cached in
``data/device/<name>-<threads>t.json`` (the repository's git-ignored data folder; ``$FLOWPROF_DATA``
moves it), keyed by the machine (CPU model, threads, torch version, GPU name): another machine
measures afresh. Re-measure with ``python -m flowprof.device measure cpu``.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flowprof.device.table import Device

FORMAT = 4  # bump when what is measured changes: an older cache is measured again


def cache_dir() -> Path:
    """``$FLOWPROF_DATA/device``, else ``data/device`` in the repository (git-ignored)."""
    env = os.environ.get("FLOWPROF_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "data"
    return root / "device"


def cache_path(name: str) -> Path:
    """One file per device and CPU thread count (a ceiling measured on 2 threads says little
    about a run on 1)."""
    import torch

    return cache_dir() / f"{name}-{torch.get_num_threads()}t.json"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fingerprint(name: str) -> dict[str, Any]:
    """What a cached measurement must match to be reused: the chip, the threads, torch."""
    import torch

    out: dict[str, Any] = {
        "format": FORMAT,
        "torch": torch.__version__,
        "cpu": _cpu_model(),
        "threads": torch.get_num_threads(),
    }
    if name == "cuda":
        out["gpu"] = torch.cuda.get_device_name()
    return out


CLOCK = "wall"  # on the CPU: "wall" (perf_counter) or "thread" (this thread's CPU time)


class _Timer:
    """Seconds of a callable: on the CPU by :data:`CLOCK` (``measure(clock=...)`` sets it; the
    thread's CPU time leaves out the time other processes held the core, and needs one torch
    thread); on a GPU by CUDA events (the callable's kernels are queued between two events and
    the time read after a synchronize)."""

    def __init__(self, device: str) -> None:
        import torch

        self.cuda = device == "cuda"
        self.torch = torch
        self.clock = time.thread_time if CLOCK == "thread" else time.perf_counter

    def __call__(
        self, fn: Callable[[], Any], repeats: int, warmup: int = 1, best: bool = True
    ) -> float:
        """The fastest of ``repeats`` runs (a ceiling: what the chip can do when nothing else
        runs on it; the cores here are shared), or with ``best=False`` the median."""
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            if self.cuda:
                start = self.torch.cuda.Event(enable_timing=True)
                end = self.torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            else:
                t0 = self.clock()
                fn()
                times.append(self.clock() - t0)
        return min(times) if best else statistics.median(times)


def _timed(timer: _Timer, fn: Callable[[], Any], budget: float) -> float:
    """Seconds of ``fn``: one warm-up run, then as many repeats (3 to 200) as fit in about
    ``budget`` seconds (a longer budget: more chances of a repeat that nothing disturbed)."""
    first = timer(fn, 1)
    return timer(fn, max(3, min(200, int(budget / max(first, 1e-7)))), warmup=0)


def cache_bytes(device: str) -> int:
    """The last-level cache the cold operands must overflow: the CPU's (32 MiB if unread), or the
    GPU's L2."""
    if device == "cuda":
        import torch

        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        return int(getattr(props, "L2_cache_size", 0) or 64 * 2**20)
    return last_level_cache_bytes() or 32 * 2**20


class _Cold:
    """Copies of a weight, used in turn, together at least twice the last-level cache (at most
    64): each call reads its weight from main memory, as each layer of a model does (a forward
    pass reads every weight once, and a model's weights outgrow the cache). The input stays
    the same tensor, warm, as an activation just written by the block before is."""

    def __init__(self, weight: Any, device: str) -> None:
        nbytes = weight.numel() * weight.element_size()
        n = max(1, min(64, -(-2 * cache_bytes(device) // max(nbytes, 1))))
        self.copies = [weight.clone() for _ in range(n)]
        self.i = 0

    def __call__(self) -> Any:
        self.i = (self.i + 1) % len(self.copies)
        return self.copies[self.i]


def matmul_curve(
    device: str, dtype: Any, sizes: list[int], budget: float = 0.3
) -> tuple[tuple[float, float], ...]:
    """(FLOPs, achieved FLOP/s) of square matmuls ``(n, n) @ (n, n)``, the second operand (the
    weight) cold (:class:`_Cold`): 2 n^3 FLOPs each."""
    import torch

    timer = _Timer(device)
    points = []
    for n in sizes:
        a = torch.randn(n, n, device=device).to(dtype)
        weight = _Cold(torch.randn(n, n, device=device).to(dtype), device)
        out = torch.empty(n, n, device=device, dtype=dtype)
        seconds = _timed(timer, lambda a=a, w=weight, o=out: torch.mm(a, w(), out=o), budget)
        flops = 2.0 * n**3
        points.append((flops, flops / seconds))
    return tuple(points)


def bmm_curve(device: str, dtype: Any, sizes: list[int], batch: int = 8, budget: float = 0.3):
    """(FLOPs, achieved FLOP/s) of batched matmuls ``(batch, n, n) @ (batch, n, n)``, as
    attention's per-head products are: 2 batch n^3 FLOPs each."""
    import torch

    timer = _Timer(device)
    points = []
    for n in sizes:
        a = torch.randn(batch, n, n, device=device).to(dtype)
        b = torch.randn(batch, n, n, device=device).to(dtype)
        out = torch.empty(batch, n, n, device=device, dtype=dtype)
        seconds = _timed(timer, functools.partial(torch.bmm, a, b, out=out), budget)
        flops = 2.0 * batch * n**3
        points.append((flops, flops / seconds))
    return tuple(points)


def backward_curve(
    device: str, dtype: Any, op_class: str, sizes: list[int], budget: float = 0.3, side: int = 32
) -> tuple[tuple[float, float], ...]:
    """(the forward's FLOPs, achieved FLOP/s of the backward) of the ladder of ``op_class``
    (``matmul``: a linear layer ``x @ W.T`` with ``x`` and ``W`` n x n; ``conv``: the 3x3
    convolution of :func:`conv_curve` with ``sizes`` channels on ``side`` x ``side``; ``bmm``:
    the batched product of :func:`bmm_curve`), run by autograd as a training step runs it
    (``torch.autograd.grad`` of the output for both operands: the input gradient and the weight
    gradient, two products each with the forward's FLOPs, so the backward's FLOPs are twice
    the forward's). The weight is cold (:class:`_Cold`) for ``matmul`` and ``conv``."""
    import torch

    timer = _Timer(device)
    points = []
    for n in sizes:
        if op_class == "conv":
            x = torch.randn(1, n, side, side, device=device, dtype=dtype, requires_grad=True)
            weights = _Cold(torch.randn(n, n, 3, 3, device=device, dtype=dtype), device)
            forward = functools.partial(torch.nn.functional.conv2d, padding=1)
            flops = 2.0 * 9 * n * n * side * side
        elif op_class == "bmm":
            x = torch.randn(8, n, n, device=device, dtype=dtype, requires_grad=True)
            weights = _Cold(torch.randn(8, n, n, device=device, dtype=dtype), device)
            weights.copies = weights.copies[:2]  # (both operands warm, as in bmm_curve)
            forward = torch.bmm
            flops = 2.0 * 8 * n**3
        else:
            x = torch.randn(n, n, device=device, dtype=dtype, requires_grad=True)
            weights = _Cold(torch.randn(n, n, device=device, dtype=dtype), device)
            forward = torch.nn.functional.linear
            flops = 2.0 * n**3
        for w in weights.copies:
            w.requires_grad_()
        graphs = [(forward(x, w), w) for w in weights.copies]
        grad = torch.randn_like(graphs[0][0])
        turn = iter(range(1 << 62))

        def run(graphs=graphs, grad=grad, turn=turn, x=x) -> Any:
            y, w = graphs[next(turn) % len(graphs)]
            return torch.autograd.grad(y, (x, w), grad, retain_graph=True)

        seconds = _timed(timer, run, budget)
        points.append((flops, 2.0 * flops / seconds))
        del graphs
    return tuple(points)


def last_level_cache_bytes() -> int | None:
    """The CPU's last-level cache in bytes (Linux sysfs), None where it cannot be read."""
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    best = None
    for index in sorted(base.glob("index*")):
        try:
            if (index / "type").read_text().strip() == "Instruction":
                continue
            text = (index / "size").read_text().strip().upper()
        except OSError:
            continue
        factor = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        size = int(text.rstrip("KMG")) * factor
        best = size if best is None else max(best, size)
    return best


CONV_SIDES = (8, 16)  # image sides of the extra conv ladders (the main one: 32)


def conv_curve(device: str, dtype: Any, channels: list[int], side: int = 32, budget: float = 0.3):
    """(FLOPs, achieved FLOP/s) of 3x3 convolutions, ``c`` -> ``c`` channels, padding 1, on one
    ``side`` x ``side`` image, the weight cold (:class:`_Cold`): 2 x 9 c^2 side^2 FLOPs each."""
    import torch

    timer = _Timer(device)
    points = []
    with torch.no_grad():
        for c in channels:
            x = torch.randn(1, c, side, side, device=device).to(dtype)
            w = _Cold(torch.randn(c, c, 3, 3, device=device).to(dtype), device)
            conv = lambda x=x, w=w: torch.nn.functional.conv2d(x, w(), padding=1)  # noqa: E731
            seconds = _timed(timer, conv, budget)
            flops = 2.0 * 9 * c * c * side * side
            points.append((flops, flops / seconds))
    return tuple(points)


def stream(
    device: str, elements: list[int], budget: float = 0.2
) -> dict[str, tuple[tuple[float, float], ...]]:
    """STREAM copy and triad on fp32 arrays of each size: (bytes moved, achieved bytes/s)."""
    import torch

    timer = _Timer(device)
    copy, triad = [], []
    for n in elements:
        a = torch.zeros(n, device=device)
        b = torch.ones(n, device=device)
        c = torch.full((n,), 2.0, device=device)
        t = _timed(timer, functools.partial(a.copy_, b), budget)
        copy.append((8.0 * n, 8.0 * n / t))
        t = _timed(timer, functools.partial(torch.add, b, c, alpha=3.0, out=a), budget)  # b + 3 c
        triad.append((12.0 * n, 12.0 * n / t))
    return {"copy": tuple(copy), "triad": tuple(triad)}


def vector_rate(device: str, elements: int) -> float:
    """Elementwise FLOP/s: ``mul`` of two fp32 arrays of ``elements`` (one FLOP per element)."""
    import torch

    timer = _Timer(device)
    a = torch.randn(elements, device=device)
    b = torch.randn(elements, device=device)
    out = torch.empty(elements, device=device)
    seconds = timer(lambda: torch.mul(a, b, out=out), 100, warmup=5, best=True)
    return elements / seconds


def call_overhead(device: str, nodes: int = 200) -> tuple[float, float]:
    """(seconds of one fx node of a trivial op, timed as ``--measure`` times a node; seconds of
    one more aten op called directly). On a GPU both include the launch."""
    import torch
    import torch.fx as fx

    graph = fx.Graph()
    x = graph.placeholder("x")
    y = x
    for _ in range(nodes):
        y = graph.call_function(torch.add, (y, 1.0))
    graph.output(y)
    gm = fx.GraphModule(torch.nn.Module(), graph)
    cuda = device == "cuda"
    tick = _Timer(device).clock

    class Timed(fx.Interpreter):
        """Each op node timed as tracer/measure.py times a node (CUDA events on a GPU)."""

        def __init__(self) -> None:
            super().__init__(gm, garbage_collect_values=True)
            self.seconds: list[float] = []
            self.events: list[Any] = []

        def run_node(self, n: fx.Node) -> Any:
            if n.op != "call_function":
                return super().run_node(n)
            if cuda:
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                out = super().run_node(n)
                end.record()
                self.events.append((start, end))
                return out
            t0 = tick()
            out = super().run_node(n)
            self.seconds.append(tick() - t0)
            return out

    one = torch.ones(1, device=device)
    node_times = []
    with torch.no_grad():
        for _ in range(4):  # the first run warms up
            interp = Timed()
            interp.run(one)
            if cuda:
                torch.cuda.synchronize()
                interp.seconds = [s.elapsed_time(e) / 1e3 for s, e in interp.events]
            node_times.append(statistics.median(interp.seconds))
    timer = _Timer(device)
    op = timer(lambda: torch.add(one, 1.0), 500, warmup=20, best=False)
    return statistics.median(node_times[1:]), op


def autograd_node_seconds(nodes: int = 200) -> float:
    """Seconds of one autograd node of a trivial op (``MulBackward0`` of ``y * 2`` on one
    element), timed from its pre-hook to its post-hook as tracer/measure_step.py times a
    block's nodes: the median over a chain of ``nodes``, after a warm-up backward."""
    import torch

    tick = _Timer("cpu").clock
    times: list[float] = []
    started: dict[Any, float] = {}

    def pre(node: Any) -> Callable[..., None]:
        return lambda grad_outputs: started.__setitem__(node, tick())

    def post(node: Any, keep: bool) -> Callable[..., None]:
        def hook(grad_inputs: Any, grad_outputs: Any) -> None:
            if keep:
                times.append(tick() - started[node])

        return hook

    for run in range(3):  # (the first warms up)
        x = torch.ones(1, requires_grad=True)
        y = x
        for _ in range(nodes):
            y = y * 2.0
        handles = []
        node = y.grad_fn
        while node is not None and type(node).__name__ == "MulBackward0":
            handles += [node.register_prehook(pre(node)), node.register_hook(post(node, run > 0))]
            node = node.next_functions[0][0]
        y.sum().backward()
        for h in handles:
            h.remove()
    return statistics.median(times)


OPTIMIZERS = ("sgd", "adam", "adamw")


def optimizer_seconds(name: str, tensors: int = 32) -> tuple[float, float]:
    """(seconds per ``step()`` call, seconds per aten op) of optimizer ``name`` as flowprof's
    training step makes it (tracer/training_step.py): its step over 1 and over ``tensors``
    one-element parameters (the fastest of 50 steps, after the first, which makes the state: the
    least disturbed on shared cores), with the aten ops each dispatches counted; the per-op cost
    is the slope between the two, the per-call cost what is left of the one-tensor step."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from flowprof.tracer import TrainingStep

    class Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    points = []
    for n in (1, tensors):
        params = [torch.nn.Parameter(torch.ones(1)) for _ in range(n)]
        for p in params:
            p.grad = torch.ones(1)
        opt = TrainingStep(optimizer=name).make_optimizer(params)
        opt.step()  # (the first step makes the state)
        Count.calls = 0
        with Count():
            opt.step()
        points.append((Count.calls, _Timer("cpu")(opt.step, 50, warmup=2, best=True)))
    (ops1, t1), (ops_n, t_n) = points
    per_op = max((t_n - t1) / max(ops_n - ops1, 1), 0.0)
    return max(t1 - per_op * ops1, 0.0), per_op


# (not larger: a step over a parameter of millions of elements makes temporaries (Adam's
# square root and division) that glibc hands back to the OS after each step, so each step of
# the micro-benchmark faults their pages in afresh, about half its time (measured: 4M elements,
# 50 ms against 30 ms with trimming off; at 2^19 elements already 92 to 304 M elements/s from
# one run to the next, against 470 to 500 at 2^18); a training process, its heap full of freed
# activations, reuses them. Beyond the ladder the rate holds its last point, and a block that
# large is held by the memory term, its passes at main memory's bandwidth)
OPTIMIZER_SIZES = (1 << 10, 1 << 14, 1 << 16, 1 << 18)


def optimizer_curve(
    name: str, sizes: tuple[int, ...] = OPTIMIZER_SIZES, budget: float = 0.3
) -> tuple[tuple[float, float], ...]:
    """(elements, parameter elements per second) of optimizer ``name``'s ``step()`` over one
    fp32 parameter of each size but the first (as flowprof's training step makes it; the
    fastest repeat after the first step, which makes the state): the rate its for-loop's
    passes (lerp, sqrt, division ...) reach over the parameter, its gradient and its state, from
    cache to main memory. The step over the first, smallest size is the fixed cost of the call
    and its ops, taken off each (a step over more elements is at least twice it: the
    subtraction is capped at half the step)."""
    import torch

    from flowprof.tracer import TrainingStep

    timer = _Timer("cpu")
    times = []
    for n in sizes:
        p = torch.nn.Parameter(torch.randn(n))
        p.grad = torch.randn(n)
        opt = TrainingStep(optimizer=name).make_optimizer([p])
        opt.step()  # (the first step makes the state)
        times.append(_timed(timer, opt.step, budget))
    fixed = times[0]
    return tuple(
        (float(n), n / max(t - fixed, t / 2)) for n, t in zip(sizes[1:], times[1:], strict=True)
    )


def measure(
    name: str = "cpu", quick: bool = False, budget: float = 0.3, clock: str = "wall"
) -> Device:
    """Measure the ceilings of ``name`` (``cpu``, or ``cuda`` for the current CUDA device) in
    fp32 (and bf16 on a GPU); see the module docstring. ``quick`` runs shorter ladders (tests);
    ``budget`` is about how many seconds each ladder point is repeated for; ``clock`` times the
    CPU by ``"wall"`` time or by the ``"thread"``'s CPU time (one torch thread; as the blocks are
    timed under ``flowprof.tracer.measure.clock("thread")``)."""
    import torch

    global CLOCK
    if clock not in ("wall", "thread"):
        raise ValueError(f"unknown clock {clock!r}")
    if clock == "thread" and torch.get_num_threads() != 1:
        raise ValueError("the thread clock needs torch.set_num_threads(1)")
    CLOCK, previous = clock, CLOCK
    try:
        return _measure(name, quick, budget, clock)
    finally:
        CLOCK = previous


def _measure(name: str, quick: bool, budget: float, clock: str) -> Device:
    import torch

    if name == "cuda":
        if not torch.cuda.is_available():
            from flowprof.errors import BadSpecError

            raise BadSpecError("device cuda: no CUDA device is available")
        precisions = {"fp32": torch.float32, "bf16": torch.bfloat16}
        sizes = [256, 1024, 4096] if quick else [128, 256, 512, 1024, 2048, 4096, 8192]
        channels = [64, 256] if quick else [16, 32, 64, 128, 256, 512, 1024]
        heads = [128, 512] if quick else [64, 128, 256, 512, 1024, 2048]
        elements = [1 << 16, 1 << 24] if quick else [1 << k for k in range(14, 30, 2)]
        title = f"{torch.cuda.get_device_name()} (measured)"
    else:
        precisions = {"fp32": torch.float32}
        sizes = [64, 256, 1024] if quick else [32, 64, 128, 256, 512, 768, 1024, 1536, 2048]
        channels = [16, 64] if quick else [8, 16, 32, 64, 128, 256, 512]
        heads = [32, 128] if quick else [16, 32, 64, 128, 256, 512]
        elements = [1 << 12, 1 << 20] if quick else [1 << k for k in range(10, 28, 2)]
        title = f"{_cpu_model()}, {torch.get_num_threads()} threads (measured)"
    # (quick, for tests: no extra conv ladders, two optimizer sizes)
    opt_sizes = OPTIMIZER_SIZES[:2] if quick else OPTIMIZER_SIZES
    sides = () if quick else CONV_SIDES
    started = time.time()
    curves: dict[str, tuple[tuple[float, float], ...]] = {}
    peaks: dict[str, float] = {}
    for pname, dtype in precisions.items():
        curves[f"{pname}/matmul"] = matmul_curve(name, dtype, sizes, budget=budget)
        curves[f"{pname}/conv"] = conv_curve(name, dtype, channels, budget=budget)
        for side in sides:  # (the same ladder on smaller images, forward and backward)
            curves[f"{pname}/conv@{side}"] = conv_curve(name, dtype, channels, side, budget)
            curves[f"{pname}/conv_backward@{side}"] = backward_curve(
                name, dtype, "conv", channels, budget, side
            )
        curves[f"{pname}/bmm"] = bmm_curve(name, dtype, heads, budget=budget)
        # (quick, for tests: no backward ladders; tests/test_step_timing.py runs one)
        backward = () if quick else (("matmul", sizes), ("conv", channels), ("bmm", heads))
        for cls, ladder in backward:
            curves[f"{pname}/{cls}_backward"] = backward_curve(name, dtype, cls, ladder, budget)
        peaks[pname] = max(r for _, r in curves[f"{pname}/matmul"])
    mem = stream(name, elements, budget=budget * 2 / 3)
    bandwidth = mem["triad"][-1][1]  # the largest arrays: main memory
    vector = vector_rate(name, 1 << 18 if name == "cpu" else 1 << 24)
    call, op = call_overhead(name)
    return Device(
        name=name,
        title=title,
        kind="gpu" if name == "cuda" else "cpu",
        matrix_flops=peaks,
        vector_flops=vector,
        bandwidth=bandwidth,
        sources=(
            "measured by flowprof.device.microbench: largest-GEMM ceiling, STREAM copy and "
            "triad, per-call overhead (python -m flowprof.device measure "
            f"{name})",
        ),
        matrix_curves=curves,
        bandwidth_curve=mem["triad"],
        call_seconds=call,
        op_seconds=op,
        measured={
            "fingerprint": fingerprint(name),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds_taken": round(time.time() - started, 1),
            "stream_copy": [list(p) for p in mem["copy"]],
            # (a GPU's L2 is not read: its weights are taken from memory whatever their size)
            "cache_bytes": last_level_cache_bytes() if name == "cpu" else 0,
            "quick": quick,
            "clock": clock,
        }
        | (
            {
                "autograd_node_seconds": autograd_node_seconds(),
                "optimizer_seconds": {
                    o: list(optimizer_seconds(o, 4 if quick else 32)) for o in OPTIMIZERS
                },
                "optimizer_curves": {
                    o: [list(pt) for pt in optimizer_curve(o, opt_sizes, budget)]
                    for o in OPTIMIZERS
                },
            }
            if name == "cpu"
            else {}
        ),
    )


def load(name: str = "cpu", remeasure: bool = False) -> tuple[Device, bool]:
    """The measured device ``name`` from its cache, measured now (and cached) if the cache is
    missing, unreadable, or of another machine, or if ``remeasure``. Returns (device, whether it
    was measured now)."""
    path = cache_path(name)
    if not remeasure and path.is_file():
        try:
            device = Device.from_dict(json.loads(path.read_text()))
            if device.measured.get("fingerprint") == fingerprint(name):
                return device, False
        except (ValueError, KeyError, TypeError):
            pass  # unreadable: measured again below
    device = measure(name)
    save(device, path)
    return device, True


def save(device: Device, path: Path) -> Path:
    from flowprof import atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(path, (json.dumps(device.to_dict(), indent=2) + "\n").encode())
    return path

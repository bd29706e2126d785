"""``--measure``: run the traced graph for real, time each unit and weigh each crossing tensor.

The static analysis never runs the model; this does, on real tensors, to cross-check it: the
measured bytes of every tensor crossing between units must equal the static element count times
the traced dtype's width, and the seconds show where the time goes on this machine.

A measured tensor is matched with a crossing by its value's name, which says what it is: on the
fx path its graph node, on the hooked path its producer and its position among what that made
(tracer/hook_trace.py), so that a real run that makes other tensors than the counting run (a
branch on values) shifts no other name. A crossing the real run did not make, or made as another
tensor, is left unmeasured with the reason (``Edge.unmeasured``).
"""

from __future__ import annotations

import contextlib
import contextvars
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from flowprof.errors import UnsupportedModelError
from flowprof.tracer.graph import TensorMeta


@dataclass(frozen=True)
class Measured:
    unit_seconds: dict[str, float]  # unit -> median seconds of its fx nodes over the runs
    value_bytes: dict[str, int]  # fx value name -> bytes of the real tensors
    runs: int
    # hooked path: value name -> the shapes and dtypes of the real tensors (a run that took
    # another path may give a name to another tensor); fx path: None (the graph's own nodes)
    value_tensors: dict[str, tuple[TensorMeta, ...]] | None = None


# The clock a node is timed with on the CPU: "wall" (perf_counter, the default) or "thread" (the
# calling thread's CPU time: with one torch thread, the node's own work, without the time other
# processes held the core; a benchmark on shared cores uses it, see :func:`clock`).
_CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "thread": time.thread_time}
_CLOCK: contextvars.ContextVar[str] = contextvars.ContextVar(
    "flowprof_measure_clock", default="wall"
)


@contextlib.contextmanager
def clock(name: str) -> Iterator[None]:
    """Time CPU nodes with ``name``'s clock inside the block: ``"wall"`` or ``"thread"`` (the
    thread's CPU time, which needs torch at one thread: work on other threads would be missed)."""
    if name not in _CLOCKS:
        raise ValueError(f"unknown clock {name!r} (known: {', '.join(_CLOCKS)})")
    if name == "thread" and torch.get_num_threads() != 1:
        raise ValueError("the thread clock needs torch.set_num_threads(1)")
    token = _CLOCK.set(name)
    try:
        yield
    finally:
        _CLOCK.reset(token)


def _nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    return 0


class _TimingInterpreter(fx.Interpreter):
    """Times each node: ``perf_counter`` around it on the CPU; on a CUDA device, two CUDA events
    around it (the node's kernels are queued between them, and read after one synchronize at the
    end of the run, :meth:`finish`: a host clock would time only the launches)."""

    def __init__(self, gm: fx.GraphModule, wanted: set[str], cuda: bool = False):
        super().__init__(gm, garbage_collect_values=True)
        self.seconds: dict[str, float] = {}
        self.bytes: dict[str, int] = {}
        self.wanted = wanted
        self.cuda = cuda
        self.events: dict[str, tuple[Any, Any]] = {}
        self.clock = _CLOCKS[_CLOCK.get()]

    def run_node(self, n: fx.Node) -> Any:
        if self.cuda:
            start_event = torch.cuda.Event(enable_timing=True)
            end_event = torch.cuda.Event(enable_timing=True)
            start_event.record()
            out = super().run_node(n)
            end_event.record()
            self.events[n.name] = (start_event, end_event)
        else:
            start = self.clock()
            out = super().run_node(n)
            self.seconds[n.name] = self.clock() - start
        if n.name in self.wanted:
            self.bytes[n.name] = _nbytes(out)
        return out

    def finish(self) -> None:
        """Read the CUDA events (after the run's kernels have finished)."""
        if self.cuda:
            torch.cuda.synchronize()
            for name, (start, end) in self.events.items():
                self.seconds[name] = start.elapsed_time(end) / 1e3  # (milliseconds)


def _device_of(model: nn.Module) -> torch.device:
    """Where the model's weights are (the CPU for a model without any)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def real_inputs(model: nn.Module, inputs: Sequence[Any]) -> list[Any]:
    """The inputs as real tensors (random floats, zero integers in place of meta ones, on the
    model's device), after checking that the model has real weights to run them on."""
    if any(p.device.type == "meta" for p in model.parameters()):
        raise UnsupportedModelError("--measure needs a model with real weights, not meta ones")
    device = _device_of(model)
    real = []
    for x in inputs:
        if isinstance(x, torch.Tensor) and x.device.type == "meta":
            x = (
                torch.randn(x.shape, device=device).to(x.dtype)
                if x.is_floating_point()
                else torch.zeros(x.shape, dtype=x.dtype, device=device)
            )
        real.append(x)
    return real


def _timed_runs(
    run_once: Callable[[], tuple[dict[str, float], dict[str, int]]], runs: int
) -> tuple[dict[str, float], dict[str, int]]:
    """``run_once`` (seconds by name, bytes by value) ``runs`` times after one warm-up run, which
    warms caches up, without autograd: the median seconds of each name, and the bytes."""
    per_run: list[dict[str, float]] = []
    value_bytes: dict[str, int] = {}
    with torch.no_grad():
        for i in range(runs + 1):
            seconds, value_bytes = run_once()
            if i:
                per_run.append(seconds)
    names = per_run[0].keys() if per_run else ()
    return {n: statistics.median(r.get(n, 0.0) for r in per_run) for n in names}, value_bytes


def measure_hooked(
    structure: Any, model: nn.Module, inputs: Sequence[Any], runs: int = 3
) -> Measured:
    """:func:`measure` for a model whose blocks were recorded by hooks: its hooked run, timed
    (see fx_trace.timed_hooked_run)."""
    from flowprof.tracer import fx_trace

    real = real_inputs(model, inputs)

    tensors: dict[str, tuple[TensorMeta, ...]] = {}

    def run_once() -> tuple[dict[str, float], dict[str, int]]:
        records = fx_trace.timed_hooked_run(structure, model, real)
        tensors.update(records.value_tensors)
        return records.unit_seconds, records.value_bytes

    unit_seconds, value_bytes = _timed_runs(run_once, runs)
    return Measured(unit_seconds, value_bytes, runs, tensors)


def measure(
    gm: fx.GraphModule,
    model: nn.Module,
    inputs: Sequence[Any],
    node_units: dict[str, str],
    values: set[str],
    runs: int = 3,
) -> Measured:
    """Run ``gm`` ``runs`` times after one warm-up (eval mode, no grad) on real inputs; on a
    model whose weights are on a CUDA device, each node is timed with CUDA events."""
    real = real_inputs(model, inputs)
    cuda = _device_of(model).type == "cuda"

    def run_once() -> tuple[dict[str, float], dict[str, int]]:
        interp = _TimingInterpreter(gm, values, cuda)
        interp.run(*real)
        interp.finish()
        return interp.seconds, interp.bytes

    node_seconds, value_bytes = _timed_runs(run_once, runs)
    unit_seconds: dict[str, float] = {}
    for node, unit in node_units.items():  # a unit's time: the sum of its nodes' medians
        unit_seconds[unit] = unit_seconds.get(unit, 0.0) + node_seconds.get(node, 0.0)
    return Measured(unit_seconds, value_bytes, runs)

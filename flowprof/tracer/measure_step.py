"""``--measure`` of a training step: the forward, backward and optimizer step run for real, each
block's share of each phase timed.

This is a run of its own on real tensors, apart from the counting run's bookkeeping: the times
come from the clock around what autograd and torch.optim really execute.

- **Forward** (train mode, grad on, activations saved for the backward): each fx node timed as
  the forward ``--measure`` times it (``measure._TimingInterpreter``); a unit's time is the sum
  of its nodes'.
- **Backward**: after each fx node runs, the autograd nodes it created (its outputs' ``grad_fn``
  and back through their inputs to nodes already seen, ``AccumulateGrad`` included) are noted as
  that node's unit's, the loss's as the loss unit's. Each of those autograd nodes gets a pre-hook
  and a post-hook (``Node.register_prehook`` / ``register_hook``), which read the clock when
  autograd starts and finishes the node; a unit's backward time is the sum of its nodes'
  (pre-hook to post-hook). On the CPU, autograd runs the nodes on the thread that called
  ``backward()``, so the thread clock applies.
- **Optimizer**: one optimizer per unit over the parameters whose ``AccumulateGrad`` node that
  unit created (the unit that read the parameter first, the rule flowprof counts parameters and
  their update by), each ``step()`` timed on its own.

Each phase runs ``runs`` times after one warm-up step (which also creates the optimizers' state:
the counted step is the second, the steady state); each unit's time is the median. The model's
parameters, buffers (batch norm's running statistics) and gradients are restored afterwards.

What is not attributable to a block, and reported as such (:class:`MeasuredStep`, and
``graph.meta["measured_step"]`` of a trace): in the backward, the engine's own work between
nodes (scheduling, adding up the gradients of a tensor read by two blocks, which autograd does
before it runs the producer's node) and the hooks' own cost: ``backward_seconds`` is the whole
``loss.backward()``, ``backward_attributed`` the sum of the nodes'; in the optimizer phase, the
time outside the ``step()`` calls (none is counted). A block's backward includes its
``AccumulateGrad`` nodes (its parameters' gradients handed over) and, for a block that reads a
parameter another block read first, none of that parameter's (it is the first reader's, as in
the counts). The forward of a training step is timed in train mode with grad on (saving what
the backward needs), which is why it differs from the forward ``--measure`` (eval, no grad).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from flowprof.errors import UnsupportedModelError
from flowprof.tracer.counts import Phase
from flowprof.tracer.measure import _CLOCK, _CLOCKS, _TimingInterpreter, real_inputs

LOSS = "loss"  # the loss unit's name (as the counting run names it)


@dataclass(frozen=True)
class MeasuredStep:
    """Seconds of a measured training step (medians over ``runs``): per unit and phase, and the
    backward's whole time beside the share the nodes account for."""

    unit_seconds: dict[str, dict[Phase, float]]  # unit -> phase -> seconds
    backward_seconds: float  # the whole loss.backward()
    backward_attributed: float  # the sum of the autograd nodes' times (pre- to post-hook)
    optimizer_seconds: float  # the sum of the per-unit step() calls
    runs: int


def _walk_new(roots: Sequence[Any], owner: dict[Any, str], unit: str) -> None:
    """Note the autograd nodes behind ``roots`` that no one noted yet as ``unit``'s."""
    stack = [n for n in roots if n is not None]
    while stack:
        node = stack.pop()
        if node in owner:
            continue
        owner[node] = unit
        stack.extend(nxt for nxt, _ in node.next_functions if nxt is not None)


def _grad_fns(value: Any) -> list[Any]:
    if isinstance(value, torch.Tensor):
        return [value.grad_fn] if value.grad_fn is not None else []
    if isinstance(value, (tuple, list)):
        return [f for v in value for f in _grad_fns(v)]
    if isinstance(value, dict):
        return [f for v in value.values() for f in _grad_fns(v)]
    return []


class _StepInterpreter(_TimingInterpreter):
    """The forward, each fx node timed, and the autograd nodes each creates noted as its unit's."""

    def __init__(self, gm: fx.GraphModule, node_units: dict[str, str]):
        super().__init__(gm, set(), cuda=False)
        self.node_units = node_units
        self.owner: dict[Any, str] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        unit = self.node_units.get(n.name)
        if unit is not None:
            _walk_new(_grad_fns(out), self.owner, unit)
        return out


def real_loss(step: Any, out: Any) -> torch.Tensor:
    """The step's loss of the model's real output, with real targets (class 0; a target of
    zeros for MSE: the counting run's uninitialised target is fine on meta, not on real data)."""
    from flowprof.tracer.hook_trace import tensors_in

    y = next((t for t in tensors_in(out) if t.is_floating_point() and t.requires_grad), None)
    if y is None:
        raise UnsupportedModelError("the model's output needs no gradient: no backward to measure")
    kind = step.loss_kind(y)
    if callable(step.loss):
        return step.loss(y)
    if kind == "sum":
        return y.sum()
    if kind == "mse":
        return nn.functional.mse_loss(y, torch.zeros_like(y))
    scores = y.reshape(-1, y.shape[-1]) if y.dim() != 2 else y
    target = torch.zeros(scores.shape[0], dtype=torch.long, device=y.device)
    return nn.functional.cross_entropy(scores, target)


class _Saved:
    """The model's parameters, buffers and gradients, copied, to be put back after the run."""

    def __init__(self, model: nn.Module):
        with torch.no_grad():
            self.params = [(p, p.detach().clone(), p.grad) for p in model.parameters()]
            self.buffers = [(b, b.detach().clone()) for b in model.buffers()]

    def restore(self) -> None:
        with torch.no_grad():
            for p, value, grad in self.params:
                p.copy_(value)
                p.grad = grad
            for b, value in self.buffers:
                b.copy_(value)


def measure_step(
    gm: fx.GraphModule,
    model: nn.Module,
    inputs: Sequence[Any],
    node_units: dict[str, str],
    step: Any,
    runs: int = 3,
) -> MeasuredStep:
    """Run the training ``step`` (a :class:`tracer.training_step.TrainingStep`) of ``gm`` (the
    model's fx graph, ``node_units`` its node -> unit map) ``runs`` times after a warm-up, on
    real inputs, timing each unit's forward, backward and optimizer step (module docstring).
    The model must be in train mode (``trace`` sets it) and on the CPU."""
    from flowprof.tracer.measure import _device_of

    if _device_of(model).type != "cpu":
        raise UnsupportedModelError(
            "measuring a training step times the CPU (the model's weights are on "
            f"{_device_of(model)}): move it to the CPU"
        )
    if step.amp is not None:
        raise UnsupportedModelError("measuring a mixed-precision training step is not supported")
    clock: Callable[[], float] = _CLOCKS[_CLOCK.get()]
    real = real_inputs(model, inputs)
    if step.input_grad:
        real = [
            x.detach().requires_grad_() if isinstance(x, torch.Tensor) and x.is_floating_point()
            else x
            for x in real
        ]  # fmt: skip
    saved = _Saved(model)
    per_run: list[dict[str, dict[Phase, float]]] = []
    totals: list[tuple[float, float, float]] = []
    optimizers: dict[str, torch.optim.Optimizer] = {}
    try:
        with torch.enable_grad():
            for i in range(runs + 1):
                seconds, whole = _one_step(gm, node_units, step, real, clock, optimizers)
                if i:  # (the first is the warm-up: caches, allocator, optimizer state)
                    per_run.append(seconds)
                    totals.append(whole)
    finally:
        saved.restore()
    units = {u for r in per_run for u in r}
    out: dict[str, dict[Phase, float]] = {}
    for u in units:
        phases = {p for r in per_run for p in r.get(u, {})}
        out[u] = {p: statistics.median(r.get(u, {}).get(p, 0.0) for r in per_run) for p in phases}
    return MeasuredStep(
        out,
        statistics.median(t[0] for t in totals),
        statistics.median(t[1] for t in totals),
        statistics.median(t[2] for t in totals),
        runs,
    )


def _one_step(
    gm: fx.GraphModule,
    node_units: dict[str, str],
    step: Any,
    real: list[Any],
    clock: Callable[[], float],
    optimizers: dict[str, torch.optim.Optimizer],
) -> tuple[dict[str, dict[Phase, float]], tuple[float, float, float]]:
    """One forward, backward and optimizer step: seconds by unit and phase, and (the whole
    backward, its attributed part, the optimizer steps)."""
    seconds: dict[str, dict[Phase, float]] = {}

    def add(unit: str, phase: Phase, s: float) -> None:
        by_phase = seconds.setdefault(unit, {})
        by_phase[phase] = by_phase.get(phase, 0.0) + s

    # -- forward (train mode, grad on) and the loss
    interp = _StepInterpreter(gm, node_units)
    out = interp.run(*real)
    for node, s in interp.seconds.items():
        unit = node_units.get(node)
        if unit is not None:
            add(unit, Phase.FORWARD, s)
    owner = interp.owner
    start = clock()
    loss = real_loss(step, out)
    add(LOSS, Phase.FORWARD, clock() - start)
    _walk_new(_grad_fns(loss), owner, LOSS)
    del out

    # -- backward: each autograd node timed from its pre-hook to its post-hook
    started: dict[Any, float] = {}
    handles = []
    for node, unit in owner.items():
        add(unit, Phase.BACKWARD, 0.0)  # (a unit with nodes that take no time still has a row)

        def pre(grad_outputs, node=node):
            started[node] = clock()

        def post(grad_inputs, grad_outputs, node=node, unit=unit):
            add(unit, Phase.BACKWARD, clock() - started[node])

        handles.append(node.register_prehook(pre))
        handles.append(node.register_hook(post))
    params = [n.variable for n in owner if type(n).__name__ == "AccumulateGrad"]
    for p in params:
        p.grad = None  # (zero_grad(set_to_none=True): the gradient is assigned, not added)
    attributed_before = sum(s.get(Phase.BACKWARD, 0.0) for s in seconds.values())
    start = clock()
    try:
        loss.backward()
    finally:
        whole = clock() - start
        for h in handles:
            h.remove()
    attributed = sum(s.get(Phase.BACKWARD, 0.0) for s in seconds.values()) - attributed_before

    # -- the optimizer: one per unit over the parameters it owns, each step timed
    if step.update:
        groups: dict[str, list[torch.Tensor]] = {}
        for node, unit in owner.items():
            if type(node).__name__ == "AccumulateGrad" and node.variable.grad is not None:
                groups.setdefault(unit, []).append(node.variable)
        optimizer_total = 0.0
        for unit, ps in groups.items():
            opt = optimizers.get(unit)
            if opt is None:
                opt = optimizers[unit] = step.make_optimizer(ps)
            start = clock()
            opt.step()
            s = clock() - start
            optimizer_total += s
            add(unit, Phase.OPTIMIZER, s)
    else:
        optimizer_total = 0.0
    return seconds, (whole, attributed, optimizer_total)

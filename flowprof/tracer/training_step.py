"""The training step, counted as autograd and the optimizer run it: forward, loss, backward and
optimizer update, each op attributed to the forward block it belongs to.

How the backward is attributed (no table of multipliers, nothing guessed):

1. During the forward, after each torch function returns, the autograd nodes it created (the
   ``grad_fn`` of its outputs, and back through their inputs to nodes already seen) are tagged
   with the tally of what is running: an fx node's record, a hooked unit, the loss.
2. ``loss.backward()`` runs in this thread under the same counting mode. For each ATen op the
   mode asks autograd which node is running (``torch._C._current_autograd_node``) and counts the
   op into that node's tag, in the ``backward`` phase; with grad mode on inside the backward
   (``torch.utils.checkpoint`` re-running a block's forward) in the ``recompute`` phase.
3. The optimizer runs once per unit over the parameters that unit owns (the unit that reads a
   parameter first, as parameters are counted), in the ``optimizer`` phase. It runs twice and
   the second step is counted: the first creates state (Adam's moments, SGD's momentum buffer
   starts as a copy of the gradient), the second is what every later step of a run costs.

What runs is what autograd and torch.optim really run on meta tensors: an input that needs no
gradient gets none (the first layer's backward computes only its weight gradient); a frozen
parameter (``requires_grad=False``) gets no weight gradient and no update.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from flowprof.errors import BadSpecError
from flowprof.tracer.counts import Phase, Tally
from flowprof.tracer.hook_trace import tensors_in

_TAG = "flowprof"  # the key of a tag in an autograd node's metadata

OPTIMIZERS = ("sgd", "adam", "adamw")
AMP = ("bf16", "fp16")
LOSS_SCALE = 2.0**16  # torch.amp.GradScaler's initial scale
LOSSES = ("auto", "cross-entropy", "mse", "sum")

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]


@dataclass(frozen=True)
class TrainingStep:
    """What a training step runs besides the forward.

    ``optimizer``: ``"sgd"`` (SGD with momentum 0.9), ``"adam"``, ``"adamw"`` (weight decay 0.01),
    or a function that makes an optimizer from a list of parameters (called once per block).
    ``loss``: ``"cross-entropy"`` (class scores in the last dimension, integer targets),
    ``"mse"`` (a target of the output's shape), ``"sum"`` (the output's sum, no target), or
    ``"auto"``: cross-entropy for a 2-D output (a classifier's N x C scores), mse otherwise; or
    a function of the model's output returning the loss (a criterion with its own target).
    ``input_grad``: the model's floating inputs need a gradient too (as when the model is a part
    of a bigger one); off by default, so the first layer computes no input gradient.
    """

    optimizer: str | OptimizerFactory = "sgd"
    loss: str | Callable[[torch.Tensor], torch.Tensor] = "auto"
    input_grad: bool = False
    update: bool = True  # run the optimizer (False: forward and backward only)
    amp: str | None = None  # mixed precision: "bf16" or "fp16" (with a loss scaler); None: off

    def __post_init__(self) -> None:
        if isinstance(self.optimizer, str) and self.optimizer not in OPTIMIZERS:
            raise BadSpecError(
                f"unknown optimizer {self.optimizer!r} (known: {', '.join(OPTIMIZERS)})"
            )
        if self.amp not in (None, *AMP):
            raise BadSpecError(f"unknown mixed precision {self.amp!r} (known: {', '.join(AMP)})")
        if not callable(self.loss) and self.loss not in LOSSES:
            raise BadSpecError(f"unknown loss {self.loss!r} (known: {', '.join(LOSSES)})")

    @property
    def optimizer_name(self) -> str:
        if isinstance(self.optimizer, str):
            return self.optimizer
        return getattr(self.optimizer, "__name__", type(self.optimizer).__name__)

    def make_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=0.01, momentum=0.9)
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=1e-3)
        if self.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
        return self.optimizer(params)

    def loss_kind(self, out: torch.Tensor) -> str:
        if callable(self.loss):
            return getattr(self.loss, "__name__", "loss")
        if self.loss != "auto":
            return self.loss
        return "cross-entropy" if out.dim() == 2 else "mse"

    def autocast(self) -> Any:
        """The forward's and the loss's autocast (a no-op without mixed precision): CPU autocast
        on fake CPU tensors, fp32 master weights cast to ``amp`` where autocast casts them."""
        if self.amp is None:
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast("cpu", dtype=dtype)

    @property
    def scaler(self) -> bool:
        """fp16 training scales the loss (torch.amp.GradScaler); bf16 needs no scaler."""
        return self.amp == "fp16"

    def to_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer_name if self.update else None,
            "loss": self.loss if isinstance(self.loss, str) else self.loss_kind(None),
            "input_grad": self.input_grad,
            "mixed_precision": self.amp,
            "loss_scaler": self.scaler,
        }


def as_step(
    phases: Iterable[str] | None,
    optimizer: Any,
    loss: Any,
    amp: str | None = None,
    input_grad: bool = False,
) -> TrainingStep | None:
    """The step that ``trace``'s arguments ask for: None for a forward pass (``phases`` None or
    ``("forward",)``); otherwise forward and backward (a backward needs its forward), and the
    optimizer when ``phases`` names it (or is None: an ``optimizer`` or ``loss`` alone asks for
    a whole step). ``recompute`` is counted wherever a checkpoint runs one; naming it changes
    nothing."""
    if phases is None:
        if optimizer is None and loss is None and amp is None:
            return None
        phases = ("forward", "backward", "optimizer")
    names = tuple(phases)
    known = {p.value for p in Phase}
    unknown = [p for p in names if p not in known]
    if unknown:
        raise BadSpecError(f"unknown phase {unknown[0]!r} (known: {', '.join(sorted(known))})")
    if set(names) <= {"forward"}:
        if optimizer is not None or loss is not None or amp is not None:
            raise BadSpecError("an optimizer or a loss applies to a training step: add its phases")
        return None
    update = "optimizer" in names
    if optimizer is not None and not update:
        raise BadSpecError("an optimizer is given but the phases do not include 'optimizer'")
    return TrainingStep(
        optimizer or "sgd", loss or "auto", input_grad=input_grad, update=update, amp=amp
    )


# --- tagging the autograd graph ----------------------------------------------------------------


def tag(out: Any, tally: Tally) -> None:
    """Tag the autograd nodes behind ``out`` that no one tagged yet with ``tally``."""
    stack = [t.grad_fn for t in tensors_in(out) if t.grad_fn is not None]
    while stack:
        node = stack.pop()
        meta = node.metadata
        if _TAG in meta:
            continue
        meta[_TAG] = tally
        for nxt, _ in node.next_functions:
            if nxt is not None and type(nxt).__name__ != "AccumulateGrad":
                stack.append(nxt)


def recompute_owner(node: Any, rec: Any) -> Tally:
    """The forward piece whose forward autograd ``node`` is recomputing (see below)."""
    return rec.pinned or node.metadata.get(_TAG, rec.outside)


def backward_tally(node: Any, rec: Any) -> Tally:
    """The tally an op run by autograd ``node`` counts into: the backward of the tally the node
    was tagged with (``rec.outside``'s if none); with grad mode on inside the backward (a
    checkpoint recomputing a forward) the recompute phase of the unit being recomputed
    (``rec.pinned``, set by the hooks), else of the node's tally."""
    if torch.is_grad_enabled():
        return recompute_owner(node, rec).phase(Phase.RECOMPUTE)
    return node.metadata.get(_TAG, rec.outside).phase(Phase.BACKWARD)


# --- the loss --------------------------------------------------------------------------------


def loss_of(step: TrainingStep, out: Any) -> tuple[torch.Tensor, str]:
    """The loss of the model's output (its first floating tensor) and the loss's name."""
    y = next((t for t in tensors_in(out) if t.is_floating_point() and t.requires_grad), None)
    if y is None:
        raise BadSpecError(
            "the model's output needs no gradient (no floating output depends on a trainable "
            "parameter): there is no backward to count"
        )
    kind = step.loss_kind(y)
    if callable(step.loss):
        return step.loss(y), kind
    if kind == "sum":
        return y.sum(), "sum"
    if kind == "mse":
        target = torch.empty(y.shape, dtype=y.dtype, device=y.device)
        return nn.functional.mse_loss(y, target), "MSELoss"
    scores = y.reshape(-1, y.shape[-1]) if y.dim() != 2 else y
    target = torch.zeros(scores.shape[0], dtype=torch.long, device=y.device)
    return nn.functional.cross_entropy(scores, target), "CrossEntropyLoss"


def scaled(step: TrainingStep, loss: torch.Tensor) -> torch.Tensor:
    """The loss times the loss scale, as GradScaler.scale does it in fp16 training (one
    multiplication); the loss itself otherwise."""
    if not step.scaler:
        return loss
    return loss * torch.full((), LOSS_SCALE, dtype=torch.float32, device=loss.device)


# --- the optimizer ---------------------------------------------------------------------------


def run_optimizer(
    step: TrainingStep,
    groups: list[tuple[Tally, list[nn.Parameter]]],
    set_current,
    outside: Tally,
) -> None:
    """One optimizer per group (a unit's trainable parameters that got a gradient), stepped twice;
    the second step counts into the group's tally, phase ``optimizer`` (see the module doc).
    ``set_current(tally)`` points the counting modes at a tally. In fp16, the loss scaler's work
    per parameter (unscaling the gradients and checking them) is the group's; its scalar work
    (1/scale, the next scale) is ``outside``'s, in the optimizer phase."""
    scratch = Tally()
    scale = found_inf = inv_scale = None
    for owner, params in groups:
        params = [p for p in params if p.grad is not None]
        if not params:
            continue
        if step.scaler and scale is None:
            device = params[0].device
            set_current(outside.phase(Phase.OPTIMIZER))
            scale = torch.full((), LOSS_SCALE, dtype=torch.float32, device=device)
            found_inf = torch.zeros((), dtype=torch.float32, device=device)
            inv_scale = scale.reciprocal()
        opt = step.make_optimizer(params)
        set_current(scratch)
        opt.step()  # state made, first-step special cases taken
        set_current(owner.phase(Phase.OPTIMIZER))
        try:
            if step.scaler:  # GradScaler.unscale_: the gradients / scale, checked for inf/nan
                grads = [p.grad for p in params]
                torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv_scale)
            opt.step()  # (GradScaler.step skips it when an inf was found: assumed finite)
        finally:
            set_current(None)
    if step.scaler and scale is not None:  # GradScaler.update: the next step's scale
        set_current(outside.phase(Phase.OPTIMIZER))
        try:
            tracker = torch.zeros((), dtype=torch.int32, device=scale.device)
            torch._amp_update_scale_(scale, tracker, found_inf, 2.0, 0.5, 2000)
        finally:
            set_current(None)

"""What training a model costs in operations: per training step, per epoch, and for a whole run.

One training step is traced exactly as ``flowprof train`` runs it (tracer/training_step.py): the
model at the run's batch size, its criterion (the paper's eq. (9) on the RBF distances for the
paper's LeNet-5, cross entropy otherwise) and its optimizer (Adam or SGD with the run's weight
decay). An epoch is ``n // B`` steps at batch ``B`` and, when ``B`` does not divide ``n``, one
step at the remainder (traced at that size: the cost of a step is linear in the batch only for
the per-sample work, not the optimizer's). A run is its epochs; the evaluation of the test set
after each epoch (a forward pass in eval mode) is counted beside it, not in it. Data
augmentation (the shifts) moves pixels and is not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flowprof.tracer.counts import OpCount, Phase


@dataclass(frozen=True)
class StepCost:
    """One training step at ``batch``: its counts by phase."""

    batch: int
    phases: dict[Phase, OpCount]

    @property
    def total(self) -> OpCount:
        return OpCount.sum(self.phases.values())


@dataclass(frozen=True)
class TrainingCost:
    """A model's training cost: ``step`` at the batch size, the epoch's steps, the run's epochs."""

    model: str
    samples: int  # training samples per epoch
    batch: int
    step: StepCost
    last_step: StepCost | None  # the remainder batch, when the batch size does not divide
    eval_samples: int
    eval_forward: OpCount  # one evaluation pass over the test set
    epochs: int  # epochs of the run (0: none given)
    converged_epoch: int | None

    @property
    def full_steps(self) -> int:
        return self.samples // self.batch

    @property
    def steps_per_epoch(self) -> int:
        return self.full_steps + (1 if self.last_step is not None else 0)

    @property
    def epoch(self) -> OpCount:
        """One epoch of training steps."""
        cost = self.step.total.scale(self.full_steps)
        return cost + self.last_step.total if self.last_step is not None else cost

    def run(self, epochs: int | None = None) -> OpCount:
        """``epochs`` epochs of training (default: the run's)."""
        return self.epoch.scale(self.epochs if epochs is None else epochs)

    def to_dict(self) -> dict[str, Any]:
        def counts(c: OpCount) -> dict[str, int]:
            return c.to_dict() | {"other": c.other, "total": c.total}

        out = {
            "model": self.model,
            "samples_per_epoch": self.samples,
            "batch_size": self.batch,
            "steps_per_epoch": self.steps_per_epoch,
            "step": {p.value: counts(c) for p, c in self.step.phases.items()}
            | {"total": counts(self.step.total)},
            "epoch": counts(self.epoch),
            "eval_samples": self.eval_samples,
            "eval_pass": counts(self.eval_forward),
            "epochs": self.epochs,
            "converged_epoch": self.converged_epoch,
        }
        if self.last_step is not None:
            out["last_step"] = {"batch_size": self.last_step.batch} | counts(self.last_step.total)
        if self.epochs:
            out["run"] = counts(self.run())
        if self.converged_epoch:
            out["to_convergence"] = counts(self.run(self.converged_epoch))
        return out


class _Runner:
    """A model as ``train`` builds and trains it: its criterion and optimizer, traced at any
    batch size (one build for all of them)."""

    def __init__(self, model_name: str, config: Any) -> None:
        import torch

        from flowprof import api
        from flowprof.training.loop import distance_loss, make_optimizer, output_is_distance

        built = api.build(model_name, device="meta")
        self.module = built.module
        shape = list(built.example_inputs("meta")[0].shape)
        self.channels = shape[1]
        self.size = getattr(config, "input_size", None) or shape[-1]
        distance = output_is_distance(built.module)
        rbf_j = getattr(config, "rbf_j", None)

        def criterion(out: torch.Tensor) -> torch.Tensor:
            labels = torch.zeros(out.shape[0], dtype=torch.long, device=out.device)
            return distance_loss(out, labels, distance, rbf_j)

        criterion.__name__ = (
            "eq. (9) on RBF distances" if distance and rbf_j is not None else "cross entropy"
        )
        self.criterion = criterion
        self.optimizer = lambda params: make_optimizer(config, params)

    def shape(self, batch: int) -> tuple[int, ...]:
        return (batch, self.channels, self.size, self.size)

    def step(self, batch: int) -> StepCost:
        from flowprof import api

        g = api.trace(
            self.module,
            [self.shape(batch)],
            phases=("forward", "backward", "optimizer"),
            optimizer=self.optimizer,
            loss=self.criterion,
        )
        return StepCost(batch, {p: g.total(p) for p in g.phases()})

    def forward(self, batch: int) -> OpCount:
        from flowprof import api

        return api.trace(self.module, [self.shape(batch)]).total()


def training_cost(
    model_name: str,
    config: Any,
    samples: int,
    eval_samples: int,
    epochs: int = 0,
    converged_epoch: int | None = None,
) -> TrainingCost:
    """The training cost of ``model_name`` trained with ``config`` (a training.loop.TrainConfig:
    batch size, optimizer, learning rate, weight decay, criterion) on ``samples`` training
    samples for ``epochs`` epochs, with ``eval_samples`` test samples evaluated after each."""
    run = _Runner(model_name, config)
    batch = config.batch_size
    rest = samples % batch
    return TrainingCost(
        model_name,
        samples,
        batch,
        run.step(batch),
        run.step(rest) if rest else None,
        eval_samples,
        run.forward(eval_samples),
        epochs,
        converged_epoch,
    )


def of_run(result: Any) -> TrainingCost:
    """The training cost of a finished run (a training.loop.TrainResult)."""
    return training_cost(
        result.config.model,
        result.config,
        result.train_samples,
        result.test_samples,
        len(result.history),
        result.converged_epoch,
    )

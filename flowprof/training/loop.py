"""Training a LeNet-5 variant on MNIST-like data held in memory, until convergence.

The whole dataset is padded, normalised and moved to the device once (:func:`prepare_tensors`);
each epoch draws a seeded permutation and slices batches from the tensors by index, so the hot
path runs no per-sample Python. The library never prints: progress goes to the ``on_batch`` and
``on_epoch`` callbacks (``reports/training_progress.py`` turns them into a Rich progress bar).

Convergence rule (:func:`convergence_epoch`): training stops once the test loss has not improved
on its best so far by more than ``tol`` for ``patience`` epochs in a row, or after
``max_epochs``; the convergence epoch is the epoch of that best test loss. ``epochs=N`` trains
exactly N epochs instead.

Reproducible: ``seed`` fixes the initial weights (the model is built right after
``torch.manual_seed(seed)``, on the CPU) and the data order (epoch e's permutation comes from a
generator seeded with ``seed`` and e). A checkpoint after each epoch holds the model, optimizer,
RNG states and history, so ``resume=True`` continues exactly as if never stopped.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from flowprof.errors import TrainingError
from flowprof.tracer.hooks import BlockTime, BlockTimer
from flowprof.training import checkpoint as ckpt
from flowprof.training.history import EpochRecord, write_history
from flowprof.training.kernels import use_fast_kernels
from flowprof.training.mnist import MnistData


class OptimizerKind(StrEnum):
    """The ``--optimizer`` vocabulary."""

    ADAM = "adam"
    SGD = "sgd"


class StopReason(StrEnum):
    """Why training ended."""

    CONVERGED = "converged"  # the convergence rule fired
    EPOCHS = "epochs"  # the fixed number of epochs (``epochs=N``) is done
    MAX_EPOCHS = "max_epochs"  # the upper bound was reached before convergence


@dataclass(frozen=True)
class TrainConfig:
    """What to train and how. Every field is recorded in the history and the checkpoint."""

    model: str = "lenet5"  # a models.registry name
    epochs: int | None = None  # train exactly this many epochs; None: until convergence
    max_epochs: int = 20  # upper bound for the convergence rule: the paper's 20 passes
    patience: int = 2  # epochs without improvement before stopping
    # An improvement of the test loss must exceed this to count. With the paper's criterion
    # (rbf_j) the loss of the LeNet-5s is ~1.5 at 1% error and falls by ~0.1 per epoch while it
    # still learns; 0.01 is the improvement that no longer buys accuracy.
    tol: float = 1e-2
    # Full MNIST, paper's LeNet-5, Adam (measured, test error after 4 epochs, lr_decay 0.85):
    # batch 128 at 2e-3 with eq. (9) 1.14%; with plain cross entropy, batch 256 at 2e-3 2.54%,
    # batch 32 at 5e-4 2.15%, batch 256 at 1e-2 diverged. 128 also keeps the CPU kernels busy.
    batch_size: int = 128
    lr: float = 2e-3
    # Epoch e trains at lr * lr_decay ** (e - 1), a schedule of the epoch alone (the paper also
    # lowered its step epoch by epoch).
    lr_decay: float = 0.85
    optimizer: str = OptimizerKind.ADAM
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    shift: int = 0  # augmentation: move each training digit by up to this many pixels
    seed: int = 0
    device: str = "cpu"
    train_samples: int | None = None  # use only the first N training samples (None: all)
    test_samples: int | None = None  # use only the first N test samples (None: all)
    input_size: int | None = None  # side of the padded input; None: the model's declared input
    eval_batch_size: int = 1000  # evaluation only; does not change results
    # Run the LeNets' convolutions and subsamplings on training.kernels' classes: the same
    # products and additions, about 3x the registry modules' samples/s on this CPU (BENCHMARKS.md,
    # `plain` against `bare`); results agree to float rounding with the plain modules, not bit for
    # bit, hence a recorded field.
    fast_kernels: bool = True
    # torch CPU threads while training; None: one (see choose_threads). Results are bitwise
    # reproducible for a fixed thread count.
    threads: int | None = None
    # Models whose outputs are RBF distances (the paper's LeNet-5) are trained on the paper's own
    # criterion, its eq. (9): E = y_Dp + log(e^-j + sum_i e^-y_i), with this constant j; None:
    # the plain cross entropy of -y. The e^-j term keeps pulling the correct class's distance
    # down once it is the smallest, which plain cross entropy stops doing (see distance_loss).
    rbf_j: float | None = 1.0

    def validate(self) -> TrainConfig:
        """Check the options; raise TrainingError naming the first bad one."""
        positive = ["max_epochs", "patience", "batch_size", "eval_batch_size"]
        for name in positive:
            if getattr(self, name) < 1:
                raise TrainingError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("epochs", "train_samples", "test_samples", "input_size", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise TrainingError(f"{name} must be at least 1, got {value}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise TrainingError(f"lr must be a positive number, got {self.lr}")
        if not 0 < self.lr_decay <= 1:
            raise TrainingError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        if not (self.tol >= 0 and math.isfinite(self.tol)):
            raise TrainingError(f"tol must be a finite number of 0 or more, got {self.tol}")
        if self.shift < 0:
            raise TrainingError(f"shift must not be negative, got {self.shift}")
        if self.optimizer not in set(OptimizerKind):
            raise TrainingError(
                f"unknown optimizer {self.optimizer!r} (choose {', '.join(OptimizerKind)})"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain Python values (enums as their strings), for JSON and checkpoints."""
        return {k: str(v) if isinstance(v, StrEnum) else v for k, v in asdict(self).items()}

    def rule(self) -> str:
        """The stopping rule in words (the CLI prints it before training)."""
        if self.epochs is not None:
            return f"fixed: exactly {self.epochs} epochs (no convergence test)"
        return (
            f"converged when the test loss has not improved on its best by more than {self.tol:g} "
            f"for {self.patience} epochs in a row (at most {self.max_epochs} epochs); "
            "the convergence epoch is the epoch of that best test loss"
        )


# The learning rate of each model whose recipe differs from TrainConfig.lr; every other field of
# the recipe is shared. Adam moves every weight by about lr per step whatever its size, and the
# paper's initialisation (+-2.4 / fan-in) makes the twin's weights large: its pointwise stages have
# fan-ins of 1, 3-6 and 16 where LeNet-5's convolutions have 25, 75-150 and 400, so its C1, C3
# and C5 weights start about 25x larger (mean |w| 1.19 / 0.27-0.37 / 0.075 against 0.050 /
# 0.008-0.016 / 0.003) and, at LeNet-5's 2e-3, move 25x slower relative to their size: the twin
# was at 3.00% test error after 20 epochs, its test loss still falling. Measured on 15,000 training
# digits, 4 epochs, x0.85 per epoch, test error on 2,000: 2e-3 16.75%, 6e-3 9.75%, 1.2e-2 9.30%.
# On the full set at 1e-2 the twin converges at epoch 17 (2.40%) and stops after 19 (2.36%).
MODEL_LR = {"lenet5-dws": 1e-2}


def recipe(model: str, **changes: Any) -> TrainConfig:
    """The training configuration of ``model``: TrainConfig's defaults with the model's learning
    rate (:data:`MODEL_LR`), then ``changes`` (None values ignored), validated."""
    config = TrainConfig(model=model, lr=MODEL_LR.get(model, TrainConfig.lr))
    return with_overrides(config, **changes)


# Fields that may differ between a run and its resumption: they do not change the results.
_RESUMABLE_CHANGES = {
    "epochs",
    "max_epochs",
    "patience",
    "tol",
    "device",
    "eval_batch_size",
    "threads",
}


@dataclass(frozen=True)
class BatchProgress:
    """What ``on_batch`` receives, at most every ``progress_seconds`` and after the last batch."""

    epoch: int
    samples_done: int
    samples_total: int
    loss: float  # mean training loss of the epoch so far
    acc: float  # training accuracy of the epoch so far
    samples_per_s: float


@dataclass(frozen=True)
class InMemoryData:
    """The dataset as model-ready tensors on one device: inputs float ``(N, 1, S, S)``."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: float  # normalisation: x = (k / 255 - mean) / std, from the training images
    std: float


@dataclass
class TrainResult:
    """A finished (or interrupted) run: its history, convergence and where its files are."""

    config: TrainConfig
    history: list[EpochRecord]
    converged_epoch: int | None
    stop_reason: str | None  # a StopReason; None while interrupted
    data_description: str
    dataset: str
    source: str
    train_samples: int
    test_samples: int
    mean: float
    std: float
    output_is_distance: bool
    threads: int  # torch's CPU threads: results are bitwise reproducible for one thread count
    block_times: list[BlockTime] | None = None
    resumed_epochs: int = 0  # epochs read from a checkpoint rather than trained in this call
    files: dict[str, Path] = field(default_factory=dict)
    model: nn.Module | None = field(default=None, repr=False)

    @property
    def final(self) -> EpochRecord | None:
        """The last epoch trained."""
        return self.history[-1] if self.history else None

    @property
    def converged(self) -> EpochRecord | None:
        """The record of the convergence epoch (None when the rule did not fire)."""
        if self.converged_epoch is None:
            return None
        return self.history[self.converged_epoch - 1]

    def meta(self) -> dict[str, Any]:
        """Everything about the run except the rows, for history.json."""
        return {
            "tool": "flowprof",
            "model": self.config.model,
            "dataset": self.dataset,
            "source": self.source,
            "data": self.data_description,
            "train_samples": self.train_samples,
            "test_samples": self.test_samples,
            "normalisation": {"mean": self.mean, "std": self.std},
            "loss": self.loss_description(),
            "config": self.config.to_dict(),
            "rule": self.config.rule(),
            "torch_threads": self.threads,
            "converged_epoch": self.converged_epoch,
            "stop_reason": self.stop_reason,
        }

    def loss_description(self) -> str:
        """The training criterion in words."""
        if not self.output_is_distance:
            return "cross entropy of the output logits"
        if self.config.rbf_j is None:
            return "cross entropy of -output (outputs are RBF distances)"
        return (
            f"the paper's eq. (9) on the RBF distances y: y_D + log(e^-j + sum_i e^-y_i), "
            f"j = {self.config.rbf_j:g}"
        )

    def summary(self) -> str:
        """One line: epochs, convergence and accuracy."""
        last = self.final
        if last is None:
            return f"{self.config.model}: no epoch completed"
        seconds = sum(r.seconds for r in self.history) / len(self.history)
        head = f"{self.config.model}: {len(self.history)} epochs"
        if self.converged is not None:
            c = self.converged
            head += (
                f", converged at epoch {c.epoch} (test loss {c.test_loss:.4f}, "
                f"test accuracy {c.test_acc:.2%})"
            )
        elif self.stop_reason == StopReason.MAX_EPOCHS:
            head += f", not converged within {self.config.max_epochs} epochs"
        elif self.stop_reason is None:
            head += ", interrupted"
        return (
            f"{head}; final test accuracy {last.test_acc:.2%}, test loss {last.test_loss:.4f}; "
            f"{seconds:.1f} s/epoch, {last.samples_per_s:,.0f} samples/s"
        )


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; ``result`` holds the run up to its last complete epoch."""

    def __init__(self, result: TrainResult) -> None:
        super().__init__("training interrupted")
        self.result = result


def convergence_epoch(history: Sequence[EpochRecord], tol: float, patience: int) -> int | None:
    """The epoch of the best test loss once ``patience`` later epochs failed to beat it by ``tol``.

    None while the rule has not fired. A pure function of the history, so a resumed run needs
    no extra state to apply it.
    """
    best, best_epoch, since = math.inf, None, 0
    for record in history:
        if record.test_loss < best - tol:
            best, best_epoch, since = record.test_loss, record.epoch, 0
        else:
            since += 1
            if since >= patience and best_epoch is not None:
                return best_epoch
    return None


def prepare_tensors(data: MnistData, input_size: int = 32, device: str = "cpu") -> InMemoryData:
    """Pad the 28x28 images to ``input_size`` with background, normalise, move to ``device``.

    Normalisation uses the training images' mean and standard deviation (0.1307 and 0.3081 for
    full MNIST), computed over the 28x28 images before padding; padding is background (0).
    """
    if input_size < 28 or (input_size - 28) % 2:
        raise TrainingError(f"input size {input_size} cannot hold a centred 28x28 digit")
    pixels = data.train_images.float().div_(255)
    mean, std = float(pixels.mean()), float(pixels.std())
    pad = (input_size - 28) // 2

    def convert(images: torch.Tensor) -> torch.Tensor:
        x = images.to(device).unsqueeze(1).float().div_(255)  # (N, 1, 28, 28)
        x = F.pad(x, (pad, pad, pad, pad))  # (N, 1, S, S)
        return x.sub_(mean).div_(std).contiguous()

    return InMemoryData(
        convert(data.train_images),
        data.train_labels.to(device),
        convert(data.test_images),
        data.test_labels.to(device),
        mean,
        std,
    )


def build_model(
    config: TrainConfig, factory: Callable[[], nn.Module] | None = None
) -> tuple[nn.Module, int]:
    """The model with its seeded initial weights, on ``config.device``, and its input size."""
    torch.manual_seed(config.seed)
    if factory is not None:
        module, size = factory(), config.input_size or 32
    else:
        # the registry imports every model file: only when needed
        from flowprof.models import registry

        try:
            built = registry.build(config.model, device="cpu")
        except registry.ModelError as exc:
            raise TrainingError(str(exc)) from None
        module = built.module
        _check_trainable(config.model, built)
        size = config.input_size or int(built.inputs[0].shape[-1])
    if config.fast_kernels:
        use_fast_kernels(module)
    return module.to(config.device).train(), size


def _check_trainable(name: str, built: Any) -> None:
    """Training feeds MNIST digits (one 1-channel square image per example, 10 classes): refuse
    a model whose forward takes anything else, naming the models that train."""
    shapes = [spec.shape for spec in built.inputs]
    if len(shapes) == 1 and len(shapes[0]) == 4 and shapes[0][1] == 1:
        return
    from flowprof.models import catalog

    trainable = ", ".join(n for n in catalog.names() if n.startswith("lenet5"))
    takes = ", ".join("x".join(map(str, s)) for s in shapes)
    raise TrainingError(
        f"train fits MNIST digit classifiers, one 1-channel image in, 10 classes out ({trainable}"
        f" or a model of yours that takes Nx1xHxW); {name} takes {takes}"
    )


def choose_threads(config: TrainConfig) -> int:
    """The torch CPU threads to train with: ``config.threads``, else one.

    One, because a LeNet-5 step is hundreds of small ops: measured on this 2-core machine
    (bench/bench_training.py), a second thread adds little when the machine is idle and, when
    another process keeps one core busy, makes every op wait at OpenMP's barrier for the thread
    that is not running, which stalls the loop; a single thread runs at the speed of the core it
    gets. The second core is better used by a second, independent run.
    """
    return config.threads if config.threads is not None else 1


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` torch CPU threads, then restore the caller's setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    return make_optimizer(config, model.parameters())


def make_optimizer(config: TrainConfig, params: Any) -> torch.optim.Optimizer:
    """The optimizer ``config`` trains with, over ``params``."""
    if config.optimizer == OptimizerKind.SGD:
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def epoch_lr(config: TrainConfig, epoch: int) -> float:
    """The learning rate of ``epoch`` (1-based): ``lr * lr_decay ** (epoch - 1)``."""
    return config.lr * config.lr_decay ** (epoch - 1)


def epoch_shifts(seed: int, epoch: int, n: int, shift: int) -> torch.Tensor | None:
    """Per-sample (dy, dx) translations of ``epoch`` in [-shift, shift], (n, 2); None if 0.

    Like the data order, a function of the seed and the epoch only, so a resumed run draws the
    same shifts (the generator is apart from the permutation's)."""
    if shift <= 0:
        return None
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch + 500_009)
    return torch.randint(-shift, shift + 1, (n, 2), generator=generator)


def translate(x: torch.Tensor, shifts: torch.Tensor, background: float) -> torch.Tensor:
    """Move each image of ``x`` (B, C, S, S) by its (dy, dx), filling with ``background``."""
    b, _, h, w = x.shape
    s = int(shifts.abs().max()) if shifts.numel() else 0
    if s == 0:
        return x
    padded = F.pad(x, (s, s, s, s), value=background)  # (B, C, S + 2s, S + 2s)
    rows = torch.arange(h, device=x.device) + s - shifts[:, :1].to(x.device)  # (B, S)
    cols = torch.arange(w, device=x.device) + s - shifts[:, 1:].to(x.device)  # (B, S)
    batch = torch.arange(b, device=x.device)[:, None, None]  # (B, 1, 1)
    # (B, S, S, C) -> (B, C, S, S)
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def epoch_permutation(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The data order of ``epoch``: depends on the seed and the epoch only (resumable)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


def output_is_distance(model: nn.Module) -> bool:
    """Whether ``model`` returns distances (lower = more likely) instead of logits: the model
    says so with a class attribute ``output_is_distance`` (the paper's LeNet-5 does)."""
    return bool(getattr(model, "output_is_distance", False))


def _logits(output: torch.Tensor, distance: bool) -> torch.Tensor:
    # The paper's LeNet-5 ends in RBF units whose outputs are distances to class codes: the
    # closest class wins, so -distance serves as the logit of a softmax cross entropy.
    return output.neg() if distance else output


def distance_loss(
    output: torch.Tensor, y: torch.Tensor, distance: bool, j: float | None, reduction: str = "mean"
) -> torch.Tensor:
    """The training criterion of ``output`` (B, classes) against labels ``y`` (B,).

    Logits: cross entropy. Distances with ``j`` None: cross entropy of ``-output``, i.e.
    ``y_D + log(sum_i e^-y_i)``. Distances with ``j``: the paper's eq. (9),
    ``y_D + log(e^-j + sum_i e^-y_i)``, written as a cross entropy with one more logit, ``-j``,
    that is no sample's label. Once ``y_D`` is the smallest distance by a wide margin the plain
    form's gradient vanishes (the RBF distances are tens apart), while the e^-j term still pulls
    ``y_D`` towards 0: the output keeps moving towards its class's code.
    """
    logits = _logits(output, distance)  # (B, classes)
    if distance and j is not None:
        garbage = torch.full_like(logits[:, :1], -j)  # (B, 1): the constant "class" e^-j
        logits = torch.cat([logits, garbage], dim=1)  # (B, classes + 1)
    return F.cross_entropy(logits, y, reduction=reduction)


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: InMemoryData,
    permutation: torch.Tensor,
    batch_size: int,
    epoch: int,
    on_batch: Callable[[BatchProgress], None] | None,
    progress_seconds: float,
    distance: bool,
    shifts: torch.Tensor | None = None,
    rbf_j: float | None = None,
) -> tuple[float, float, float]:
    """One pass over the training tensors; returns mean loss, accuracy and samples/s.

    ``shifts`` (n, 2), when given, translates the b-th sample of the epoch by ``shifts[b]``."""
    model.train()
    n = data.x_train.shape[0]
    loss_sum = torch.zeros((), device=data.x_train.device)
    correct = torch.zeros((), dtype=torch.long, device=data.x_train.device)
    start = last_report = time.perf_counter()
    for begin in range(0, n, batch_size):
        index = permutation[begin : begin + batch_size]
        x, y = data.x_train[index], data.y_train[index]  # (B, 1, S, S), (B,)
        if shifts is not None:
            background = -data.mean / data.std  # a 0 pixel after normalisation
            x = translate(x, shifts[begin : begin + batch_size], background)
        output = model(x)  # (B, 10)
        logits = _logits(output, distance)
        loss = distance_loss(output, y, distance, rbf_j)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            loss_sum += loss * y.shape[0]
            correct += (logits.argmax(dim=1) == y).sum()
        if on_batch is not None:
            now, done = time.perf_counter(), min(begin + batch_size, n)
            if now - last_report >= progress_seconds or done == n:
                last_report = now
                on_batch(
                    BatchProgress(
                        epoch,
                        done,
                        n,
                        loss_sum.item() / done,
                        correct.item() / done,
                        done / max(now - start, 1e-9),
                    )
                )
    seconds = time.perf_counter() - start
    return loss_sum.item() / n, correct.item() / n, n / max(seconds, 1e-9)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 1000,
    distance: bool | None = None,
    rbf_j: float | None = None,
) -> tuple[float, float]:
    """Mean loss (the training criterion, :func:`distance_loss`) and accuracy of ``model`` on
    ``(x, y)``, in eval mode.

    ``distance``: the outputs are distances (see :func:`output_is_distance`; None asks the model).
    """
    if distance is None:
        distance = output_is_distance(model)
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    for begin in range(0, x.shape[0], batch_size):
        xb, yb = x[begin : begin + batch_size], y[begin : begin + batch_size]
        output = model(xb)
        logits = _logits(output, distance)
        loss_sum += distance_loss(output, yb, distance, rbf_j, reduction="sum").item()
        correct += int((logits.argmax(dim=1) == yb).sum())
    model.train(was_training)
    n = max(int(x.shape[0]), 1)
    return loss_sum / n, correct / n


def _rng_state(device: str) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], device: str) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state_all(state["cuda"])


def _check_resumable(saved: dict[str, Any], config: TrainConfig, fingerprint: str) -> None:
    old = saved.get("config", {})
    for f in fields(TrainConfig):
        if f.name not in _RESUMABLE_CHANGES and old.get(f.name) != getattr(config, f.name):
            raise TrainingError(
                f"cannot resume: the checkpoint was trained with {f.name}={old.get(f.name)!r}, "
                f"this run asks for {getattr(config, f.name)!r}"
            )
    if saved.get("data_fingerprint") != fingerprint:
        raise TrainingError(
            "cannot resume: the checkpoint was trained on different data "
            f"({saved.get('data_description', 'unknown')})"
        )


def _stop_reason(config: TrainConfig, history: Sequence[EpochRecord]) -> str | None:
    if config.epochs is not None:
        return StopReason.EPOCHS if len(history) >= config.epochs else None
    if convergence_epoch(history, config.tol, config.patience) is not None:
        return StopReason.CONVERGED
    return StopReason.MAX_EPOCHS if len(history) >= config.max_epochs else None


def train(
    config: TrainConfig,
    data: MnistData,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    model_factory: Callable[[], nn.Module] | None = None,
    on_batch: Callable[[BatchProgress], None] | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    profile: bool = False,
    progress_seconds: float = 0.1,
) -> TrainResult:
    """Train ``config.model`` on ``data`` until the stopping rule says so.

    ``out_dir``: after every epoch write ``checkpoint.pt``, ``history.csv`` and ``history.json``
    there (atomically), in that order; ``on_epoch`` is called after they are written.
    ``resume``: continue from ``out_dir/checkpoint.pt``; the result equals an uninterrupted run.
    A fresh run refuses an ``out_dir`` that holds a checkpoint unless ``overwrite`` is true.
    ``model_factory``: build the model with it instead of ``models.registry`` (``config.model``
    then only names it). ``profile``: time every leaf module's forward pass (see
    tracer.hooks) and return the totals in ``result.block_times``.

    Ctrl-C raises :class:`TrainingInterrupted`, whose ``result`` covers the last complete epoch
    (its ``model`` is mid-epoch); the files on disk are those of that epoch.
    """
    config.validate()
    if resume and out_dir is None:
        raise TrainingError("resume needs the output folder that holds the checkpoint")
    for asked, have, what in (
        (config.train_samples, data.train_samples, "train"),
        (config.test_samples, data.test_samples, "test"),
    ):
        if asked is not None and asked > have:
            raise TrainingError(
                f"{what}_samples {asked:,} is more than the {have:,} {what} samples there are "
                f"({data.dataset}, {data.source}): give at most {have:,}, or leave it out to use "
                "all"
            )
    data = data.subset(config.train_samples, config.test_samples)
    if data.train_samples == 0 or data.test_samples == 0:
        raise TrainingError("no training or test samples to train on")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and not resume and not overwrite and (out / ckpt.FILE_NAME).exists():
        raise TrainingError(
            f"{out} already holds a training run: resume it, or choose another output folder"
        )
    fingerprint = data.fingerprint()
    devices = [torch.device(config.device)] if torch.device(config.device).type == "cuda" else []
    # the caller's RNG state and thread count are left untouched
    with torch.random.fork_rng(devices=devices), torch_threads(choose_threads(config)):
        model, input_size = build_model(config, model_factory)
        tensors = prepare_tensors(data, input_size, config.device)
        optimizer = _optimizer(config, model)
        history: list[EpochRecord] = []
        if resume:
            assert out is not None
            saved = ckpt.load_checkpoint(out / ckpt.FILE_NAME)
            _check_resumable(saved, config, fingerprint)
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            _set_rng_state(saved["rng"], config.device)
            history = [EpochRecord(**r) for r in saved["history"]]
        files = _file_paths(out) if resume else {}
        result = TrainResult(
            config=config,
            history=history,
            converged_epoch=convergence_epoch(history, config.tol, config.patience),
            stop_reason=_stop_reason(config, history),
            data_description=data.description,
            dataset=data.dataset,
            source=data.source,
            train_samples=data.train_samples,
            test_samples=data.test_samples,
            mean=tensors.mean,
            std=tensors.std,
            output_is_distance=output_is_distance(model),
            threads=torch.get_num_threads(),
            model=model,
            files=files,
            resumed_epochs=len(history),
        )
        timer = BlockTimer(model, sync_cuda=config.device.startswith("cuda")) if profile else None
        if timer is not None:
            timer.attach()
        try:
            while result.stop_reason is None:
                epoch = len(history) + 1
                record = _run_epoch(
                    config,
                    model,
                    optimizer,
                    tensors,
                    epoch,
                    timer,
                    on_batch,
                    progress_seconds,
                    result.output_is_distance,
                )
                history.append(record)
                result.converged_epoch = convergence_epoch(history, config.tol, config.patience)
                result.stop_reason = _stop_reason(config, history)
                if out is not None:
                    _save(out, result, model, optimizer, fingerprint)
                if on_epoch is not None:
                    on_epoch(record)
        except KeyboardInterrupt:
            if timer is not None:
                result.block_times = timer.blocks()
            raise TrainingInterrupted(result) from None
        finally:
            if timer is not None:
                timer.remove()
        if timer is not None:
            result.block_times = timer.blocks()
    return result


def _run_epoch(
    config: TrainConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    tensors: InMemoryData,
    epoch: int,
    timer: BlockTimer | None,
    on_batch: Callable[[BatchProgress], None] | None,
    progress_seconds: float,
    distance: bool,
) -> EpochRecord:
    start = time.perf_counter()
    for group in optimizer.param_groups:  # a function of the epoch alone: nothing to checkpoint
        group["lr"] = epoch_lr(config, epoch)
    permutation = epoch_permutation(config.seed, epoch, tensors.x_train.shape[0])
    permutation = permutation.to(tensors.x_train.device)
    if timer is not None:
        timer.active = True
    train_loss, train_acc, samples_per_s = _train_epoch(
        model,
        optimizer,
        tensors,
        permutation,
        config.batch_size,
        epoch,
        on_batch,
        progress_seconds,
        distance,
        epoch_shifts(config.seed, epoch, tensors.x_train.shape[0], config.shift),
        config.rbf_j,
    )
    if timer is not None:
        timer.active = False  # per-block times are of training forwards only
    test_loss, test_acc = evaluate(
        model, tensors.x_test, tensors.y_test, config.eval_batch_size, distance, config.rbf_j
    )
    return EpochRecord(
        epoch=epoch,
        train_loss=train_loss,
        train_acc=train_acc,
        test_loss=test_loss,
        test_acc=test_acc,
        seconds=time.perf_counter() - start,
        lr=float(optimizer.param_groups[0]["lr"]),
        samples_per_s=samples_per_s,
    )


def _save(
    out: Path,
    result: TrainResult,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    fingerprint: str,
) -> None:
    state = {
        "config": result.config.to_dict(),
        "data_fingerprint": fingerprint,
        "data_description": result.data_description,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": _rng_state(result.config.device),
        "history": [asdict(r) for r in result.history],
    }
    ckpt.save_checkpoint(out / ckpt.FILE_NAME, state)
    write_history(out, result.history, result.meta())
    result.files = _file_paths(out)


def _file_paths(out: Path) -> dict[str, Path]:
    return {
        "checkpoint": out / ckpt.FILE_NAME,
        "csv": out / "history.csv",
        "json": out / "history.json",
    }


def with_overrides(config: TrainConfig, **changes: Any) -> TrainConfig:
    """``config`` with some fields replaced (None values are ignored), validated."""
    return replace(config, **{k: v for k, v in changes.items() if v is not None}).validate()

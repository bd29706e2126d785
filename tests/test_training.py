"""Training on the first digits of MNIST: learning, files, plots, reproducibility and resume.

Each run uses a tiny convolutional network on 1,000-2,000 offline MNIST digits, so it takes well
under a second per epoch. The real LeNet-5 variants are exercised once, when they are registered.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from torch import nn

from flowprof import cli
from flowprof.reports import training_plots
from flowprof.training import mnist
from flowprof.training.checkpoint import CheckpointError, load_checkpoint
from flowprof.training.history import COLUMNS, EpochRecord, read_history, read_history_meta
from flowprof.training.loop import (
    StopReason,
    TrainConfig,
    TrainingError,
    TrainingInterrupted,
    convergence_epoch,
    distance_loss,
    evaluate,
    prepare_tensors,
    recipe,
    train,
)


def tiny_net() -> nn.Module:
    """A LeNet-shaped network small enough for tests: 32x32 input, 10 logits."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 5),  # (B, 4, 28, 28)
        nn.ReLU(),
        nn.MaxPool2d(2),  # (B, 4, 14, 14)
        nn.Conv2d(4, 8, 5),  # (B, 8, 10, 10)
        nn.ReLU(),
        nn.MaxPool2d(2),  # (B, 8, 5, 5)
        nn.Flatten(),
        nn.Linear(8 * 5 * 5, 10),
    )


SMALL = TrainConfig(
    model="tiny", epochs=3, train_samples=1500, test_samples=500, batch_size=50, lr_decay=0.9
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Bitwise reproducibility holds for a fixed thread count; one thread also keeps these runs
    # fast and steady on a shared two-core machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data() -> mnist.MnistData:
    try:
        mnist.provision_full()
    except mnist.DataError as exc:
        pytest.skip(f"offline MNIST cannot be provisioned: {exc}")
    return mnist.load(download_allowed=False)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """One uninterrupted 3-epoch run with files, shared by several tests."""
    out = tmp_path_factory.mktemp("reference")
    return train(SMALL, data, out_dir=out, model_factory=tiny_net), out


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_loss_falls_and_accuracy_rises(reference):
    result, _ = reference
    h = result.history
    assert [r.epoch for r in h] == [1, 2, 3] and result.stop_reason == StopReason.EPOCHS
    assert h[-1].train_loss < h[0].train_loss and h[-1].test_loss < h[0].test_loss
    assert h[-1].train_acc > h[0].train_acc and h[-1].test_acc > h[0].test_acc
    assert h[-1].test_acc > 0.5  # ten classes: chance is 0.1
    assert all(r.seconds > 0 and r.samples_per_s > 0 for r in h)
    assert [r.lr for r in h] == [SMALL.lr * SMALL.lr_decay**e for e in range(3)]


def test_history_files_parse(reference):
    result, out = reference
    assert read_history(out / "history.csv") == result.history
    assert read_history(out / "history.json") == result.history
    assert (out / "history.csv").read_text().splitlines()[0] == ",".join(COLUMNS)
    meta = read_history_meta(out / "history.json")
    assert meta["model"] == "tiny" and meta["source"] == mnist.Source.FULL_OFFLINE
    assert meta["train_samples"] == 1500 and meta["config"]["seed"] == 0
    assert meta["rule"] == SMALL.rule() and meta["stop_reason"] == "epochs"
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]  # no leftover temporary file
    assert "3 epochs" in result.summary()


def test_same_seed_same_history_other_seed_differs(data, reference):
    result, _ = reference
    again = train(SMALL, data, model_factory=tiny_net)
    assert [r.metrics() for r in again.history] == [r.metrics() for r in result.history]
    assert _same_weights(again.model, result.model)
    other = train(replace(SMALL, seed=1), data, model_factory=tiny_net)
    assert [r.metrics() for r in other.history] != [r.metrics() for r in result.history]


def test_resume_after_interrupt_equals_uninterrupted_run(data, reference, tmp_path):
    result, _ = reference

    def stop_after_epoch_1(record: EpochRecord) -> None:
        if record.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted) as stopped:
        train(SMALL, data, out_dir=tmp_path, model_factory=tiny_net, on_epoch=stop_after_epoch_1)
    assert len(stopped.value.result.history) == 1
    assert len(read_history(tmp_path / "history.csv")) == 1

    def stop_in_epoch_3(progress) -> None:  # Ctrl-C half-way through an epoch
        if progress.epoch == 3 and progress.samples_done >= 500:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted):
        train(
            SMALL,
            data,
            out_dir=tmp_path,
            resume=True,
            model_factory=tiny_net,
            on_batch=stop_in_epoch_3,
            progress_seconds=0.0,
        )
    assert len(load_checkpoint(tmp_path / "checkpoint.pt")["history"]) == 2  # epochs 1-2 intact
    assert len(read_history(tmp_path / "history.json")) == 2
    assert not [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]

    resumed = train(SMALL, data, out_dir=tmp_path, resume=True, model_factory=tiny_net)
    assert [r.metrics() for r in resumed.history] == [r.metrics() for r in result.history]
    assert _same_weights(resumed.model, result.model)
    assert read_history(tmp_path / "history.csv")[-1].metrics() == result.history[-1].metrics()


def test_resume_refuses_a_different_run(data, reference, tmp_path):
    _, out = reference
    changed = replace(SMALL, lr=0.01)
    with pytest.raises(TrainingError, match="lr"):
        train(changed, data, out_dir=out, resume=True, model_factory=tiny_net)
    with pytest.raises(TrainingError, match="already holds a training run"):
        train(SMALL, data, out_dir=out, model_factory=tiny_net)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(SMALL, data, out_dir=tmp_path, resume=True, model_factory=tiny_net)


def test_convergence_rule():
    def history(losses):
        return [EpochRecord(i + 1, 0, 0, loss, 0, 0, 0, 0) for i, loss in enumerate(losses)]

    # best 0.50 at epoch 3; epochs 4-6 do not beat it by more than 0.01: converged at 3
    assert convergence_epoch(history([0.9, 0.6, 0.50, 0.495, 0.52, 0.5]), 0.01, 3) == 3
    assert convergence_epoch(history([0.9, 0.6, 0.50, 0.495, 0.52]), 0.01, 3) is None
    assert convergence_epoch(history([0.9, 0.8, 0.7, 0.6]), 0.01, 1) is None


def test_the_recipe_shares_every_field_but_the_twins_learning_rate():
    paper, twin = recipe("lenet5"), recipe("lenet5-dws")
    assert paper == TrainConfig(model="lenet5")
    assert twin == replace(paper, model="lenet5-dws", lr=1e-2)  # MODEL_LR, loop.py
    assert recipe("lenet5-dws", lr=None, epochs=3).lr == 1e-2  # None leaves the recipe's value
    assert recipe("lenet5-dws", lr=5e-3).lr == 5e-3
    with pytest.raises(TrainingError, match="lr must be"):
        recipe("lenet5", lr=-1.0)


def test_train_until_convergence_stops_by_the_rule(data):
    # a tolerance no improvement can beat: converged at epoch 1 after `patience` more epochs
    config = TrainConfig(model="tiny", tol=10.0, patience=2, train_samples=500, test_samples=200)
    result = train(config, data, model_factory=tiny_net)
    assert result.stop_reason == StopReason.CONVERGED and result.converged_epoch == 1
    assert len(result.history) == 3 and "converged at epoch 1" in result.summary()
    bounded = replace(config, tol=0.0, patience=50, max_epochs=2)
    assert train(bounded, data, model_factory=tiny_net).stop_reason == StopReason.MAX_EPOCHS


def test_profile_times_every_leaf_and_removes_its_hooks(data):
    config = TrainConfig(model="tiny", epochs=1, train_samples=500, test_samples=100)
    result = train(config, data, model_factory=tiny_net, profile=True)
    batches = 500 // config.batch_size + 1  # 7 full batches of 64 and one of 52
    assert [b.block for b in result.block_times] == [str(i) for i in range(8)]
    assert all(b.calls == batches and b.seconds > 0 for b in result.block_times)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in result.model.modules())


def test_distance_outputs_are_negated_into_logits():
    class Distances(nn.Module):
        output_is_distance = True  # like the paper's RBF layer: small = likely

        def forward(self, x):
            return x

    labels = torch.tensor([0, 1, 2])
    distances = torch.ones(3, 10)
    distances[torch.arange(3), labels] = 0.0  # the right class is nearest
    _, acc = evaluate(Distances(), distances, labels)
    assert acc == 1.0


def test_cached_runs_are_reused_and_keyed_by_config_code_and_data(data, reference, tmp_path):
    from flowprof.training import cache

    first = cache.train_cached(SMALL, data, tmp_path, model_factory=tiny_net)
    assert first.resumed_epochs == 0
    assert [r.metrics() for r in first.history] == [r.metrics() for r in reference[0].history]
    batches = []
    again = cache.train_cached(
        SMALL, data, tmp_path, model_factory=tiny_net, on_batch=batches.append
    )
    assert not batches and again.resumed_epochs == len(again.history) == 3  # nothing trained
    assert again.history == first.history and _same_weights(again.model, first.model)
    assert again.stop_reason == StopReason.EPOCHS
    key = cache.run_key(SMALL, data)
    assert cache.run_key(replace(SMALL, seed=1), data) != key
    assert cache.run_key(replace(SMALL, threads=2), data) != key
    assert cache.run_key(SMALL, data.subset(1400)) != key  # other data
    assert cache.run_key(replace(SMALL, train_samples=1500), data) == key
    assert len(list(tmp_path.iterdir())) == 1


def test_the_papers_criterion_by_hand():
    import math

    # Two classes at distances 0 and 3 for a sample of class 0, j = 1 (the paper's eq. 9):
    # E = y_D + log(e^-j + sum_i e^-y_i) = 0 + log(e^-1 + e^0 + e^-3)
    distances = torch.tensor([[0.0, 3.0]])
    label = torch.tensor([0])
    expected = math.log(math.exp(-1) + 1 + math.exp(-3))
    got = distance_loss(distances, label, distance=True, j=1.0)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # without j: plain cross entropy of -y, log(e^0 + e^-3)
    plain = distance_loss(distances, label, distance=True, j=None)
    assert plain.item() == pytest.approx(math.log(1 + math.exp(-3)), rel=1e-6)
    # logits ignore j
    assert distance_loss(distances, label, distance=False, j=1.0).item() == pytest.approx(
        3 + math.log(1 + math.exp(-3)), rel=1e-6
    )
    # the pull that plain cross entropy loses: d E / d y_D at y_D = 0, other class 40 away
    far = torch.tensor([[0.0, 40.0]], requires_grad=True)
    distance_loss(far, label, distance=True, j=1.0).backward()
    # 1 - e^0 / (e^-1 + e^0 + e^-40) = e^-1 / (1 + e^-1)
    assert far.grad[0, 0].item() == pytest.approx(math.exp(-1) / (1 + math.exp(-1)), rel=1e-5)


def test_inputs_are_padded_and_normalised(data):
    tensors = prepare_tensors(data.subset(200, 50), 32)
    assert tensors.x_train.shape == (200, 1, 32, 32) and tensors.x_test.shape == (50, 1, 32, 32)
    background = -tensors.mean / tensors.std
    assert torch.allclose(tensors.x_train[:, :, :2, :], torch.tensor(background))  # 2-pixel pad
    core = tensors.x_train[:, :, 2:30, 2:30]
    assert abs(float(core.mean())) < 1e-4 and abs(float(core.std()) - 1) < 1e-3


def test_plots_show_the_history(reference):
    result, _ = reference
    fig = training_plots.accuracy_figure(result.history, converged_epoch=2)
    lines = {line.get_label(): line for line in fig.axes[0].lines}
    assert list(lines["test"].get_xdata()) == [1, 2, 3]
    assert list(lines["test"].get_ydata()) == [r.test_acc * 100 for r in result.history]
    assert list(lines["train"].get_ydata()) == [r.train_acc * 100 for r in result.history]
    loss = training_plots.loss_figure(result.history)
    assert [line.get_label() for line in loss.axes[0].lines] == ["train", "test"]
    assert fig.axes[0].get_ylabel() == "accuracy (%)"
    assert list(lines["converged"].get_xdata()) == [2, 2]


def test_comparison_figure_and_saving(reference, tmp_path):
    result, _ = reference
    shorter = result.history[:2]
    fig = training_plots.comparison_figure(
        {"lenet5": result.history, "lenet5-dws": shorter}, converged={"lenet5": 3}
    )
    acc, loss = fig.axes
    labels = [line.get_label() for line in loss.lines]
    assert labels == [
        "lenet5 train",
        "lenet5 test",
        "lenet5 converged",
        "lenet5-dws train",
        "lenet5-dws test",
    ]
    assert list(loss.lines[4].get_ydata()) == [r.test_loss for r in shorter]
    assert list(acc.lines[1].get_ydata()) == [r.test_acc * 100 for r in result.history]
    paths = cli.save_figure(fig, tmp_path / "comparison")
    assert [p.name for p in paths] == ["comparison.png", "comparison.svg"]
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and b"<svg" in paths[1].read_bytes()[:400]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["comparison.png", "comparison.svg"]


def test_progress_callbacks_draw_one_line_per_epoch(data):
    from rich.console import Console

    from flowprof.reports.training_progress import progress_callbacks, training_progress

    console = Console(width=160, record=True, force_terminal=False)
    config = TrainConfig(model="tiny", epochs=2, train_samples=300, test_samples=100)
    with training_progress(console) as progress:
        on_batch, on_epoch = progress_callbacks(progress, config)
        train(config, data, model_factory=tiny_net, on_batch=on_batch, on_epoch=on_epoch)
    text = console.export_text()
    assert "epoch 1/2" in text and "epoch 2/2" in text and "samples/s" in text
    assert "test loss" in text


def test_registered_lenet5_variants_learn(data):
    from flowprof.models import registry

    wanted = ("lenet5", "lenet5-dws", "lenet5-modern", "lenet5-modern-dws")
    names = [n for n in wanted if n in registry.names()]
    if not names:
        pytest.skip("no LeNet-5 model registered yet")
    for name in names:
        config = TrainConfig(model=name, epochs=2, train_samples=600, test_samples=200)
        result = train(config, data)
        assert result.history[1].train_loss < result.history[0].train_loss, name
        assert result.output_is_distance == (name in ("lenet5", "lenet5-dws"))
        assert json.dumps(result.meta())  # serialisable

"""Training throughput: flowprof's loop, a bare PyTorch loop and a tuned ceiling, at 1 and 2
threads, on the machine as found and with one core kept busy.

Every variant trains the same model (same seeded initial weights) with the same optimizer, batch
size and criterion (the paper's eq. (9) for the LeNet-5s, ``training.loop.distance_loss``):

- ``plain``: the bare loop on the model exactly as registered (C3's grouped convolutions run by
  oneDNN's grouped kernel): where the time went before ``training.kernels``;
- ``bare``: the minimal loop (index a batch, forward, loss, zero_grad, backward, step) on the model
  as ``train`` builds it (``use_fast_kernels``);
- ``library``: ``training.loop.train`` (running loss/accuracy sums, progress callback; evaluation
  and checkpoint between epochs are outside the timed training pass, as in ``bare``);
- ``library+profile``: the same with ``profile=True`` (a forward pre/post hook on every leaf);
- ``ceiling``: forward, backward and optimizer step on one batch already in memory (no indexing,
  no loss bookkeeping), fast kernels, in whichever layout (contiguous or channels-last) a trial
  found faster: what this CPU allows for this model and batch.

Throughput is training samples per second, per epoch, the first epoch of each run left out as
warm-up. Runs are interleaved so that drift hits each variant alike. On a shared machine other
processes steal time from some epochs, so the comparison uses each variant's best epoch (the least
disturbed one, as ``timeit`` does) and shows the median beside it. "One core busy" starts a
process that spins on one core (plain Python ``while True``) for the duration of the cell, on top
of whatever else the machine is running; the load average is recorded with each cell. Run:
``.venv/bin/python bench/bench_training.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import torch

from flowprof.training import mnist
from flowprof.training.loop import (
    TrainConfig,
    build_model,
    distance_loss,
    epoch_permutation,
    output_is_distance,
    prepare_tensors,
    train,
)

VARIANTS = ("plain", "bare", "library", "library+profile", "ceiling")
CONDITIONS = ("as found", "one core busy")


def bare_loop(config: TrainConfig, data: mnist.MnistData, epochs: int) -> list[float]:
    """Samples/s per epoch of the minimal PyTorch loop over the same tensors."""
    torch.set_num_threads(config.threads or 1)
    model, size = build_model(config)
    distance = output_is_distance(model)
    tensors = prepare_tensors(data.subset(config.train_samples, config.test_samples), size)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    x_all, y_all = tensors.x_train, tensors.y_train
    n, rates = x_all.shape[0], []
    for epoch in range(1, epochs + 1):
        permutation = epoch_permutation(config.seed, epoch, n)
        start = time.perf_counter()
        for begin in range(0, n, config.batch_size):
            index = permutation[begin : begin + config.batch_size]
            x, y = x_all[index], y_all[index]
            loss = distance_loss(model(x), y, distance, config.rbf_j)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        rates.append(n / (time.perf_counter() - start))
    return rates


def _step(config: TrainConfig, channels_last: bool) -> Callable[[], None]:
    """One training step of the model on a fixed batch, in the given layout."""
    model, size = build_model(config)
    distance = output_is_distance(model)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(config.batch_size, 1, size, size, generator=generator)
    y = torch.randint(0, 10, (config.batch_size,), generator=generator)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)

    def step() -> None:
        loss = distance_loss(model(x), y, distance, config.rbf_j)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def ceiling_loop(config: TrainConfig, samples: int, epochs: int) -> tuple[list[float], str]:
    """Samples/s per 'epoch' of ``samples`` samples of the bare step in its faster layout."""
    torch.set_num_threads(config.threads or 1)
    steps = max(samples // config.batch_size, 1)
    trial = {}
    for layout in ("contiguous", "channels-last"):
        step = _step(config, layout == "channels-last")
        step()  # warm-up
        start = time.perf_counter()
        for _ in range(max(steps // 4, 2)):
            step()
        trial[layout] = time.perf_counter() - start
    layout = min(trial, key=trial.get)
    step = _step(config, layout == "channels-last")
    rates = []
    for _ in range(epochs):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(steps * config.batch_size / (time.perf_counter() - start))
    return rates, layout


def library_loop(
    config: TrainConfig, data: mnist.MnistData, epochs: int, profile: bool
) -> list[float]:
    """Samples/s per epoch of ``training.loop.train`` (its training pass, as it records it)."""
    config = replace(config, epochs=epochs)
    result = train(config, data, profile=profile, on_batch=lambda progress: None)
    return [r.samples_per_s for r in result.history]


@contextlib.contextmanager
def busy_core(busy: bool) -> Iterator[None]:
    """Keep one core busy with a spinning process while the block runs (when ``busy``)."""
    if not busy:
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # let it start spinning
        yield
    finally:
        spinner.kill()
        spinner.wait()


def measure_cell(
    config: TrainConfig, data: mnist.MnistData, epochs: int, repeats: int
) -> dict[str, Any]:
    """Every variant at ``config.threads``: best and median samples/s, epochs measured."""
    samples = min(config.train_samples or data.train_samples, data.train_samples)
    plain = replace(config, fast_kernels=False)
    layout = {}

    def ceiling() -> list[float]:
        rates, layout["ceiling"] = ceiling_loop(config, samples, epochs)
        return rates

    variants: dict[str, Callable[[], list[float]]] = {
        "plain": lambda: bare_loop(plain, data, epochs),
        "bare": lambda: bare_loop(config, data, epochs),
        "library": lambda: library_loop(config, data, epochs, profile=False),
        "library+profile": lambda: library_loop(config, data, epochs, profile=True),
        "ceiling": ceiling,
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run_variant in variants.items():
            rates[name] += run_variant()[1:]  # the first epoch warms up kernels and caches
    return {
        "threads": config.threads,
        "samples_per_s": {name: max(r) for name, r in rates.items()},
        "median_samples_per_s": {name: statistics.median(r) for name, r in rates.items()},
        "epochs_measured": {name: len(r) for name, r in rates.items()},
        "ceiling_layout": layout.get("ceiling"),
    }


def run(
    model: str = "lenet5",
    samples: int = 4000,
    batch_size: int | None = None,
    epochs: int = 3,
    repeats: int = 2,
    threads: tuple[int, ...] = (1, 2),
    conditions: tuple[str, ...] = CONDITIONS,
) -> dict[str, Any]:
    """Measure every variant for each thread count and condition (see the module docstring)."""
    before = torch.get_num_threads()
    data = mnist.load(download_allowed=False)
    base = TrainConfig(model=model, train_samples=samples, test_samples=500, seed=0)
    if batch_size is not None:
        base = replace(base, batch_size=batch_size)
    cells = []
    try:
        for condition in conditions:
            with busy_core(condition == "one core busy"):
                for count in threads:
                    start_load = list(os.getloadavg())
                    cell = measure_cell(replace(base, threads=count), data, epochs, repeats)
                    cell |= {"condition": condition, "load": start_load}
                    cells.append(cell)
    finally:
        torch.set_num_threads(before)
    return {
        "model": model,
        "data": data.subset(base.train_samples, base.test_samples).description,
        "batch_size": base.batch_size,
        "criterion": "eq. (9)" if base.rbf_j is not None else "cross entropy",
        "cells": cells,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse options, run the benchmark, print a small table and return the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--samples", type=int, default=4000, help="training samples per epoch")
    parser.add_argument("--batch-size", type=int, help="default: TrainConfig's")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (first is warm-up)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--conditions", nargs="+", choices=CONDITIONS, default=list(CONDITIONS))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    out = run(
        args.model,
        args.samples,
        args.batch_size,
        args.epochs,
        args.repeats,
        tuple(args.threads),
        tuple(args.conditions),
    )
    print(f"{out['model']}, batch {out['batch_size']}; {out['data']}")
    for cell in out["cells"]:
        load = "/".join(f"{x:.2f}" for x in cell["load"])
        print(f"{cell['condition']}, {cell['threads']} thread(s), load {load}")
        ceiling = cell["samples_per_s"]["ceiling"]
        for name, rate in cell["samples_per_s"].items():
            median = cell["median_samples_per_s"][name]
            share = rate / ceiling
            print(f"  {name:<16}{rate:>10,.0f}/s {share:>6.0%} of ceiling, median {median:,.0f}")
    print(f"({time.perf_counter() - started:.0f} s)")
    return out


if __name__ == "__main__":
    main()

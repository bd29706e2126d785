"""Training throughput: flowprof's ``train`` against a bare PyTorch loop and a tuned ceiling, at
1 and 2 threads, on the machine as found and with one core kept busy.

Every variant trains the same model (same seeded initial weights) with the same optimizer, batch
size and criterion (the paper's eq. (9) for the LeNet-5s, ``training.loop.distance_loss``):

- ``train``: ``training.loop.train`` itself, the loop the CLI and the report run (a seeded
  permutation indexes batches out of the in-memory tensors; running loss and accuracy sums; the
  progress callback); its own per-epoch samples/s of the training pass;
- ``bare``: the minimal loop over the same tensors (index a batch, forward, loss, zero_grad,
  backward, step) on the model as ``train`` builds it (``training.kernels.use_fast_kernels``):
  no bookkeeping, no callback;
- ``plain``: ``bare`` on the model exactly as registered (no ``training.kernels``): what the
  training step cost before those kernels;
- ``ceiling``: forward, backward and step on one batch already in memory (no indexing, no
  bookkeeping), fast kernels, in whichever layout (contiguous, or the whole model and batch in
  channels-last) a trial at this thread count found faster. The condition's ceiling is the best
  cell of it over the thread counts measured: the best layout and threads found.

Noise: the machine is shared, so variants are interleaved finely. A round runs each variant once
on a short epoch of ``samples`` training digits (after one warm-up epoch of the same run); the
ratio of ``train`` to the ceiling is taken within each round, and the table gives the median of
those per-round ratios (drift between rounds cancels) beside each variant's median and best
samples/s. "One core busy" starts a process that spins on one core (plain Python ``while True``)
for the duration of the cell, on top of whatever else the machine is running; the load average
is recorded with each cell.

The profile (``--no-profile`` skips it) runs ``train`` under ``torch.profiler`` at one thread and
reports the ops that took the most self CPU time: where the time of a training step goes.

Run: ``.venv/bin/python bench/bench_training.py``; ``bench/run.py`` runs it for BENCHMARKS.md.
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
    recipe,
    train,
)

VARIANTS = ("train", "bare", "plain", "ceiling")
CONDITIONS = ("as found", "one core busy")
LAYOUTS = ("contiguous", "channels-last")


def bare_loop(config: TrainConfig, data: mnist.MnistData, epochs: int) -> list[float]:
    """Samples/s per epoch of the minimal PyTorch loop over the same tensors."""
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


def train_loop(config: TrainConfig, data: mnist.MnistData, epochs: int) -> list[float]:
    """Samples/s per epoch of ``training.loop.train`` (its training pass, as it records it)."""
    result = train(replace(config, epochs=epochs), data, on_batch=lambda progress: None)
    return [r.samples_per_s for r in result.history]


def ceiling_step(config: TrainConfig, layout: str) -> Callable[[], None]:
    """One training step of the model on a fixed batch already in memory, in ``layout``."""
    model, size = build_model(config)
    distance = output_is_distance(model)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(config.batch_size, 1, size, size, generator=generator)
    y = torch.randint(0, 10, (config.batch_size,), generator=generator)
    if layout == "channels-last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)

    def step() -> None:
        loss = distance_loss(model(x), y, distance, config.rbf_j)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _rate(step: Callable[[], None], steps: int, batch_size: int) -> float:
    step()  # warm-up, as the other variants' first epoch
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - start)


def tune_ceiling(config: TrainConfig, steps: int, trials: int = 3) -> tuple[str, Callable]:
    """The faster layout at this thread count: ``trials`` interleaved timings of each, best kept."""
    steps_of = {layout: ceiling_step(config, layout) for layout in LAYOUTS}
    best = {layout: 0.0 for layout in LAYOUTS}
    for _ in range(trials):
        for layout, step in steps_of.items():
            best[layout] = max(best[layout], _rate(step, steps, config.batch_size))
    layout = max(best, key=best.get)
    return layout, steps_of[layout]


def measure_cell(
    config: TrainConfig,
    data: mnist.MnistData,
    rounds: int,
    variants: tuple[str, ...],
    budget_s: float = 150.0,
) -> dict[str, Any]:
    """Every variant at ``config.threads``, interleaved over ``rounds`` rounds, or as many as
    start within ``budget_s`` seconds (at least one): a stalled cell must not take an hour."""
    torch.set_num_threads(config.threads or 1)
    samples = min(config.train_samples or data.train_samples, data.train_samples)
    steps = -(-samples // config.batch_size)
    layout, ceiling = tune_ceiling(config, max(steps // 2, 2))
    run_variant: dict[str, Callable[[], float]] = {
        "train": lambda: train_loop(config, data, 2)[-1],  # the first epoch warms up
        "bare": lambda: bare_loop(config, data, 2)[-1],
        "plain": lambda: bare_loop(replace(config, fast_kernels=False), data, 2)[-1],
        "ceiling": lambda: _rate(ceiling, steps, config.batch_size),
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    start = time.perf_counter()
    done = 0
    while done < rounds and (done == 0 or time.perf_counter() - start < budget_s):
        for name in variants:
            rates[name].append(run_variant[name]())
        done += 1
    ratios = [t / c for t, c in zip(rates["train"], rates["ceiling"], strict=True)]
    return {
        "threads": config.threads,
        "rounds": done,
        "samples_per_round": samples,
        "ceiling_layout": layout,
        "rates": rates,
        "median_samples_per_s": {name: statistics.median(r) for name, r in rates.items()},
        "best_samples_per_s": {name: max(r) for name, r in rates.items()},
        "train_to_ceiling": ratios,
        "median_train_to_ceiling": statistics.median(ratios),
    }


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


def profile_train(config: TrainConfig, data: mnist.MnistData, top: int = 8) -> dict[str, Any]:
    """The ops that took the most self CPU time in one ``train`` call of one epoch, one thread:
    its training pass and the (smaller) test pass after it; times are per training step."""
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(1)
    config = replace(config, threads=1, epochs=1)
    train(config, data)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        result = train(config, data)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    steps = -(-result.train_samples // config.batch_size)
    return {
        "steps": steps,
        "self_cpu_ms_per_step": total / 1e3 / steps,
        "top": [
            {
                "op": e.key,
                "share": e.self_cpu_time_total / total,
                "ms_per_step": e.self_cpu_time_total / 1e3 / steps,
                "calls_per_step": e.count / steps,
            }
            for e in events[:top]
        ],
    }


def run(
    model: str = "lenet5",
    samples: int = 1280,
    rounds: int = 5,
    threads: tuple[int, ...] = (1, 2),
    conditions: tuple[str, ...] = CONDITIONS,
    variants: tuple[str, ...] = VARIANTS,
    profile: bool = True,
) -> dict[str, Any]:
    """Measure every variant for each thread count and condition (see the module docstring)."""
    before = torch.get_num_threads()
    data = mnist.load(download_allowed=False)
    base = recipe(model, train_samples=samples, test_samples=200, seed=0)
    variants = tuple(dict.fromkeys(("train", "ceiling", *variants)))  # the ratio needs both
    cells = []
    try:
        for condition in conditions:
            with busy_core(condition == "one core busy"):
                for count in threads:
                    start_load = list(os.getloadavg())
                    cell = measure_cell(replace(base, threads=count), data, rounds, variants)
                    cell |= {"condition": condition, "load": start_load}
                    cells.append(cell)
        profiled = profile_train(base, data) if profile else None
    finally:
        torch.set_num_threads(before)
    for condition in conditions:  # the condition's ceiling: its best layout and thread count
        mine = [c for c in cells if c["condition"] == condition]
        best = max(mine, key=lambda c: c["median_samples_per_s"]["ceiling"])
        for cell in mine:
            cell["best_ceiling"] = {
                "threads": best["threads"],
                "layout": best["ceiling_layout"],
                "median_samples_per_s": best["median_samples_per_s"]["ceiling"],
            }
            cell["train_to_best_ceiling"] = (
                cell["median_samples_per_s"]["train"] / best["median_samples_per_s"]["ceiling"]
            )
    return {
        "model": model,
        "data": data.subset(base.train_samples, base.test_samples).description,
        "batch_size": base.batch_size,
        "criterion": "eq. (9)" if base.rbf_j is not None else "cross entropy",
        "variants": list(variants),
        "cells": cells,
        "profile": profiled,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse options, run the benchmark, print a small table and return the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--samples", type=int, default=1280, help="training samples per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--conditions", nargs="+", choices=CONDITIONS, default=list(CONDITIONS))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--no-profile", action="store_true", help="skip the torch.profiler run")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    out = run(
        args.model,
        args.samples,
        args.rounds,
        tuple(args.threads),
        tuple(args.conditions),
        tuple(args.variants),
        not args.no_profile,
    )
    print(f"{out['model']}, batch {out['batch_size']}; {out['data']}")
    for cell in out["cells"]:
        load = "/".join(f"{x:.2f}" for x in cell["load"])
        print(
            f"{cell['condition']}, {cell['threads']} thread(s), load {load}: train at "
            f"{cell['median_train_to_ceiling']:.0%} of the ceiling ({cell['ceiling_layout']}), "
            f"{cell['train_to_best_ceiling']:.0%} of the condition's best"
        )
        for name, rate in cell["median_samples_per_s"].items():
            best = cell["best_samples_per_s"][name]
            print(f"  {name:<10}{rate:>10,.0f}/s median, best {best:,.0f}")
    if out["profile"]:
        p = out["profile"]
        print(f"train, one thread: {p['self_cpu_ms_per_step']:.1f} ms self CPU per training step")
        for e in p["top"]:
            print(f"  {e['share']:>5.1%} {e['ms_per_step']:>6.2f} ms/step  {e['op']}")
    print(f"({time.perf_counter() - started:.0f} s)")
    return out


if __name__ == "__main__":
    main()

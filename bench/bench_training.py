"""Training throughput: flowprof's loop vs a bare PyTorch loop, and the cost of the profile hooks.

All three variants train the same model (same seeded initial weights), with the same optimizer,
batch size, per-epoch permutation and in-memory tensors; only the loop around them differs:

- ``bare``: the minimal loop (index a batch, forward, cross entropy, zero_grad, backward, step);
- ``library``: ``training.loop.train`` (running loss/accuracy sums, progress callback, evaluation
  and checkpoint between epochs: those are outside the timed training pass, as in ``bare``);
- ``library+profile``: the same with ``profile=True`` (a forward pre/post hook on every leaf).

Throughput is training samples per second of the training pass, per epoch, the first epoch of
each run left out as warm-up. Runs are interleaved so that drift hits each variant alike. On a
shared machine other processes steal time from some epochs, so the comparison uses each
variant's best epoch (the least disturbed one, as ``timeit`` does) and shows the median beside
it. Run: ``.venv/bin/python bench/bench_training.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F

from flowprof.training import mnist
from flowprof.training.loop import (
    TrainConfig,
    build_model,
    epoch_permutation,
    output_is_distance,
    prepare_tensors,
    train,
)


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
            out = model(x)
            loss = F.cross_entropy(out.neg() if distance else out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        rates.append(n / (time.perf_counter() - start))
    return rates


def library_loop(
    config: TrainConfig, data: mnist.MnistData, epochs: int, profile: bool
) -> list[float]:
    """Samples/s per epoch of ``training.loop.train`` (its training pass, as it records it)."""
    config = TrainConfig(**{**config.to_dict(), "epochs": epochs})
    result = train(config, data, profile=profile, on_batch=lambda progress: None)
    return [r.samples_per_s for r in result.history]


def run(
    model: str = "lenet5",
    samples: int = 2000,
    batch_size: int = 64,
    epochs: int = 4,
    repeats: int = 3,
    threads: int = 1,
) -> dict[str, Any]:
    """Measure the three variants; return best and median samples/s, overheads in percent."""
    torch.set_num_threads(threads)
    data = mnist.load(download_allowed=False)
    config = TrainConfig(
        model=model, batch_size=batch_size, train_samples=samples, test_samples=500, seed=0
    )
    variants = {
        "bare": lambda: bare_loop(config, data, epochs),
        "library": lambda: library_loop(config, data, epochs, profile=False),
        "library+profile": lambda: library_loop(config, data, epochs, profile=True),
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, measure in variants.items():
            rates[name] += measure()[1:]  # the first epoch warms up kernels and caches
    best = {name: max(r) for name, r in rates.items()}
    median = {name: statistics.median(r) for name, r in rates.items()}
    return {
        "model": model,
        "data": data.subset(config.train_samples, config.test_samples).description,
        "batch_size": batch_size,
        "threads": threads,
        "epochs_measured": {name: len(r) for name, r in rates.items()},
        "samples_per_s": best,
        "median_samples_per_s": median,
        "library_overhead_pct": 100 * (1 - best["library"] / best["bare"]),
        "profile_overhead_pct": 100 * (1 - best["library+profile"] / best["library"]),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse options, run the benchmark, print a small table and return the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--samples", type=int, default=2000, help="training samples per epoch")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (first is warm-up)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    out = run(args.model, args.samples, args.batch_size, args.epochs, args.repeats, args.threads)
    print(f"{out['model']}, batch {out['batch_size']}, {out['threads']} thread(s); {out['data']}")
    print(f"{'loop':<18}{'best samples/s':>16}{'vs bare':>10}{'median':>10}{'epochs':>8}")
    bare = out["samples_per_s"]["bare"]
    for name, rate in out["samples_per_s"].items():
        median, n = out["median_samples_per_s"][name], out["epochs_measured"][name]
        print(f"{name:<18}{rate:>16,.0f}{100 * (rate / bare - 1):>+9.1f}%{median:>10,.0f}{n:>8}")
    print(
        f"library overhead {out['library_overhead_pct']:.1f}% of bare; "
        f"profile hooks cost {out['profile_overhead_pct']:.1f}% on top "
        f"({time.perf_counter() - started:.0f} s)"
    )
    return out


if __name__ == "__main__":
    main()

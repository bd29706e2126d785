"""Trained checkpoints kept and reused: a run is keyed by a hash of its configuration, the code
that trains it and the data it sees.

:func:`train_cached` trains into ``CACHE/<model>-<key>/`` (checkpoint, history), or, when that
folder already holds the run, continues it: a finished run is read back without training a step
(its history keeps the epoch times it was trained in), an interrupted one resumes exactly where
its last complete epoch left it (:func:`training.loop.train` with ``resume``).

The key (:func:`run_key`) covers everything that changes the weights: every field of the
:class:`TrainConfig` (with the thread count resolved, since results are bitwise reproducible for
one thread count), the source text of ``flowprof/training`` and ``flowprof/models``, the torch
version, and the SHA-256 of the exact tensors trained and tested on. Change any of them and the
run is trained afresh in a new folder; nothing is ever overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from flowprof.training import checkpoint as ckpt
from flowprof.training.loop import TrainConfig, TrainResult, choose_threads, train
from flowprof.training.mnist import MnistData, default_data_root

_PACKAGE = Path(__file__).resolve().parents[1]  # flowprof/
CODE_FOLDERS = ("training", "models")  # the code whose change can change trained weights


def default_cache_root() -> Path:
    """``$FLOWPROF_CACHE``, else ``checkpoints/`` in the git-ignored data folder."""
    env = os.environ.get("FLOWPROF_CACHE")
    return Path(env) if env else default_data_root() / "checkpoints"


def code_digest() -> str:
    """SHA-256 of the source of every module under ``flowprof/training`` and ``flowprof/models``."""
    h = hashlib.sha256()
    for folder in CODE_FOLDERS:
        for path in sorted((_PACKAGE / folder).rglob("*.py")):
            h.update(str(path.relative_to(_PACKAGE)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def run_key(config: TrainConfig, data: MnistData) -> str:
    """The hash of configuration, code and data that names a run's folder (hex, 64 digits)."""
    resolved = replace(config, threads=choose_threads(config))
    used = data.subset(config.train_samples, config.test_samples)
    record: dict[str, Any] = {
        "config": resolved.to_dict(),
        "code": code_digest(),
        "torch": torch.__version__,
        "data": used.fingerprint(),
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def run_dir(config: TrainConfig, data: MnistData, cache_root: str | Path | None = None) -> Path:
    """The folder of this run in the cache."""
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    return root / f"{config.model}-{run_key(config, data)[:16]}"


def train_cached(
    config: TrainConfig,
    data: MnistData,
    cache_root: str | Path | None = None,
    **train_options: Any,
) -> TrainResult:
    """Train ``config`` on ``data`` in its cache folder, or reuse or resume what is there.

    ``result.resumed_epochs`` says how many epochs came from the cache (all of them: nothing was
    trained). ``train_options`` go to :func:`training.loop.train` (callbacks, ``profile``).
    """
    out = run_dir(config, data, cache_root)
    resume = (out / ckpt.FILE_NAME).is_file()
    return train(config, data, out_dir=out, resume=resume, **train_options)

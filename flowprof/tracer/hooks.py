"""The tracer's forward hooks: per-block forward time of a running model (``train --profile``).

Every leaf module (one without children: a conv, a pooling layer, an activation, LeNet-5's RBF
layer) gets a ``register_forward_pre_hook`` that notes the time and a ``register_forward_hook``
that adds the elapsed time to the block's total. Only forward time is measured: autograd runs
the backward pass outside the modules' hooks. On CUDA the hooks synchronise the device, so that
each block's kernels are charged to it (which itself slows training down; the benchmark shows
how much).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class BlockTime:
    """Forward time of one leaf module, summed over the timed calls."""

    block: str  # the module's path in the model, e.g. "c1" or "features.0"
    kind: str  # its class name
    calls: int
    seconds: float


class BlockTimer:
    """Attach with ``with BlockTimer(model) as timer:``; the hooks are removed on exit.

    Time is only counted while :attr:`active` is true (the training loop turns it off while it
    evaluates), and is read with :meth:`blocks`.
    """

    def __init__(self, model: nn.Module, sync_cuda: bool = False) -> None:
        self.model = model
        self.active = True
        self._sync = sync_cuda and torch.cuda.is_available()
        self._calls: dict[str, int] = {}
        self._seconds: dict[str, float] = {}
        self._kinds: dict[str, str] = {}
        self._started: dict[str, float] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> BlockTimer:
        return self.attach()

    def attach(self) -> BlockTimer:
        """Add the hooks (once); returns the timer."""
        if self._handles:
            return self
        for name, module in _leaves(self.model):
            self._calls[name], self._seconds[name] = 0, 0.0
            self._kinds[name] = type(module).__name__
            self._handles.append(module.register_forward_pre_hook(self._pre(name)))
            self._handles.append(module.register_forward_hook(self._post(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook this timer added (safe to call twice)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _pre(self, name: str):
        def hook(module: nn.Module, args: object) -> None:
            if self.active:
                if self._sync:
                    torch.cuda.synchronize()
                self._started[name] = time.perf_counter()

        return hook

    def _post(self, name: str):
        def hook(module: nn.Module, args: object, output: object) -> None:
            if self.active and name in self._started:
                if self._sync:
                    torch.cuda.synchronize()
                self._seconds[name] += time.perf_counter() - self._started.pop(name)
                self._calls[name] += 1

        return hook

    def blocks(self) -> list[BlockTime]:
        """Timed blocks in model order."""
        return [
            BlockTime(name, self._kinds[name], self._calls[name], self._seconds[name])
            for name in self._calls
        ]


def _leaves(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    for name, module in model.named_modules():
        if next(module.children(), None) is None:
            yield name or type(model).__name__, module

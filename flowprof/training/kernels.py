"""Faster CPU kernels for training the LeNet-5s, computing exactly what the models define.

Where the time went (torch 2.14 on this 2-core AVX2 machine, one thread, batch 64; profiled
with ``torch.profiler``): 61% of a training step of the paper's LeNet-5 was
``aten::convolution_backward``, most of it C3's two grouped convolutions (6 groups of 3 input maps
and 9 groups of 4, one output map per group: Table I). oneDNN has no fast path for groups that
thin: the grouped convolution ran at well under 1 GMAC/s forward and backward. The same sums
computed as a depthwise convolution (one 5x5 filter per gathered input map, which oneDNN's
depthwise kernels handle) followed by a sum over each group's input maps ran 2-4x faster, in
channels-last layout faster still (see bench/bench_training.py for the whole step).

:func:`use_fast_kernels` swaps the class of every such convolution for
:class:`GroupSumConv2d`: same parameters, same names, same state dict, so checkpoints load into
the registry's model, and the tracer (which builds its own model) is not involved. The arithmetic
is unchanged: an output of a group of ``n`` input maps and a KxK kernel is still ``n*K*K``
multiplications and ``n*K*K - 1`` additions plus the bias (the depthwise stage adds ``K*K - 1``
per map, the group sum ``n - 1``); only the order of the additions differs, so results agree
with the grouped convolution to float rounding (tested), not bit for bit.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class GroupSumConv2d(nn.Conv2d):
    """A grouped convolution with one output map per group, as a depthwise one and a group sum.

    Takes over an ``nn.Conv2d`` (``groups == out_channels``, any padding mode of zeros) by class
    swap; the weight ``(G, n, K, K)`` is read as ``G * n`` depthwise filters ``(G*n, 1, K, K)``.
    """

    def forward(self, x: Tensor) -> Tensor:  # (B, G*n, H, W)
        groups, maps = self.groups, self.in_channels  # G, G*n
        kernel = self.weight.reshape(maps, 1, *self.kernel_size)  # (G*n, 1, K, K)
        y = F.conv2d(x, kernel, None, self.stride, self.padding, self.dilation, maps)
        y = y.unflatten(1, (groups, maps // groups)).sum(2)  # (B, G, H', W')
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y


def _qualifies(module: nn.Module) -> bool:
    return (
        type(module) is nn.Conv2d
        and module.groups > 1
        and module.out_channels == module.groups  # one output map per group
        and module.in_channels > module.groups  # more than one input map per group
        and module.padding_mode == "zeros"
    )


def use_fast_kernels(model: nn.Module) -> int:
    """Swap every qualifying grouped convolution of ``model`` for :class:`GroupSumConv2d`.

    In place; returns how many were swapped. Parameters, buffers and names are untouched.
    """
    swapped = 0
    for module in model.modules():
        if _qualifies(module):
            module.__class__ = GroupSumConv2d
            swapped += 1
    return swapped

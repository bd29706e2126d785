"""Faster CPU kernels for training the LeNet-5s, computing exactly what the models define.

Where the time went (torch 2.14 on this 2-core AVX2 machine, one thread, batch 64; profiled
with ``torch.profiler``): 61% of a training step of the paper's LeNet-5 was
``aten::convolution_backward``, most of it C3's two grouped convolutions (6 groups of 3 input maps
and 9 groups of 4, one output map per group: Table I). oneDNN has no fast path for groups that
thin: the grouped convolution ran at well under 1 GMAC/s forward and backward. The same sums
computed as a depthwise convolution (one 5x5 filter per gathered input map, which oneDNN's
depthwise kernels handle) followed by a sum over each group's input maps ran 2-4x faster.

Profiled again at batch 128 with that in place (bench/bench_training.py's profile), the
depthwise convolutions' backward led, and oneDNN runs it 2-2.5x faster on channels-last
tensors (C3's 36 gathered maps: 41 -> 17 ms forward and backward; the twin's C5 depthwise
3.4 -> 1.5 ms), so every depthwise convolution here reads its input in channels-last layout;
the result is the same convolution (the whole model's output agreed bit for bit when measured;
the tests allow float rounding). Next
came S2's and S4's window sums: a reshape into 2x2 windows and ``sum`` over two axes goes through
a strided copy; ``avg_pool2d`` with ``divisor_override=1`` adds the same four inputs of each
window (3 additions per output) without the copy.

:func:`use_fast_kernels` swaps the class of every such module (:class:`GroupSumConv2d`,
:class:`DepthwiseConv2d`, :class:`WindowSumSubsampling`): same parameters, same names, same
state dict, so checkpoints load into the registry's model, and the tracer (which builds its own
model) is not involved. The arithmetic is unchanged: an output of a group of ``n`` input maps and
a KxK kernel is still ``n*K*K`` multiplications and ``n*K*K - 1`` additions plus the bias (the
depthwise stage adds ``K*K - 1`` per map, the group sum ``n - 1``), a window sum still 3
additions; only the order of the additions differs, so results agree with the registry's modules
to float rounding (tested), not bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowprof.models.lenet5 import Subsampling


def _channels_last(x: Tensor) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last)


class GroupSumConv2d(nn.Conv2d):
    """A grouped convolution with one output map per group, as a depthwise one and a group sum.

    Takes over an ``nn.Conv2d`` (``groups == out_channels``, any padding mode of zeros) by class
    swap; the weight ``(G, n, K, K)`` is read as ``G * n`` depthwise filters ``(G*n, 1, K, K)``.
    """

    def forward(self, x: Tensor) -> Tensor:  # (B, G*n, H, W)
        groups, maps = self.groups, self.in_channels  # G, G*n
        kernel = self.weight.reshape(maps, 1, *self.kernel_size)  # (G*n, 1, K, K)
        x = _channels_last(x)  # oneDNN's depthwise backward is 2-2.5x faster in this layout
        y = F.conv2d(x, kernel, None, self.stride, self.padding, self.dilation, maps)
        y = y.unflatten(1, (groups, maps // groups)).sum(2)  # (B, G, H', W')
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise convolution (one filter per map) run on a channels-last input."""

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W)
        return super().forward(_channels_last(x))  # (B, C, H', W')


class WindowSumSubsampling(Subsampling):
    """LeNet-5's S2/S4 with each 2x2 window summed by ``avg_pool2d`` without the division."""

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W)
        sums = F.avg_pool2d(x, 2, divisor_override=1)  # (B, C, H/2, W/2): 4 inputs, 3 additions
        return self.squash(sums * self.weight + self.bias)


def _group_sum(module: nn.Module) -> bool:
    return (
        type(module) is nn.Conv2d
        and module.groups > 1
        and module.out_channels == module.groups  # one output map per group
        and module.in_channels > module.groups  # more than one input map per group
        and module.padding_mode == "zeros"
    )


def _depthwise(module: nn.Module) -> bool:
    return (
        type(module) is nn.Conv2d
        and module.groups > 1
        and module.in_channels == module.out_channels == module.groups
        and module.padding_mode == "zeros"
    )


def use_fast_kernels(model: nn.Module) -> int:
    """Swap every qualifying module of ``model`` for its faster class (see the module docstring).

    In place; returns how many were swapped. Parameters, buffers and names are untouched.
    """
    swapped = 0
    for module in model.modules():
        if _group_sum(module):
            module.__class__ = GroupSumConv2d
        elif _depthwise(module):
            module.__class__ = DepthwiseConv2d
        elif type(module) is Subsampling:
            module.__class__ = WindowSumSubsampling
        else:
            continue
        swapped += 1
    return swapped

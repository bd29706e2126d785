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

Profiled again (one thread, batch 128, 43-49 ms per LeNet-5 step), C3 still led: gathering the
54 input maps its groups read (``index_select`` forward, ``index_add_`` backward) and convolving
the copies. Table I reads every S2 map exactly 10 times, so the 60 filters, ordered by the map
they read, are one convolution of the 6 maps with 10 filters each (``groups=6``): no gathered
copy. ``index_add`` then adds each response into its output map, which starts at its bias (no
table-order copy, no slices whose backward fills zeros). The twin's C3 pointwise stage has 1x1
filters: its responses are a broadcast product, as is its C1 pointwise stage (a 1x1 convolution
of one map, whose oneDNN backward took 22% of the twin's step). C5's 5x5 kernel covers its
whole 5x5 input, so its convolution is the matrix product ``F.linear`` (1.5 -> 0.5 ms forward
and backward). Measured interleaved in one process (12 rounds, median per-round ratio to the
kernels before): LeNet-5's step 0.64x, the twin's 0.70x.

:func:`use_fast_kernels` swaps the class of every such module (:class:`SourceOrderTableConv`,
:class:`GroupSumConv2d`, :class:`DepthwiseConv2d`, :class:`WholeInputConv2d`,
:class:`WindowSumSubsampling`): same parameters, same names, same state dict, so checkpoints load
into the registry's model, and the tracer (which builds its own model) is not involved. The
arithmetic is unchanged: an output of a group of ``n`` input maps and a KxK kernel is still
``n*K*K`` multiplications and ``n*K*K - 1`` additions plus the bias (the per-map convolution adds
``K*K - 1`` per map, the group sum ``n - 1``), C5 still 400 products and 399 additions plus the
bias per output, a window sum still 3 additions; only the order of the additions differs, so
results agree with the registry's modules to float rounding (tested), not bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowprof.models.lenet5 import Subsampling, TableConv


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


class SourceOrderTableConv(TableConv):
    """C3 (a :class:`TableConv`) as one convolution of each input map with all the filters that
    read it, each response then added into its output map: no gathered copy of the input.

    Table I reads every S2 map the same number of times (10): the 60 filters, reordered by the
    map they read (buffer ``source_order``), form one convolution of the 6 maps with 10 filters
    each (``groups=6``), whose 60 responses are each one filter's products with one map, those
    the paper's connections define. Each output map starts at its bias and gets its ``n``
    responses added (buffer ``output_map``): ``n`` additions, the ``n - 1`` of the sum and the
    bias's. Only tables whose input maps are read equally often qualify (:func:`_source_order`);
    the parameters stay the groups' own (same state dict).
    """

    def forward(self, x: Tensor) -> Tensor:  # (B, in_maps, H, W)
        convs = _groups(self)
        kernels = torch.cat([c.weight.reshape(-1, 1, *c.kernel_size) for c in convs])  # (T,1,K,K)
        by_source = kernels.index_select(0, self.source_order)  # grouped by the map each reads
        first = convs[0]
        maps = x.shape[1]
        if first.kernel_size == (1, 1) and first.stride == (1, 1) and first.padding == (0, 0):
            # 1x1 filters (the twin's C3 pointwise stage): each response is the map times one
            # weight, as a broadcast product (profiled as a 1x1 convolution, its backward and a
            # layout copy took a fifth of the twin's step)
            scales = by_source.view(1, maps, -1, 1, 1)  # (1, C, T/C, 1, 1)
            y = (x.unsqueeze(2) * scales).flatten(1, 2)  # (B, T, H, W), by input map
        else:
            y = F.conv2d(x, by_source, None, first.stride, first.padding, first.dilation, maps)
        b, _, h, w = y.shape  # (B, T, H', W'), by input map
        biases = torch.cat([c.bias for c in convs])  # (M,): TableConv's groups all have one
        start = biases.view(1, -1, 1, 1).expand(b, -1, h, w)  # (B, M, H', W')
        # each output map: its bias, plus its filters' responses (n additions for n inputs)
        return start.index_add(1, self.output_map, y)  # (B, M, H', W')


class PointwiseScale2d(nn.Conv2d):
    """A 1x1 convolution of one input map (the twin's C1 pointwise stage): each output map is the
    input times its weight plus its bias, computed as that broadcast product (profiled as a 1x1
    convolution, its backward took a fifth of the twin's step)."""

    def forward(self, x: Tensor) -> Tensor:  # (B, 1, H, W)
        y = x * self.weight.view(1, -1, 1, 1)  # (B, out, H, W)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)


class WholeInputConv2d(nn.Conv2d):
    """A convolution whose kernel covers its whole input (LeNet-5's C5: 16 maps of 5x5 in, one
    value per output map) as the matrix product it is: each output is the same 400 products,
    summed, plus the bias. Any other input size runs the convolution."""

    def forward(self, x: Tensor) -> Tensor:  # (B, C, K, K)
        if tuple(x.shape[-2:]) != tuple(self.kernel_size):
            return super().forward(x)
        y = F.linear(x.flatten(1), self.weight.flatten(1), self.bias)  # (B, out)
        return y.view(*y.shape, 1, 1)  # (B, out, 1, 1)


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


def _source_order(module: nn.Module) -> list[int] | None:
    """The input map each filter of a :class:`TableConv` reads, in table order, when every input
    map is read equally often and all groups share one geometry; else None."""
    if type(module) is not TableConv:
        return None
    convs = _groups(module)
    sources: list[int] = []
    for fan_in, conv in zip(module.fan_ins, convs, strict=True):
        if module.gathers[fan_in]:
            sources += getattr(module, f"index{fan_in}").tolist()
        else:
            sources += list(range(conv.in_channels))
    maps = max(sources) + 1
    uses = [sources.count(i) for i in range(maps)]
    geometry = {(c.kernel_size, c.stride, c.padding, c.dilation, c.padding_mode) for c in convs}
    if len(set(uses)) != 1 or len(geometry) != 1 or convs[0].padding_mode != "zeros":
        return None
    return sources


def _groups(table: TableConv) -> list[nn.Conv2d]:
    """The grouped convolutions of ``table``, one per fan-in, in table order."""
    return [getattr(table, f"fan_in{n}") for n in table.fan_ins]


def _fan_ins(table: TableConv) -> list[int]:
    """The fan-in of each output map of ``table``, in table order."""
    groups = zip(table.fan_ins, _groups(table), strict=True)
    return [n for n, conv in groups for _ in range(conv.out_channels)]


def _pointwise_scale(module: nn.Module) -> bool:
    return (
        type(module) is nn.Conv2d
        and module.in_channels == 1
        and module.kernel_size == (1, 1)
        and module.stride == (1, 1)
        and module.padding == (0, 0)
    )


def _whole_input(module: nn.Module) -> bool:
    return (
        type(module) is nn.Conv2d
        and module.groups == 1
        and module.padding == (0, 0)
        and module.dilation == (1, 1)
    )


def use_fast_kernels(model: nn.Module) -> int:
    """Swap every qualifying module of ``model`` for its faster class (see the module docstring).

    In place; returns how many were swapped. Parameters, buffers and names are untouched (a
    swapped :class:`TableConv` gets two non-persistent index buffers, outside the state dict).
    """
    swapped = 0
    inside: set[int] = set()  # the groups of a swapped TableConv: it no longer calls them
    for module in model.modules():
        if id(module) in inside:
            continue
        if (sources := _source_order(module)) is not None:
            order = torch.tensor(sources).argsort(stable=True)  # filters grouped by input map
            module.__class__ = SourceOrderTableConv
            device = next(module.parameters()).device
            module.register_buffer("source_order", order.to(device), persistent=False)
            outputs = torch.tensor([j for j, n in enumerate(_fan_ins(module)) for _ in range(n)])
            module.register_buffer("output_map", outputs[order].to(device), persistent=False)
            inside |= {id(m) for m in module.modules()}
        elif _group_sum(module):
            module.__class__ = GroupSumConv2d
        elif _depthwise(module):
            module.__class__ = DepthwiseConv2d
        elif _pointwise_scale(module):
            module.__class__ = PointwiseScale2d
        elif _whole_input(module):
            module.__class__ = WholeInputConv2d
        elif type(module) is Subsampling:
            module.__class__ = WindowSumSubsampling
        else:
            continue
        swapped += 1
    return swapped

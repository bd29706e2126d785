"""The fast training kernels compute what the models define: same parameters, same outputs and
gradients (to float rounding), and the tracer's counts are those of the paper's connections."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowprof.models import registry
from flowprof.models.lenet5 import Subsampling, TableConv
from flowprof.training.kernels import (
    DepthwiseConv2d,
    GroupSumConv2d,
    PointwiseScale2d,
    SourceOrderTableConv,
    WholeInputConv2d,
    WindowSumSubsampling,
    use_fast_kernels,
)


def _twins(name: str) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    plain = registry.build(name, device="cpu").module
    fast = registry.build(name, device="cpu").module
    fast.load_state_dict(plain.state_dict())
    return plain, fast


def _swap_keeps_output_and_gradient(module: nn.Module, x: torch.Tensor) -> tuple[int, Tensor]:
    """Run ``module`` on ``x`` (requires grad), swap its kernels, run again: the outputs and the
    input gradients of a squared-sum loss must agree. Returns how many modules were swapped and
    the swapped module's output."""
    expected = module(x)
    (expected_grad,) = torch.autograd.grad(expected.square().sum(), x)
    swapped = use_fast_kernels(module)
    out = module(x)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-5)
    return swapped, out


@pytest.mark.parametrize(
    ("name", "swaps"),
    # lenet5: C3 (Table I reads each S2 map 10 times: one convolution by input map); C1 and C5
    # (ungrouped, unpadded: C5's 5x5 kernel covers its 5x5 input, C1's does not and runs as the
    # convolution); S2 and S4.
    # lenet5-dws: C3's pointwise stage (Table I again, 1x1 filters); the depthwise stages of C3
    # (6 maps) and C5 (16 maps); C1's pointwise stage (1x1, one map in) as a broadcast product;
    # C1's depthwise stage (1 map, ungrouped) and C5's pointwise stage (1x1 kernel on a 1x1
    # input) as whole-input candidates; S2 and S4.
    [
        ("lenet5", {SourceOrderTableConv: 1, WholeInputConv2d: 2, WindowSumSubsampling: 2}),
        (
            "lenet5-dws",
            {
                SourceOrderTableConv: 1,
                DepthwiseConv2d: 2,
                PointwiseScale2d: 1,
                WholeInputConv2d: 2,
                WindowSumSubsampling: 2,
            },
        ),
    ],
)
def test_same_outputs_gradients_and_state(name, swaps):
    plain, fast = _twins(name)
    assert use_fast_kernels(fast) == sum(swaps.values())
    for kind, count in swaps.items():
        assert sum(type(m) is kind for m in fast.modules()) == count, kind.__name__
    assert fast.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(16, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.arange(16) % 10
    for model in (plain, fast):
        F.cross_entropy(-model(x), y).backward()
    torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-4)
    for (key, p), q in zip(plain.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5, msg=key)


def test_a_table_read_evenly_is_one_convolution_by_input_map():
    # 3 input maps, each read twice: output 0 reads maps 0, 1; output 1 reads 1, 2; output 2
    # reads 0, 2.
    torch.manual_seed(0)
    table = TableConv(3, [(0, 1), (1, 2), (0, 2)], 3)
    x = torch.randn(2, 3, 7, 7, requires_grad=True)
    swapped, out = _swap_keeps_output_and_gradient(table, x)
    assert swapped == 1 and type(table) is SourceOrderTableConv
    # filters by input map: map 0 is read by table positions 0 and 4, map 1 by 1 and 2, map 2
    # by 3 and 5 (table order: 0, 1 | 1, 2 | 0, 2)
    assert table.source_order.tolist() == [0, 4, 1, 2, 3, 5]
    # output map 1 at (0, 0) by hand: its two 3x3 filters on maps 1 and 2, plus its bias
    w = table.fan_in2.weight[1]  # (2, 3, 3): filters for maps 1 and 2
    by_hand = (x[0, 1, :3, :3] * w[0]).sum() + (x[0, 2, :3, :3] * w[1]).sum()
    torch.testing.assert_close(out[0, 1, 0, 0], by_hand + table.fan_in2.bias[1])


def test_a_table_of_1x1_filters_is_a_broadcast_product():
    torch.manual_seed(0)
    table = TableConv(3, [(0, 1), (1, 2), (0, 2)], 1)
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    swapped, out = _swap_keeps_output_and_gradient(table, x)
    assert swapped == 1 and type(table) is SourceOrderTableConv
    # output map 2 by hand: w0 * map 0 + w1 * map 2 + bias, at every pixel
    w, bias = table.fan_in2.weight[2, :, 0, 0], table.fan_in2.bias[2]
    torch.testing.assert_close(out[:, 2], w[0] * x[:, 0] + w[1] * x[:, 2] + bias)


def test_a_1x1_convolution_of_one_map_scales_it():
    conv = nn.Conv2d(1, 4, 1)
    x = torch.randn(2, 1, 6, 6, requires_grad=True)
    swapped, out = _swap_keeps_output_and_gradient(conv, x)
    assert swapped == 1 and type(conv) is PointwiseScale2d
    torch.testing.assert_close(out[1, 3], x[1, 0] * conv.weight[3, 0, 0, 0] + conv.bias[3])


def test_a_table_read_unevenly_keeps_its_groups():
    uneven = TableConv(3, [(0, 1), (0, 2)], 3)  # map 0 read twice, maps 1 and 2 once
    assert use_fast_kernels(uneven) == 1  # only its grouped convolution, as a group sum
    assert type(uneven) is TableConv and type(uneven.fan_in2) is GroupSumConv2d


def test_a_kernel_over_the_whole_input_is_a_matrix_product():
    conv = nn.Conv2d(4, 3, 5)
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    bigger = torch.randn(2, 4, 7, 7)
    expected_bigger = conv(bigger)
    swapped, out = _swap_keeps_output_and_gradient(conv, x)
    assert swapped == 1 and type(conv) is WholeInputConv2d
    assert out.shape == (2, 3, 1, 1)
    # output 2 of sample 1 by hand: the 100 products of the input and filter 2, plus the bias
    by_hand = (x[1] * conv.weight[2]).sum() + conv.bias[2]
    torch.testing.assert_close(out[1, 2, 0, 0], by_hand)
    torch.testing.assert_close(conv(bigger), expected_bigger)  # 7x7: the convolution itself
    padded = nn.Conv2d(4, 3, 5, padding=1)
    assert use_fast_kernels(padded) == 0


def test_channels_last_gives_the_same_outputs():
    plain, fast = _twins("lenet5")
    use_fast_kernels(fast)
    fast = fast.to(memory_format=torch.channels_last)
    x = torch.randn(8, 1, 32, 32)
    out = fast(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, plain(x), rtol=1e-5, atol=1e-4)


def test_a_group_sum_is_the_grouped_convolution():
    # 3 groups of 2 input maps each, one output map per group, 3x3 kernel, stride 2, padding 1.
    conv = nn.Conv2d(6, 3, 3, stride=2, padding=1, groups=3)
    x = torch.randn(2, 6, 9, 9)
    expected = conv(x)
    assert use_fast_kernels(conv) == 1 and isinstance(conv, GroupSumConv2d)
    torch.testing.assert_close(conv(x), expected, rtol=1e-5, atol=1e-5)
    wide = nn.Conv2d(6, 6, 3, groups=3)  # several outputs per group: left alone
    assert use_fast_kernels(wide) == 0


def test_a_channels_last_depthwise_convolution_is_the_depthwise_convolution():
    conv = nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=6)
    x = torch.randn(2, 6, 9, 9, requires_grad=True)
    swapped, _ = _swap_keeps_output_and_gradient(conv, x)
    assert swapped == 1 and isinstance(conv, DepthwiseConv2d)


def test_a_window_sum_adds_the_four_inputs_of_each_window():
    layer = Subsampling(2)
    nn.init.constant_(layer.weight, 1.0)
    nn.init.constant_(layer.bias, 0.0)
    # map 0: 0..15 row by row, so the window at (0, 0) holds 0, 1, 4, 5: sum 10; map 1: all 1s,
    # every window sums to 4
    x = torch.stack([torch.arange(16.0).view(4, 4), torch.ones(4, 4)]).unsqueeze(0)
    assert use_fast_kernels(layer) == 1 and isinstance(layer, WindowSumSubsampling)
    sums = torch.tensor([[[0 + 1 + 4 + 5, 2 + 3 + 6 + 7], [8 + 9 + 12 + 13, 10 + 11 + 14 + 15]]])
    expected = torch.cat([sums, torch.full((1, 2, 2), 4.0)]).float()
    torch.testing.assert_close(layer(x)[0], layer.squash(expected))

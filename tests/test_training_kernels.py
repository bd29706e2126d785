"""The fast training kernels compute what the models define: same parameters, same outputs and
gradients (to float rounding), and the tracer's counts are those of the paper's connections."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flowprof.models import registry
from flowprof.models.lenet5 import Subsampling
from flowprof.training.kernels import (
    DepthwiseConv2d,
    GroupSumConv2d,
    WindowSumSubsampling,
    use_fast_kernels,
)


def _twins(name: str) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    plain = registry.build(name, device="cpu").module
    fast = registry.build(name, device="cpu").module
    fast.load_state_dict(plain.state_dict())
    return plain, fast


@pytest.mark.parametrize(
    ("name", "group_sums", "depthwise"),
    # lenet5: C3's fan-in-3 and fan-in-4 groups (the fan-in-6 map is an ordinary convolution);
    # lenet5-dws: the same two groups of C3's pointwise (1x1) stage, and the depthwise stages of
    # C3 (6 maps) and C5 (16 maps); C1's depthwise stage has one map, an ordinary convolution.
    # Both: S2 and S4.
    [("lenet5", 2, 0), ("lenet5-dws", 2, 2)],
)
def test_same_outputs_gradients_and_state(name, group_sums, depthwise):
    plain, fast = _twins(name)
    assert use_fast_kernels(fast) == group_sums + depthwise + 2
    assert sum(isinstance(m, GroupSumConv2d) for m in fast.modules()) == group_sums
    assert sum(isinstance(m, DepthwiseConv2d) for m in fast.modules()) == depthwise
    assert [type(m) for m in (fast.s2, fast.s4)] == [WindowSumSubsampling] * 2
    assert fast.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(16, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.arange(16) % 10
    for model in (plain, fast):
        F.cross_entropy(-model(x), y).backward()
    torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-4)
    for (key, p), q in zip(plain.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5, msg=key)


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
    dense = nn.Conv2d(6, 3, 3)  # groups=1, or several outputs per group: left alone
    wide = nn.Conv2d(6, 6, 3, groups=3)
    assert use_fast_kernels(nn.Sequential(dense, wide)) == 0


def test_a_channels_last_depthwise_convolution_is_the_depthwise_convolution():
    conv = nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=6)
    x = torch.randn(2, 6, 9, 9, requires_grad=True)
    expected = conv(x)
    (expected_grad,) = torch.autograd.grad(expected.square().sum(), x)
    assert use_fast_kernels(conv) == 1 and isinstance(conv, DepthwiseConv2d)
    out = conv(x)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-5)


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

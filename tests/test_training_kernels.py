"""The fast training kernels compute what the models define: same parameters, same outputs and
gradients (to float rounding), and the tracer's counts are those of the paper's connections."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flowprof.models import registry
from flowprof.training.kernels import GroupSumConv2d, use_fast_kernels


def _twins(name: str) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    plain = registry.build(name, device="cpu").module
    fast = registry.build(name, device="cpu").module
    fast.load_state_dict(plain.state_dict())
    return plain, fast


@pytest.mark.parametrize(
    ("name", "swapped"),
    # lenet5: C3's fan-in-3 and fan-in-4 groups (the fan-in-6 map is an ordinary convolution);
    # lenet5-dws: the same two groups of C3's pointwise (1x1) stage.
    [("lenet5", 2), ("lenet5-dws", 2)],
)
def test_same_outputs_gradients_and_state(name, swapped):
    plain, fast = _twins(name)
    assert use_fast_kernels(fast) == swapped
    assert sum(isinstance(m, GroupSumConv2d) for m in fast.modules()) == swapped
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
    depthwise = nn.Conv2d(6, 6, 3, groups=6)
    assert use_fast_kernels(nn.Sequential(dense, wide, depthwise)) == 0

"""tracer.meta_shapes: every shortcut gives what the op's own meta kernel gives.

For each case the op runs twice on meta tensors: through PyTorch (the truth: shape, dtype,
strides, or the error it raises) and through ``shortcut``. A shortcut may decline (None), and
must decline where PyTorch raises; when it answers, the answer equals PyTorch's in every field.
Each family below also asserts that the shortcut does answer its common cases, so a shortcut
that silently stopped applying (and made tracing slow again) fails here too.
"""

from __future__ import annotations

import pytest
import torch

from flowprof.tracer.meta_shapes import shortcut

aten = torch.ops.aten


def meta(*shape, dtype=torch.float32):
    return torch.empty(shape, dtype=dtype, device="meta")


def transposed(*shape):
    """A dense, non-contiguous tensor: the last two dimensions swapped."""
    return meta(*shape[:-2], shape[-1], shape[-2]).transpose(-1, -2)


def channels_last(*shape):
    return meta(*shape).contiguous(memory_format=torch.channels_last)


def expanded(*shape):
    """Not dense: a broadcast view with stride 0."""
    return meta(1, *shape[1:]).expand(*shape)


def fields(out):
    if isinstance(out, tuple):
        return tuple(fields(o) for o in out)
    return (tuple(out.shape), out.dtype, tuple(out.stride()))


def check(func, args, kwargs=None, *, must_answer: bool):
    kwargs = kwargs or {}
    try:
        truth = fields(func(*args, **kwargs))
    except Exception:
        truth = None
    got = shortcut(func, tuple(args), dict(kwargs))
    if truth is None:
        assert got is None, f"{func} answered where PyTorch raises"
        return
    if got is None:
        assert not must_answer, f"{func} declined a common case"
        return
    assert fields(got) == truth


UNARY = [
    aten.relu.default,
    aten.tanh.default,
    aten.gelu.default,
    aten.sigmoid.default,
    aten.exp.default,
    aten.neg.default,
    aten.rsqrt.default,
    aten.triu.default,
]


@pytest.mark.parametrize("func", UNARY, ids=str)
@pytest.mark.parametrize(
    "make, common",
    [
        (lambda: meta(2, 3, 5), True),
        (lambda: transposed(2, 3, 5), True),
        (lambda: channels_last(2, 3, 4, 5), True),
        (lambda: expanded(4, 3, 5), False),
        (lambda: meta(2, 3, 5, dtype=torch.float16), True),
    ],
)
def test_unary_ops_keep_the_input_layout(func, make, common):
    check(func, [make()], must_answer=common)


def test_in_place_ops_return_their_input():
    x = meta(2, 3)
    assert shortcut(aten.relu_.default, (x,), {}) is x
    assert shortcut(aten.add_.Tensor, (x, meta(3)), {}) is x
    assert shortcut(aten.mul_.Scalar, (x, 2.0), {}) is x
    # The other operand does not broadcast to x: PyTorch raises, the shortcut declines.
    check(aten.add_.Tensor, [meta(2, 3), meta(4, 2, 3)], must_answer=False)


BINARY = [aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor]


@pytest.mark.parametrize("func", BINARY, ids=str)
@pytest.mark.parametrize(
    "make, common",
    [
        (lambda: (meta(2, 3, 5), meta(2, 3, 5)), True),  # same shape
        (lambda: (meta(2, 3, 5), meta(5)), True),  # bias-like broadcast
        (lambda: (meta(2, 1, 5), meta(1, 3, 1)), True),  # both broadcast
        (lambda: (transposed(2, 3, 5), transposed(2, 3, 5)), True),  # same strides
        (lambda: (transposed(2, 3, 5), meta(2, 3, 5)), False),  # different strides
        (lambda: (meta(2, 3, 5, dtype=torch.float16), meta(2, 3, 5)), True),  # promotion
        (lambda: (meta(2, 3), meta(4, 3)), False),  # does not broadcast: PyTorch raises
        (lambda: (meta(2, 3, dtype=torch.int64), meta(2, 3, dtype=torch.int64)), False),
    ],
)
def test_binary_ops_broadcast_and_promote(func, make, common):
    check(func, list(make()), must_answer=common)


@pytest.mark.parametrize("func", [aten.mul.Scalar, aten.add.Scalar], ids=str)
def test_binary_ops_with_a_scalar(func):
    check(func, [meta(2, 3), 2.0], must_answer=True)
    check(func, [transposed(2, 3, 4), 3], must_answer=True)
    check(func, [meta(2, 3, dtype=torch.float16), 2.0], must_answer=True)  # stays fp16


def test_masked_fill_and_clone():
    x = meta(2, 4, 4)
    check(aten.masked_fill.Scalar, [x, meta(4, 4, dtype=torch.bool), 0.0], must_answer=True)
    check(aten.masked_fill.Scalar, [x, meta(3, 4, dtype=torch.bool), 0.0], must_answer=False)
    check(aten.clone.default, [transposed(2, 3, 4)], must_answer=True)
    check(aten.clone.default, [x], {"memory_format": torch.contiguous_format}, must_answer=False)


@pytest.mark.parametrize(
    "x, w, stride, padding, dilation, groups, common",
    [
        (meta(2, 1, 32, 32), meta(6, 1, 5, 5), [1, 1], [0, 0], [1, 1], 1, True),  # LeNet C1
        (meta(1, 3, 224, 224), meta(64, 3, 7, 7), [2, 2], [3, 3], [1, 1], 1, True),
        (meta(1, 32, 17, 13), meta(32, 1, 3, 3), [2, 1], [1, 0], [2, 1], 32, True),  # depthwise
        (meta(1, 8, 9), meta(4, 8, 3), [1], [1], [1], 1, True),  # conv1d
        (meta(1, 4, 5, 6, 7), meta(2, 4, 3, 3, 3), [1, 1, 1], [0, 1, 1], [1, 1, 1], 1, True),
        (meta(1, 3, 4, 4), meta(8, 3, 5, 5), [1, 1], [0, 0], [1, 1], 1, False),  # too small
        (meta(1, 4, 8, 8), meta(8, 3, 3, 3), [1, 1], [0, 0], [1, 1], 1, False),  # channels
        (channels_last(1, 3, 8, 8), meta(4, 3, 3, 3), [1, 1], [0, 0], [1, 1], 1, False),
    ],
)
def test_convolution(x, w, stride, padding, dilation, groups, common):
    zeros = [0] * len(stride)
    args = [x, w, meta(w.shape[0]), stride, padding, dilation, False, zeros, groups]
    check(aten.convolution.default, args, must_answer=common)


def test_cat():
    check(aten.cat.default, [[meta(2, 3, 4), meta(2, 5, 4)], 1], must_answer=True)
    check(aten.cat.default, [[meta(2, 3), meta(2, 3)], -1], must_answer=True)
    check(aten.cat.default, [[meta(2, 3), meta(4, 3)]], must_answer=True)  # dim 0 by default
    check(aten.cat.default, [[meta(2, 3), meta(2, 4)], 0], must_answer=False)  # raises
    check(aten.cat.default, [[meta(2, 3), meta(2, 3, dtype=torch.float16)], 0], must_answer=False)


@pytest.mark.parametrize("func", [aten.sum.dim_IntList, aten.mean.dim], ids=str)
def test_reductions(func):
    check(func, [meta(2, 6, 14, 2, 14, 2), [3, 5]], must_answer=True)
    check(func, [meta(2, 3, 4), [-1], True], must_answer=True)
    check(func, [meta(2, 3, 4), [0, 2], False], must_answer=True)
    check(func, [transposed(2, 3, 4), [1]], must_answer=True)
    check(func, [meta(2, 3), [2]], must_answer=False)  # out of range: raises
    check(func, [meta(2, 3), [1]], {"dtype": torch.float64}, must_answer=False)


def test_norms_softmax_and_products():
    x = meta(2, 5, 8)
    check(aten.native_layer_norm.default, [x, [8], meta(8), meta(8), 1e-5], must_answer=True)
    for low in (torch.float16, torch.bfloat16):  # (16-bit input: the meta kernel's stats are fp32)
        h, w = meta(2, 5, 8, dtype=low), meta(8, dtype=low)
        check(aten.native_layer_norm.default, [h, [8], w, w, 1e-5], must_answer=True)
    check(aten._softmax.default, [x, -1, False], must_answer=True)
    bn = [meta(2, 4, 3, 3), meta(4), meta(4), meta(4), meta(4), 0.1, 1e-5]
    check(aten._native_batch_norm_legit_no_training.default, bn, must_answer=True)
    check(aten.mm.default, [meta(3, 4), meta(4, 5)], must_answer=True)
    check(aten.addmm.default, [meta(5), meta(3, 4), meta(4, 5)], must_answer=True)
    check(aten.bmm.default, [meta(2, 3, 4), meta(2, 4, 5)], must_answer=True)
    check(aten.bmm.default, [meta(2, 3, 4), meta(3, 4, 5)], must_answer=False)  # raises
    check(aten.mm.default, [meta(3, 4), meta(3, 5)], must_answer=False)  # raises
    index = meta(3, dtype=torch.int64)
    check(aten.index_select.default, [meta(2, 6, 4), 1, index], must_answer=True)
    check(aten.index_select.default, [meta(2, 6, 4), -1, index], must_answer=True)


@pytest.mark.parametrize(
    ("a", "b", "offs"),
    [
        ((10, 16), (3, 16, 8), [3, 7, 10]),  # rows grouped: (M, N)
        ((3, 4, 16), (3, 16, 8), None),  # batched: (G, M, N)
        ((4, 48), (48, 8), [16, 32, 48]),  # contraction grouped: (G, M, N)
        ((3, 4, 16), (16, 24), [8, 16, 24]),  # columns grouped: (M, N)
    ],
)
def test_grouped_mm_matches_the_cpu_kernel_in_fp32_and_the_meta_kernel_in_bf16(a, b, offs):
    def run(device, dtype):
        x = torch.randn(a, dtype=dtype).to(device)
        w = torch.randn(b, dtype=dtype).to(device)
        o = None if offs is None else torch.tensor(offs, dtype=torch.int32, device=device)
        return x, w, o

    x, w, o = run("cpu", torch.float32)
    truth = fields(torch._grouped_mm(x, w, offs=o))
    mx, mw, mo = run("meta", torch.float32)
    assert fields(shortcut(aten._grouped_mm.default, (mx, mw, mo), {})) == truth
    # bfloat16, where this build's meta kernel answers too: the same fields
    check(aten._grouped_mm.default, list(run("meta", torch.bfloat16)), must_answer=True)

"""Every op-count formula against an independent hand count.

One tiny single-op model per formula, traced with ``tracer.trace(model, [shape, ...])``; the
expected OpCount is written out as arithmetic in the test, from the counting convention of
docs/design.md and the formula's documented derivation, never read back from the tool:

* a dot product of length K is K multiplications and K-1 additions; a bias is +1 addition per
  output; ``macs`` are the multiplications of conv / linear / matmul / attention products only;
* subtraction is an addition, division its own kind, and the rest by kind as documented.

Where the count depends on geometry that is tedious by hand (transposed convolution), PyTorch
itself is the oracle: run the real layer on all-ones inputs and weights and every output element
equals the number of products that land on it.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from flowprof import tracer
from flowprof.tracer import OpCount, formulas


class Op(nn.Module):
    """A one-op model: ``forward(*xs) = fn(*xs)`` (fx traces through ``fn``)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


class Op1(Op):
    def forward(self, x):
        return self.fn(x)


class Op2(Op):
    def forward(self, a, b):
        return self.fn(a, b)


class Op3(Op):
    def forward(self, a, b, c):
        return self.fn(a, b, c)


def counted(model: nn.Module, *inputs) -> OpCount:
    """Total count of ``model`` on ``inputs``; every op must be covered by a formula."""
    graph = tracer.trace(model, list(inputs))
    assert graph.uncounted() == {}, graph.uncounted()
    assert graph.coverage() == 1.0
    return graph.total()


def dots(n: int, k: int, bias: bool = False) -> OpCount:
    """The convention, stated once for the tests: n dot products of length k (+ a bias each)."""
    return OpCount(macs=n * k, multiplications=n * k, additions=n * (k - 1) + (n if bias else 0))


# --- convolution ---------------------------------------------------------------------------------


def test_dots_helper_is_the_convention():
    # 3 dot products of length 4: 3*4 = 12 products, 3*3 = 9 additions, +3 with a bias
    assert dots(3, 4) == OpCount(macs=12, multiplications=12, additions=9)
    assert dots(3, 4, bias=True) == OpCount(macs=12, multiplications=12, additions=12)


@pytest.mark.parametrize(
    ("conv", "shape", "expected"),
    [
        # LeNet C1: 28*28 outputs * 6 maps = 4704 outputs, K = 3 channels * 25 taps = 75
        # macs = 4704*75 = 352800; additions = 4704*74 + 4704 (bias) = 352800
        (
            nn.Conv2d(3, 6, 5),
            (1, 3, 32, 32),
            OpCount(macs=352800, multiplications=352800, additions=352800),
        ),
        # stride 2, padding 1: H_out = (9 + 2 - 3)//2 + 1 = 5; 2 images * 8 maps * 5*5 = 400
        # outputs, K = 4*3*3 = 36 (padding taps are computed): macs 400*36 = 14400,
        # additions 400*35 = 14000 (no bias)
        (
            nn.Conv2d(4, 8, 3, stride=2, padding=1, bias=False),
            (2, 4, 9, 9),
            OpCount(macs=14400, multiplications=14400, additions=14000),
        ),
        # dilation 2: effective kernel 2*(3-1)+1 = 5, H_out = 10 - 5 + 1 = 6; 3 maps * 36 = 108
        # outputs, K = 2*9 = 18: macs 108*18 = 1944, additions 108*17 + 108 = 1944
        (
            nn.Conv2d(2, 3, 3, dilation=2),
            (1, 2, 10, 10),
            OpCount(macs=1944, multiplications=1944, additions=1944),
        ),
        # groups 2, padding 1 (same size): 6 maps * 6*6 = 216 outputs, K = 4/2 * 9 = 18:
        # macs 216*18 = 3888, additions 216*17 + 216 = 3888
        (
            nn.Conv2d(4, 6, 3, groups=2, padding=1),
            (1, 4, 6, 6),
            OpCount(macs=3888, multiplications=3888, additions=3888),
        ),
        # depthwise, stride 2, padding 1: H_out = (8 + 2 - 3)//2 + 1 = 4; 8 maps * 16 = 128
        # outputs, K = 1 * 9 = 9: macs 128*9 = 1152, additions 128*8 + 128 = 1152
        (
            nn.Conv2d(8, 8, 3, groups=8, padding=1, stride=2),
            (1, 8, 8, 8),
            OpCount(macs=1152, multiplications=1152, additions=1152),
        ),
        # depthwise with multiplier 2 (groups 4, 8 maps): H_out = 5 - 3 + 1 = 3; 8 * 9 = 72
        # outputs, K = 4/4 * 9 = 9: macs 72*9 = 648, additions 72*8 = 576 (no bias)
        (
            nn.Conv2d(4, 8, 3, groups=4, bias=False),
            (1, 4, 5, 5),
            OpCount(macs=648, multiplications=648, additions=576),
        ),
        # non-square kernel (3,5), padding (1,2), stride (1,2): H_out = 6, W_out = (7+4-5)//2+1
        # = 4; 2 images * 5 maps * 6*4 = 240 outputs, K = 2*15 = 30: macs 240*30 = 7200,
        # additions 240*29 + 240 = 7200
        (
            nn.Conv2d(2, 5, (3, 5), stride=(1, 2), padding=(1, 2)),
            (2, 2, 6, 7),
            OpCount(macs=7200, multiplications=7200, additions=7200),
        ),
        # pointwise 1x1: 16 maps * 7*7 = 784 outputs, K = 32: macs 25088, additions 784*31
        # = 24304 (no bias)
        (
            nn.Conv2d(32, 16, 1, bias=False),
            (1, 32, 7, 7),
            OpCount(macs=25088, multiplications=25088, additions=24304),
        ),
    ],
    ids=["lenet-c1", "stride-pad", "dilation", "groups", "depthwise", "dw-mult", "rect", "1x1"],
)
def test_conv2d(conv, shape, expected):
    assert counted(conv, shape) == expected


@pytest.mark.parametrize(
    ("conv", "shape", "expected"),
    [
        # L_out = (20 + 2 - 4)//2 + 1 = 10; 2 * 5 maps * 10 = 100 outputs, K = 3*4 = 12:
        # macs 1200, additions 100*11 + 100 = 1200
        (
            nn.Conv1d(3, 5, 4, stride=2, padding=1),
            (2, 3, 20),
            OpCount(macs=1200, multiplications=1200, additions=1200),
        ),
        # groups 3, dilation 2: L_out = 11 - 2*(3-1) = 7; 6 maps * 7 = 42 outputs,
        # K = 6/3 * 3 = 6: macs 252, additions 42*5 = 210 (no bias)
        (
            nn.Conv1d(6, 6, 3, groups=3, dilation=2, bias=False),
            (1, 6, 11),
            OpCount(macs=252, multiplications=252, additions=210),
        ),
    ],
    ids=["stride-pad", "groups-dilation"],
)
def test_conv1d(conv, shape, expected):
    assert counted(conv, shape) == expected


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_conv2d_padding_modes(mode):
    # 3 maps * 6*6 = 108 outputs, K = 2*9 = 18: macs 1944, additions 108*17 + 108 = 1944;
    # filling the border (by zeros or by copying edge values) is data movement: free
    conv = nn.Conv2d(2, 3, 3, padding=1, padding_mode=mode)
    assert counted(conv, (1, 2, 6, 6)) == OpCount(macs=1944, multiplications=1944, additions=1944)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_conv2d_padding_same_even_kernel():
    # kernel 4, padding "same": asymmetric padding, 3 maps * 6*6 = 108 outputs, K = 2*16 = 32:
    # macs 3456, additions 108*31 + 108 = 3456
    conv = nn.Conv2d(2, 3, 4, padding="same")
    assert counted(conv, (1, 2, 6, 6)) == OpCount(macs=3456, multiplications=3456, additions=3456)


def test_conv_transpose2d_by_hand():
    # ConvTranspose2d(1, 1, 3, stride=2) on 2x2: H_out = (2-1)*2 + 3 = 5. Along one dimension
    # input i and tap j land on o = 2i + j: i=0 -> 0,1,2; i=1 -> 2,3,4, so the outputs receive
    # [1, 1, 2, 1, 1] products (6 in all, 5 outputs reached). In 2-D: 6*6 = 36 products on
    # 5*5 = 25 outputs: 36 - 25 = 11 additions to accumulate, + 25 bias additions = 36
    conv = nn.ConvTranspose2d(1, 1, 3, stride=2)
    assert counted(conv, (1, 1, 2, 2)) == OpCount(macs=36, multiplications=36, additions=36)
    # padding 1 crops one row/column each side: H_out = (2-1)*2 - 2 + 3 = 3, o = 2i - 1 + j:
    # i=0 -> -1,0,1; i=1 -> 1,2,3; in bounds: [1, 2, 1] (4 products on 3 outputs). In 2-D:
    # 16 products on 9 outputs: 16 - 9 = 7 accumulations + 9 bias additions = 16
    conv = nn.ConvTranspose2d(1, 1, 3, stride=2, padding=1)
    assert counted(conv, (1, 1, 2, 2)) == OpCount(macs=16, multiplications=16, additions=16)


def _transposed_oracle(conv: nn.ConvTranspose2d, shape) -> OpCount:
    """PyTorch as the oracle: with all-ones input and weights and no bias, every output element
    equals the number of products that land on it (P); it takes P-1 additions (+1 for a bias)."""
    ones = nn.ConvTranspose2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        output_padding=conv.output_padding,
        groups=conv.groups,
        dilation=conv.dilation,
        bias=False,
    )
    with torch.no_grad():
        ones.weight.fill_(1.0)
        products = ones(torch.ones(shape)).round().long()
    n_products = int(products.sum())
    reached = products > 0
    additions = int((products[reached] - 1).sum())
    if conv.bias is not None:
        additions += products.numel()
    return OpCount(macs=n_products, multiplications=n_products, additions=additions)


@pytest.mark.parametrize(
    ("conv", "shape"),
    [
        (nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1), (2, 4, 5, 5)),
        (nn.ConvTranspose2d(4, 4, 4, stride=2, padding=1, groups=2, bias=False), (1, 4, 3, 6)),
        (nn.ConvTranspose2d(2, 3, 2, stride=3), (1, 2, 4, 4)),  # stride > kernel: gaps
        (nn.ConvTranspose2d(3, 2, 3, stride=2, padding=2, dilation=2), (1, 3, 5, 4)),
    ],
    ids=["stride-pad-outpad", "groups", "gaps", "dilation"],
)
def test_conv_transpose2d_against_ones_oracle(conv, shape):
    expected = _transposed_oracle(conv, shape)
    assert expected.macs > 0
    assert counted(conv, shape) == expected


def test_conv_transpose2d_gaps_by_hand():
    # kernel 2, stride 3 on 4x4: H_out = 3*3 + 2 = 11; o = 3i + j hits 0,1,3,4,6,7,9,10 once
    # and 2,5,8 never. Per map: 2 channels * 8*8 = 128 products on 64 reached outputs:
    # 128 - 64 = 64 accumulations; 3 maps: macs 384, additions 3*64 + 3*121 (bias) = 555
    conv = nn.ConvTranspose2d(2, 3, 2, stride=3)
    assert counted(conv, (1, 2, 4, 4)) == OpCount(macs=384, multiplications=384, additions=555)


# --- linear algebra ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layer", "shape", "expected"),
    [
        # 3 rows * 4 outputs = 12 dot products of length 10: macs 120, additions 12*9 + 12 = 120
        (nn.Linear(10, 4), (3, 10), OpCount(macs=120, multiplications=120, additions=120)),
        # no bias: additions 12*9 = 108
        (
            nn.Linear(10, 4, bias=False),
            (3, 10),
            OpCount(macs=120, multiplications=120, additions=108),
        ),
        # 3-D input: 2*5 rows * 4 = 40 dot products of length 10: macs 400, additions 360 + 40
        (nn.Linear(10, 4), (2, 5, 10), OpCount(macs=400, multiplications=400, additions=400)),
        (
            nn.Linear(10, 4, bias=False),
            (2, 5, 10),
            OpCount(macs=400, multiplications=400, additions=360),
        ),
        # 4-D input: 2*3*2 rows * 7 = 84 dot products of length 5: macs 420, adds 336 + 84
        (nn.Linear(5, 7), (2, 3, 2, 5), OpCount(macs=420, multiplications=420, additions=420)),
    ],
    ids=["2d", "2d-nobias", "3d", "3d-nobias", "4d"],
)
def test_linear(layer, shape, expected):
    assert counted(layer, shape) == expected


@pytest.mark.parametrize(
    ("shapes", "expected"),
    [
        # (3,4,5) @ (3,5,2): 3*4*2 = 24 dot products of length 5: macs 120, additions 24*4 = 96
        ([(3, 4, 5), (3, 5, 2)], OpCount(macs=120, multiplications=120, additions=96)),
        # (4,5) @ (5,6): 24 dot products of length 5: 120 / 96
        ([(4, 5), (5, 6)], OpCount(macs=120, multiplications=120, additions=96)),
        # 4-D (2,3,4,5) @ (2,3,5,6): 2*3*4*6 = 144 dot products of length 5: 720 / 576
        ([(2, 3, 4, 5), (2, 3, 5, 6)], OpCount(macs=720, multiplications=720, additions=576)),
        # broadcast (2,4,5) @ (5,3): 2*4*3 = 24 dot products of length 5: 120 / 96
        ([(2, 4, 5), (5, 3)], OpCount(macs=120, multiplications=120, additions=96)),
        # broadcast batch (1,4,6) @ (3,6,2): 3*4*2 = 24 dot products of length 6: 144 / 120
        ([(1, 4, 6), (3, 6, 2)], OpCount(macs=144, multiplications=144, additions=120)),
        # matrix @ vector (4,5) @ (5,): 4 dot products of length 5: 20 / 16
        ([(4, 5), (5,)], OpCount(macs=20, multiplications=20, additions=16)),
    ],
    ids=["3d", "2d", "4d", "bcast-2d", "bcast-batch", "mv"],
)
def test_matmul(shapes, expected):
    assert counted(Op2(torch.matmul), *shapes) == expected


def test_bmm_and_operator():
    # bmm (2,3,4) @ (2,4,5): 2*3*5 = 30 dot products of length 4: macs 120, additions 30*3 = 90
    expected = OpCount(macs=120, multiplications=120, additions=90)
    assert counted(Op2(torch.bmm), (2, 3, 4), (2, 4, 5)) == expected
    assert counted(Op2(lambda a, b: a @ b), (2, 3, 4), (2, 4, 5)) == expected


def test_addbmm():
    # input (3,5) + sum over 4 batches of (3,6) @ (6,5): each of the 3*5 = 15 outputs sums 4 dot
    # products of length 6 into one (24 products, 4*5 + 3 = 23 additions) and adds the input
    # (1 addition): macs 15*24 = 360, additions 15*23 + 15 = 360
    expected = OpCount(macs=360, multiplications=360, additions=360)
    assert counted(Op3(torch.addbmm), (3, 5), (4, 3, 6), (4, 6, 5)) == expected
    # beta=0 drops the input's addition; alpha=2 scales each of the 15 sums (15 multiplications)
    model = Op3(lambda x, a, b: torch.addbmm(x, a, b, beta=0, alpha=2))
    expected = OpCount(macs=360, multiplications=360 + 15, additions=15 * 23)
    assert counted(model, (3, 5), (4, 3, 6), (4, 6, 5)) == expected


def test_bilinear_by_hand():
    # nn.Bilinear(3, 4, 5) on 2 rows: y[n,o] = sum_ij x1[n,i] A[o,i,j] x2[n,j] + b[o], computed
    # by ATen's _trilinear per output feature: t[n,o,j] = sum_i x1[n,i] A[o,i,j]: 2*5*4 = 40 dot
    # products of length 3 (120 products, 80 additions); y = sum_j t[n,o,j] x2[n,j]: 2*5 = 10
    # of length 4 (40 products, 30 additions); each added into the zero-filled output: 10
    # additions; the bias: 10 additions.
    # macs 120 + 40 = 160, additions 80 + 30 + 10 + 10 = 130
    expected = OpCount(macs=160, multiplications=160, additions=130)
    assert counted(nn.Bilinear(3, 4, 5), (2, 3), (2, 4)) == expected


def test_bilinear_against_the_kernels_products():
    # PyTorch as the oracle: the profiler records the bmm calls ATen's _trilinear really makes
    # on the CPU; each (b, n, k) @ (b, k, m) is b*n*m dot products of length k.
    from torch.profiler import profile

    layer = nn.Bilinear(6, 7, 3, bias=False)
    x1, x2 = torch.randn(5, 6), torch.randn(5, 7)
    with profile(record_shapes=True) as prof:
        layer(x1, x2)
    macs = additions = 0
    for e in prof.events():
        if e.name == "aten::bmm":
            (b, n, k), (_, _, m) = e.input_shapes[0], e.input_shapes[1]
            macs += b * n * m * k
            additions += b * n * m * (k - 1)
        elif e.name == "aten::add_":
            additions += math.prod(e.input_shapes[0])
    assert macs > 0
    expected = OpCount(macs=macs, multiplications=macs, additions=additions)
    assert counted(layer, (5, 6), (5, 7)) == expected


def test_grouped_mm_in_fp32_on_meta():
    # Mixture-of-experts experts in one call: 10 tokens (16 features) grouped 3/4/3 over 3
    # experts of 16x8: each token meets its expert's matrix, 10*8 = 80 dot products of length
    # 16: macs 1280, additions 80*15 = 1200. In float32, which the CPU kernel computes and this
    # build's meta kernel refuses (it applies the CUDA kernel's bfloat16 rule).
    class Experts(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.empty(3, 16, 8))

        def forward(self, x, offs):
            return torch._grouped_mm(x, self.w, offs=offs)

    offs = torch.tensor([3, 7, 10], dtype=torch.int32)
    expected = OpCount(macs=1280, multiplications=1280, additions=1200)
    assert counted(Experts(), torch.empty(10, 16), offs) == expected


@pytest.mark.parametrize(
    ("name", "args", "mask"),
    [
        # positions from each op's schema: is_causal 4th after q, k, v, dropout_p
        ("_scaled_dot_product_flash_attention_for_cpu", (0.0, True), "causal"),
        ("_scaled_dot_product_flash_attention_for_cpu", (0.0, False), None),
        # attn_bias, compute_log_sumexp, dropout_p, is_causal (a kernel with a meta shape only)
        ("_scaled_dot_product_efficient_attention", (None, False, 0.0, True), "causal"),
    ],
)
def test_fused_attention_ops_read_is_causal_by_position(name, args, mask):
    op = getattr(torch.ops.aten, name)
    model = Op3(lambda q, k, v: op(q, k, v, *args)[0])
    # 1*2 heads, 4 queries, 4 keys, head 8: 32 scores; causal: one select per score
    expected = sdpa_expected(2, 4, 4, 8, 8, mask)
    assert expected.selects == (32 if mask else 0)
    assert counted(model, (1, 2, 4, 8), (1, 2, 4, 8), (1, 2, 4, 8)) == expected


# --- attention -----------------------------------------------------------------------------------


def sdpa_expected(bh: int, L: int, S: int, E: int, Ev: int, mask: str | None) -> OpCount:
    """softmax(Q K^T * scale + mask) V as unfused math, for bh batch*heads:
    Q K^T: bh*L*S dot products of length E; one scaling multiplication per score; the mask (one
    addition per score for a float mask, one select for a bool or causal mask); softmax per row
    of S: S exponentials, S-1 additions, S divisions; then bh*L*Ev dot products of length S."""
    scores = bh * L * S
    count = dots(scores, E) + OpCount(multiplications=scores)
    if mask == "float":
        count += OpCount(additions=scores)
    if mask in ("bool", "causal"):
        count += OpCount(selects=scores)
    count += OpCount(exponentials=scores, additions=bh * L * (S - 1), divisions=scores)
    return count + dots(bh * L * Ev, S)


def test_sdpa_by_hand():
    # q (2,3,4,8), k (2,3,6,8), v (2,3,6,5): 2*3 = 6 heads, 4*6 = 24 scores each = 144 scores
    #   Q K^T: 144 * 8 = 1152 products, 144 * 7 = 1008 additions
    #   scale: 144 multiplications
    #   softmax: 6*4 = 24 rows of 6: 144 exponentials, 24*5 = 120 additions, 144 divisions
    #   A V: 6*4*5 = 120 dot products of length 6: 720 products, 120*5 = 600 additions
    # macs 1152 + 720 = 1872, multiplications 1872 + 144 = 2016, additions 1008 + 120 + 600 = 1728
    expected = OpCount(
        macs=1872,
        multiplications=2016,
        additions=1728,
        exponentials=144,
        divisions=144,
    )
    assert sdpa_expected(6, 4, 6, 8, 5, None) == expected
    model = Op3(F.scaled_dot_product_attention)
    assert counted(model, (2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5)) == expected


@pytest.mark.parametrize("shape", [(2, 3, 5, 8), (1, 4, 7, 16)])
def test_sdpa_causal(shape):
    B, H, T, E = shape
    model = Op3(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True))
    # the causal mask is one select per score: B*H*T*T selects on top of the plain count
    expected = sdpa_expected(B * H, T, T, E, E, "causal")
    assert expected.selects == B * H * T * T
    assert counted(model, shape, shape, shape) == expected


def test_sdpa_masks():
    q, kv = (2, 2, 3, 4), (2, 2, 5, 4)
    # 2*2*3*5 = 60 scores: a float mask adds 60 additions, a bool mask 60 selects
    float_mask = torch.zeros(3, 5)
    bool_mask = torch.ones(3, 5, dtype=torch.bool)

    class Masked(nn.Module):
        def __init__(self, mask):
            super().__init__()
            self.register_buffer("mask", mask)

        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask)

    plain = sdpa_expected(4, 3, 5, 4, 4, None)
    got_float = counted(Masked(float_mask), q, kv, kv)
    got_bool = counted(Masked(bool_mask), q, kv, kv)
    assert got_float == plain + OpCount(additions=60)
    assert got_bool == plain + OpCount(selects=60)


def test_masked_attention_by_hand():
    """Causal attention written out nanoGPT-style, with masked_fill on a registered mask."""
    B, H, T, D = 2, 2, 4, 8

    class Causal(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("bias", torch.tril(torch.ones(T, T)))

        def forward(self, q, k, v):
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D))  # (B, H, T, T)
            att = att.masked_fill(self.bias[:T, :T] == 0, float("-inf"))
            att = F.softmax(att, dim=-1)
            return att @ v  # (B, H, T, D)

    shape = (B, H, T, D)
    # scores: 2*2*4*4 = 64. q @ k^T: 64 * 8 = 512 products, 64 * 7 = 448 additions
    # scale: 64 multiplications; mask == 0: 4*4 = 16 comparisons; masked_fill: 64 selects
    # softmax: 16 rows of 4: 64 exponentials, 16*3 = 48 additions, 64 divisions
    # att @ v: 2*2*4*8 = 128 dot products of length 4: 512 products, 128*3 = 384 additions
    expected = OpCount(
        macs=512 + 512,
        multiplications=512 + 64 + 512,
        additions=448 + 48 + 384,
        comparisons=16,
        selects=64,
        exponentials=64,
        divisions=64,
    )
    assert counted(Causal(), shape, shape, shape) == expected


def mha_expected(
    B: int, L: int, S: int, E: int, heads: int, average: bool, mask: str | None = None
) -> OpCount:
    """nn.MultiheadAttention as unfused math: three input projections (B*L or B*S rows of E dot
    products of length E, + bias), attention per head of E/heads, the output projection (+ bias);
    with need_weights and averaging, the mean of the weights over heads (heads-1 additions and one
    multiplication per weight)."""
    count = dots(B * L * E, E, bias=True)  # q
    count += dots(B * S * E, E, bias=True)  # k
    count += dots(B * S * E, E, bias=True)  # v
    hd = E // heads
    count += sdpa_expected(B * heads, L, S, hd, hd, mask)
    count += dots(B * L * E, E, bias=True)  # out_proj
    if average:
        count += OpCount(additions=B * L * S * (heads - 1), multiplications=B * L * S)
    return count


def test_mha_expected_by_hand():
    # E 16, 4 heads (head_dim 4), B 2, L = S = 5:
    #   each projection: 2*5*16 = 160 dot products of length 16 + bias: 2560 products,
    #     160*15 + 160 = 2560 additions; four of them (q, k, v, out): 10240 / 10240
    #   8 heads, 25 scores each = 200 scores: QK 200*4 = 800 products, 200*3 = 600 additions;
    #     scale 200 multiplications; softmax 40 rows of 5: 200 exp, 40*4 = 160 additions,
    #     200 divisions; AV 8*5*4 = 160 dot products of length 5: 800 products, 640 additions
    #   average over heads: 2*5*5 = 50 weights: 50*3 = 150 additions, 50 multiplications
    expected = OpCount(
        macs=10240 + 800 + 800,
        multiplications=10240 + 800 + 200 + 800 + 50,
        additions=10240 + 600 + 160 + 640 + 150,
        exponentials=200,
        divisions=200,
    )
    assert mha_expected(2, 5, 5, 16, 4, average=True) == expected


class _AtenOps(TorchDispatchMode):
    """Records the names of the ATen ops that run (to see which path PyTorch takes)."""

    def __init__(self):
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


class SelfAttn(nn.Module):
    """nn.MultiheadAttention used as self-attention (query is key is value: the fast path's
    precondition), with the call options under test."""

    def __init__(self, batch_first: bool, need_weights: bool, heads: int = 4, embed: int = 16):
        super().__init__()
        self.attn = nn.MultiheadAttention(embed, heads, batch_first=batch_first)
        self.need_weights = need_weights

    def forward(self, x):
        out, _ = self.attn(x, x, x, need_weights=self.need_weights)
        return out


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_attention(batch_first, need_weights):
    B, T, E = 2, 5, 16
    shape = (B, T, E) if batch_first else (T, B, E)
    model = SelfAttn(batch_first, need_weights)
    expected = mha_expected(B, T, T, E, 4, average=need_weights)
    assert counted(model, shape) == expected


def test_multihead_attention_same_count_on_every_path():
    """train, eval, no_grad, real tensors, and eval+no_grad (PyTorch's fused fast path)."""
    B, T, E = 2, 6, 16
    expected = mha_expected(B, T, T, E, 4, average=False)
    model = SelfAttn(batch_first=True, need_weights=False)
    x = torch.randn(B, T, E)
    # the fast path really is taken in eval + no_grad on real tensors (one fused ATen op), and
    # not in training mode
    model.eval()
    with torch.no_grad(), _AtenOps() as ops:
        model(x)
    assert "_native_multi_head_attention" in ops.names
    model.train()
    with _AtenOps() as ops:
        model(x)
    assert "_native_multi_head_attention" not in ops.names

    model.train()
    assert counted(model, (B, T, E)) == expected
    assert model.training and model.attn.training  # flags restored
    model.eval()
    assert counted(model, (B, T, E)) == expected
    assert not model.training
    with torch.no_grad():
        assert counted(model, (B, T, E)) == expected
        assert counted(model, x) == expected
    model.train()
    assert counted(model, x) == expected


@pytest.mark.parametrize(
    ("options", "extra"),
    [
        ({"add_bias_kv": True}, 1),
        ({"add_zero_attn": True}, 1),
        ({"add_bias_kv": True, "add_zero_attn": True}, 2),
    ],
    ids=["bias_kv", "zero_attn", "both"],
)
def test_multihead_attention_extra_keys(options, extra):
    # E 8, 2 heads (head_dim 4), B 1, T 3. The learnt bias key/value and the zero key/value are
    # appended AFTER the projections: q, k, v and out stay 3 rows * 8 = 24 dot products of 8
    # (+ bias) each; the attention runs over 3 + extra keys: with one extra key, 2 heads *
    # (3*4 scores * 4 + 3*4 outputs * 4 keys) = 192 products
    class Extra(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True, **options)

        def forward(self, x):
            return self.attn(x, x, x, need_weights=False)[0]

    expected = dots(24, 8, True).scale(4) + sdpa_expected(2, 3, 3 + extra, 4, 4, None)
    assert expected.macs == 4 * 192 + 2 * (3 * (3 + extra) * 4 * 2)
    assert counted(Extra(), (1, 3, 8)) == expected


def test_multihead_attention_positional_and_unaveraged_options():
    B, T, E = 2, 3, 8

    class Positional(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(E, 2, batch_first=True)

        def forward(self, x):
            # (query, key, value, key_padding_mask, need_weights)
            return self.attn(x, x, x, None, False)[0]

    class PerHead(Positional):
        def forward(self, x):
            return self.attn(x, x, x, need_weights=True, average_attn_weights=False)[0]

    # need_weights False (given positionally) and per-head weights: no average over heads
    assert counted(Positional(), (B, T, E)) == mha_expected(B, T, T, E, 2, average=False)
    assert counted(PerHead(), (B, T, E)) == mha_expected(B, T, T, E, 2, average=False)


def test_multihead_attention_cross_and_masks():
    """Cross-attention (L != S, kdim/vdim) and a key padding mask."""
    B, L, S, E = 2, 3, 7, 8

    class Cross(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(E, 2, kdim=6, vdim=5, batch_first=True)

        def forward(self, q, k, v):
            return self.attn(q, k, v, need_weights=False)[0]

    # q: 2*3*8 = 48 dot products of length 8; k: 2*7*8 = 112 of length kdim 6; v: 112 of length
    # vdim 5 (each + bias); attention 2*2 heads of head_dim 4 over L=3, S=7; out: 48 of length 8
    expected = (
        dots(48, 8, True)
        + dots(112, 6, True)
        + dots(112, 5, True)
        + sdpa_expected(4, 3, 7, 4, 4, None)
        + dots(48, 8, True)
    )
    assert counted(Cross(), (B, L, E), (B, S, 6), (B, S, 5)) == expected

    class Padded(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(E, 2, batch_first=True)
            self.register_buffer("pad", torch.zeros(B, S, dtype=torch.bool))

        def forward(self, x):
            return self.attn(x, x, x, key_padding_mask=self.pad, need_weights=False)[0]

    # a bool key padding mask: one select per score (2*2*7*7 = 196)
    expected = mha_expected(B, S, S, E, 2, average=False, mask="bool")
    assert expected.selects == 196
    assert counted(Padded(), (B, S, E)) == expected

    class PaddedAndCausal(Padded):
        def __init__(self):
            super().__init__()
            self.register_buffer("causal", torch.ones(S, S, dtype=torch.bool).triu(1))

        def forward(self, x):
            return self.attn(
                x, x, x, key_padding_mask=self.pad, attn_mask=self.causal, need_weights=False
            )[0]

    # both masks: PyTorch adds them into one (B*heads, S, S) mask first, one addition per score
    # (196), then applies it as one mask (one select per score)
    expected = mha_expected(B, S, S, E, 2, average=False, mask="bool")
    expected += OpCount(additions=196)
    assert counted(PaddedAndCausal(), (B, S, E)) == expected


# --- normalisation and softmax -------------------------------------------------------------------


def test_layer_norm():
    # rows of n = 8, 2*3 = 6 rows. Per row: mean: 7 additions, 1 multiplication (by 1/n);
    # centring: 8 subtractions; variance: 8 squares, 7 additions, 1 multiplication;
    # rstd = 1/sqrt(var + eps): 1 addition, 1 square root, 1 division; normalise: 8
    # multiplications; affine: 8 multiplications, 8 additions.
    # per row: multiplications 1 + 8 + 1 + 8 + 8 = 26, additions 7 + 8 + 7 + 1 + 8 = 31
    expected = OpCount(multiplications=6 * 26, additions=6 * 31, square_roots=6, divisions=6)
    assert counted(nn.LayerNorm(8), (2, 3, 8)) == expected
    # without affine: per row multiplications 26 - 8 = 18, additions 31 - 8 = 23
    expected = OpCount(multiplications=6 * 18, additions=6 * 23, square_roots=6, divisions=6)
    assert counted(nn.LayerNorm(8, elementwise_affine=False), (2, 3, 8)) == expected
    # normalised over the last two dims (3, 4): n = 12, 2 rows; per row multiplications
    # 1 + 12 + 1 + 12 + 12 = 38, additions 11 + 12 + 11 + 1 + 12 = 47
    expected = OpCount(multiplications=2 * 38, additions=2 * 47, square_roots=2, divisions=2)
    assert counted(nn.LayerNorm((3, 4)), (2, 3, 4)) == expected


def test_group_norm():
    # GroupNorm(2 groups, 4 channels) on 1x4x3x3 = 36 elements, as ATen's kernel computes it.
    # Per group of m = 2*9 = 18: mean 17 additions, 1 multiplication; variance 18 subtractions,
    # 18 squares, 17 additions, 1 multiplication; rstd: 1 addition, 1 square root, 1 division.
    #   per group: additions 17 + 18 + 17 + 1 = 53, multiplications 1 + 18 + 1 = 20
    # Per channel (4): scale = weight * rstd (1 multiplication), shift = bias - mean * scale
    # (1 multiplication, 1 addition). Per element (36): x * scale + shift: 1 multiplication,
    # 1 addition.
    # multiplications 2*20 + 4*2 + 36 = 84, additions 2*53 + 4*1 + 36 = 146
    expected = OpCount(multiplications=84, additions=146, square_roots=2, divisions=2)
    assert counted(nn.GroupNorm(2, 4), (1, 4, 3, 3)) == expected
    # without affine: scale = rstd (no multiplication), shift = -mean * rstd (1 multiplication)
    # multiplications 2*20 + 4*1 + 36 = 80, additions 2*53 + 36 = 142
    expected = OpCount(multiplications=80, additions=142, square_roots=2, divisions=2)
    assert counted(nn.GroupNorm(2, 4, affine=False), (1, 4, 3, 3)) == expected


@pytest.mark.parametrize("affine", [True, False])
def test_instance_norm_and_group_norm_per_channel_agree(affine):
    # InstanceNorm2d(6) and GroupNorm(6, 6) normalise each (sample, channel) of 2x6x4x4 over
    # its m = 16 elements: the same computation, so the same count. 12 groups:
    # statistics: additions 15 + 16 + 15 + 1 = 47, multiplications 1 + 16 + 1 = 18 per group;
    # fold per (sample, channel): 2 multiplications and 1 addition (affine), 1 multiplication
    # (not affine); per element (192): 1 multiplication, 1 addition.
    fold_mults, fold_adds = (2, 1) if affine else (1, 0)
    expected = OpCount(
        multiplications=12 * 18 + 12 * fold_mults + 192,
        additions=12 * 47 + 12 * fold_adds + 192,
        square_roots=12,
        divisions=12,
    )
    instance = nn.InstanceNorm2d(6, affine=affine)
    group = nn.GroupNorm(6, 6, affine=affine)
    assert counted(instance, (2, 6, 4, 4)) == expected
    assert counted(group, (2, 6, 4, 4)) == expected


def test_batch_norm_eval():
    # BatchNorm2d(4) with running statistics on 2x4x3x3 = 72 elements. Per channel (4):
    # rstd = 1/sqrt(var + eps): 1 addition, 1 square root, 1 division; scale = weight * rstd:
    # 1 multiplication; shift = bias - mean * scale: 1 multiplication, 1 addition.
    # Per element: y = x * scale + shift: 1 multiplication, 1 addition.
    # multiplications 4*2 + 72 = 80, additions 4*2 + 72 = 80
    expected = OpCount(multiplications=80, additions=80, square_roots=4, divisions=4)
    bn = nn.BatchNorm2d(4).eval()
    assert counted(bn, (2, 4, 3, 3)) == expected
    # counted as inference (running statistics) even when the model is in training mode
    bn.train()
    assert counted(bn, (2, 4, 3, 3)) == expected
    assert bn.training
    # without affine: scale = rstd (no multiplication), shift = -mean * rstd (1 multiplication)
    # multiplications 4*1 + 72 = 76, additions 4*1 + 72 = 76
    expected = OpCount(multiplications=76, additions=76, square_roots=4, divisions=4)
    assert counted(nn.BatchNorm2d(4, affine=False).eval(), (2, 4, 3, 3)) == expected
    # BatchNorm1d(5) on (3, 5): 15 elements; multiplications 5*2 + 15 = 25, additions 25
    expected = OpCount(multiplications=25, additions=25, square_roots=5, divisions=5)
    assert counted(nn.BatchNorm1d(5).eval(), (3, 5)) == expected


def test_softmax():
    # dim -1 of (2,3,5): 6 rows of 5: 30 exponentials, 6*4 = 24 additions, 30 divisions
    expected = OpCount(exponentials=30, additions=24, divisions=30)
    assert counted(nn.Softmax(dim=-1), (2, 3, 5)) == expected
    # dim 1: 2*5 = 10 rows of 3: 30 exponentials, 10*2 = 20 additions, 30 divisions
    expected = OpCount(exponentials=30, additions=20, divisions=30)
    assert counted(nn.Softmax(dim=1), (2, 3, 5)) == expected


def test_log_softmax():
    # x_i - log(sum exp x_j), 6 rows of 5: 30 exponentials, per row 4 additions (the sum) + 5
    # subtractions = 9, so 54 additions; 6 logarithms
    expected = OpCount(exponentials=30, additions=54, logarithms=6)
    assert counted(nn.LogSoftmax(dim=-1), (2, 3, 5)) == expected


# --- pooling and reductions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pool", "shape", "comparisons"),
    [
        # 2x2/2 on 1x3x8x8: 3*4*4 = 48 windows of 4 taps: 48*3 = 144 comparisons
        (nn.MaxPool2d(2), (1, 3, 8, 8), 144),
        # 3x3/2 padding 1 on 5x5: H_out = (5+2-3)//2 + 1 = 3; window starts -1, 1, 3 hold 2, 3, 2
        # in-bounds taps (7 per dim); per plane 7*7 = 49 taps in 9 windows: 49 - 9 = 40
        # comparisons (padding taps are not compared); 2 planes: 80
        (nn.MaxPool2d(3, stride=2, padding=1), (1, 2, 5, 5), 80),
        # kernel 2, dilation 2, stride 1 on 5x5: effective 3, H_out = 3; 9 windows of 4 taps:
        # 9*3 = 27
        (nn.MaxPool2d(2, stride=1, dilation=2), (1, 1, 5, 5), 27),
        # kernel 3, dilation 2, stride 2, padding 1 on 7x7: H_out = (7+2-5)//2 + 1 = 3; taps at
        # start + {0,2,4} from starts -1, 1, 3: {1,3} 2 valid, {1,3,5} 3, {3,5,7} 2 -> 7 per dim;
        # 49 taps in 9 windows: 40
        (nn.MaxPool2d(3, stride=2, padding=1, dilation=2), (1, 1, 7, 7), 40),
        # ceil_mode, 2x2/2 on 5x5: H_out = ceil(3/2) + 1 = 3, windows {0,1}, {2,3}, {4}: 5 taps
        # per dim; 25 taps in 9 windows: 16 comparisons
        (nn.MaxPool2d(2, stride=2, ceil_mode=True), (1, 1, 5, 5), 16),
        # 1-D: kernel 3, stride 2 on 2x4x9: L_out = 4, 8 planes * 4 windows * 2 = 64
        (nn.MaxPool1d(3, stride=2), (2, 4, 9), 64),
    ],
    ids=["2x2", "padding", "dilation", "pad-dilation", "ceil", "1d"],
)
def test_max_pool(pool, shape, comparisons):
    assert counted(pool, shape) == OpCount(comparisons=comparisons)


@pytest.mark.parametrize("include_pad", [True, False])
def test_avg_pool(include_pad):
    # 3x3/2 padding 1 on 1x2x5x5: as for max pooling, 49 in-bounds taps in 9 windows per plane;
    # each window: taps-1 additions and one scaling multiplication (count_include_pad changes
    # the divisor, not the count). 2 planes: additions 2*(49-9) = 80, multiplications 2*9 = 18
    pool = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=include_pad)
    assert counted(pool, (1, 2, 5, 5)) == OpCount(additions=80, multiplications=18)


def test_avg_pool_plain():
    # 2x2/2 on 1x3x4x4: 3*2*2 = 12 windows of 4: additions 12*3 = 36, multiplications 12
    assert counted(nn.AvgPool2d(2), (1, 3, 4, 4)) == OpCount(additions=36, multiplications=12)


def test_adaptive_pools():
    # 7 -> 3: windows [floor(7i/3), ceil(7(i+1)/3)) = [0,3), [2,5), [4,7): 3 + 3 + 3 = 9 taps per
    # dim (uneven, overlapping). Per plane 9*9 = 81 taps in 9 windows; 2 planes:
    # avg: additions 2*(81-9) = 144, multiplications 2*9 = 18; max: comparisons 144
    assert counted(nn.AdaptiveAvgPool2d(3), (1, 2, 7, 7)) == OpCount(
        additions=144, multiplications=18
    )
    assert counted(nn.AdaptiveMaxPool2d(3), (1, 2, 7, 7)) == OpCount(comparisons=144)
    # (5, 7) -> (2, 3): rows [0,3), [2,5): 6 taps; columns 9 as above; 54 taps in 6 windows:
    # additions 54 - 6 = 48, multiplications 6
    assert counted(nn.AdaptiveAvgPool2d((2, 3)), (1, 1, 5, 7)) == OpCount(
        additions=48, multiplications=6
    )
    # 10 -> 4 (1-D): [0,3), [2,5), [5,8), [7,10): 12 taps in 4 windows; 3 planes:
    # comparisons 3*(12-4) = 24
    assert counted(nn.AdaptiveMaxPool1d(4), (1, 3, 10)) == OpCount(comparisons=24)
    # to 1x1 (global average, the ResNet head): 2 planes of 49: additions 2*48 = 96, mults 2
    assert counted(nn.AdaptiveAvgPool2d(1), (1, 2, 7, 7)) == OpCount(
        additions=96, multiplications=2
    )


def test_mean_and_sum():
    # (2,3,4) mean over the last dim: 6 outputs of 4: additions 6*3 = 18, multiplications 6
    assert counted(Op1(lambda x: x.mean(dim=-1)), (2, 3, 4)) == OpCount(
        additions=18, multiplications=6
    )
    # full sum of 24 elements: 23 additions
    assert counted(Op1(torch.sum), (2, 3, 4)) == OpCount(additions=23)
    # sum over dims (0, 2): 3 outputs of 2*4 = 8: additions 3*7 = 21
    assert counted(Op1(lambda x: x.sum(dim=(0, 2))), (2, 3, 4)) == OpCount(additions=21)
    # mean over all 24: 23 additions and 1 multiplication
    assert counted(Op1(torch.mean), (2, 3, 4)) == OpCount(additions=23, multiplications=1)


# --- activations and elementwise -----------------------------------------------------------------

N = 2 * 3 * 4  # elements of the (2, 3, 4) test tensor


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        # max(x, 0): one comparison per element
        (nn.ReLU(), OpCount(comparisons=N)),
        # min(max(x, 0), 6): two comparisons per element
        (nn.ReLU6(), OpCount(comparisons=2 * N)),
        # exact: x * 0.5 * (1 + erf(x / sqrt 2)): 3 multiplications, 1 addition, 1 erf
        (nn.GELU(), OpCount(multiplications=3 * N, additions=N, nonlinearities=N)),
        # tanh: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): x^3 2, *0.044715 1,
        # *sqrt(2/pi) 1, 0.5*x 1, final product 1 = 6 multiplications; 2 additions; 1 tanh
        (
            nn.GELU(approximate="tanh"),
            OpCount(multiplications=6 * N, additions=2 * N, nonlinearities=N),
        ),
        # x / (1 + exp(-x)): 1 exponential, 1 addition, 1 division
        (nn.SiLU(), OpCount(exponentials=N, additions=N, divisions=N)),
        # 1 / (1 + exp(-x)): 1 exponential, 1 addition, 1 division
        (nn.Sigmoid(), OpCount(exponentials=N, additions=N, divisions=N)),
        (nn.Tanh(), OpCount(nonlinearities=N)),
        # x * min(max(x + 3, 0), 6) / 6: 1 addition, 2 comparisons, 2 multiplications
        (nn.Hardswish(), OpCount(additions=N, comparisons=2 * N, multiplications=2 * N)),
        # min(max(x + 3, 0), 6) / 6: 1 addition, 2 comparisons, 1 multiplication
        (nn.Hardsigmoid(), OpCount(additions=N, comparisons=2 * N, multiplications=N)),
    ],
    ids=["relu", "relu6", "gelu", "gelu-tanh", "silu", "sigmoid", "tanh", "hardswish", "hardsig"],
)
def test_activations(module, expected):
    assert counted(module, (2, 3, 4)) == expected


def test_functional_activations_match_modules():
    assert counted(Op1(F.relu), (2, 3, 4)) == OpCount(comparisons=N)
    assert counted(Op1(torch.tanh), (2, 3, 4)) == OpCount(nonlinearities=N)
    # inplace variants are the same math
    assert counted(nn.ReLU(inplace=True), (2, 3, 4)) == OpCount(comparisons=N)
    assert counted(nn.ReLU6(inplace=True), (2, 3, 4)) == OpCount(comparisons=2 * N)


@pytest.mark.parametrize(
    ("fn", "kind"),
    [
        (lambda a, b: a + b, "additions"),
        (lambda a, b: a - b, "additions"),  # subtraction counts as an addition
        (lambda a, b: a * b, "multiplications"),
        (lambda a, b: a / b, "divisions"),
    ],
    ids=["add", "sub", "mul", "div"],
)
def test_elementwise_broadcasting(fn, kind):
    # (2,3,4) op (4,): broadcast to 2*3*4 = 24 outputs, one op each
    assert counted(Op2(fn), (2, 3, 4), (4,)) == OpCount(**{kind: 24})
    # (2,1,4) op (3,1): broadcast to (2,3,4): 24 outputs
    assert counted(Op2(fn), (2, 1, 4), (3, 1)) == OpCount(**{kind: 24})
    # same shapes (5, 6): 30 outputs
    assert counted(Op2(fn), (5, 6), (5, 6)) == OpCount(**{kind: 30})


def test_elementwise_with_scalars():
    # x * 2, x + 1, x / 4 on 24 elements: 24 operations each
    assert counted(Op1(lambda x: x * 2), (2, 3, 4)) == OpCount(multiplications=24)
    assert counted(Op1(lambda x: x + 1), (2, 3, 4)) == OpCount(additions=24)
    assert counted(Op1(lambda x: x / 4), (2, 3, 4)) == OpCount(divisions=24)


def test_embedding_is_counted_as_zero_not_uncounted():
    emb = nn.Embedding(10, 4)
    ids = torch.randint(0, 10, (2, 3))
    graph = tracer.trace(emb, [ids])
    # a table lookup: no arithmetic, but a formula ran (it is counted, as zero)
    assert graph.total() == OpCount()
    assert graph.uncounted() == {}
    assert graph.coverage() == 1.0
    assert any(name == "aten.embedding" for u in graph.units for name, _ in u.ops)
    assert graph.params() == 10 * 4
    # integer ids keep their own width; the looked-up rows are 2*3*4 = 24 floats of 32 bits
    edges = {(e.src, e.dst): e for e in graph.edges()}
    into = [e for (src, _), e in edges.items() if src.startswith("input:")]
    assert [e.bits for e in into] == [2 * 3 * 64]
    out = [e for (_, dst), e in edges.items() if dst == "output:out"]
    assert [e.bits for e in out] == [24 * 32]


# --- coverage and the registry -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fn", "name"),
    [(lambda x: torch.topk(x, 2, 1)[0], "aten.topk"), (lambda x: torch.sort(x, 1)[0], "aten.sort")],
    ids=["topk", "sort"],
)
def test_op_without_formula_is_reported_uncounted(fn, name):
    assert formulas.lookup(getattr(torch.ops.aten, name.split(".")[1])) is None

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return fn(self.fc(x))

    graph = tracer.trace(Model(), [(2, 4)])
    assert graph.uncounted() == {name: 1}
    # one counted op call (the linear's addmm) and one uncounted: coverage 1/2
    assert 0 < graph.coverage() < 1
    # the linear is still counted: 2*4 = 8 dot products of length 4, + bias
    assert graph.total() == dots(8, 4, bias=True)
    # and the block that ran it names it
    blocks = [b for b in graph.blocks() if b.uncounted]
    assert len(blocks) == 1 and dict(blocks[0].uncounted) == {name: 1}
    assert graph.to_dict()["coverage"]["uncounted"] == {name: 1}


def test_registry_refuses_a_duplicate():
    before = dict(formulas._TABLE)
    with pytest.raises(RuntimeError, match="already has a formula"):
        formulas.formula(torch.ops.aten.mm)(lambda call: OpCount())
    # a refused registration leaves no half-registered op behind
    with pytest.raises(RuntimeError, match="already has a formula"):
        formulas.formula(torch.ops.aten.topk, torch.ops.aten.mm)(lambda call: OpCount())
    assert dict(formulas._TABLE) == before


def test_every_formula_has_a_derivation():
    for name, f in formulas.table().items():
        assert f.derivation, f"{name} has no derivation in its docstring"


# --- norms ---------------------------------------------------------------------------------------


def test_vector_norm_and_normalize():
    # ||x||_2 over rows of 8: 8 squares, 7 additions, 1 square root per row; 2*3 = 6 rows
    norm = counted(Op1(lambda x: torch.linalg.vector_norm(x, dim=-1)), torch.empty(2, 3, 8))
    assert norm == OpCount(multiplications=6 * 8, additions=6 * 7, square_roots=6)
    # ord 1: 8 absolute values (comparisons of the sign) and 7 additions per row
    l1 = counted(Op1(lambda x: torch.linalg.vector_norm(x, ord=1, dim=-1)), torch.empty(2, 3, 8))
    assert l1 == OpCount(comparisons=6 * 8, additions=6 * 7)
    # F.normalize = x / max(||x||, eps): the norm, one clamp comparison per row, 48 divisions
    normalize = counted(Op1(lambda x: F.normalize(x, dim=-1)), torch.empty(2, 3, 8))
    assert normalize == OpCount(
        multiplications=48, additions=42, square_roots=6, comparisons=6, divisions=48
    )


# --- recurrent layers ----------------------------------------------------------------------------


@pytest.mark.parametrize("batch_first", [True, False])
def test_gru_counts_its_cell_arithmetic(batch_first):
    # ATen's GRU cell (aten/src/ATen/native/RNN.cpp, GRUCell), per time step, on B rows:
    #   igates = linear(x, W_ih, b_ih); hgates = linear(h, W_hh, b_hh)   3H outputs each
    #   r = sigmoid(hr + ir); z = sigmoid(hz + iz)                        2H additions, 2H sigmoids
    #   n = tanh(in + hn * r)                                             H mult, H add, H tanh
    #   h' = (h - n) * z + n                                              H add (sub), H mult, H add
    # The gates are split with unsafe_chunk (free). The first step runs on h0 = 0 like the rest.
    I, H, B, T = 5, 6, 3, 4
    gru = nn.GRU(I, H, batch_first=batch_first)
    shape = (B, T, I) if batch_first else (T, B, I)
    rows = B * T  # every step works on B rows
    expected = (
        dots(rows * 3 * H, I, bias=True)
        + dots(rows * 3 * H, H, bias=True)
        + OpCount(additions=rows * 5 * H, multiplications=rows * 2 * H)
        + OpCount(exponentials=1, additions=1, divisions=1).scale(rows * 2 * H)  # sigmoids
        + OpCount(nonlinearities=rows * H)  # tanh
    )
    assert counted(gru, shape) == expected


# --- interpolation -------------------------------------------------------------------------------


class Interpolate(nn.Module):
    def __init__(self, **options):
        super().__init__()
        self.options = options

    def forward(self, x):
        return F.interpolate(x, **self.options)


@pytest.mark.parametrize(
    ("options", "shape", "expected"),
    [
        # linear: each output w0*x0 + w1*x1; (1, 2, 4) -> (1, 2, 9): 18 outputs x (2 mult, 1 add)
        ({"size": 9, "mode": "linear"}, (1, 2, 4), OpCount(multiplications=36, additions=18)),
        # bilinear: two linear interpolations along w, one along h: 6 mult, 3 add per output;
        # (1, 2, 3, 4) -> (1, 2, 6, 8) = 96 outputs
        (
            {"scale_factor": 2, "mode": "bilinear"},
            (1, 2, 3, 4),
            OpCount(multiplications=6 * 96, additions=3 * 96),
        ),
        (
            {"scale_factor": 2, "mode": "bilinear", "align_corners": True},
            (1, 2, 3, 4),
            OpCount(multiplications=6 * 96, additions=3 * 96),
        ),
        # trilinear: two bilinear results combined: 2*6 + 2 = 14 mult, 2*3 + 1 = 7 add per output;
        # (1, 1, 2, 3, 4) -> (1, 1, 5, 6, 7) = 210 outputs
        (
            {"size": (5, 6, 7), "mode": "trilinear"},
            (1, 1, 2, 3, 4),
            OpCount(multiplications=14 * 210, additions=7 * 210),
        ),
        # bicubic: a 4-tap cubic interpolation along w in each of 4 rows (4 mult, 3 add each),
        # then one along h of those 4 results: 5 x 4 = 20 mult, 5 x 3 = 15 add per output;
        # (1, 2, 3, 4) -> (1, 2, 6, 8) = 96 outputs
        (
            {"scale_factor": 2, "mode": "bicubic"},
            (1, 2, 3, 4),
            OpCount(multiplications=20 * 96, additions=15 * 96),
        ),
        # nearest: every output copies one input element: no arithmetic
        ({"scale_factor": 2, "mode": "nearest"}, (1, 2, 3, 4), OpCount()),
        ({"scale_factor": 2, "mode": "nearest-exact"}, (1, 2, 3, 4), OpCount()),
        ({"scale_factor": 3, "mode": "nearest"}, (1, 2, 3, 4, 5), OpCount()),
    ],
    ids=[
        "linear",
        "bilinear",
        "bilinear-corners",
        "trilinear",
        "bicubic",
        "nearest",
        "exact",
        "nearest-3d",
    ],
)
def test_interpolation(options, shape, expected):
    assert counted(Interpolate(**options), shape) == expected


# --- more activations, scans, logsumexp ----------------------------------------------------------

E = 2 * 8 * 16  # elements of a (2, 8, 16) input


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        # PReLU: x if x > 0 else w*x: 1 comparison, 1 multiplication
        (nn.PReLU(), OpCount(comparisons=E, multiplications=E)),
        # softplus: b*x, > threshold, exp, log1p (1 addition + 1 logarithm), / b
        (
            nn.Softplus(),
            OpCount(
                multiplications=E,
                comparisons=E,
                exponentials=E,
                additions=E,
                logarithms=E,
                divisions=E,
            ),
        ),
        # mish: x * tanh(log(1 + exp(x))): exp, addition, log, tanh, multiplication
        (
            nn.Mish(),
            OpCount(exponentials=E, additions=E, logarithms=E, nonlinearities=E, multiplications=E),
        ),
        # log-sigmoid: min(x, 0) - log(1 + exp(-|x|)): 2 comparisons, exp, log, 2 additions
        (
            nn.LogSigmoid(),
            OpCount(comparisons=2 * E, exponentials=E, logarithms=E, additions=2 * E),
        ),
        # ELU (alpha 1): x <= 0, exp, - 1, * alpha
        (nn.ELU(), OpCount(comparisons=E, exponentials=E, additions=E, multiplications=E)),
        # SELU: ELU with scale 1.0507...: one more multiplication
        (nn.SELU(), OpCount(comparisons=E, exponentials=E, additions=E, multiplications=2 * E)),
        # CELU alpha 1 is ELU; alpha 2 divides x by alpha first: one more multiplication
        (nn.CELU(), OpCount(comparisons=E, exponentials=E, additions=E, multiplications=E)),
        (
            nn.CELU(2.0),
            OpCount(comparisons=E, exponentials=E, additions=E, multiplications=2 * E),
        ),
        # GLU halves the last dimension: E/2 outputs, each a sigmoid (exp, addition, division)
        # times the other half (a multiplication)
        (
            nn.GLU(),
            OpCount(
                exponentials=E // 2, additions=E // 2, divisions=E // 2, multiplications=E // 2
            ),
        ),
    ],
    ids=["prelu", "softplus", "mish", "logsigmoid", "elu", "selu", "celu", "celu2", "glu"],
)
def test_more_activations(module, expected):
    assert counted(module, (2, 8, 16)) == expected


def test_scans_logsumexp_and_pixel_shuffle():
    # cumsum over the last dimension (16): 15 additions per row, 2*8 = 16 rows
    assert counted(Op1(lambda t: t.cumsum(-1)), (2, 8, 16)) == OpCount(additions=16 * 15)
    # over the middle one (8): 7 additions per row, 2*16 = 32 rows
    assert counted(Op1(lambda t: t.cumsum(1)), (2, 8, 16)) == OpCount(additions=32 * 7)
    assert counted(Op1(lambda t: t.cumprod(-1)), (2, 8, 16)) == OpCount(multiplications=16 * 15)
    # logsumexp over 16 elements for each of 16 outputs: max 15 comparisons, 16 subtractions,
    # 16 exponentials, 15 additions (the sum), 1 logarithm, 1 addition (the max back)
    per = OpCount(comparisons=15, additions=16 + 15 + 1, exponentials=16, logarithms=1)
    assert counted(Op1(lambda t: t.logsumexp(-1)), (2, 8, 16)) == per.scale(16)
    # pixel (un)shuffle only moves data
    assert counted(Op1(lambda t: F.pixel_shuffle(t, 2)), (1, 8, 3, 4)) == OpCount()
    assert counted(Op1(lambda t: F.pixel_unshuffle(t, 2)), (1, 2, 4, 6)) == OpCount()


def test_value_dependent_shapes_name_the_way_to_real_inputs():
    # Sparse mixture-of-experts dispatch: which tokens go to which expert depends on values, so
    # shapes alone cannot propagate. The error says how to give real inputs and weights.
    class Dispatch(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate = nn.Linear(8, 2)
            self.experts = nn.ModuleList(nn.Linear(8, 8) for _ in range(2))

        def forward(self, x):
            top = self.gate(x).argmax(-1)
            out = torch.zeros_like(x)
            for i, expert in enumerate(self.experts):
                idx = (top == i).nonzero().squeeze(-1)
                out = out.index_add(0, idx, expert(x.index_select(0, idx)))
            return out

    model = Dispatch()
    with pytest.raises(tracer.UnsupportedModelError, match=r"--measure") as info:
        tracer.trace(model, [(6, 8)])
    assert "example tensors" in str(info.value)
    # Given real inputs and weights, it traces: the gate is 6 dot products of length 8 per
    # expert score (6*2*8 = 96 products), and the 6 tokens meet one expert each (6*8*8 = 384).
    graph = tracer.trace(model, [torch.randn(6, 8)])
    assert graph.total().macs == 96 + 384

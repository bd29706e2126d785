"""Total MACs on torchvision resnet18, mobilenet_v2 and vit_b_16, and where each peer differs.

The truth is derived here from each architecture's published configuration (stage table, inverted
residual table, ViT-B/16 hyper-parameters), walking the layers in a loop written in this file and
summing H_out * W_out * C_out * K for every convolution and linear layer, plus the attention
products for ViT. It never calls flowprof; flowprof's total must equal it exactly. A check against
the torchvision modules' own hyper-parameters confirms the tables describe the models built.

Then every peer is run on the same model at 1x3x224x224 and its number is asserted as the truth
plus or minus what that peer adds or leaves out, each part derived from the same walk, with the
reason read in the peer's source (paths relative to site-packages). If a peer's behaviour
changes, its test fails and this file says what it used to do.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

from flowprof import tracer

torchvision = pytest.importorskip("torchvision")

SIZE = 224  # every figure is for one 3x224x224 image


def conv_out(size: int, k: int, s: int, p: int) -> int:
    """Output size of a convolution or pooling window (dilation 1, floor mode)."""
    return (size + 2 * p - k) // s + 1


@dataclass
class Census:
    """What a model computes, tallied from its architecture by hand (batch 1)."""

    conv_macs: int = 0  # sum over convolutions of H_out*W_out*C_out * (C_in/groups * k*k)
    linear_macs: int = 0  # sum over linear layers of rows * out_features * in_features
    attention_macs: int = 0  # Q K^T and A V products
    # fully connected layers by role (ViT), all included in linear_macs
    qkv_macs: int = 0
    out_proj_macs: int = 0
    convs: list[tuple[int, int, int, int, int]] = field(default_factory=list)  # c_in,c_out,k,s,g
    bn_elements: int = 0  # elements entering batch norms
    bn_channels: int = 0  # sum of batch-norm channels (each has a weight and a bias)
    relu_elements: int = 0  # elements through ReLU / ReLU6 module calls
    maxpool_input: int = 0
    avgpool_input: int = 0
    avgpool_outputs: int = 0
    avgpool_window: int = 0
    linear_bias_outputs: int = 0  # outputs of linear layers that add a bias
    conv_bias_outputs: int = 0  # outputs of convolutions that add a bias
    ln_elements: int = 0  # elements entering layer norms
    ln_params: int = 0
    gelu_elements: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    @property
    def macs(self) -> int:
        return self.conv_macs + self.linear_macs + self.attention_macs

    def conv(self, size: int, c_in: int, c_out: int, k: int, s: int, p: int, g: int = 1) -> int:
        out = conv_out(size, k, s, p)
        self.conv_macs += out * out * c_out * (c_in // g) * k * k
        self.convs.append((c_in, c_out, k, s, g))
        return out

    def bn(self, size: int, channels: int) -> None:
        self.bn_elements += channels * size * size
        self.bn_channels += channels


def resnet18_census(size: int = SIZE) -> Census:
    """torchvision resnet18: 7x7/2 stem, 3x3/2 max pool, four stages of two BasicBlocks
    (64, 128, 256, 512 channels; the first block of stages 2-4 has stride 2 and a 1x1/2
    downsample), global average pool, fc 512 -> 1000. Convolutions have no bias."""
    c = Census()
    h = c.conv(size, 3, 64, 7, 2, 3)  # 224 -> 112
    c.bn(h, 64)
    c.relu_elements += 64 * h * h
    c.maxpool_input = 64 * h * h
    h = conv_out(h, 3, 2, 1)  # 112 -> 56
    c_in = 64
    for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            s = stride if block == 0 else 1
            h_out = c.conv(h, c_in, width, 3, s, 1)
            c.bn(h_out, width)
            c.relu_elements += width * h_out * h_out
            c.conv(h_out, width, width, 3, 1, 1)
            c.bn(h_out, width)
            if s != 1 or c_in != width:
                c.conv(h, c_in, width, 1, s, 0)  # downsample
                c.bn(h_out, width)
            c.relu_elements += width * h_out * h_out  # after the residual addition
            c_in, h = width, h_out
    c.avgpool_input, c.avgpool_outputs, c.avgpool_window = 512 * h * h, 512, h * h
    c.linear_macs += 512 * 1000
    c.linear_bias_outputs += 1000
    return c


MOBILENET_V2 = [  # expansion t, output channels c, repeats n, first stride s (the paper's Table 2)
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def mobilenet_v2_census(size: int = SIZE) -> Census:
    """torchvision mobilenet_v2 (width 1.0): 3x3/2 stem to 32 channels, the inverted residual
    blocks of MOBILENET_V2 (1x1 expand unless t = 1, 3x3 depthwise, 1x1 linear projection; each
    convolution followed by batch norm, ReLU6 after all but the projection), 1x1 conv to 1280,
    functional global average pool, dropout, fc 1280 -> 1000. Convolutions have no bias."""
    c = Census()
    h = c.conv(size, 3, 32, 3, 2, 1)
    c.bn(h, 32)
    c.relu_elements += 32 * h * h
    c_in = 32
    for t, width, repeats, first_stride in MOBILENET_V2:
        for i in range(repeats):
            stride = first_stride if i == 0 else 1
            hidden = c_in * t
            if t != 1:
                c.conv(h, c_in, hidden, 1, 1, 0)
                c.bn(h, hidden)
                c.relu_elements += hidden * h * h
            h_out = c.conv(h, hidden, hidden, 3, stride, 1, g=hidden)  # depthwise
            c.bn(h_out, hidden)
            c.relu_elements += hidden * h_out * h_out
            c.conv(h_out, hidden, width, 1, 1, 0)  # projection: no activation
            c.bn(h_out, width)
            c_in, h = width, h_out
    c.conv(h, 320, 1280, 1, 1, 0)
    c.bn(h, 1280)
    c.relu_elements += 1280 * h * h
    c.avgpool_input, c.avgpool_outputs, c.avgpool_window = 1280 * h * h, 1280, h * h
    c.linear_macs += 1280 * 1000
    c.linear_bias_outputs += 1000
    return c


def vit_b_16_census() -> Census:
    """ViT-B/16: 16x16/16 patch embedding to D = 768 (with bias) on 14*14 = 196 patches, plus a
    class token: N = 197 tokens; 12 encoder layers, each LN -> multi-head self-attention (12
    heads of 64; packed q/k/v in-projection and out-projection, with biases) -> residual -> LN ->
    MLP 768 -> 3072 -> GELU -> 768 (with biases) -> residual; final LN; head 768 -> 1000 on the
    class token only."""
    c = Census()
    n, d, layers, heads, mlp = 197, 768, 12, 12, 3072
    head_dim = d // heads
    patches = c.conv(SIZE, 3, d, 16, 16, 0)  # 14
    c.conv_bias_outputs += d * patches * patches
    for _ in range(layers):
        c.ln_elements += n * d
        c.qkv_macs += 3 * n * d * d  # q, k and v: N rows * D outputs * D inputs each
        c.attention_macs += heads * n * n * head_dim  # Q K^T: N*N scores of length 64 per head
        c.attention_macs += heads * n * head_dim * n  # A V: N*64 outputs of length N per head
        c.out_proj_macs += n * d * d
        c.ln_elements += n * d
        c.linear_macs += n * mlp * d + n * d * mlp  # MLP up and down
        c.linear_bias_outputs += n * mlp + n * d
        c.gelu_elements += n * mlp
        c.ln_params += 2 * (2 * d)
        c.extra["mlp_params"] = c.extra.get("mlp_params", 0) + (d * mlp + mlp) + (mlp * d + d)
        c.extra["attn_bias_outputs"] = c.extra.get("attn_bias_outputs", 0) + 3 * n * d + n * d
        c.extra["softmax_elements"] = c.extra.get("softmax_elements", 0) + heads * n * n
        c.extra["q_elements"] = c.extra.get("q_elements", 0) + n * d
    c.linear_macs += c.qkv_macs + c.out_proj_macs
    c.ln_elements += n * d  # final LN
    c.ln_params += 2 * d
    c.linear_macs += d * 1000  # head
    c.linear_bias_outputs += 1000
    c.extra["conv_params"] = d * 3 * 16 * 16 + d
    return c


# --- the truth -----------------------------------------------------------------------------------

# The totals the walks give, written out so a reader can check the walks against them:
RESNET18_MACS = (
    112 * 112 * 64 * (3 * 7 * 7)  # stem: 118,013,952
    + 4 * 56 * 56 * 64 * (64 * 9)  # stage 1: four 3x3 convs, 462,422,016
    # stages 2-4: first 3x3/2 conv (c/2 -> c), three 3x3 convs (c -> c), one 1x1/2 downsample;
    # each stage halves H and doubles C, so the products are the same at every stage
    + 3 * (28 * 28 * 128 * (64 * 9) + 3 * 28 * 28 * 128 * (128 * 9) + 28 * 28 * 128 * 64)
    + 512 * 1000  # fc
)  # = 1,814,073,344
VIT_B_16_MACS = (
    14 * 14 * 768 * (3 * 16 * 16)  # patch embedding: 115,605,504
    + 12
    * (
        3 * 197 * 768 * 768  # q, k, v projections
        + 2 * 12 * 197 * 197 * 64  # Q K^T and A V, 12 heads of 64
        + 197 * 768 * 768  # out projection
        + 2 * 197 * 768 * 3072  # MLP
    )
    + 768 * 1000  # head, class token only
)  # = 17,563,828,224


def test_walks_give_the_written_totals():
    assert resnet18_census().macs == RESNET18_MACS == 1_814_073_344
    assert vit_b_16_census().macs == VIT_B_16_MACS == 17_563_828_224
    # mobilenet_v2 has 52 convolutions: its total is left to the walk (checked against the
    # model's own layers below); the figure is about 300.8 M
    assert mobilenet_v2_census().macs == 300_774_272


def _meta_model(name: str) -> nn.Module:
    with torch.device("meta"):
        return getattr(torchvision.models, name)()


def _model_convs(model: nn.Module) -> list[tuple[int, int, int, int, int]]:
    return [
        (m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.groups)
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]


@pytest.mark.parametrize(
    ("name", "census"),
    [("resnet18", resnet18_census), ("mobilenet_v2", mobilenet_v2_census)],
)
def test_walks_match_the_torchvision_layers(name, census):
    """The tables describe the models torchvision builds: same convolutions, same order."""
    assert census().convs == _model_convs(_meta_model(name))


def test_vit_walk_matches_the_torchvision_hyperparameters():
    model = _meta_model("vit_b_16")
    assert (model.patch_size, model.hidden_dim, model.mlp_dim) == (16, 768, 3072)
    assert len(model.encoder.layers) == 12
    assert all(layer.self_attention.num_heads == 12 for layer in model.encoder.layers)
    assert model.seq_length == 197


@pytest.mark.parametrize(
    ("name", "census"),
    [
        ("resnet18", resnet18_census),
        ("mobilenet_v2", mobilenet_v2_census),
        ("vit_b_16", vit_b_16_census),
    ],
)
def test_flowprof_total_macs_are_exact(name, census):
    model = _meta_model(name)
    graph = tracer.trace(model, [(1, 3, SIZE, SIZE)])
    assert graph.total().macs == census().macs
    assert graph.uncounted() == {}


# --- the peers -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_models():
    """Real (randomly initialised) models: the peers run them. Built once per module."""
    torch.manual_seed(0)
    models = {}

    def get(name: str) -> nn.Module:
        if name not in models:
            models[name] = getattr(torchvision.models, name)().eval()
        return models[name]

    return get


@contextlib.contextmanager
def _quiet():
    """Peers print tables and warnings; keep the test output clean."""
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)


def _image() -> torch.Tensor:
    return torch.randn(1, 3, SIZE, SIZE)


def _fvcore(model: nn.Module) -> int:
    fvcore_nn = pytest.importorskip("fvcore.nn")
    with _quiet():
        analysis = fvcore_nn.FlopCountAnalysis(model, _image())
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        return int(analysis.total())


def _thop(model: nn.Module) -> int:
    thop = pytest.importorskip("thop")
    with _quiet():
        ops, _ = thop.profile(model, inputs=(_image(),), verbose=False)
    return int(ops)


def _ptflops(model: nn.Module, backend: str) -> int:
    ptflops = pytest.importorskip("ptflops")
    with _quiet():
        macs, _ = ptflops.get_model_complexity_info(
            model,
            (3, SIZE, SIZE),
            as_strings=False,
            print_per_layer_stat=False,
            backend=backend,
        )
    return int(macs)


def _torchinfo(model: nn.Module) -> int:
    torchinfo = pytest.importorskip("torchinfo")
    with _quiet():
        return int(torchinfo.summary(model, input_data=_image(), verbose=0).total_mult_adds)


def _flop_counter(model: nn.Module, grad: bool) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with FlopCounterMode(display=False) as counter, torch.set_grad_enabled(grad):
        model(_image())
    return int(counter.get_total_flops())


# fvcore (fvcore/nn/flop_count.py, jit_handles.py) traces with torch.jit and counts ONE "flop"
# per MAC for aten::_convolution / linear / addmm / matmul / bmm / einsum (no bias). It also adds
# batch norm (eval: 2 per element with affine), layer norm (5 per element with affine) and
# adaptive_avg_pool2d (1 per input element); it skips everything else (relu, max_pool2d, add,
# hardtanh, gelu, ...), and has no handle for aten::scaled_dot_product_attention, so ViT's
# attention products are missing.


def test_fvcore(real_models):
    r = resnet18_census()
    assert _fvcore(real_models("resnet18")) == r.macs + 2 * r.bn_elements + r.avgpool_input
    m = mobilenet_v2_census()
    assert _fvcore(real_models("mobilenet_v2")) == m.macs + 2 * m.bn_elements + m.avgpool_input
    v = vit_b_16_census()
    assert _fvcore(real_models("vit_b_16")) == v.macs - v.attention_macs + 5 * v.ln_elements


# thop (thop/profile.py, thop/vision/basic_hooks.py, calc_func.py) counts MACs with forward
# hooks on known nn module classes only: conv (no bias) and nn.Linear (in_features * outputs, no
# bias) are right, but batch/layer norm add 2*2 = 4 per element (affine), adaptive avg pool
# (window + 1) per output, ReLU/ReLU6/max pool 0. Anything not an nn module with a hook is
# missed: mobilenet_v2's functional adaptive_avg_pool2d, and all of nn.MultiheadAttention (no hook
# for it, and its out_proj Linear is never called as a module), i.e. ViT's q/k/v and output
# projections and its attention products.


def test_thop(real_models):
    r = resnet18_census()
    avgpool = r.avgpool_outputs * (r.avgpool_window + 1)  # 512 * (49 + 1)
    assert _thop(real_models("resnet18")) == r.macs + 4 * r.bn_elements + avgpool
    m = mobilenet_v2_census()
    assert _thop(real_models("mobilenet_v2")) == m.macs + 4 * m.bn_elements
    v = vit_b_16_census()
    missed = v.qkv_macs + v.attention_macs + v.out_proj_macs
    assert _thop(real_models("vit_b_16")) == v.macs - missed + 4 * v.ln_elements


# ptflops, default "pytorch" backend (ptflops/pytorch_engine.py, pytorch_ops.py): module hooks
# plus monkey-patched torch.nn.functional calls. MACs of conv/linear are right but biases are
# added (+1 per output), batch norm is 2 per element (affine), LayerNorm 1 per element (its hook
# checks `module.affine`, which LayerNorm lacks), ReLU/GELU/pooling 1 per element. And it counts
# some ops twice: nn.ReLU, nn.GELU, nn.MaxPool2d and nn.AdaptiveAvgPool2d have a module hook AND
# their forward calls the patched F.relu / F.gelu / F.max_pool2d / F.adaptive_avg_pool2d (ReLU6
# calls F.hardtanh, not patched: once). Its nn.MultiheadAttention hook adds, per layer, the
# query scaling (N*D), in-projection biases (3*N*D), a softmax (heads*N*N) and the out bias.


def test_ptflops_pytorch_backend(real_models):
    r = resnet18_census()
    expected = (
        r.macs
        + r.linear_bias_outputs
        + 2 * r.bn_elements
        + 2 * r.relu_elements  # module hook + patched F.relu
        + 2 * r.maxpool_input  # module hook + patched F.max_pool2d
        + 2 * r.avgpool_input  # module hook + patched F.adaptive_avg_pool2d
    )
    assert _ptflops(real_models("resnet18"), "pytorch") == expected
    m = mobilenet_v2_census()
    expected = (
        m.macs
        + m.linear_bias_outputs
        + 2 * m.bn_elements
        + m.relu_elements  # nn.ReLU6 hook only
        + m.avgpool_input  # functional adaptive_avg_pool2d, patched
    )
    assert _ptflops(real_models("mobilenet_v2"), "pytorch") == expected
    v = vit_b_16_census()
    expected = (
        v.macs
        + v.extra["q_elements"]  # "Q scaling"
        + v.extra["attn_bias_outputs"]  # in-projection and out-projection biases
        + v.extra["softmax_elements"]
        + v.linear_bias_outputs
        + v.conv_bias_outputs
        + 2 * v.gelu_elements  # nn.GELU hook + patched F.gelu
        + v.ln_elements
    )
    assert _ptflops(real_models("vit_b_16"), "pytorch") == expected


# ptflops "aten" backend (ptflops/aten_engine.py, aten_ops.py): a TorchDispatchMode counting only
# aten.mm / matmul / addmm / bmm / convolution, as MACs, with bias additions for addmm and conv.
# It runs with grad enabled, so nn.MultiheadAttention takes the SDPA path, and SDPA's CPU kernel
# (aten._scaled_dot_product_flash_attention_for_cpu) is not in its table: ViT's attention
# products are missing.


def test_ptflops_aten_backend(real_models):
    r = resnet18_census()
    assert _ptflops(real_models("resnet18"), "aten") == r.macs + r.linear_bias_outputs
    m = mobilenet_v2_census()
    assert _ptflops(real_models("mobilenet_v2"), "aten") == m.macs + m.linear_bias_outputs
    v = vit_b_16_census()
    biases = v.linear_bias_outputs + v.extra["attn_bias_outputs"] + v.conv_bias_outputs
    assert _ptflops(real_models("vit_b_16"), "aten") == v.macs - v.attention_macs + biases


# torchinfo (torchinfo/layer_info.py calculate_macs, model_statistics.py) does not look at the
# computation: for each LEAF module it multiplies its parameter count by an output size. For
# convolutions, params * (batch * H_out * W_out): exact MACs plus the bias per output. For any
# other module, params * batch: exact for a 2-D nn.Linear (plus its bias), but batch norm and
# layer norm contribute their weight+bias counts, and a Linear on (1, 197, D) tokens is counted
# once instead of 197 times. nn.MultiheadAttention has a child (out_proj, never called) so it is
# not a leaf and its attention is left out entirely.


def test_torchinfo(real_models):
    r = resnet18_census()
    expected = r.macs + 2 * r.bn_channels + r.linear_bias_outputs
    assert _torchinfo(real_models("resnet18")) == expected
    m = mobilenet_v2_census()
    expected = m.macs + 2 * m.bn_channels + m.linear_bias_outputs
    assert _torchinfo(real_models("mobilenet_v2")) == expected
    v = vit_b_16_census()
    patches = 14 * 14
    expected = (
        v.extra["conv_params"] * patches  # exact patch-embedding MACs + bias per output
        + v.extra["mlp_params"]  # MLP Linears: params * batch 1, not * 197 tokens
        + v.ln_params  # layer norms: weight + bias
        + (768 * 1000 + 1000)  # head: params * batch 1 (right: one row)
    )
    assert expected == 173_232_616
    assert _torchinfo(real_models("vit_b_16")) == expected


# torch.utils.flop_counter.FlopCounterMode reports FLOPs = 2 * MACs for mm / addmm / bmm /
# convolution (no bias) and counts nothing else. Its SDPA formulas cover the CUDA kernels
# (flash, efficient, cudnn) but not the CPU kernel aten._scaled_dot_product_flash_attention_for_cpu,
# so on CPU ViT's attention products count zero. In eval under no_grad nn.MultiheadAttention
# takes PyTorch's fused fast path, aten._native_multi_head_attention, for which it has no formula:
# the whole attention block, projections included, counts zero.


def test_flop_counter_mode(real_models):
    r = resnet18_census()
    m = mobilenet_v2_census()
    for grad in (True, False):
        assert _flop_counter(real_models("resnet18"), grad) == 2 * r.macs
        assert _flop_counter(real_models("mobilenet_v2"), grad) == 2 * m.macs
    v = vit_b_16_census()
    vit = real_models("vit_b_16")
    assert _flop_counter(vit, grad=True) == 2 * (v.macs - v.attention_macs)
    fused = v.qkv_macs + v.attention_macs + v.out_proj_macs
    assert _flop_counter(vit, grad=False) == 2 * (v.macs - fused)


def test_flowprof_counts_the_fused_path_that_flop_counter_misses():
    """nn.MultiheadAttention in eval+no_grad: FlopCounterMode sees the fused kernel and counts
    zero; flowprof counts the unfused math whatever path PyTorch takes."""
    from torch.utils.flop_counter import FlopCounterMode

    attn = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    x = torch.randn(2, 5, 16)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        attn(x, x, x, need_weights=False)
    assert counter.get_total_flops() == 0

    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = attn

        def forward(self, x):
            return self.attn(x, x, x, need_weights=False)[0]

    # 4 projections of 2*5 rows * 16 outputs * 16 inputs = 4 * 2560; per head (8 = 2 batches * 4
    # heads) Q K^T 5*5*4 = 100 and A V 5*4*5 = 100 products: 8 * 200 = 1600
    with torch.no_grad():
        assert tracer.trace(SelfAttention(), [x]).total().macs == 4 * 2560 + 1600

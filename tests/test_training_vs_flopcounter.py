"""The training step's matrix products against PyTorch's FlopCounterMode, and a GPT-style decoder
against Megatron's closed form.

FlopCounterMode counts the FLOPs of matmul, convolution and SDPA (forward and backward) and
nothing else; flowprof's MACs of the same ops, over forward and backward together, must equal
its FLOPs / 2 exactly. Two places where they differ, each found here and explained:

* **Grouped convolutions.** FlopCounterMode's ``conv_backward_flop`` computes the weight
  gradient as the convolution ``conv(input^T, grad_out^T)`` with batch = C_in and input
  channels = N, ignoring ``groups``: C_in * C_out * k * H_out * W_out * N products, where each of
  the C_out * C_in/groups * k weights is a dot product over N * H_out * W_out. It overcounts by
  a factor of ``groups`` (32x on a ResNeXt-50 block, 576x on a MobileNetV2 depthwise layer).
  The tests subtract (groups - 1) x the true weight-gradient MACs of every grouped convolution
  from its figure, computed from the layer's shapes.
* **Which module a backward op belongs to.** FlopCounterMode attributes the backward by module
  scopes that open when a module's output gradients are ready and close when its input
  gradients are: where a module's input also feeds another branch (ResNet's downsample, the
  transformer's q/k/v projections), its scope stays open while the other branch's backward
  runs. Per module it then disagrees with flowprof (resnet18's downsample convolutions:
  366,084,096 FLOPs/2 against their own 19,267,584 MACs; EfficientNet's classifier is charged
  15.7 G, LeNet-5's C3 maps, which read slices of one input, 1.26 M against 45,000), while the
  totals agree. flowprof attributes each backward op to the autograd node that runs it,
  tagged in the forward with its block. So per module the tests compare where FlopCounterMode's
  scopes do not overlap (chain models per leaf module; ResNet per residual block and stage;
  the transformer per layer), and everywhere else the totals.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import flowprof
from flowprof import tracer
from flowprof.tracer import OpCount, Phase

FWD, BWD = Phase.FORWARD, Phase.BACKWARD


def _flop_counter(model: nn.Module, inputs: list, input_grad: bool, loss: str, device="meta"):
    """FlopCounterMode's per-module FLOPs of one forward + loss + backward on meta tensors (or
    real ones on ``device``), and the MACs it overcounts in grouped convolutions' weight
    gradients (see the module doc)."""
    model = model.train()
    xs = [
        torch.zeros(x.shape, dtype=x.dtype, device=device).requires_grad_(
            input_grad and x.is_floating_point()
        )
        for x in inputs
    ]
    shapes = {}

    def hook(mod, args, out):
        shapes[mod] = out.shape

    grouped = [
        m
        for m in model.modules()
        if isinstance(m, nn.Conv2d) and m.groups > 1 and m.weight.requires_grad
    ]
    handles = [m.register_forward_hook(hook) for m in grouped]
    counter = FlopCounterMode(display=False, depth=None)
    try:
        with counter, torch.device(device):
            out = model(*xs)
            out = out[0] if isinstance(out, tuple) else out
            _loss(out, loss).backward()
    finally:
        for h in handles:
            h.remove()
    # true weight-gradient MACs of a grouped conv: C_out * C_in/groups * k (= weight.numel())
    # dot products of length N * H_out * W_out; FlopCounterMode counts groups times that
    over = {}
    for m, s in shapes.items():
        over[m] = (m.groups - 1) * m.weight.numel() * s[0] * math.prod(s[2:])
    names = {m: n for n, m in model.named_modules()}
    return counter.get_flop_counts(), {names[m]: v for m, v in over.items()}


def _loss(out, kind):
    if kind == "cross-entropy":
        target = torch.zeros(out.shape[0], dtype=torch.long, device=out.device)
        return F.cross_entropy(out, target)
    return F.mse_loss(out, torch.empty(out.shape, dtype=out.dtype, device=out.device))


def _ours(model, inputs, input_grad, loss, depth=None):
    g = tracer.trace(
        model, inputs, phases=("forward", "backward"), loss=loss, input_grad=input_grad
    )
    assert g.uncounted() == {}, g.uncounted()
    return g


def _macs(counts: dict) -> int:
    return counts.get(FWD, OpCount()).macs + counts.get(BWD, OpCount()).macs


def _compare(model, inputs, input_grad, loss, depths=(None,), within=("",), device="meta"):
    """flowprof's MACs (forward + backward) = FlopCounterMode's FLOPs / 2 less its grouped-conv
    overcount: in total, and per module at each of ``depths`` (None: leaf modules) whose path
    starts with one of ``within``."""
    theirs, over = _flop_counter(model, inputs, input_grad, loss, device)
    g = _ours(model, inputs, input_grad, loss)
    top = type(model).__name__
    total = sum(theirs["Global"].values()) // 2 - sum(over.values())
    assert _macs({p: g.total(p) for p in g.phases()}) == total
    for depth in depths:
        for block in g.by_block(depth).blocks():
            if not block.path or not block.path.startswith(within):
                continue  # (a function at the top level: no module scope to compare with)
            key = f"{top}.{block.path}"
            expected = sum(theirs.get(key, {}).values()) // 2
            expected -= sum(
                v for name, v in over.items() if (name + ".").startswith(block.path + ".")
            )
            assert _macs(block.counts()) == expected, (depth, key)
    return g


# A model of every family of torchvision's classifiers (the full list, 80 models, is compared
# by bench/training_vs_flopcounter.py into BENCHMARKS.md: it takes about 6 minutes).
# (RegNet is compared on real tensors in its own test: FlopCounterMode cannot run it on meta
# tensors.) Per module: the depths where the scopes do not overlap.
FAMILIES = {
    "alexnet": (None, 1, 2),
    "convnext_tiny": (),
    "densenet121": (),
    "efficientnet_b0": (),
    "googlenet": (),
    "maxvit_t": (),
    "mnasnet0_5": (),
    "mobilenet_v3_small": (),
    "resnet18": (1, 2),
    "resnext50_32x4d": (),
    "shufflenet_v2_x0_5": (),
    "squeezenet1_1": (),
    "swin_t": (),
    "vgg11_bn": (None, 1, 2),
    "vit_b_32": (),
}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_torchvision_training_macs_equal_flop_counter(name):
    built = flowprof.build(f"torchvision:{name}", device="meta")
    inputs = built.example_inputs("meta")
    for input_grad in (False, True):
        _compare(built.module, inputs, input_grad, "cross-entropy", FAMILIES[name])


def test_regnet_training_macs_equal_flop_counter_on_real_tensors():
    # FlopCounterMode cannot run RegNet on meta tensors ("Tensor on device cpu is not on the
    # expected device meta"): it runs the real step on the CPU here (0.4 GFLOPs forward)
    built = flowprof.build("torchvision:regnet_x_400mf", device="cpu")
    inputs = [torch.empty(1, 3, 224, 224)]
    _compare(built.module, inputs, False, "cross-entropy", (), device="cpu")


@pytest.mark.parametrize(
    ("name", "depths"),
    [
        ("lenet5", (1,)),
        ("lenet5-dws", (1,)),
        ("lenet5-modern", (None, 1)),
        ("lenet5-modern-dws", (None, 1)),
    ],
)
def test_lenets_training_macs_equal_flop_counter_per_module(name, depths):
    built = flowprof.build(name, device="meta")
    for input_grad in (False, True):
        _compare(built.module, built.example_inputs("meta"), input_grad, "cross-entropy", depths)


@pytest.mark.parametrize(
    ("options", "depths"), [({}, (1, 2)), ({"vocab": 1000, "dec_layers": 2}, (1,))]
)
def test_transformer_training_macs_equal_flop_counter_per_layer(options, depths):
    built = flowprof.build("transformer", device="meta", **options)
    inputs = built.example_inputs("meta")
    # (FlopCounterMode's scopes overlap inside a layer, at its residual branches; with a
    # vocabulary, the token embeddings' scopes overlap the layers', and with two decoder layers
    # reading one encoder output, the decoder layers' scopes overlap each other's)
    for input_grad in (False, True):  # (token ids take no gradient)
        _compare(
            built.module,
            inputs,
            input_grad and not options,
            "mse",
            depths,
            within=("encoder", "decoder"),
        )


def test_frozen_layers_training_macs_equal_flop_counter():
    # resnet18 with its stem and first two stages frozen (a fine-tuning set-up): no weight
    # gradient in them, and no input gradient below the first trainable layer
    model = flowprof.build("torchvision:resnet18", device="meta").module
    for name, p in model.named_parameters():
        if name.startswith(("conv1", "bn1", "layer1", "layer2")):
            p.requires_grad_(False)
    inputs = [torch.empty(1, 3, 224, 224, device="meta")]
    frozen = _compare(model, inputs, False, "cross-entropy", (1, 2))
    assert BWD not in frozen.by_block(1).block("layer1").counts()
    # layer3's first convolution computes its weight gradient only: its input comes from the
    # frozen layer2, which needs no gradient. A 3x3 conv 128 -> 256, stride 2, on 28x28:
    # 256*128*9 weights, each a dot product over 14*14 positions (batch 1)
    conv = frozen.block("layer3.0.conv1").counts()
    assert conv[BWD].macs == 256 * 128 * 9 * 14 * 14 == conv[FWD].macs
    _compare(model, inputs, True, "cross-entropy", (1,))


# --- a GPT-style decoder against Megatron's formula ------------------------------------------


class _Layer(nn.Module):
    def __init__(self, h: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(h), nn.LayerNorm(h)
        self.qkv, self.proj = nn.Linear(h, 3 * h), nn.Linear(h, h)
        self.fc1, self.fc2 = nn.Linear(h, 4 * h), nn.Linear(4 * h, h)

    def forward(self, x):
        b, s, h = x.shape
        a, d = self.heads, h // self.heads
        q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)
        q, k, v = (t.reshape(b, s, a, d).transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(d))  # dense: no causal mask
        y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, s, h)
        x = x + self.proj(y)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class _GPT(nn.Module):
    def __init__(self, layers: int, h: int, heads: int, vocab: int):
        super().__init__()
        self.emb = nn.Embedding(vocab, h)
        self.layers = nn.Sequential(*[_Layer(h, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(h)
        self.head = nn.Linear(h, vocab, bias=False)

    def forward(self, ids):
        return self.head(self.ln(self.layers(self.emb(ids))))


@pytest.mark.parametrize(
    ("B", "s", "L", "h", "a", "V"), [(2, 16, 2, 32, 4, 50), (1, 64, 3, 48, 6, 97)]
)
def test_gpt_decoder_matches_megatron_and_the_remainder_by_hand(B, s, L, h, a, V):
    ids = torch.zeros(B, s, dtype=torch.long, device="meta")
    g = tracer.trace(_GPT(L, h, a, V), [ids], phases=("forward", "backward"), loss="cross-entropy")
    assert g.uncounted() == {}
    fwd, bwd = g.total(FWD), g.total(BWD)
    # Megatron (Narayanan et al. 2021), no recompute: matmul FLOPs of forward + backward
    megatron = 72 * B * s * L * h**2 * (1 + s / (6 * h) + V / (12 * L * h))
    assert 2 * (fwd.macs + bwd.macs) == round(megatron)
    assert bwd.macs == 2 * fwd.macs  # every matmul computes both its input and weight gradient

    # The remainder, by hand: everything but the matmul FLOPs (2 x MACs), T = B*s tokens,
    # f = 4h, d = h/a, P = B*a*s*s attention scores per layer.
    T, f, P = B * s, 4 * h, B * a * s * s
    n_ln = 2 * L + 1  # layer norms over rows of h
    # other kinds, exactly:
    #   exponentials: softmax forward (P per layer), GELU backward (T*f per layer),
    #     log-softmax forward and backward (T*V each)
    #   nonlinearities: erf of GELU forward and backward (T*f each per layer)
    #   divisions: softmax forward (P), layer norm forward and backward (1 per row each),
    #     the loss's mean and its gradient (1 each)
    #   square roots: layer norm forward (1 per row)
    assert fwd.exponentials + bwd.exponentials == L * (P + T * f) + 2 * T * V
    assert fwd.nonlinearities + bwd.nonlinearities == 2 * L * T * f
    assert fwd.divisions + bwd.divisions == L * P + 2 * n_ln * T + 2
    assert fwd.square_roots + bwd.square_roots == n_ln * T
    assert fwd.comparisons == bwd.comparisons == fwd.selects == bwd.selects == 0
    # multiplications and additions beyond 2 x MACs. A dot product of length K is K
    # multiplications and K-1 additions (2K - 1 against the FLOP convention's 2K), a bias
    # addition makes it 2K: so a matmul without bias falls short by one per output.
    ln_fwd = T * ((3 * h + 2) + (4 * h - 1))  # per row: 3h+2 mults, 4h-1 adds
    ln_bwd = T * (6 * h + (5 * h - 2)) + h * T + 2 * h * (T - 1)  # input; weight and bias grads

    def linear_bwd(i, o, bias=True):  # dW short by i*o, db = o sums of T, dX short by T*i
        return -i * o + (o * (T - 1) if bias else 0) - T * i

    layer_fwd = (
        2 * ln_fwd // T * T  # two layer norms
        - P  # q @ k^T: no bias, one short per score
        + P  # the scale
        + B * a * s * (s - 1)  # softmax sums (the exponentials and divisions counted above)
        - T * h  # softmax @ v, one short per output
        + 2 * T * h  # the two residual additions
        + 4 * T * f  # GELU: 3 multiplications, 1 addition per element
    )
    layer_bwd = (
        2 * ln_bwd
        + linear_bwd(h, 3 * h)
        + linear_bwd(h, h)
        + linear_bwd(h, f)
        + linear_bwd(f, h)
        + 9 * T * f  # GELU backward: 7 multiplications, 2 additions per element
        - P
        - T * h  # dP = dO v^T, dV = P^T dO: one short per output each
        + B * a * s * (2 * s + 2 * s - 1)  # softmax backward per row
        + P  # the scale's backward
        - 2 * T * h  # dQ, dK: one short per output each
        + 2 * T * h  # gradients of the residual stream summed where it forks (twice a layer)
    )
    top_fwd = ln_fwd - T * V + T * (2 * V - 1) + (T - 1)  # final LN, head, log-softmax, nll mean
    top_bwd = (
        ln_bwd
        + linear_bwd(h, V, bias=False)
        + T * (V + 2 * V - 1)  # log-softmax backward: V multiplications, 2V-1 additions a row
        + T * h  # the embedding's gradient added into its table
    )
    remainder = L * (layer_fwd + layer_bwd) + top_fwd + top_bwd
    counted = fwd.multiplications + fwd.additions + bwd.multiplications + bwd.additions
    assert counted - 2 * (fwd.macs + bwd.macs) == remainder

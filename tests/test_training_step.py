"""The training step: backward and optimizer counts against hand counts, and the dataflow of the
backward.

Every expected number is written out below as arithmetic from the counting convention (a dot
product of length K is K multiplications and K-1 additions; subtraction is an addition) and the
kernel's math, never read back from the tool. The models are tiny, traced with
``tracer.trace(..., phases=...)`` on meta tensors, with ``loss="sum"`` unless a test says
otherwise: the sum's backward is a broadcast (free), so the backward total is the model's own.

Where the geometry is tedious by hand (which padded input positions a strided convolution's
backward reaches, and how often), PyTorch is the oracle: ``torch.nn.grad.conv2d_input`` of an
all-ones gradient and all-ones weights gives, at every position, the number of products that
land on it.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flowprof import tracer
from flowprof.tracer import OpCount, Phase

FWD, BWD, OPT, RECOMPUTE = Phase.FORWARD, Phase.BACKWARD, Phase.OPTIMIZER, Phase.RECOMPUTE


class Fn(nn.Module):
    """A one-function model (fx traces through ``fn``)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def step(model, *inputs, **kw):
    """The training step's graph; every op of every phase must have a formula."""
    kw.setdefault("loss", "sum")
    kw.setdefault("phases", ("forward", "backward"))
    g = tracer.trace(model, list(inputs), **kw)
    assert g.uncounted() == {}, g.uncounted()
    return g


def backward(model, *inputs, **kw) -> OpCount:
    return step(model, *inputs, **kw).total(BWD)


# --- linear: the backward is 1x the forward without an input gradient, 2x with one ----------


def test_linear_backward_is_one_forward_without_input_grad_and_two_with():
    # Linear(8 -> 4) on a batch of 2. Forward: 2*4 dot products of length 8 = 64 MACs.
    # Backward, weight gradient: dW = g^T x, 4*8 dot products of length 2 (64 MACs,
    # 32*(2-1) = 32 additions); bias gradient: 4 sums over the batch, 4*(2-1) = 4 additions.
    # Input gradient (only when the input needs one): dx = g W, 2*8 dot products of length 4
    # (64 MACs, 16*3 = 48 additions).
    lin = nn.Sequential(nn.Linear(8, 4))
    g = step(lin, (2, 8))
    fwd, bwd = g.block("0").counts()[FWD], g.block("0").counts()[BWD]
    assert fwd.macs == 64
    assert bwd == OpCount(macs=64, multiplications=64, additions=32 + 4)
    assert bwd.macs == 1 * fwd.macs

    g = step(lin, (2, 8), input_grad=True)
    bwd = g.block("0").counts()[BWD]
    assert bwd == OpCount(macs=128, multiplications=128, additions=32 + 4 + 48)
    assert bwd.macs == 2 * fwd.macs


def test_frozen_layer_does_no_weight_gradient_work_and_no_update():
    # Two Linears, the first frozen. Layer 0 (8 -> 8): no weight gradient (frozen) and no input
    # gradient (the model's input needs none): no backward at all, and no optimizer work.
    # Layer 1 (8 -> 4) on a batch of 2: dW 4*8 dot products of length 2 (64 MACs, 32 adds),
    # db 4*(2-1) adds, dx 2*8 dot products of length 4 (64 MACs, 48 adds): its input comes from
    # layer 0, which has no parameter needing a gradient, so autograd computes no dx either.
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 4))
    for p in model[0].parameters():
        p.requires_grad_(False)
    g = step(model, (2, 8), phases=("forward", "backward", "optimizer"))
    first, second = g.block("0").counts(), g.block("1").counts()
    assert BWD not in first and OPT not in first
    assert second[BWD] == OpCount(macs=64, multiplications=64, additions=32 + 4)
    # SGD with momentum, per element: buf*mu (1 mult) + g (1 add); p + (-lr)*buf (1 mult, 1 add)
    assert second[OPT] == OpCount(multiplications=2 * 36, additions=2 * 36)
    assert g.block("1").trainable == 36 and g.block("0").trainable == 0


# --- convolution: strided, grouped, depthwise ------------------------------------------------


def _conv_grad_input_additions(c_in, c_out, groups, hw, k, stride, pad, out_hw, batch=1):
    """Additions of a convolution's input gradient, by PyTorch as the oracle: each padded input
    position receiving P > 0 products takes P - 1 additions. P comes from conv2d_input of an
    all-ones gradient and all-ones weights onto the padded input (padding 0)."""
    padded = hw + 2 * pad
    w = torch.ones(c_out, c_in // groups, k, k, dtype=torch.float64)
    ones = torch.ones(batch, c_out, out_hw, out_hw, dtype=torch.float64)
    products = torch.nn.grad.conv2d_input(
        (batch, c_in, padded, padded), w, ones, stride=stride, groups=groups
    )
    reached = (products > 0).sum().item()
    return int(products.sum().item()) - reached, int(products.sum().item())


@pytest.mark.parametrize(
    ("c_in", "c_out", "groups", "hw", "k", "stride", "pad"),
    [
        (3, 4, 1, 8, 3, 2, 1),  # strided, padded
        (4, 6, 2, 6, 3, 1, 0),  # grouped
        (4, 4, 4, 6, 3, 1, 1),  # depthwise
    ],
)
def test_conv2d_backward(c_in, c_out, groups, hw, k, stride, pad):
    conv = nn.Sequential(nn.Conv2d(c_in, c_out, k, stride=stride, padding=pad, groups=groups))
    out_hw = (hw + 2 * pad - k) // stride + 1
    m = out_hw * out_hw  # output positions (batch 1)
    taps = (c_in // groups) * k * k  # K: the length of each output's dot product
    fwd_macs = c_out * m * taps
    # weight gradient: each of c_out * taps weights is a dot product of length m
    dw = OpCount(
        macs=c_out * taps * m, multiplications=c_out * taps * m, additions=c_out * taps * (m - 1)
    )
    db = OpCount(additions=c_out * (m - 1))  # c_out sums of m gradients
    g = step(conv, (1, c_in, hw, hw))
    assert g.total(FWD).macs == fwd_macs
    assert g.total(BWD) == dw + db
    # input gradient: every forward product has its twin (MACs = forward MACs); additions by
    # the oracle
    adds, products = _conv_grad_input_additions(c_in, c_out, groups, hw, k, stride, pad, out_hw)
    assert products == fwd_macs
    dx = OpCount(macs=fwd_macs, multiplications=fwd_macs, additions=adds)
    assert step(conv, (1, c_in, hw, hw), input_grad=True).total(BWD) == dx + dw + db


# --- normalisation ---------------------------------------------------------------------------


def test_layer_norm_backward():
    # LayerNorm(8) over R = 2*5 = 10 rows of n = 8, input gradient asked.
    # Per row: x^ = (x - mean) * rstd (8 subtractions, 8 multiplications); g^ = g * weight (8);
    # sum(g^) (7 additions); g^ * x^ (8 multiplications) and its sum (7 additions); rstd/n
    # (1 division); per element n*g^, x^*s, scaling (3*8 multiplications) and 2*8 subtractions.
    # Weight gradient: sum over the rows of g * x^: 8*10 multiplications, 8*9 additions.
    # Bias gradient: 8*9 additions.
    rows, n = 10, 8
    per_row = OpCount(
        multiplications=n + n + n + 3 * n, additions=n + (n - 1) * 2 + 2 * n, divisions=1
    )
    expected = per_row.scale(rows) + OpCount(multiplications=n * rows, additions=n * (rows - 1))
    expected = expected + OpCount(additions=n * (rows - 1))
    assert backward(nn.Sequential(nn.LayerNorm(n)), (2, 5, n), input_grad=True) == expected


def test_batch_norm_training_backward():
    # BatchNorm2d(3) in training mode on 2x3x4x4: m = 2*4*4 = 32 elements per channel.
    # Per channel: sum(g) (31 additions); x^ = (x - mean)*rstd (32 subtractions, 32
    # multiplications); g*x^ (32 multiplications) and its sum (31 additions); grad_input =
    # weight*rstd/m * (m*g - sum(g) - x^*sum(g*x^)): 1 multiplication and 1 division per
    # channel, 3 multiplications and 2 subtractions per element.
    m = 32
    per_channel = OpCount(
        additions=(m - 1) + m + (m - 1) + 2 * m,
        multiplications=m + m + 1 + 3 * m,
        divisions=1,
    )
    model = nn.Sequential(nn.BatchNorm2d(3))
    assert backward(model, (2, 3, 4, 4), input_grad=True) == per_channel.scale(3)
    # without an input gradient only the two sums (the parameter gradients) remain
    sums = OpCount(additions=(m - 1) + m + (m - 1), multiplications=2 * m)
    assert backward(model, (2, 3, 4, 4)) == sums.scale(3)


# --- softmax and activations -----------------------------------------------------------------


def test_softmax_backward():
    # softmax over rows of n = 5, 2 rows: dx = y * (g - sum(g*y)): per row g*y (5
    # multiplications), the sum (4 additions), 5 subtractions, 5 multiplications.
    got = backward(Fn(lambda x: torch.softmax(x, -1)), (2, 5), input_grad=True)
    assert got == OpCount(multiplications=2 * 10, additions=2 * 9)


def test_gelu_and_relu_backward():
    # exact GELU's backward per element, PyTorch's kernel: cdf = 0.5*(1 + erf(x/sqrt2))
    # (2 multiplications, 1 erf, 1 addition); pdf = k*exp(-0.5*x*x) (3 multiplications,
    # 1 exponential); g*(cdf + x*pdf) (2 multiplications, 1 addition). 2*3 = 6 elements.
    got = backward(Fn(F.gelu), (2, 3), input_grad=True)
    assert got == OpCount(multiplications=7, additions=2, exponentials=1, nonlinearities=1).scale(6)
    # ReLU's backward: g where x > 0: one comparison, one select per element
    got = backward(Fn(F.relu), (2, 3), input_grad=True)
    assert got == OpCount(comparisons=6, selects=6)


def test_max_pool_backward():
    # MaxPool2d(2) on 1x2x4x4: 2*2*2 = 8 outputs, each gradient added into its argmax position
    got = backward(nn.Sequential(nn.MaxPool2d(2)), (1, 2, 4, 4), input_grad=True)
    assert got == OpCount(additions=8)


def test_embedding_backward_and_update():
    # Embedding(10, 4) looked up by 2x3 ids: each of the 6 rows of gradient (4 elements) is
    # added into the table gradient: 24 additions. Adam then updates all 40 table elements.
    emb = nn.Sequential(nn.Embedding(10, 4))
    ids = torch.zeros(2, 3, dtype=torch.long, device="meta")
    g = step(emb, ids, phases=("forward", "backward", "optimizer"), optimizer="adam")
    assert g.total(BWD) == OpCount(additions=24)
    assert g.total(OPT) == _adam(40, tensors=1)


def test_causal_sdpa_backward_as_it_runs_on_meta():
    # Causal SDPA on q, k, v of 1x2x4x8 (B*H = 2 heads, s = 4, d = 8) runs PyTorch's math
    # kernel on meta: scores = q k^T * scale, masked, softmax, @ v. Its backward, with all of
    # q, k, v needing gradients:
    #   dV = P^T dO: 4*8 dot products of length 4 per head; dP = dO V^T: 4*4 of length 8;
    #   dS = softmax backward over 4 rows of 4: 8 multiplications, 7 additions per row;
    #   the scale: 16 multiplications on dS (and, the way the math kernel scales q and k by
    #   sqrt(scale) each, 16 more on the other side); dQ = dS K: 4*8 of length 4;
    #   dK = dS^T Q: 4*8 of length 4.
    # (The mask's backward is a select of zeros: free.)
    heads, s, d = 2, 4, 8
    from flowprof.tracer.counts import dot_products

    per_head = (
        dot_products(s * d, s)  # dV
        + dot_products(s * s, d)  # dP
        + OpCount(multiplications=2 * s, additions=2 * s - 1).scale(s)  # softmax backward
        + dot_products(s * d, s)  # dQ
        + dot_products(s * d, s)  # dK
    )
    model = _SDPA()
    g = step(model, (1, heads, s, d), (1, heads, s, d), (1, heads, s, d), input_grad=True)
    bwd = g.total(BWD)
    assert bwd.macs == per_head.macs * heads == 2 * g.total(FWD).macs
    scale_mults = bwd.multiplications - per_head.multiplications * heads
    assert scale_mults == 2 * heads * s * d  # sqrt(scale) on dq and dk: 2 x 32 per head
    assert bwd.additions == per_head.additions * heads


class _SDPA(nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


# --- optimizers ------------------------------------------------------------------------------


def _adam(n: int, tensors: int, decoupled_wd: bool = False) -> OpCount:
    """One Adam step of n elements in ``tensors`` parameter tensors, torch.optim's for-loop:
    m.lerp_(g, 1-b1) (1 sub, 1 mult, 1 add); v.mul_(b2) (1 mult); v.addcmul_(g, g, 1-b2)
    (2 mults, 1 add); sqrt(v) (1 sqrt); / sqrt(bc2) (1 div); + eps (1 add);
    p.addcdiv_(m, denom, -lr/bc1) (1 div, 1 mult, 1 add); AdamW first p.mul_(1 - lr*wd)
    (1 mult). Each tensor's step counter: one addition."""
    per = OpCount(
        additions=2 + 1 + 1 + 1,
        multiplications=1 + 1 + 2 + 1 + int(decoupled_wd),
        divisions=2,
        square_roots=1,
    )
    return per.scale(n) + OpCount(additions=tensors)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_optimizer_step_by_hand(name):
    # Linear(8 -> 4): 32 + 4 = 36 parameters in 2 tensors.
    model = nn.Sequential(nn.Linear(8, 4))
    g = step(model, (2, 8), phases=("forward", "backward", "optimizer"), optimizer=name)
    expected = {
        # SGD momentum 0.9, steady state: buf.mul_(0.9).add_(g); p.add_(buf, alpha=-lr)
        "sgd": OpCount(multiplications=2 * 36, additions=2 * 36),
        "adam": _adam(36, tensors=2),
        "adamw": _adam(36, tensors=2, decoupled_wd=True),
    }[name]
    assert g.total(OPT) == expected
    assert g.block("0").counts()[OPT] == expected  # the update is the block's own


def test_foreach_and_fused_optimizers_count_the_same_as_the_for_loop():
    # torch.optim's multi-tensor (foreach) and fused kernels compute the same update: the count
    # must not depend on which implementation runs.
    model = nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 2))
    counts = {}
    for impl in ("for-loop", "foreach", "fused"):
        kw = {"foreach": True} if impl == "foreach" else {"fused": True} if impl == "fused" else {}

        def make(params, kw=kw):
            return torch.optim.Adam(params, lr=1e-3, **({"foreach": False} | kw))

        if impl == "fused":
            # the fused kernel has no meta implementation; run the real step on the CPU and
            # count it with the same modes (tiny: 54 parameters)
            counts[impl] = _real_adam_step_count(model, fused=True)
            continue
        counts[impl] = step(
            model, (2, 8), phases=("forward", "backward", "optimizer"), optimizer=make
        ).total(OPT)
    total = 36 + 10
    assert counts["for-loop"] == _adam(total, tensors=4)
    assert counts["foreach"] == counts["for-loop"]
    assert counts["fused"] == counts["for-loop"]


def _real_adam_step_count(model, fused: bool) -> OpCount:
    """The count of a second Adam step run for real on the CPU, under flowprof's ATen counter."""
    from flowprof.tracer import fx_trace

    model = nn.Sequential(*[nn.Linear(m.in_features, m.out_features) for m in model])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused)
    model(torch.randn(2, 8)).sum().backward()
    opt.step()
    rec = fx_trace._Recorder()
    with fx_trace._AtenCounter(rec):
        opt.step()
    assert not rec.outside.uncounted, rec.outside.uncounted
    return rec.outside.count


# --- dataflow of the backward ----------------------------------------------------------------


def test_gradient_edges_carry_the_gradients_back():
    # Linear(8 -> 16) -> ReLU -> Linear(16 -> 4) on a batch of 2, fp32: the gradient of each
    # activation flows back along each forward edge: 2x16 fp32 = 32*32 = 1024 bits from the
    # ReLU to the first Linear and from the second Linear to the ReLU; 2x4 from the loss. The
    # input needs no gradient: no edge back to it.
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    g = step(model, (2, 8), phases=("forward", "backward", "optimizer"))
    back = {(e.src, e.dst): (e.shape, e.dtype, e.bits) for e in g.gradient_edges()}
    assert back == {
        ("loss", "2"): ("2x4", "fp32", 8 * 32),
        ("2", "1"): ("2x16", "fp32", 32 * 32),
        ("1", "0"): ("2x16", "fp32", 32 * 32),
    }
    # parameter gradients: what a data-parallel all-reduce moves per block, at 32 bits
    assert g.block("0").param_grad_bits == (8 * 16 + 16) * 32
    assert g.block("2").param_grad_bits == (16 * 4 + 4) * 32
    # at fp16 accounting, half
    assert g.with_precision(tracer.Precision.FP16).block("0").param_grad_bits == (8 * 16 + 16) * 16


# --- checkpointing ---------------------------------------------------------------------------


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 16), nn.Linear(16, 8)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


class _Checkpointed(nn.Module):
    def __init__(self, reentrant: bool | None):
        super().__init__()
        self.l1, self.l2 = _Block(), _Block()
        self.reentrant = reentrant

    def forward(self, x):
        if self.reentrant is None:
            x = self.l1(x)
        else:
            x = torch.utils.checkpoint.checkpoint(self.l1, x, use_reentrant=self.reentrant)
        return self.l2(x)


def test_checkpoint_adds_exactly_one_forward_of_the_checkpointed_block():
    plain = step(_Checkpointed(None), (2, 8), depth=1)
    # non-reentrant checkpoint, without early stopping: the whole block is run again
    with torch.utils.checkpoint.set_checkpoint_early_stop(False):
        ckpt = step(_Checkpointed(False), (2, 8), depth=1)
    l1 = ckpt.block("l1").counts()
    assert l1[RECOMPUTE] == l1[FWD] == plain.block("l1").counts()[FWD]
    assert RECOMPUTE not in ckpt.block("l2").counts()
    for p in (FWD, BWD):  # everything else as without the checkpoint
        assert ckpt.total(p) == plain.total(p)
    assert ckpt.total(RECOMPUTE) == plain.block("l1").counts()[FWD]
    # reentrant checkpoint (the input needs a gradient, else PyTorch computes no gradient for
    # the block at all): the same recomputation in total, each leaf module's in its own unit
    # (tanh, a function between them, is seen only by the ATen counter in a backward, where no
    # function mode runs: it counts in the unit whose backward ran it, l2's first Linear)
    reent = step(_Checkpointed(True), (2, 8), input_grad=True)
    assert reent.total(RECOMPUTE) == plain.block("l1").counts()[FWD]
    for leaf in ("l1.a", "l1.b"):
        assert reent.block(leaf).counts()[RECOMPUTE] == reent.block(leaf).counts()[FWD]
    plain_in = step(_Checkpointed(None), (2, 8), input_grad=True)
    assert reent.total(BWD) == plain_in.total(BWD)


def test_checkpoint_early_stop_recomputes_only_what_the_backward_needs():
    # PyTorch's default non-reentrant checkpoint stops recomputing once every tensor the
    # backward saved is back: l1's last Linear (16 -> 8) saves its input, not its output, so
    # its matmul is not run again: the recompute is the first Linear (2*16 dot products of
    # length 8 + bias: 256 MACs, 256 mults, 2*16*7 + 32 = 256 adds) and tanh (32).
    plain = step(_Checkpointed(None), (2, 8), depth=1)
    ckpt = step(_Checkpointed(False), (2, 8), depth=1)
    assert ckpt.block("l1").counts()[RECOMPUTE] == OpCount(
        macs=256, multiplications=256, additions=256, nonlinearities=32
    )
    assert ckpt.total(BWD) == plain.total(BWD)

"""Formulas of the training step's own kernels: backward kernels, losses and optimizer updates.

They register into the one table of :mod:`tracer.formulas` (imported at its end), under the
same convention (:mod:`tracer.counts`). Each docstring gives the derivation. Where a kernel's
MACs are compared with PyTorch's FlopCounterMode (convolution and attention backward), the
products counted are those of the GEMM formulation the kernels run, which is what it counts.

The backward of an op differentiates each of its inputs that needs a gradient: autograd passes
an ``output_mask`` (or calls nothing) for the others, and the formulas count only what is asked.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from flowprof.tracer.counts import ZERO, OpCount, dot_products
from flowprof.tracer.formulas import (
    Call,
    _aten,
    _elementwise,
    _out_numel,
    _transposed_taps,
    _tuple,
    formula,
    lookup,
)

aten = torch.ops.aten


def _mask(call: Call, at: int, n: int) -> tuple[bool, ...]:
    m = call.arg(at, "output_mask", None)
    return tuple(bool(b) for b in m) if m is not None else (True,) * n


# --- convolution -----------------------------------------------------------------------------


@formula(*_aten("convolution_backward"))
def convolution_backward(call: Call) -> OpCount:
    """(grad_out, input, weight, bias_sizes, stride, padding, dilation, transposed,
    output_padding, groups, output_mask) -> (grad_input, grad_weight, grad_bias), each computed
    only where ``output_mask`` asks (the first layer's input needs no gradient; a frozen layer's
    weight needs none).

    Regular convolution, K = C_in/groups * prod(kernel), M = N * prod(out spatial):

    - grad_input: a transposed convolution of grad_out with the same weight onto the zero-padded
      input the forward convolved, then cropped. Every product of the forward has its twin here,
      so the multiplications (and MACs) equal the forward's, N*C_out*prod(out spatial)*K; a padded
      input position that receives P > 0 products takes P-1 additions (cropping is free).
    - grad_weight: each of the C_out*K weights is a dot product of length M (input taps times
      grad_out over the batch and the output positions): dot_products(C_out*K, M).
    - grad_bias: C_out sums of M elements, M-1 additions each.

    Transposed convolution (the forward scatters): grad_input is a regular convolution of grad_out
    with the weight, one dot product of length C_out/groups * prod(kernel) per input element
    (padding taps included, as a regular convolution counts them); grad_weight, each of the
    C_in*(C_out/groups)*prod(kernel) weights a dot product over N * prod(input spatial); grad_bias
    as above over the output.
    """
    g, x, w = call.args[0], call.args[1], call.args[2]
    bias_sizes = call.arg(3, "bias_sizes")
    transposed = bool(call.arg(7, "transposed", False))
    groups = int(call.arg(9, "groups", 1))
    want_x, want_w, want_b = _mask(call, 10, 3)
    kernel = tuple(w.shape[2:])
    n_spatial = len(kernel)
    taps = math.prod(kernel)
    count = ZERO
    if not transposed:
        m = g.shape[0] * math.prod(g.shape[2:])
        if want_x:
            stride = _tuple(call.arg(4, "stride", 1), n_spatial)
            padding = _tuple(call.arg(5, "padding", 0), n_spatial)
            dilation = _tuple(call.arg(6, "dilation", 1), n_spatial)
            hits = [
                _transposed_taps(
                    g.shape[2 + i],
                    x.shape[2 + i] + 2 * padding[i],
                    kernel[i],
                    stride[i],
                    0,
                    dilation[i],
                )
                for i in range(n_spatial)
            ]
            products_per_map = (w.shape[0] // groups) * math.prod(sum(h) for h in hits)
            reached_per_map = math.prod(sum(1 for v in h if v) for h in hits)
            maps = x.shape[0] * x.shape[1]
            mults = maps * products_per_map
            count = count + OpCount(
                macs=mults,
                multiplications=mults,
                additions=maps * (products_per_map - reached_per_map),
            )
        if want_w:
            count = count + dot_products(w.numel(), m)
    else:
        c_out = g.shape[1]
        if want_x:
            count = count + dot_products(x.numel(), (c_out // groups) * taps)
        if want_w:
            count = count + dot_products(w.numel(), x.shape[0] * math.prod(x.shape[2:]))
    if want_b and bias_sizes is not None:
        m_out = g.shape[0] * math.prod(g.shape[2:])
        count = count + OpCount(additions=g.shape[1] * (m_out - 1))
    return count


# --- normalisation ---------------------------------------------------------------------------


@formula(*_aten("native_layer_norm_backward"))
def layer_norm_backward(call: Call) -> OpCount:
    """(grad_out, input, normalized_shape, mean, rstd, weight, bias, output_mask). Per row of
    n = prod(normalized_shape), with x^ = (x - mean) * rstd and g^ = grad_out * weight:

    - x^ recomputed from the saved mean and rstd: n subtractions, n multiplications (whenever
      grad_input or grad_weight is asked);
    - grad_input = rstd/n * (n*g^ - sum(g^) - x^ * sum(g^ * x^)): g^ (n multiplications, with a
      weight), sum(g^) (n-1 additions), g^ * x^ and its sum (n multiplications, n-1 additions),
      rstd/n (1 division), then per element n*g^, x^ * s and the scaling (3 multiplications)
      and two subtractions;
    - grad_weight = sum over the R rows of grad_out * x^: n*R multiplications, n*(R-1) additions;
    - grad_bias = sum over the rows of grad_out: n*(R-1) additions.
    """
    g, shape, weight = call.args[0], tuple(call.args[2]), call.arg(5, "weight")
    bias = call.arg(6, "bias")
    want_x, want_w, want_b = _mask(call, 7, 3)
    n = math.prod(shape)
    rows = g.numel() // max(n, 1)
    count = ZERO
    if want_x or (want_w and weight is not None):
        count = count + OpCount(additions=n, multiplications=n).scale(rows)
    if want_x:
        per_row = OpCount(
            multiplications=(n if weight is not None else 0) + n + 3 * n,
            additions=(n - 1) + (n - 1) + 2 * n,
            divisions=1,
        )
        count = count + per_row.scale(rows)
    if want_w and weight is not None:
        count = count + OpCount(multiplications=n * rows, additions=n * (rows - 1))
    if want_b and bias is not None:
        count = count + OpCount(additions=n * (rows - 1))
    return count


@formula(*_aten("native_batch_norm_backward"))
def batch_norm_backward(call: Call) -> OpCount:
    """(grad_out, input, weight, running_mean, running_var, save_mean, save_invstd, train, eps,
    output_mask). Per channel of m = N * prod(spatial) elements, x^ = (x - mean) * rstd (mean and
    rstd: the batch's in training, the running ones in eval mode):

    - the two channel sums both gradients use: sum(grad_out) (m-1 additions) and
      sum(grad_out * x^) (x^: m subtractions, m multiplications; the products m multiplications;
      m-1 additions); grad_bias is the first, grad_weight the second;
    - grad_input in training = weight*rstd/m * (m*grad_out - sum(grad_out) - x^*sum(grad_out*x^)):
      per channel the scale (1 multiplication by the weight if any, 1 division by m), per element
      3 multiplications and 2 subtractions (the sums are needed even when no weight gradient is);
    - grad_input in eval mode = grad_out * (weight*rstd): per channel 1 multiplication (with a
      weight), per element 1 multiplication.
    """
    g, weight = call.args[0], call.args[2]
    train = bool(call.arg(7, "train", True))
    want_x, want_w, want_b = _mask(call, 9, 3)
    channels = g.shape[1] if g.dim() > 1 else 1
    m = g.numel() // channels
    has_w = weight is not None
    sum_g = OpCount(additions=m - 1)
    sum_gx = OpCount(additions=(m - 1) + m, multiplications=2 * m)
    per_channel = ZERO
    if (want_x and train) or want_b:
        per_channel = per_channel + sum_g
    if (want_x and train) or (want_w and has_w):
        per_channel = per_channel + sum_gx
    if want_x:
        if train:
            per_channel = per_channel + OpCount(
                multiplications=int(has_w) + 3 * m, additions=2 * m, divisions=1
            )
        else:
            per_channel = per_channel + OpCount(multiplications=int(has_w) + m)
    return per_channel.scale(channels)


# --- softmax and activations -----------------------------------------------------------------


def _rows(call: Call, at_dim: int) -> tuple[int, int]:
    y, dim = call.args[1], int(call.args[at_dim])
    n = y.shape[dim] if y.dim() else 1
    return y.numel() // max(n, 1), n


@formula(*_aten("_softmax_backward_data"))
def softmax_backward(call: Call) -> OpCount:
    """(grad_out, output, dim, input_dtype): grad_in = y * (g - sum(g * y)) per row of n:
    g*y (n multiplications), its sum (n-1 additions), n subtractions, n multiplications."""
    rows, n = _rows(call, 2)
    return OpCount(multiplications=2 * n, additions=2 * n - 1).scale(rows)


@formula(*_aten("_log_softmax_backward_data"))
def log_softmax_backward(call: Call) -> OpCount:
    """(grad_out, output, dim, input_dtype): grad_in = g - exp(y) * sum(g) per row of n: the sum
    (n-1 additions), exp(y) (n exponentials), n multiplications, n subtractions."""
    rows, n = _rows(call, 2)
    return OpCount(exponentials=n, multiplications=n, additions=2 * n - 1).scale(rows)


@formula(*_aten("gelu_backward"))
def gelu_backward(call: Call) -> OpCount:
    """(grad_out, input, approximate), per element, as PyTorch's kernels compute it.
    Exact: cdf = 0.5 * (1 + erf(x * 1/sqrt 2)) (2 multiplications, 1 erf, 1 addition);
    pdf = k * exp(x * x * -0.5) (3 multiplications, 1 exponential); g * (cdf + x * pdf)
    (2 multiplications, 1 addition): 7 multiplications, 2 additions, 1 exponential, 1 erf.
    tanh: t = tanh(b * (x + c * x^3)) (x^2, x^3, c*, b*: 4 multiplications, 1 addition, 1 tanh);
    left = 0.5x, dleft = 0.5 * (1 + t) (2 multiplications, 1 addition); 1 - t^2 (1 multiplication,
    1 subtraction); inner' = b * (1 + 3c * x^2) (2 multiplications, 1 addition); left * (1 - t^2)
    * inner' (2 multiplications); g * (dleft + that) (1 multiplication, 1 addition):
    12 multiplications, 5 additions, 1 tanh."""
    n = _out_numel(call)
    if call.arg(2, "approximate", "none") == "tanh":
        return OpCount(multiplications=12, additions=5, nonlinearities=1).scale(n)
    return OpCount(multiplications=7, additions=2, exponentials=1, nonlinearities=1).scale(n)


_elementwise(
    "threshold_backward",
    "ReLU's backward, g where x > threshold else 0: one comparison and one select per element.",
    comparisons=1,
    selects=1,
)
_elementwise(
    "tanh_backward",
    "g * (1 - y^2) from the saved output y: two multiplications, one subtraction per element.",
    multiplications=2,
    additions=1,
)
_elementwise(
    "sigmoid_backward",
    "g * y * (1 - y) from the saved output y: two multiplications, one subtraction per element.",
    multiplications=2,
    additions=1,
)
_elementwise(
    "silu_backward",
    "g * s * (1 + x * (1 - s)) with s = 1 / (1 + exp(-x)) recomputed (one exponential, one "
    "addition, one division): then one subtraction, one addition and three multiplications.",
    exponentials=1,
    additions=3,
    divisions=1,
    multiplications=3,
)
_elementwise(
    "hardswish_backward",
    "0 if x < -3, g if x > 3, else g * (x/3 + 0.5): two comparisons, two multiplications, one "
    "addition per element (the cost of the middle branch).",
    comparisons=2,
    multiplications=2,
    additions=1,
)
_elementwise(
    "hardsigmoid_backward",
    "g/6 where -3 < x < 3, else 0: two comparisons and one multiplication per element.",
    comparisons=2,
    multiplications=1,
)
_elementwise(
    "hardtanh_backward",
    "g where lo < x < hi, else 0 (ReLU6 too): two comparisons per element.",
    comparisons=2,
)
_elementwise(
    "leaky_relu_backward",
    "g if x > 0 else g * slope: one comparison and one multiplication per element.",
    comparisons=1,
    multiplications=1,
)
_elementwise(
    "native_dropout_backward",
    "g * mask * 1/(1-p): two multiplications per element (the mask is 0 or 1).",
    multiplications=2,
)


# --- pooling, embedding, scatter -------------------------------------------------------------


def _scatter_add(n: int) -> OpCount:
    return OpCount(additions=n)


@formula(
    *_aten(
        "max_pool2d_with_indices_backward",
        "max_pool3d_with_indices_backward",
        "adaptive_max_pool2d_backward",
        "adaptive_max_pool3d_backward",
    )
)
def max_pool_backward(call: Call) -> OpCount:
    """(grad_out, input, ..., indices): each output's gradient is added into the input position
    its saved index names (a zero-filled gradient, added into as the kernel does: overlapping
    windows can name one position twice): one addition per grad_out element."""
    return _scatter_add(call.args[0].numel())


def _register_avg_pool_backward() -> None:
    for dims in (1, 2, 3):

        def avg_pool_backward(call: Call, dims: int = dims) -> OpCount:
            g, x = call.args[0], call.args[1]
            kernel = _tuple(call.args[2], dims)
            stride_arg = call.arg(3, "stride", [])
            stride = _tuple(stride_arg, dims) if stride_arg else kernel
            padding = _tuple(call.arg(4, "padding", 0), dims)
            from flowprof.tracer.formulas import _valid_taps

            taps = math.prod(
                _valid_taps(
                    x.shape[-dims + i], g.shape[-dims + i], kernel[i], stride[i], padding[i], 1
                )
                for i in range(dims)
            )
            outputs = math.prod(g.shape[-dims:])
            planes = g.numel() // outputs
            return OpCount(multiplications=planes * outputs, additions=planes * taps)

        avg_pool_backward.__doc__ = (
            "(grad_out, input, kernel, stride, padding, ...): each output's gradient is scaled "
            "once (by 1/divisor: one multiplication) and added into each of the v in-bounds "
            "input taps of its window (v additions into the zero-filled gradient)."
        )
        formula(*_aten(f"avg_pool{dims}d_backward"))(avg_pool_backward)


_register_avg_pool_backward()


@formula(*_aten("_adaptive_avg_pool2d_backward", "_adaptive_avg_pool3d_backward"))
def adaptive_avg_pool_backward(call: Call) -> OpCount:
    """(grad_out, input): each output's gradient scaled once (1 multiplication) and added into
    each input element of its adaptive window (one addition each)."""
    from flowprof.tracer.formulas import _adaptive_taps

    g, x = call.args[0], call.args[1]
    dims = g.dim() - 2 if g.dim() > 2 else g.dim() - 1
    dims = max(1, min(dims, 3))
    taps = math.prod(_adaptive_taps(x.shape[-dims + i], g.shape[-dims + i]) for i in range(dims))
    outputs = math.prod(g.shape[-dims:])
    planes = g.numel() // outputs
    return OpCount(multiplications=planes * outputs, additions=planes * taps)


@formula(*_aten("embedding_dense_backward"))
def embedding_backward(call: Call) -> OpCount:
    """(grad_out, indices, num_weights, padding_idx, scale_grad_by_freq): each looked-up row's
    gradient (d elements) is added into its row of the zero-filled table gradient: one addition
    per grad_out element. (Rows whose index is ``padding_idx`` are skipped by the kernel; a
    shapes-only trace cannot see indices, so it counts every row.)"""
    return _scatter_add(call.args[0].numel())


@formula(*_aten("index_add", "index_add_"))
def index_add(call: Call) -> OpCount:
    """(self, dim, index, source, alpha): each source element is added into self: one addition
    per source element, and one multiplication each when alpha is not 1."""
    source = call.arg(3, "source")
    n = source.numel()
    alpha = call.arg(4, "alpha", 1)
    return OpCount(additions=n, multiplications=n if alpha != 1 else 0)


@formula(*_aten("index_put", "index_put_", "_index_put_impl", "_index_put_impl_"))
def index_put(call: Call) -> OpCount:
    """(self, indices, values, accumulate): writing values at indices is free; with
    ``accumulate`` (the backward of an indexing read, e.g. a relative position bias table) each
    value is added into its position: one addition per value element."""
    values = call.arg(2, "values")
    accumulate = bool(call.arg(3, "accumulate", False))
    n = values.numel() if isinstance(values, torch.Tensor) else 0
    return OpCount(additions=n) if accumulate else ZERO


_elementwise(
    "bernoulli bernoulli_",
    "A random 0/1 draw (dropout's mask where it is not fused): one comparison of a uniform draw "
    "with p per element (generating the random number is not counted).",
    comparisons=1,
)


# --- attention -------------------------------------------------------------------------------


def attention_backward(bh: int, s_q: int, s_k: int, d: int, d_v: int) -> OpCount:
    """The backward of softmax(Q K^T * scale) V for ``bh`` batch-heads, as the fused kernels run
    it (recomputing the probabilities from the saved log-sum-exp):

    - S = Q K^T again (s_q*s_k dot products of length d), P = exp(S*scale - lse) (per score:
      1 multiplication, 1 subtraction, 1 exponential);
    - dV = P^T dO (s_k*d_v dot products of length s_q); dP = dO V^T (s_q*s_k of length d_v);
    - D = rowsum(dO * O) (per query d_v multiplications, d_v-1 additions);
      dS = P * (dP - D) * scale (per score 1 subtraction, 2 multiplications);
    - dQ = dS K (s_q*d of length s_k); dK = dS^T Q (s_k*d of length s_q).

    MACs: 2*s_q*s_k*(d + d_v) + s_k*s_q*(d + d_v) - the five matrix products that
    FlopCounterMode counts for these kernels."""
    scores = s_q * s_k
    products = (
        dot_products(scores, d)
        + dot_products(s_k * d_v, s_q)
        + dot_products(scores, d_v)
        + dot_products(s_q * d, s_k)
        + dot_products(s_k * d, s_q)
    )
    elementwise = OpCount(multiplications=3, additions=2, exponentials=1).scale(scores)
    rowsum = OpCount(multiplications=d_v, additions=d_v - 1).scale(s_q)
    return (products + elementwise + rowsum).scale(bh)


@formula(
    *_aten(
        "_scaled_dot_product_flash_attention_for_cpu_backward",
        "_scaled_dot_product_flash_attention_backward",
        "_scaled_dot_product_efficient_attention_backward",
        "_scaled_dot_product_cudnn_attention_backward",
        "_flash_attention_backward",
        "_efficient_attention_backward",
    )
)
def sdpa_backward(call: Call) -> OpCount:
    """(grad_out, query, key, value, out, ...): see :func:`attention_backward` (key and value
    heads broadcast to the query's for grouped-query attention)."""
    q, k, v = call.args[1], call.args[2], call.args[3]
    if q.dim() == 3:  # (total tokens, heads, dim) variants: counted per head over one sequence
        bh, s_q, s_k = q.shape[1], q.shape[0], k.shape[0]
    else:
        bh, s_q, s_k = q.shape[0] * q.shape[1], q.shape[-2], k.shape[-2]
    return attention_backward(bh, s_q, s_k, q.shape[-1], v.shape[-1])


# --- losses ----------------------------------------------------------------------------------


def _reduction(call: Call, at: int) -> int:
    r = call.arg(at, "reduction", 1)
    return int(r)  # 0 none, 1 mean, 2 sum


@formula(*_aten("nll_loss_forward", "nll_loss2d_forward", "nll_loss", "nll_loss_nd"))
def nll_loss(call: Call) -> OpCount:
    """(input, target, weight, reduction, ignore_index): picks -x[target] per sample (a lookup;
    the negation folded into the sum); weighted: one multiplication per sample; mean: N-1
    additions and one division (by N, or by the summed weights: N-1 more additions); sum: N-1
    additions."""
    target, weight = call.args[1], call.arg(2, "weight")
    n = target.numel()
    reduction = _reduction(call, 3)
    count = OpCount(multiplications=n) if weight is not None else ZERO
    if reduction == 0:
        return count
    count = count + OpCount(additions=n - 1)
    if reduction == 1:
        count = count + OpCount(divisions=1, additions=(n - 1) if weight is not None else 0)
    return count


@formula(*_aten("nll_loss_backward", "nll_loss2d_backward"))
def nll_loss_backward(call: Call) -> OpCount:
    """(grad_out, input, target, weight, reduction, ignore_index, total_weight): the input's
    gradient is zero except -g/N at each sample's target: mean: one division (g / N, once);
    weighted: one multiplication per sample; the negation folded, the writes free."""
    target, weight = call.args[2], call.arg(3, "weight")
    n = target.numel()
    reduction = _reduction(call, 4)
    count = OpCount(multiplications=n) if weight is not None else ZERO
    return count + (OpCount(divisions=1) if reduction == 1 else ZERO)


@formula(*_aten("mse_loss"))
def mse_loss(call: Call) -> OpCount:
    """(input, target, reduction): (x - t)^2 per element (1 subtraction, 1 multiplication), then
    mean (n-1 additions, 1 division) or sum (n-1 additions)."""
    n = call.args[0].numel()
    reduction = _reduction(call, 2)
    count = OpCount(additions=n, multiplications=n)
    if reduction == 0:
        return count
    return count + OpCount(additions=n - 1, divisions=int(reduction == 1))


@formula(*_aten("mse_loss_backward"))
def mse_loss_backward(call: Call) -> OpCount:
    """(grad_out, input, target, reduction): 2 * (x - t) * g / n: the scalar 2g/n once (one
    multiplication, one division for mean; one multiplication for sum), then per element one
    subtraction and one multiplication."""
    n = call.args[1].numel()
    reduction = _reduction(call, 3)
    if reduction == 0:  # g is a tensor: 2 * (x - t) * g, two multiplications per element
        return OpCount(additions=n, multiplications=2 * n)
    return OpCount(additions=n, multiplications=n + 1, divisions=int(reduction == 1))


# --- optimizers: the ops of torch.optim's for-loop, foreach and fused updates -----------------


@formula(*_aten("addcmul", "addcmul_"))
def addcmul(call: Call) -> OpCount:
    """self + value * t1 * t2: per element one multiplication (t1*t2), one more when value is
    not 1, one addition."""
    value = call.kwargs.get("value", call.args[3] if len(call.args) > 3 else 1)
    return OpCount(multiplications=1 + int(value != 1), additions=1).scale(_out_numel(call))


@formula(*_aten("addcdiv", "addcdiv_"))
def addcdiv(call: Call) -> OpCount:
    """self + value * t1 / t2: per element one division, one multiplication when value is not 1,
    one addition."""
    value = call.kwargs.get("value", call.args[3] if len(call.args) > 3 else 1)
    return OpCount(divisions=1, multiplications=int(value != 1), additions=1).scale(
        _out_numel(call)
    )


_elementwise(
    "lerp lerp_",
    "start + weight * (end - start): one subtraction, one multiplication, one addition per "
    "element.",
    additions=2,
    multiplications=1,
)


def _foreach_base(op: Any) -> Any:
    """The elementwise op a ``_foreach_NAME`` op applies to each tensor of its lists."""
    name = op.__name__.removeprefix("_foreach_")
    base = getattr(aten, name, None) or getattr(aten, name.rstrip("_"), None)
    return base


def foreach(call: Call) -> OpCount:
    """``torch._foreach_NAME(lists, ...)``, the multi-tensor form optimizers use on GPUs: NAME's
    own formula applied to each tensor of the lists (element i of every list argument, scalars
    and scalar lists by position), summed: the same arithmetic as NAME in a loop."""
    base = lookup(_foreach_base(call.op)) if call.op is not None else None
    first = call.args[0]
    if base is None or not isinstance(first, (list, tuple)):
        return ZERO
    total = ZERO
    outs = call.out if isinstance(call.out, (list, tuple)) and call.out else first
    for i, t in enumerate(first):
        args = tuple(
            a[i] if isinstance(a, (list, tuple)) and len(a) == len(first) else a for a in call.args
        )
        kwargs = {
            k: (v[i] if isinstance(v, (list, tuple)) and len(v) == len(first) else v)
            for k, v in call.kwargs.items()
        }
        total = total + base.fn(Call(args, kwargs, outs[i] if i < len(outs) else t))
    return total


def adam_update(n: int, weight_decay: bool, decoupled: bool, amsgrad: bool = False) -> OpCount:
    """One Adam(W) update of n elements, as torch.optim's for-loop runs it (per element):
    weight decay, Adam's grad + wd*p (1 multiplication, 1 addition) or AdamW's p *= 1 - lr*wd
    (1 multiplication); m.lerp_(g, 1-b1) (1 subtraction, 1 multiplication, 1 addition);
    v.mul_(b2).addcmul_(g, g, 1-b2) (3 multiplications, 1 addition); amsgrad: max(v_max, v)
    (1 comparison); denom = sqrt(v) / sqrt(bc2) + eps (1 square root, 1 division, 1 addition);
    p.addcdiv_(m, denom, -lr/bc1) (1 division, 1 multiplication, 1 addition). The step counter
    and the bias corrections are scalars (one addition per tensor for the step)."""
    per = OpCount(additions=2 + 1 + 1 + 1, multiplications=1 + 3 + 1, divisions=2, square_roots=1)
    if weight_decay:
        per = per + (
            OpCount(multiplications=1) if decoupled else OpCount(multiplications=1, additions=1)
        )
    if amsgrad:
        per = per + OpCount(comparisons=1)
    return per.scale(n)


def _fused_adam(call: Call, decoupled: bool) -> OpCount:
    params = call.args[0]
    wd = call.kwargs.get("weight_decay", 0)
    amsgrad = bool(call.kwargs.get("amsgrad", False))
    total = ZERO
    for p in params:
        total = total + adam_update(p.numel(), wd != 0, decoupled, amsgrad)
    return total  # (torch.optim counts the steps before the kernel, with _foreach_add_)


@formula(*_aten("_fused_adam", "_fused_adam_"))
def fused_adam(call: Call) -> OpCount:
    """torch.optim.Adam(fused=True): :func:`adam_update` per parameter (the step counters are
    advanced before the kernel, by ``_foreach_add_``)."""
    return _fused_adam(call, decoupled=False)


@formula(*_aten("_fused_adamw", "_fused_adamw_"))
def fused_adamw(call: Call) -> OpCount:
    """torch.optim.AdamW(fused=True): :func:`adam_update` with decoupled weight decay."""
    return _fused_adam(call, decoupled=True)


@formula(*_aten("_fused_sgd", "_fused_sgd_"))
def fused_sgd(call: Call) -> OpCount:
    """torch.optim.SGD(fused=True), per element: weight decay g + wd*p (1 multiplication,
    1 addition); momentum buf = mu*buf + (1-dampening)*g (2 multiplications, or 1 without
    dampening, 1 addition), Nesterov g + mu*buf (1 multiplication, 1 addition); p -= lr*g
    (1 multiplication, 1 addition)."""
    params = call.args[0]
    wd = call.kwargs.get("weight_decay", 0)
    momentum = call.kwargs.get("momentum", 0)
    dampening = call.kwargs.get("dampening", 0)
    nesterov = bool(call.kwargs.get("nesterov", False))
    per = OpCount(multiplications=1, additions=1)
    if wd:
        per = per + OpCount(multiplications=1, additions=1)
    if momentum:
        per = per + OpCount(multiplications=1 + int(dampening != 0), additions=1)
        if nesterov:
            per = per + OpCount(multiplications=1, additions=1)
    return OpCount.sum(per.scale(p.numel()) for p in params)


# The multi-tensor ops of torch.optim (and torch.nn.utils' gradient clipping), by their base op.
_FOREACH = (
    "add sub mul div addcmul addcdiv lerp sqrt rsqrt neg reciprocal maximum minimum clamp_min "
    "clamp_max exp log abs pow sign"
).split()


def _register_foreach() -> None:
    for base_name in _FOREACH:
        for name in (f"_foreach_{base_name}", f"_foreach_{base_name}_"):
            op = getattr(aten, name, None)
            if op is None or lookup(_foreach_base(op)) is None:
                continue
            formula(op)(_with_op(foreach, op))


def _with_op(fn: Any, op: Any) -> Any:
    def bound(call: Call) -> OpCount:
        return fn(Call(call.args, call.kwargs, call.out, call.module, op))

    bound.__doc__ = fn.__doc__
    bound.__name__ = f"{fn.__name__}_{op.__name__}"
    return bound


_register_foreach()

"""Every op-count formula, in one table: op -> formula.

An op is an ATen operator (``torch.ops.aten.add``), a Python function caught before PyTorch
decomposes it (``F.scaled_dot_product_attention``), or an ``nn.Module`` class counted as a whole
(``nn.MultiheadAttention``, whose fused fast path would otherwise hide its matmuls). A formula is a
pure function of shapes and settings; its docstring gives the derivation. The convention is in
:mod:`tracer.counts`.

``FREE`` lists the ops that cost nothing (views, copies, creation, lookups): "free" is a decision,
not an accident. An op that is neither counted nor free is reported by name as uncounted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from flowprof.tracer.counts import ZERO, OpCount, dot_products

aten = torch.ops.aten


@dataclass(frozen=True)
class Call:
    """One call of an op: its arguments and result (meta or fake tensors), and the module if any."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    out: Any = None
    module: nn.Module | None = None
    op: Any = None  # the op itself, for a formula registered for several (``_foreach_*``)

    def arg(self, i: int, name: str, default: Any = None) -> Any:
        if len(self.args) > i:
            return self.args[i]
        return self.kwargs.get(name, default)


FormulaFn = Callable[[Call], OpCount]


@dataclass(frozen=True)
class Formula:
    op: Any
    name: str
    fn: FormulaFn

    @property
    def derivation(self) -> str:
        return (self.fn.__doc__ or "").strip()


_TABLE: dict[Any, Formula] = {}


def op_name(op: Any) -> str:
    """A readable, stable name for an op of any of the three sorts."""
    if isinstance(op, type):
        return f"{op.__module__}.{op.__qualname__}"
    if isinstance(op, torch._ops.OpOverload):
        op = op.overloadpacket
    if isinstance(op, torch._ops.OpOverloadPacket):
        return f"aten.{op.__name__}" if op._qualified_op_name.startswith("aten::") else str(op)
    return f"{getattr(op, '__module__', '')}.{getattr(op, '__qualname__', repr(op))}".lstrip(".")


def formula(*ops: Any) -> Callable[[FormulaFn], FormulaFn]:
    """Register ``fn`` as the formula of each op; a second formula for an op is refused."""

    def register(fn: FormulaFn) -> FormulaFn:
        present = [op for op in ops if op is not None]  # None: an ATen op this build lacks
        # Every op is checked before any is registered, so a refused registration leaves no
        # half-registered ops behind.
        for op in present:
            if op in _TABLE:
                raise RuntimeError(
                    f"{op_name(op)} already has a formula ({_TABLE[op].fn.__name__})"
                )
        for op in present:
            _TABLE[op] = Formula(op, op_name(op), fn)
        return fn

    return register


def unregister(*ops: Any) -> None:
    """Remove the formulas of ``ops`` (a user's registration undone, e.g. at the end of a test or
    before registering a corrected one); an op without a formula is refused, the table left as it
    was."""
    missing = [op for op in ops if op not in _TABLE]
    if missing:
        raise KeyError(f"{op_name(missing[0])} has no formula")
    for op in ops:
        del _TABLE[op]


def _aten(*names: str) -> list[Any]:
    return [getattr(aten, n, None) for n in names]


def lookup(op: Any) -> Formula | None:
    """The formula of an ATen overload (by its packet), a function or a module class."""
    if isinstance(op, torch._ops.OpOverload):
        op = op.overloadpacket
    return _TABLE.get(op)


def table() -> dict[str, Formula]:
    """All formulas by op name (for documentation and the report)."""
    return {f.name: f for f in _TABLE.values()}


# --- ops that cost nothing -------------------------------------------------------------------

_FREE_NAMES = (
    # copies, conversions and layout changes: data movement, no arithmetic
    "clone _to_copy copy_ copy contiguous _unsafe_view view reshape cat stack repeat flip roll "
    "constant_pad_nd split split_with_sizes unbind chunk index_select gather index "
    # the same, without the view flag (RNN cells split their gates with these)
    "unsafe_split unsafe_split_with_sizes unsafe_chunk "
    # in-place changes of a tensor's view of its data (sizes and strides only)
    "transpose_ t_ squeeze_ unsqueeze_ swapaxes_ swapdims_ "
    "_unsafe_index expand_copy permute_copy view_copy t_copy transpose_copy detach lift_fresh "
    # padding by copying edge values (padding_mode="reflect"/"replicate"), like constant_pad_nd
    "reflection_pad1d reflection_pad2d reflection_pad3d "
    "replication_pad1d replication_pad2d replication_pad3d "
    "lift_fresh_copy alias _reshape_alias as_strided as_strided_ pixel_shuffle pixel_unshuffle "
    # nearest-neighbour resampling: each output copies one input element
    "upsample_nearest1d upsample_nearest2d upsample_nearest3d "
    "_upsample_nearest_exact1d _upsample_nearest_exact2d _upsample_nearest_exact3d "
    # creation of constants
    "empty empty_like empty_strided zeros zeros_like ones ones_like full full_like arange "
    "linspace logspace "
    "new_empty new_empty_strided new_zeros new_ones new_full scalar_tensor fill_ zero_ "
    # bookkeeping
    "_local_scalar_dense item _assert_async sym_size sym_stride sym_numel sym_storage_offset "
    "resize_ set_ _assert_tensor_metadata "
    # backward of views and indexing: a zero-filled gradient with the slice copied in
    "select_backward slice_backward diagonal_backward unfold_backward as_strided_scatter "
    "select_scatter slice_scatter diagonal_scatter expand_backward"
).split()
FREE_ATEN: frozenset[Any] = frozenset(op for op in _aten(*_FREE_NAMES) if op is not None)


def is_free(op: Any) -> bool:
    """True for ops that cost nothing: views, copies, creation of constants, bookkeeping."""
    if isinstance(op, torch._ops.OpOverload):
        # prim: shape bookkeeping; profiler: torch.profiler.record_function's range markers
        # (DataParallel and many libraries wrap their forward in one)
        if op.is_view or op.namespace in ("prim", "profiler"):
            return True
        op = op.overloadpacket
    if op in FREE_ATEN:
        return True
    # a multi-tensor op (optimizers' ``_foreach_zero_``, ``_foreach_copy_``) of a free op
    name = getattr(op, "__name__", "")
    return name.startswith("_foreach_") and getattr(aten, name[9:], None) in FREE_ATEN


# --- helpers ---------------------------------------------------------------------------------


def _numel(t: Any) -> int:
    return t.numel() if isinstance(t, torch.Tensor) else 1


def _first_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)):
        for item in x:
            if isinstance(item, torch.Tensor):
                return item
    raise TypeError(f"no tensor in {type(x).__name__}")


def _out_numel(call: Call) -> int:
    return _first_tensor(call.out).numel()


def _per_element(**kinds: int) -> FormulaFn:
    """A formula that charges ``kinds`` once per output element."""

    def fn(call: Call) -> OpCount:
        return OpCount(**kinds).scale(_out_numel(call))

    return fn


def _elementwise(names: str, doc: str, **kinds: int) -> None:
    fn = _per_element(**kinds)
    fn.__doc__ = doc
    fn.__name__ = f"elementwise_{names.split()[0]}"
    formula(*_aten(*names.split()))(fn)


def _tuple(v: Any, n: int) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * n
    v = tuple(int(x) for x in v)
    return v * n if len(v) == 1 else v


# --- linear algebra --------------------------------------------------------------------------


@formula(*_aten("mm"))
def mm(call: Call) -> OpCount:
    """(n,k) @ (k,m): n*m dot products of length k."""
    a, b = call.args[0], call.args[1]
    return dot_products(a.shape[0] * b.shape[1], a.shape[1])


@formula(*_aten("addmm"))
def addmm(call: Call) -> OpCount:
    """beta*bias + alpha*(a @ b): n*m dot products of length k, plus one bias addition each
    (and one multiplication each for alpha != 1 or beta not in {0, 1})."""
    bias, a, b = call.args[0], call.args[1], call.args[2]
    n = a.shape[0] * b.shape[1]
    beta, alpha = call.kwargs.get("beta", 1), call.kwargs.get("alpha", 1)
    count = dot_products(n, a.shape[1], bias=beta != 0 and bias is not None)
    extra = n * ((alpha != 1) + (beta not in (0, 1)))
    return count + OpCount(multiplications=extra)


@formula(*_aten("bmm"))
def bmm(call: Call) -> OpCount:
    """(b,n,k) @ (b,k,m): b*n*m dot products of length k."""
    a, b = call.args[0], call.args[1]
    return dot_products(a.shape[0] * a.shape[1] * b.shape[2], a.shape[2])


@formula(*_aten("baddbmm"))
def baddbmm(call: Call) -> OpCount:
    """beta*input + alpha*(b1 @ b2): a bmm plus one addition per output when beta != 0."""
    a, b = call.args[1], call.args[2]
    n = a.shape[0] * a.shape[1] * b.shape[2]
    beta, alpha = call.kwargs.get("beta", 1), call.kwargs.get("alpha", 1)
    count = dot_products(n, a.shape[2], bias=beta != 0)
    return count + OpCount(multiplications=n * ((alpha != 1) + (beta not in (0, 1))))


@formula(*_aten("addbmm"))
def addbmm(call: Call) -> OpCount:
    """beta*input + alpha*sum_b(b1[b] @ b2[b]) with b1 (B,n,k), b2 (B,k,m): each of the n*m
    outputs sums B dot products of length k into one, which is one dot product of length B*k
    (B*k multiplications, B*k-1 additions), plus the input's addition when beta != 0 (and one
    multiplication each for alpha != 1 or beta not in {0, 1}), as ATen's loop of addmm_ over
    the batch computes it."""
    a, b = call.args[1], call.args[2]
    n = a.shape[1] * b.shape[2]
    beta, alpha = call.kwargs.get("beta", 1), call.kwargs.get("alpha", 1)
    count = dot_products(n, a.shape[0] * a.shape[2], bias=beta != 0)
    return count + OpCount(multiplications=n * ((alpha != 1) + (beta not in (0, 1))))


@formula(*_aten("_trilinear"))
def trilinear(call: Call) -> OpCount:
    """sum over ``sumdim`` of i1*i2*i3 (each unsqueezed at its ``expand`` dims), as ATen
    computes it (nn.Bilinear's x1^T A x2 is one): first i1*i2 summed over the summed dims where
    i3 is expanded (dot products whose length is those dims' extent; a plain product when
    there are none), then that times i3 summed over the other summed dims, each result added
    into the zero-filled output (one addition per output element: ATen accumulates slice by
    slice along its unroll dimension). nn.Bilinear(in1, in2, out) on N rows: N*out*in2 dot
    products of length in1, N*out of length in2, N*out accumulations."""
    i1, i2, i3 = call.args[0], call.args[1], call.args[2]
    expands = [
        set(call.arg(3 + j, name)) for j, name in enumerate(("expand1", "expand2", "expand3"))
    ]
    sumdim = set(call.arg(6, "sumdim"))
    dims = len(i1.shape) + len(expands[0])

    def sizes(t: Any, expanded: set[int]) -> list[int]:
        it = iter(t.shape)
        return [1 if d in expanded else next(it) for d in range(dims)]

    s1, s2, s3 = sizes(i1, expands[0]), sizes(i2, expands[1]), sizes(i3, expands[2])
    first_sum = {d for d in sumdim if d in expands[2]}
    second_sum = sumdim - first_sum
    pair = [max(a, b) for a, b in zip(s1, s2, strict=True)]
    first_out = math.prod(pair[d] for d in range(dims) if d not in first_sum)
    first_len = math.prod(pair[d] for d in first_sum)
    whole = [max(a, b) for a, b in zip(pair, s3, strict=True)]
    out = math.prod(whole[d] for d in range(dims) if d not in sumdim)
    second_len = math.prod(whole[d] for d in second_sum)

    def contraction(n: int, k: int, summed: set[int]) -> OpCount:
        return dot_products(n, k) if summed else OpCount(multiplications=n)

    count = contraction(first_out, first_len, first_sum)
    count = count + contraction(out, second_len, second_sum)
    return count + OpCount(additions=out)


@formula(*_aten("_grouped_mm"))
def grouped_mm(call: Call) -> OpCount:
    """Matrix products of groups (mixture-of-experts experts in one call), (M, K) x (G, K, N)
    with rows grouped by ``offs``: each row meets its group's matrix, M*N dot products of length
    K; (G, M, K) x (G, K, N): G*M*N of length K; (G, M, K) x (K, N) with columns grouped:
    M*N of length K; (M, K) x (K, N) with the contraction grouped into G parts: G*M*N dot
    products of lengths K_g summing to K, so M*N*K multiplications and M*N*(K-G) additions
    (counted with every group non-empty: ``offs`` holds values, not shapes). + 1 addition per
    output for a bias."""
    a, b = call.args[0], call.args[1]
    bias = call.arg(3, "bias")
    out = _first_tensor(call.out)
    k = a.shape[-1]
    if a.dim() == 2 and b.dim() == 2:
        groups = out.shape[0]
        n = a.shape[0] * b.shape[1]
        count = OpCount(macs=n * k, multiplications=n * k, additions=n * (k - groups))
    else:
        count = dot_products(out.numel(), k)
    return count + OpCount(additions=out.numel() if bias is not None else 0)


@formula(*_aten("mv"))
def mv(call: Call) -> OpCount:
    """(n,k) @ (k,): n dot products of length k."""
    return dot_products(call.args[0].shape[0], call.args[0].shape[1])


@formula(*_aten("addmv"))
def addmv(call: Call) -> OpCount:
    """bias + (n,k) @ (k,): n dot products of length k plus a bias addition each."""
    return dot_products(call.args[1].shape[0], call.args[1].shape[1], bias=True)


@formula(*_aten("dot", "vdot"))
def dot(call: Call) -> OpCount:
    """One dot product of length k."""
    return dot_products(1, call.args[0].shape[0])


# --- convolution -----------------------------------------------------------------------------


def _transposed_taps(size_in: int, size_out: int, k: int, s: int, p: int, d: int):
    """Per output position of one dimension, how many (input, tap) pairs land on it."""
    hits = [0] * size_out
    for i in range(size_in):
        for j in range(k):
            o = i * s - p + j * d
            if 0 <= o < size_out:
                hits[o] += 1
    return hits


@formula(*_aten("convolution", "_convolution"))
def convolution(call: Call) -> OpCount:
    """Regular: each output element is a dot product over K = C_in/groups * prod(kernel) taps
    (padding taps included: they are computed), + 1 addition for the bias.
    Transposed: out[o] sums x[i]*w[j] over the (input, tap) pairs that land on o = i*s - p + j*d
    inside the output, per C_in/groups input channels: an output element receiving P > 0
    products takes P multiplications and P-1 additions (+1 for the bias). Pairs that land in
    the cropped border (padding) are not counted: they are no part of any output, and whether
    a kernel computes them differs by kernel (a col2im GEMM does, oneDNN need not); counting
    the op's definition keeps the figure independent of the kernel, as for regular convs."""
    x, w, bias = call.args[0], call.args[1], call.args[2]
    transposed = bool(call.arg(6, "transposed", False))
    out = _first_tensor(call.out)
    groups = int(call.arg(8, "groups", 1))
    kernel = tuple(w.shape[2:])
    if not transposed:
        k = (x.shape[1] // groups) * math.prod(kernel)
        return dot_products(out.numel(), k, bias=bias is not None)
    n_spatial = len(kernel)
    stride = _tuple(call.arg(3, "stride", 1), n_spatial)
    padding = _tuple(call.arg(4, "padding", 0), n_spatial)
    dilation = _tuple(call.arg(5, "dilation", 1), n_spatial)
    c_in, c_out = x.shape[1], out.shape[1]
    per_group_in = c_in // groups
    hits = [
        _transposed_taps(
            x.shape[2 + i], out.shape[2 + i], kernel[i], stride[i], padding[i], dilation[i]
        )
        for i in range(n_spatial)
    ]
    # products landing on one output element = per_group_in * prod(hits along each dim)
    products_per_map = per_group_in * math.prod(sum(h) for h in hits)
    reached_per_map = math.prod(sum(1 for v in h if v) for h in hits)
    maps = out.shape[0] * c_out
    mults = maps * products_per_map
    adds = maps * (products_per_map - reached_per_map) + (out.numel() if bias is not None else 0)
    return OpCount(macs=mults, multiplications=mults, additions=adds)


# --- attention -------------------------------------------------------------------------------


def attention_math(
    batch_heads: int, q_len: int, kv_len: int, head_dim: int, v_dim: int, masked: str | None
) -> OpCount:
    """softmax(Q K^T * scale + mask) V for ``batch_heads`` heads, as unfused math:
    scores = q_len*kv_len dot products of length head_dim, one scaling multiplication per score,
    the mask (one addition per score if additive, one select if boolean or causal), a softmax
    per row of kv_len, then q_len*v_dim dot products of length kv_len."""
    scores = batch_heads * q_len * kv_len
    count = dot_products(scores, head_dim) + OpCount(multiplications=scores)
    if masked == "add":
        count = count + OpCount(additions=scores)
    elif masked == "select":
        count = count + OpCount(selects=scores)
    count = count + softmax_rows(batch_heads * q_len, kv_len)
    return count + dot_products(batch_heads * q_len * v_dim, kv_len)


def _mask_kind(mask: Any, is_causal: bool) -> str | None:
    if isinstance(mask, torch.Tensor):
        return "select" if mask.dtype == torch.bool else "add"
    return "select" if is_causal else None


def _sdpa(call: Call, mask_at: int | None, mask_name: str, causal_at: int) -> OpCount:
    """Counted like its unfused math whatever kernel runs (see :func:`attention_math`); q is
    (..., L, E), k (..., S, E), v (..., S, Ev). Dropout is not counted (inference). The mask
    and ``is_causal`` are read where the op's schema puts them, given by position or name."""
    q, k, v = call.args[0], call.args[1], call.args[2]
    mask = call.arg(mask_at, mask_name) if mask_at is not None else call.kwargs.get(mask_name)
    is_causal = bool(call.arg(causal_at, "is_causal", False))
    batch_heads = math.prod(q.shape[:-2])
    return attention_math(
        batch_heads, q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1], _mask_kind(mask, is_causal)
    )


@formula(F.scaled_dot_product_attention, *_aten("_scaled_dot_product_attention_math"))
def scaled_dot_product_attention(call: Call) -> OpCount:
    """(query, key, value, attn_mask, dropout_p, is_causal, ...): see :func:`_sdpa`."""
    return _sdpa(call, 3, "attn_mask", 5)


@formula(
    *_aten("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention")
)
def flash_attention(call: Call) -> OpCount:
    """(query, key, value, dropout_p, is_causal, ..., *, attn_mask): see :func:`_sdpa`."""
    return _sdpa(call, None, "attn_mask", 4)


@formula(*_aten("_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention"))
def efficient_attention(call: Call) -> OpCount:
    """(query, key, value, attn_bias, compute_log_sumexp, dropout_p, is_causal, ...): see
    :func:`_sdpa`."""
    return _sdpa(call, 3, "attn_bias", 6)


def _mha_count(
    batch: int,
    q_len: int,
    kv_len: int,
    embed: int,
    heads: int,
    kdim: int,
    vdim: int,
    in_bias: bool,
    out_bias: bool,
    masked: str | None,
    head_average: bool,
    extra_keys: int = 0,
    two_masks: bool = False,
) -> OpCount:
    """Projections (q: q_len rows, k and v: kv_len rows, each embed dot products of length
    embed/kdim/vdim, + bias), attention per head (:func:`attention_math`) over kv_len +
    ``extra_keys`` keys, output projection; with ``need_weights`` and averaging, the mean of the
    weights over heads. ``extra_keys`` (add_bias_kv, add_zero_attn) are appended after the
    projections: they are attended to but not projected. Given both an attention mask and a
    key-padding mask, PyTorch adds the two (booleans made additive first) into one mask per
    score before applying it: one more addition per score."""
    head_dim = embed // heads
    keys = kv_len + extra_keys
    count = OpCount(additions=batch * heads * q_len * keys) if two_masks else OpCount()
    count = count + dot_products(batch * q_len * embed, embed, in_bias)
    count = count + dot_products(batch * kv_len * embed, kdim, in_bias)
    count = count + dot_products(batch * kv_len * embed, vdim, in_bias)
    count = count + attention_math(batch * heads, q_len, keys, head_dim, head_dim, masked)
    count = count + dot_products(batch * q_len * embed, embed, out_bias)
    if head_average:
        weights = batch * q_len * keys
        count = count + OpCount(additions=weights * (heads - 1), multiplications=weights)
    return count


@formula(nn.MultiheadAttention)
def multihead_attention(call: Call) -> OpCount:
    """nn.MultiheadAttention counted as its unfused math on every path (the fused eval/no_grad
    fast path included): see :func:`_mha_count`. add_bias_kv and add_zero_attn each add one key."""
    m = call.module
    q, k = call.arg(0, "query"), call.arg(1, "key")
    batched = q.dim() == 3
    if batched and not m.batch_first:
        q_len, batch, kv_len = q.shape[0], q.shape[1], k.shape[0]
    elif batched:
        batch, q_len, kv_len = q.shape[0], q.shape[1], k.shape[1]
    else:
        batch, q_len, kv_len = 1, q.shape[0], k.shape[0]
    # appended to the projected keys and values, so not projected (see _mha_count)
    extra_keys = int(m.bias_k is not None) + int(m.add_zero_attn)
    # Positions as in MultiheadAttention.forward(query, key, value, key_padding_mask,
    # need_weights, attn_mask, average_attn_weights, is_causal): any may be given positionally.
    masks = [call.arg(5, "attn_mask"), call.arg(3, "key_padding_mask")]
    masked = next((_mask_kind(x, False) for x in masks if isinstance(x, torch.Tensor)), None)
    if masked is None and call.arg(7, "is_causal", False):
        masked = "select"
    need_weights = call.arg(4, "need_weights", True)
    average = call.arg(6, "average_attn_weights", True)
    return _mha_count(
        batch,
        q_len,
        kv_len,
        m.embed_dim,
        m.num_heads,
        m.kdim,
        m.vdim,
        m.in_proj_bias is not None,
        m.out_proj.bias is not None,
        masked,
        bool(need_weights and average),
        extra_keys,
        two_masks=all(isinstance(x, torch.Tensor) for x in masks),
    )


@formula(*_aten("_native_multi_head_attention"))
def native_multi_head_attention(call: Call) -> OpCount:
    """The fused kernel behind nn.MultiheadAttention's fast path, counted as the same math."""
    q, k = call.args[0], call.args[1]
    embed, heads = int(call.args[3]), int(call.args[4])
    qkv_bias, proj_bias = call.args[6], call.args[8]
    mask = call.arg(9, "mask")
    need_weights = call.arg(10, "need_weights", True)
    average = call.arg(11, "average_attn_weights", True)
    return _mha_count(
        q.shape[0],
        q.shape[1],
        k.shape[1],
        embed,
        heads,
        embed,
        embed,
        qkv_bias is not None,
        proj_bias is not None,
        _mask_kind(mask, False),
        bool(need_weights and average),
    )


# --- normalisation and softmax ---------------------------------------------------------------


def softmax_rows(rows: int, n: int) -> OpCount:
    """softmax over rows of n: n exponentials, n-1 additions (the sum), n divisions per row.
    (The max subtracted first for numerical stability is an implementation detail, left out.)"""
    return OpCount(exponentials=n, additions=n - 1, divisions=n).scale(rows)


@formula(*_aten("_softmax", "_safe_softmax", "softmax"))
def softmax(call: Call) -> OpCount:
    """exp(x_i) / sum_j exp(x_j) along ``dim``: see :func:`softmax_rows`."""
    x, dim = call.args[0], int(call.args[1])
    n = x.shape[dim] if x.dim() else 1
    return softmax_rows(x.numel() // max(n, 1), n)


@formula(*_aten("_log_softmax", "log_softmax"))
def log_softmax(call: Call) -> OpCount:
    """x_i - log(sum_j exp(x_j)) per row of n: n exponentials, n-1 additions, one logarithm,
    n subtractions (additions)."""
    x, dim = call.args[0], int(call.args[1])
    n = x.shape[dim] if x.dim() else 1
    rows = x.numel() // max(n, 1)
    return OpCount(exponentials=n, additions=2 * n - 1, logarithms=1).scale(rows)


def normalise_rows(rows: int, n: int, affine_weight: bool, affine_bias: bool) -> OpCount:
    """Per row of n: mean (n-1 additions, 1 scaling multiplication); centring (n subtractions);
    variance (n squares, n-1 additions, 1 scaling multiplication); rstd = 1/sqrt(var + eps)
    (1 addition, 1 square root, 1 division); y = centred * rstd (n multiplications); then the
    affine weight (n multiplications) and bias (n additions) when present."""
    mults = 1 + n + 1 + n + (n if affine_weight else 0)
    adds = (n - 1) + n + (n - 1) + 1 + (n if affine_bias else 0)
    return OpCount(multiplications=mults, additions=adds, square_roots=1, divisions=1).scale(rows)


@formula(*_aten("native_layer_norm"))
def layer_norm(call: Call) -> OpCount:
    """Layer norm over the last dims of size n = prod(normalized_shape): see
    :func:`normalise_rows` (the affine weight and bias are per element)."""
    x, shape = call.args[0], tuple(call.args[1])
    n = math.prod(shape)
    weight, bias = call.arg(2, "weight"), call.arg(3, "bias")
    return normalise_rows(x.numel() // n, n, weight is not None, bias is not None)


@formula(*_aten("native_group_norm"))
def group_norm(call: Call) -> OpCount:
    """Group norm over N*G groups of m = C/G*HxW elements, as ATen's kernel computes it (and
    as batch norm does per channel: InstanceNorm2d is batch norm over N*C channels, and
    GroupNorm(C, C) computes the same): statistics per group (mean: m-1 additions,
    1 multiplication; variance: m subtractions, m squares, m-1 additions, 1 multiplication;
    rstd = 1/sqrt(var + eps): 1 addition, 1 square root, 1 division); per sample and channel
    the affine folded into scale = weight*rstd (1 multiplication with a weight) and
    shift = bias - mean*scale (1 multiplication, 1 addition with a bias); per element
    y = x*scale + shift (1 multiplication, 1 addition)."""
    x, weight, bias = call.args[0], call.args[1], call.args[2]
    groups = int(call.args[6])
    n_groups = x.shape[0] * groups
    m = x.numel() // n_groups
    stats = OpCount(
        additions=(m - 1) + m + (m - 1) + 1,
        multiplications=1 + m + 1,
        square_roots=1,
        divisions=1,
    )
    channels = x.shape[0] * (x.shape[1] if x.dim() > 1 else 1)
    fold = OpCount(multiplications=1 + int(weight is not None), additions=int(bias is not None))
    per_element = OpCount(multiplications=1, additions=1).scale(x.numel())
    return stats.scale(n_groups) + fold.scale(channels) + per_element


def batch_norm_count(x: torch.Tensor, training: bool, has_weight: bool, has_bias: bool) -> OpCount:
    """Per channel: rstd = 1/sqrt(var + eps) (1 addition, 1 square root, 1 division),
    scale = weight*rstd (1 multiplication if affine), shift = bias - mean*scale (1 multiplication,
    1 addition if affine); per element y = x*scale + shift (1 multiplication, 1 addition). In
    training the batch statistics come first: per channel of m elements, mean (m-1 additions,
    1 multiplication) and variance (m subtractions, m squares, m-1 additions, 1 multiplication).
    Running-statistics updates are not counted (bookkeeping, not part of the output)."""
    channels = x.shape[1] if x.dim() > 1 else 1
    per_channel = OpCount(
        additions=1 + int(has_bias),
        square_roots=1,
        divisions=1,
        multiplications=1 + int(has_weight),
    )
    count = per_channel.scale(channels) + OpCount(multiplications=1, additions=1).scale(x.numel())
    if training:
        m = x.numel() // channels
        stats = OpCount(additions=(m - 1) + m + (m - 1), multiplications=1 + m + 1)
        count = count + stats.scale(channels)
    return count


@formula(*_aten("_native_batch_norm_legit_no_training"))
def batch_norm_inference(call: Call) -> OpCount:
    """Batch norm with running statistics: see :func:`batch_norm_count`."""
    return batch_norm_count(call.args[0], False, call.args[1] is not None, call.args[2] is not None)


@formula(
    *_aten("native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_functional")
)
def batch_norm(call: Call) -> OpCount:
    """Batch norm, training flag as given: see :func:`batch_norm_count`."""
    training = call.args[5] if len(call.args) > 5 and isinstance(call.args[5], bool) else None
    if training is None:  # _native_batch_norm_legit.no_stats: (input, weight, bias, training, ...)
        training = bool(call.args[3]) if len(call.args) > 3 else True
    return batch_norm_count(
        call.args[0], bool(training), call.args[1] is not None, call.args[2] is not None
    )


# --- pooling and reductions ------------------------------------------------------------------


def _valid_taps(size: int, out: int, k: int, s: int, p: int, d: int) -> int:
    """Sum over the output positions of one dimension of the in-bounds taps of each window."""
    total = 0
    for o in range(out):
        start = o * s - p
        total += sum(1 for j in range(k) if 0 <= start + j * d < size)
    return total


def _pool_windows(call: Call, n_spatial: int, with_dilation: bool) -> tuple[int, int, int]:
    """(planes, sum of in-bounds taps over the windows of one plane, outputs per plane)."""
    x, out = call.args[0], _first_tensor(call.out)
    kernel = _tuple(call.args[1], n_spatial)
    stride_arg = call.arg(2, "stride", [])
    stride = _tuple(stride_arg, n_spatial) if stride_arg else kernel
    padding = _tuple(call.arg(3, "padding", 0), n_spatial)
    dilation = _tuple(call.arg(4, "dilation", 1), n_spatial) if with_dilation else (1,) * n_spatial
    spatial_in, spatial_out = x.shape[-n_spatial:], out.shape[-n_spatial:]
    taps = math.prod(
        _valid_taps(spatial_in[i], spatial_out[i], kernel[i], stride[i], padding[i], dilation[i])
        for i in range(n_spatial)
    )
    outputs = math.prod(spatial_out)
    return out.numel() // outputs, taps, outputs


def _register_pools() -> None:
    for dims in (1, 2, 3):

        def max_pool(call: Call, dims: int = dims) -> OpCount:
            planes, taps, outputs = _pool_windows(call, dims, with_dilation=True)
            return OpCount(comparisons=planes * (taps - outputs))

        def avg_pool(call: Call, dims: int = dims) -> OpCount:
            planes, taps, outputs = _pool_windows(call, dims, with_dilation=False)
            return OpCount(additions=planes * (taps - outputs), multiplications=planes * outputs)

        max_pool.__doc__ = (
            "Each window of v in-bounds taps takes v-1 comparisons (padding is never compared)."
        )
        avg_pool.__doc__ = (
            "Each window of v in-bounds taps: v-1 additions and one scaling multiplication (by "
            "1/v, or 1/kernel with count_include_pad: the divisor changes, not the count)."
        )
        formula(*_aten(f"max_pool{dims}d", f"max_pool{dims}d_with_indices"))(max_pool)
        formula(*_aten(f"avg_pool{dims}d"))(avg_pool)


_register_pools()


def _adaptive_taps(size: int, out: int) -> int:
    """Sum of the window sizes of adaptive pooling: window i is [floor(i*L/O), ceil((i+1)*L/O))."""
    return sum(-((-(i + 1) * size) // out) - (i * size) // out for i in range(out))


def _adaptive(call: Call) -> tuple[int, int, int]:
    x, out = call.args[0], _first_tensor(call.out)
    n_spatial = len(tuple(call.args[1]))
    spatial_in, spatial_out = x.shape[-n_spatial:], out.shape[-n_spatial:]
    taps = math.prod(_adaptive_taps(spatial_in[i], spatial_out[i]) for i in range(n_spatial))
    outputs = math.prod(spatial_out)
    return out.numel() // outputs, taps, outputs


@formula(
    *_aten(
        "_adaptive_avg_pool1d",
        "_adaptive_avg_pool2d",
        "_adaptive_avg_pool3d",
        "adaptive_avg_pool1d",
    )
)
def adaptive_avg_pool(call: Call) -> OpCount:
    """Like average pooling, over the adaptive windows [floor(iL/O), ceil((i+1)L/O))."""
    planes, taps, outputs = _adaptive(call)
    return OpCount(additions=planes * (taps - outputs), multiplications=planes * outputs)


@formula(*_aten("adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d"))
def adaptive_max_pool(call: Call) -> OpCount:
    """Like max pooling, over the adaptive windows."""
    planes, taps, outputs = _adaptive(call)
    return OpCount(comparisons=planes * (taps - outputs))


# --- interpolation -----------------------------------------------------------------------------


@formula(*_aten("upsample_linear1d", "upsample_bilinear2d", "upsample_trilinear3d"))
def upsample_linear(call: Call) -> OpCount:
    """Linear interpolation over the n = 1, 2 or 3 spatial dimensions, as PyTorch's kernels
    compute it: along one dimension w0*x0 + w1*x1 (2 multiplications, 1 addition), and each further
    dimension combines two such results the same way, so per output element 2^(n+1) - 2
    multiplications and 2^n - 1 additions (bilinear: 6 and 3; trilinear: 14 and 7). The weights
    and source indices, computed once per output row or column, not per element, are not
    counted."""
    out = _first_tensor(call.out)
    n = out.dim() - 2
    return OpCount(multiplications=2 ** (n + 1) - 2, additions=2**n - 1).scale(out.numel())


@formula(*_aten("upsample_bicubic2d"))
def upsample_bicubic(call: Call) -> OpCount:
    """Bicubic interpolation, as PyTorch's kernel computes it: one output element is a cubic
    interpolation along the width for each of 4 input rows, w0*x0 + w1*x1 + w2*x2 + w3*x3 (4
    multiplications, 3 additions each), then one along the height of those 4 results (4 and 3
    more): 20 multiplications and 15 additions per output element. The 4 weights, computed once
    per output row or column, not per element, are not counted (as for linear upsampling)."""
    return OpCount(multiplications=20, additions=15).scale(_out_numel(call))


def _reduced(call: Call) -> tuple[int, int]:
    """(outputs, elements reduced into each output)."""
    x = call.args[0]
    outputs = max(_out_numel(call), 1)
    return outputs, x.numel() // outputs


@formula(*_aten("sum", "nansum"))
def reduce_sum(call: Call) -> OpCount:
    """n-1 additions per output of a sum over n elements."""
    outputs, n = _reduced(call)
    return OpCount(additions=outputs * (n - 1))


@formula(*_aten("mean"))
def reduce_mean(call: Call) -> OpCount:
    """n-1 additions and one scaling multiplication (by 1/n) per output, as average pooling."""
    outputs, n = _reduced(call)
    return OpCount(additions=outputs * (n - 1), multiplications=outputs)


@formula(*_aten("amax", "amin", "max", "min", "argmax", "argmin"))
def reduce_extremum(call: Call) -> OpCount:
    """n-1 comparisons per output; with two tensor arguments, one comparison per element."""
    if len(call.args) > 1 and isinstance(call.args[1], torch.Tensor):
        return OpCount(comparisons=_out_numel(call))
    x = call.args[0]
    outputs = (
        _first_tensor(call.out).numel()
        if isinstance(call.out, (tuple, list))
        else max(_out_numel(call), 1)
    )
    return OpCount(comparisons=outputs * (x.numel() // outputs - 1))


def _variance(call: Call, sqrt: bool) -> OpCount:
    out = _first_tensor(call.out)
    outputs = max(out.numel(), 1)
    n = call.args[0].numel() // outputs
    per = OpCount(additions=3 * n - 2, multiplications=n + 2, square_roots=int(sqrt))
    return per.scale(outputs)


@formula(*_aten("var", "var_mean"))
def reduce_variance(call: Call) -> OpCount:
    """Per output over n elements: mean (n-1 additions, 1 multiplication), n subtractions,
    n squares, n-1 additions, 1 scaling multiplication (by 1/(n - correction))."""
    return _variance(call, sqrt=False)


@formula(*_aten("std", "std_mean"))
def reduce_std(call: Call) -> OpCount:
    """The variance (see :func:`reduce_variance`) and one square root per output."""
    return _variance(call, sqrt=True)


# --- elementwise -----------------------------------------------------------------------------


@formula(*_aten("add", "add_", "sub", "sub_", "rsub"))
def add(call: Call) -> OpCount:
    """One addition per output element (subtraction counts as addition); alpha != 1 scales the
    second operand first (one multiplication per element)."""
    n = _out_numel(call)
    alpha = call.kwargs.get("alpha", 1)
    return OpCount(additions=n, multiplications=n if alpha != 1 else 0)


_elementwise("mul mul_", "One multiplication per output element.", multiplications=1)
_elementwise("div div_", "One division per output element.", divisions=1)
_elementwise("reciprocal", "1/x: one division per element.", divisions=1)
_elementwise(
    "neg", "-x: one subtraction (from zero) per element, counted as an addition.", additions=1
)
_elementwise("relu relu_", "max(x, 0): one comparison per element.", comparisons=1)
_elementwise(
    "hardtanh hardtanh_",
    "min(max(x, lo), hi) (ReLU6 too): two comparisons per element.",
    comparisons=2,
)
_elementwise(
    "clamp_min clamp_min_ clamp_max clamp_max_", "One comparison per element.", comparisons=1
)
_elementwise(
    "leaky_relu leaky_relu_",
    "x if x > 0 else a*x: one comparison, one multiplication.",
    comparisons=1,
    multiplications=1,
)
_elementwise(
    "sigmoid sigmoid_",
    "1 / (1 + exp(-x)): one exponential, one addition, one division "
    "(the negation is folded into the exponential).",
    exponentials=1,
    additions=1,
    divisions=1,
)
_elementwise(
    "silu silu_",
    "x / (1 + exp(-x)): one exponential, one addition, one division.",
    exponentials=1,
    additions=1,
    divisions=1,
)
_elementwise(
    "hardsigmoid hardsigmoid_",
    "min(max(x + 3, 0), 6) / 6: one addition, two comparisons, one scaling multiplication.",
    additions=1,
    comparisons=2,
    multiplications=1,
)
_elementwise(
    "hardswish hardswish_",
    "x * min(max(x + 3, 0), 6) / 6: one addition, two comparisons, two multiplications.",
    additions=1,
    comparisons=2,
    multiplications=2,
)
_elementwise("tanh tanh_", "One tanh (a nonlinearity) per element.", nonlinearities=1)
_elementwise(
    "erf erf_ sin cos",
    "One transcendental function (a nonlinearity) per element.",
    nonlinearities=1,
)
_elementwise("exp exp_", "One exponential per element.", exponentials=1)
_elementwise("log log_", "One logarithm per element.", logarithms=1)
_elementwise("sqrt sqrt_", "One square root per element.", square_roots=1)
_elementwise(
    "rsqrt rsqrt_",
    "1 / sqrt(x): one square root and one division per element.",
    square_roots=1,
    divisions=1,
)
_elementwise("abs", "|x|: one comparison (of the sign) per element.", comparisons=1)
_elementwise(
    "eq ne lt le gt ge maximum minimum logical_not logical_and logical_or bitwise_not "
    "bitwise_and bitwise_or",
    "One comparison per output element.",
    comparisons=1,
)
_elementwise(
    "where masked_fill masked_fill_ triu tril", "One select per output element.", selects=1
)
_elementwise(
    "_prelu_kernel",
    "PReLU, x if x > 0 else w*x: one comparison, one multiplication (as leaky_relu).",
    comparisons=1,
    multiplications=1,
)
_elementwise(
    "softplus",
    "log(1 + exp(b*x)) / b, or x where b*x > threshold (PyTorch's kernel): one multiplication "
    "(b*x), one comparison, one exponential, one addition and one logarithm (log1p), one "
    "division; the cost of the nonlinear branch.",
    multiplications=1,
    comparisons=1,
    exponentials=1,
    additions=1,
    logarithms=1,
    divisions=1,
)
_elementwise(
    "mish mish_",
    "x * tanh(log(1 + exp(x))): one exponential, one addition and one logarithm (softplus), "
    "one tanh, one multiplication.",
    exponentials=1,
    additions=1,
    logarithms=1,
    nonlinearities=1,
    multiplications=1,
)
_elementwise(
    "log_sigmoid_forward",
    "log(sigmoid(x)), computed stably as min(x, 0) - log(1 + exp(-|x|)): two comparisons (min, "
    "|x|), one exponential, one logarithm, two additions (1 + z, and the subtraction).",
    comparisons=2,
    exponentials=1,
    logarithms=1,
    additions=2,
)


@formula(*_aten("elu", "elu_"))
def elu(call: Call) -> OpCount:
    """ELU as PyTorch's kernel computes it, x <= 0 ? (exp(x * input_scale) - 1) * alpha * scale :
    x * scale, at the cost of its nonlinear branch: one comparison, one exponential, one
    addition, one multiplication by alpha, and one more multiplication each for a scale and an
    input scale other than 1 (SELU has scale 1.0507...)."""
    scale, input_scale = call.arg(2, "scale", 1), call.arg(3, "input_scale", 1)
    return _elu_like(call, 1 + (scale != 1) + (input_scale != 1))


def _elu_like(call: Call, multiplications: int) -> OpCount:
    """Per output element: one comparison, one exponential, one addition (the - 1) and
    ``multiplications``."""
    kinds = OpCount(comparisons=1, exponentials=1, additions=1, multiplications=multiplications)
    return kinds.scale(_out_numel(call))


@formula(*_aten("celu", "celu_"))
def celu(call: Call) -> OpCount:
    """CELU, max(0, x) + min(0, alpha * (exp(x / alpha) - 1)): ELU with input scale 1/alpha (see
    :func:`elu`): one comparison, one exponential, one addition, one multiplication, and one more
    (x / alpha) when alpha is not 1."""
    return _elu_like(call, 1 + (call.arg(1, "alpha", 1.0) != 1))


_elementwise(
    "glu",
    "a * sigmoid(b) for the two halves a, b of the input: per output element one sigmoid (one "
    "exponential, one addition, one division) and one multiplication.",
    exponentials=1,
    additions=1,
    divisions=1,
    multiplications=1,
)


def _scan_lengths(call: Call) -> tuple[int, int]:
    """(elements, length of the scanned dimension) of a cumulative op's input."""
    x = call.args[0]
    dim = call.arg(1, "dim")
    return x.numel(), (x.shape[dim] if x.dim() else 1)


@formula(*_aten("cumsum", "cumsum_"))
def cumsum(call: Call) -> OpCount:
    """A running sum along a dimension of length n: n - 1 additions per row."""
    elements, n = _scan_lengths(call)
    return OpCount(additions=elements - elements // max(n, 1))


@formula(*_aten("cumprod", "cumprod_"))
def cumprod(call: Call) -> OpCount:
    """A running product along a dimension of length n: n - 1 multiplications per row."""
    elements, n = _scan_lengths(call)
    return OpCount(multiplications=elements - elements // max(n, 1))


@formula(*_aten("logsumexp"))
def logsumexp(call: Call) -> OpCount:
    """log(sum(exp(x - m))) + m with m = max(x), PyTorch's stable form, over n elements per
    output: n - 1 comparisons (the max), n subtractions, n exponentials, n - 1 additions (the
    sum), one logarithm and one addition (m back): 2n additions in all."""
    outputs, n = _reduced(call)
    per = OpCount(comparisons=n - 1, additions=2 * n, exponentials=n, logarithms=1)
    return per.scale(outputs)


_elementwise(
    "native_dropout",
    "Training-mode dropout: one comparison (against the random "
    "draw) and one multiplication (mask times 1/(1-p)) per element.",
    comparisons=1,
    multiplications=1,
)


@formula(*_aten("clamp", "clamp_"))
def clamp(call: Call) -> OpCount:
    """One comparison per bound given, per element."""
    bounds = sum(b is not None for b in (call.arg(1, "min"), call.arg(2, "max")))
    return OpCount(comparisons=bounds * _out_numel(call))


@formula(*_aten("gelu", "gelu_"))
def gelu(call: Call) -> OpCount:
    """Exact: x * 0.5 * (1 + erf(x / sqrt 2)): 3 multiplications, 1 addition, 1 erf per element.
    tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): 6 multiplications,
    2 additions, 1 tanh per element."""
    n = _out_numel(call)
    if call.kwargs.get("approximate", "none") == "tanh":
        return OpCount(multiplications=6, additions=2, nonlinearities=1).scale(n)
    return OpCount(multiplications=3, additions=1, nonlinearities=1).scale(n)


@formula(*_aten("pow", "pow_"))
def power(call: Call) -> OpCount:
    """x**2: one multiplication; x**k (integer k > 2): k-1 multiplications; x**0.5: one square
    root; x**-1: one division; any other power: one nonlinearity per element."""
    n = _out_numel(call)
    e = call.args[1] if len(call.args) > 1 else call.kwargs.get("exponent")
    if isinstance(e, (int, float)) and not isinstance(e, bool):
        if e == 0.5:
            return OpCount(square_roots=n)
        if e == -1:
            return OpCount(divisions=n)
        if float(e).is_integer() and e >= 1:
            return OpCount(multiplications=n * (int(e) - 1))
    return OpCount(nonlinearities=n)


@formula(*_aten("linalg_vector_norm"))
def vector_norm(call: Call) -> OpCount:
    """Per output over n elements. ord 2: n squares, n-1 additions, 1 square root. ord 1:
    n absolute values (comparisons), n-1 additions. ord inf: n absolute values and n-1
    comparisons. Other p: n absolute values, n powers and the final root (nonlinearities),
    n-1 additions."""
    outputs, n = _reduced(call)
    p = call.arg(1, "ord", 2)
    if p == 2:
        per = OpCount(multiplications=n, additions=n - 1, square_roots=1)
    elif p == 1:
        per = OpCount(comparisons=n, additions=n - 1)
    elif p in (math.inf, -math.inf):
        per = OpCount(comparisons=2 * n - 1)
    else:
        per = OpCount(comparisons=n, nonlinearities=n + 1, additions=n - 1)
    return per.scale(outputs)


@formula(*_aten("embedding"))
def embedding(call: Call) -> OpCount:
    """A table lookup: no arithmetic (counted, as zero by design; its bits are on the edges)."""
    return ZERO


def formula_for_module(module: nn.Module) -> Formula | None:
    """The formula that counts ``module`` as a whole, if its class (or a base) has one."""
    for cls in type(module).__mro__:
        if cls in _TABLE:
            return _TABLE[cls]
    return None


def function_formulas() -> dict[Any, Formula]:
    """Python-level functions counted before PyTorch decomposes them."""
    return {
        op: f
        for op, f in _TABLE.items()
        if callable(op)
        and not isinstance(op, type)
        and not isinstance(op, torch._ops.OpOverloadPacket)
    }


# The training step's kernels (backward, losses, optimizers) register into the same table.
from flowprof.tracer import formulas_backward  # noqa: E402, F401

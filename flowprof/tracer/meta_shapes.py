"""Outputs of common ATen ops on meta tensors, made without running their meta kernels.

In this PyTorch build the meta kernels of most elementwise ops, reductions, ``cat`` and
``convolution`` are Python decompositions that check symbolic shapes: 25 us to 2 ms a call, while
making the empty output tensor directly costs about 2 us. Tracing runs thousands of such calls, so
the counting run asks ``shortcut`` first and runs the kernel only when it says None.

``shortcut`` answers only when the answer is certain: the output's shape, dtype and strides are
those the meta kernel gives (tests/test_meta_shapes.py compares them case by case). Anything
unusual (an input that is not dense, mixed dtypes it does not promote, transposed convolution,
arguments the real kernel would reject) gets None, and the kernel decides, errors included.
One shortcut answers where the meta kernel refuses: ``_grouped_mm`` in float32, which this
build's meta kernel rejects by the CUDA kernel's dtype rule while the CPU kernel computes it; its
answer is checked against the CPU kernel's output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

_aten = torch.ops.aten

# A new tensor like the first input (shape, dtype, layout).
_LIKE_INPUT = frozenset(
    [
        _aten.relu,
        _aten.hardtanh,
        _aten.gelu,
        _aten.silu,
        _aten.sigmoid,
        _aten.tanh,
        _aten.hardswish,
        _aten.hardsigmoid,
        _aten.leaky_relu,
        _aten.elu,
        _aten.neg,
        _aten.abs,
        _aten.exp,
        _aten.log,
        _aten.sqrt,
        _aten.rsqrt,
        _aten.erf,
    ]
)
# A new contiguous tensor of the first input's shape and dtype, whatever its layout.
_CONTIGUOUS_LIKE_INPUT = frozenset([_aten.triu, _aten.tril])
# In-place forms: they return their input.
_IN_PLACE = frozenset(
    [
        _aten.relu_,
        _aten.hardtanh_,
        _aten.silu_,
        _aten.sigmoid_,
        _aten.tanh_,
        _aten.hardswish_,
        _aten.hardsigmoid_,
        _aten.leaky_relu_,
        _aten.elu_,
    ]
)
# In-place binary forms: they return their input, when the other operand broadcasts to it.
_IN_PLACE_BINARY = frozenset([_aten.add_, _aten.sub_, _aten.mul_, _aten.div_, _aten.masked_fill_])
_BINARY = frozenset([_aten.add, _aten.sub, _aten.mul, _aten.div])
_REDUCE = frozenset([_aten.sum, _aten.mean])


def _meta(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.device.type == "meta"


def _dense(x: torch.Tensor) -> bool:
    """Non-overlapping and dense: the strides of some permutation of a contiguous tensor."""
    if x.is_contiguous():
        return True
    expected = 1
    for size, stride in sorted(
        ((s, st) for s, st in zip(x.shape, x.stride(), strict=True) if s != 1),
        key=lambda p: p[1],
    ):
        if stride != expected:
            return False
        expected *= size
    return True


def _broadcast(a: torch.Size, b: torch.Size) -> tuple[int, ...] | None:
    """The broadcast shape of ``a`` and ``b``, or None when they do not broadcast (the kernel
    then raises its own error). torch.broadcast_shapes would do, but its first call imports
    sympy (0.3 s)."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        m = a[-i] if i <= len(a) else 1
        n = b[-i] if i <= len(b) else 1
        if m != n and m != 1 and n != 1:
            return None
        out.append(n if m == 1 else m)
    return tuple(reversed(out))


def _like(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor | None:
    """A new meta tensor with ``x``'s shape and strides (what an elementwise op on a dense ``x``
    returns), or None when ``x`` is not dense."""
    if not _dense(x):
        return None
    return torch.empty_strided(x.shape, x.stride(), dtype=dtype or x.dtype, device="meta")


def _contiguous(shape, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(tuple(shape), dtype=dtype, device="meta")


def _binary(x: torch.Tensor, other: Any) -> torch.Tensor | None:
    """add/sub/mul/div: the broadcast shape at the promoted floating dtype."""
    if isinstance(other, torch.Tensor):
        if not _meta(other):
            return None
        shape = _broadcast(x.shape, other.shape)
        if shape is None:
            return None
    elif isinstance(other, (int, float, bool)):
        shape = x.shape
    else:
        return None
    dtype = torch.result_type(x, other)
    if not dtype.is_floating_point:  # integer division gives floats: let PyTorch decide
        return None
    if not isinstance(other, torch.Tensor) or (
        other.shape == x.shape and other.stride() == x.stride()
    ):
        return _like(x, dtype)
    if x.is_contiguous() and other.is_contiguous():
        return _contiguous(shape, dtype)
    return None


def _convolution(args: tuple) -> torch.Tensor | None:
    x, w = args[0], args[1]
    stride, padding, dilation, transposed = args[3], args[4], args[5], args[6]
    groups = args[8]
    if transposed or not (_meta(w) and x.is_contiguous() and w.is_contiguous()):
        return None
    if x.dim() != w.dim() or x.dim() < 3 or x.dtype != w.dtype or x.shape[1] != w.shape[1] * groups:
        return None
    spatial = []
    for i, size in enumerate(x.shape[2:]):
        out = (size + 2 * padding[i] - dilation[i] * (w.shape[2 + i] - 1) - 1) // stride[i] + 1
        if out <= 0:
            return None
        spatial.append(out)
    return _contiguous((x.shape[0], w.shape[0], *spatial), x.dtype)


def _cat(args: tuple) -> torch.Tensor | None:
    tensors = args[0]
    dim = args[1] if len(args) > 1 else 0
    first = tensors[0] if tensors else None
    if first is None or first.dim() == 0:
        return None
    rank, dtype = first.dim(), first.dtype
    dim = dim + rank if dim < 0 else dim
    total = 0
    for t in tensors:
        if not (_meta(t) and t.dim() == rank and t.dtype == dtype and t.is_contiguous()):
            return None
        if any(t.shape[i] != first.shape[i] for i in range(rank) if i != dim):
            return None
        total += t.shape[dim]
    return _contiguous((*first.shape[:dim], total, *first.shape[dim + 1 :]), dtype)


def _reduce(x: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor | None:
    dims = args[1] if len(args) > 1 else kwargs.get("dim")
    keepdim = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
    if kwargs.get("dtype") is not None or not x.is_floating_point() or not dims or x.dim() == 0:
        return None
    rank = x.dim()
    reduced = {d + rank if d < 0 else d for d in dims}
    if len(reduced) != len(dims) or not all(0 <= d < rank for d in reduced):
        return None
    if keepdim:
        shape = [1 if i in reduced else s for i, s in enumerate(x.shape)]
    else:
        shape = [s for i, s in enumerate(x.shape) if i not in reduced]
    return _contiguous(shape, x.dtype)


# --- handlers: (func, x, args, kwargs) -> output or None; x = args[0], a meta tensor ----------


def _in_place(func, x, args, kwargs):
    return x


def _in_place_binary(func, x, args, kwargs):
    other = args[1] if len(args) > 1 else None
    if isinstance(other, (int, float, bool)):
        return x
    if _meta(other) and _broadcast(x.shape, other.shape) == x.shape:
        return x
    return None


def _like_input(func, x, args, kwargs):
    return _like(x)


def _contiguous_like_input(func, x, args, kwargs):
    return _contiguous(x.shape, x.dtype)


def _binary_op(func, x, args, kwargs):
    return _binary(x, args[1]) if len(args) > 1 else None


def _masked_fill(func, x, args, kwargs):  # the mask broadcasts to x; the output is like x
    mask = args[1]
    if not _meta(mask) or _broadcast(x.shape, mask.shape) != x.shape:
        return None
    return _like(x)


def _clone(func, x, args, kwargs):
    return _like(x) if kwargs.get("memory_format") in (None, torch.preserve_format) else None


def _reduction(func, x, args, kwargs):
    return _reduce(x, args, kwargs) if func._overloadname in ("dim_IntList", "dim") else None


def _batch_norm(func, x, args, kwargs):
    out = _like(x)
    if out is None:
        return None
    channels = x.shape[1] if x.dim() > 1 else 1
    return out, _contiguous((channels,), x.dtype), _contiguous((channels,), x.dtype)


def _layer_norm(func, x, args, kwargs):  # (out, mean, rstd); the stats keep the batch dims
    if not x.is_contiguous():
        return None
    kept = x.dim() - len(args[1])
    stats = tuple(x.shape[:kept]) + (1,) * len(args[1])
    # the statistics in the accumulation type: fp32 for a 16-bit input (as the meta kernel)
    acc = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    return _contiguous(x.shape, x.dtype), _contiguous(stats, acc), _contiguous(stats, acc)


def _softmax(func, x, args, kwargs):
    if len(args) > 2 and args[2] or not x.is_contiguous():  # half_to_float
        return None
    return _contiguous(x.shape, x.dtype)


def _conv(func, x, args, kwargs):
    return _convolution(args)


def _product(func, x, args, kwargs):  # (.., n, k) @ (.., k, m) -> (.., n, m)
    a, b = (args[1], args[2]) if func.overloadpacket is _aten.addmm else (args[0], args[1])
    if not (_meta(a) and _meta(b) and a.dtype == b.dtype and a.shape[-1] == b.shape[-2]):
        return None
    if func.overloadpacket is _aten.bmm and a.shape[0] != b.shape[0]:
        return None
    return _contiguous((*a.shape[:-1], b.shape[-1]), a.dtype)


def grouped_mm_shape(a: Any, b: Any, offs: Any) -> tuple[int, ...] | None:
    """The output shape of ``torch._grouped_mm(a, b, offs)``, or None where the op refuses the
    shapes: 2-D x 3-D (rows grouped by ``offs``): (M, N); 3-D x 3-D (batched): (G, M, N); 2-D x
    2-D (the contraction grouped by ``offs``): (G, M, N); 3-D x 2-D (columns grouped): (M, N)."""
    if a.shape[-1] != b.shape[-2]:
        return None
    if a.dim() == 2 and b.dim() == 3:
        return (a.shape[0], b.shape[2]) if offs is not None else None
    if a.dim() == 3 and b.dim() == 3:
        return (a.shape[0], a.shape[1], b.shape[2]) if a.shape[0] == b.shape[0] else None
    if a.dim() == 2 and b.dim() == 2:
        return (offs.numel(), a.shape[0], b.shape[1]) if offs is not None else None
    if a.dim() == 3 and b.dim() == 2:
        return (a.shape[1], b.shape[1]) if offs is not None else None
    return None


def _grouped_mm(func, a, args, kwargs):
    # Not only faster: this build's meta kernel applies the CUDA kernel's dtype rule (bfloat16
    # only) and refuses float32, which the CPU kernel computes (Mixtral's experts in fp32). The
    # output is contiguous, of the input dtype unless out_dtype is given (checked against the
    # CPU kernel in fp32 and the meta kernel in bfloat16 in tests/test_meta_shapes.py).
    b = args[1]
    offs = args[2] if len(args) > 2 else kwargs.get("offs")
    out_dtype = args[4] if len(args) > 4 else kwargs.get("out_dtype")
    if not (_meta(b) and a.dtype == b.dtype and a.dtype.is_floating_point):
        return None
    if len(args) > 3 and args[3] is not None or kwargs.get("bias") is not None:
        return None  # (a bias: let the kernel decide)
    shape = grouped_mm_shape(a, b, offs)
    return None if shape is None else _contiguous(shape, out_dtype or a.dtype)


def _index_select(func, x, args, kwargs):
    dim, index = args[1], args[2]
    if not (_meta(index) and index.dim() <= 1):
        return None
    dim = dim + x.dim() if dim < 0 else dim
    return _contiguous((*x.shape[:dim], index.numel(), *x.shape[dim + 1 :]), x.dtype)


_BY_PACKET: dict[Any, Any] = (
    dict.fromkeys(_IN_PLACE, _in_place)
    | dict.fromkeys(_IN_PLACE_BINARY, _in_place_binary)
    | dict.fromkeys(_LIKE_INPUT, _like_input)
    | dict.fromkeys(_CONTIGUOUS_LIKE_INPUT, _contiguous_like_input)
    | dict.fromkeys(_BINARY, _binary_op)
    | dict.fromkeys(_REDUCE, _reduction)
    | dict.fromkeys(
        [_aten._native_batch_norm_legit_no_training, _aten.native_batch_norm], _batch_norm
    )
    | dict.fromkeys([_aten._softmax, _aten._safe_softmax], _softmax)
    | dict.fromkeys([_aten.mm, _aten.addmm, _aten.bmm], _product)
    | {
        _aten.masked_fill: _masked_fill,
        _aten.clone: _clone,
        _aten.native_layer_norm: _layer_norm,
        _aten.convolution: _conv,
        _aten.index_select: _index_select,
    }
    | ({_aten._grouped_mm: _grouped_mm} if hasattr(_aten, "_grouped_mm") else {})
)


def handler(func) -> Callable[[Any, tuple, dict], Any] | None:
    """The shortcut for ATen overload ``func``, called as ``handler(func, args, kwargs)`` (it
    returns the output or None), or None when ``func`` has none. The tracer resolves it once per
    overload (see fx_trace._op_info)."""
    packet = func.overloadpacket
    if packet is _aten.cat:  # its first argument is a list of tensors
        return lambda func, args, kwargs: None if kwargs or not args else _cat(args)
    per_tensor = _BY_PACKET.get(packet)
    if per_tensor is None:
        return None

    def tensor_first(func, args, kwargs):
        return per_tensor(func, args[0], args, kwargs) if args and _meta(args[0]) else None

    return tensor_first


def shortcut(func, args: tuple, kwargs: dict) -> Any:
    """The output of ``func(*args, **kwargs)`` on meta tensors, or None (see module doc)."""
    found = handler(func)
    return None if found is None else found(func, args, kwargs)

"""Every edge against an independent recorder of a real run (issue 15).

The recorder here is the test's own: module forward hooks and a TorchFunctionMode, written in
this file, watch the model run on real CPU tensors and write down, for every block, which tensors
it reads and where they were made. It uses none of the tracer's code or bookkeeping; it follows
the convention as the README states it, in terms of what the real run shows:

- a block is a call of a leaf module (torch.fx's default: a module of torch.nn other than
  Sequential), named by its module path (``@k`` for its k-th call), or a call of a torch function
  outside leaf modules that computes (anything but the recorder's own list of data moves below),
  named after the innermost enclosing module call (``encoder.add@1``);
- a data move (a view, copy or conversion of one tensor) belongs to the block that made the
  tensor it read; what crosses when a block reads its result is the tensor it was made from when
  it keeps that tensor's data (same dtype and either the same elements or a view of the same
  storage with at least as many: a reshape, a broadcast), else the result itself (a cast, a
  repeating copy, a slice);
- ``x.new_zeros(...)`` and the ``*_like`` constructors read no data; parameters, buffers and
  tensors made from Python numbers cross no edge.

Every edge of the traced graph (leaf depth) must be one the recorder saw, with the same tensors
(shape and dtype), and its bits must be elements x width: the accounted precision for the
model's own floating dtype, the tensor's own width for every other dtype; every crossing the
recorder saw must be an edge.
"""

from __future__ import annotations

import inspect
from collections import Counter
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from flowprof import tracer
from flowprof.models import registry

# --- the recorder ---------------------------------------------------------------------------------

# Calls that move, view, copy or convert one tensor without computing on it.
MOVES = {
    "view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "permute", "transpose",
    "swapaxes", "t", "contiguous", "clone", "detach", "to", "float", "half", "double",
    "bfloat16", "int", "long", "bool", "expand", "expand_as", "repeat", "tile", "unsqueeze",
    "squeeze", "getitem", "split", "chunk", "unbind", "narrow", "select", "movedim", "dropout",
}  # fmt: skip
# Calls that make a tensor from another's shape and dtype alone.
FROM_METADATA = {
    "new_zeros", "new_ones", "new_empty", "new_full", "zeros_like", "ones_like", "empty_like",
    "full_like",
}  # fmt: skip
# Calls that make a tensor from Python numbers: a constant.
FROM_NUMBERS = {
    "ones", "zeros", "empty", "full", "arange", "tensor", "as_tensor", "eye", "rand", "randn",
    "randint", "linspace", "scalar_tensor",
}  # fmt: skip
REFLECTED = {"radd": "add", "rsub": "sub", "rmul": "mul", "rtruediv": "div", "truediv": "div"}
# ``a / b`` reaches a function mode as Tensor.div, and torch.fx records it as operator.truediv
SYNONYMS = {"truediv": "div"}


def same_name(block: str) -> str:
    """A block's name with the function synonyms written one way."""
    head, _, last = block.rpartition(".")
    base, at, k = last.partition("@")
    return f"{head}{'.' if head else ''}{SYNONYMS.get(base, base)}{at}{k}"


def fn_name(func: Any) -> str:
    name = getattr(func, "__name__", str(func))
    if name.startswith("__") and name.endswith("__"):
        name = REFLECTED.get(name[2:-2], name[2:-2])
    return name.removesuffix("_")


def tensors_of(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    elif is_dataclass(value) and not isinstance(value, type):
        value = [getattr(value, f.name) for f in fields(value)]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in tensors_of(v)]
    return []


def is_leaf(m: nn.Module) -> bool:
    return m.__module__.startswith(("torch.nn", "torch.ao.nn")) and not isinstance(m, nn.Sequential)


@dataclass(frozen=True)
class Crossing:
    src: str  # the block that made the data
    tensor: torch.Tensor  # what crosses
    root: int  # id of the tensor it is a slice of (its own id when it is whole)


class Recorder(TorchFunctionMode):
    """Watches one real run of ``model`` (see the module doc)."""

    def __init__(self, model: nn.Module, helpers: tuple[tuple[Any, str], ...] = ()):
        super().__init__()
        self.model = model
        self.helpers = helpers  # (module, name) of helpers wrapped with torch.fx.wrap
        self.qualname = {id(m): n for n, m in model.named_modules() if n}
        self.module_calls: Counter[str] = Counter()
        self.block_calls: Counter[str] = Counter()
        self.stack: list[str] = []
        self.in_leaf = 0
        self.crossing: dict[int, Crossing | None] = {}
        self.keep: list[torch.Tensor] = []  # (ids stay unique while the run is recorded)
        self.reads: dict[str, dict[int, Crossing]] = {}

    # the data: what crosses when a tensor is read
    def made(self, t: torch.Tensor, c: Crossing | None) -> None:
        self.crossing[id(t)] = c
        self.keep.append(t)

    def read(self, block: str, args: Any) -> None:
        got = self.reads.setdefault(block, {})
        for t in tensors_of(args):
            c = self.crossing.get(id(t))
            if c is not None and c.src != block:
                got.setdefault(id(c.tensor), c)

    def moved(self, func: Any, name: str, src: torch.Tensor | None, out: torch.Tensor) -> None:
        c = None if src is None else self.crossing.get(id(src))
        if c is None or name in FROM_METADATA:
            self.made(out, None)
        elif out.dtype == src.dtype and (
            out.numel() == src.numel()
            or (
                out.numel() > src.numel()
                and out.untyped_storage().data_ptr() == src.untyped_storage().data_ptr()
            )
        ):
            self.made(out, c)  # the same data crosses
        elif out.dtype == src.dtype and out.numel() < src.numel():
            self.made(out, Crossing(c.src, out, c.root))  # a slice
        else:
            self.made(out, Crossing(c.src, out, id(out)))  # data of its own

    # blocks
    def module_pre(self, m: nn.Module, args: tuple, kwargs: dict) -> None:
        if self.in_leaf:
            self.in_leaf += 1
            return
        q = self.qualname[id(m)]
        k = self.module_calls[q]
        self.module_calls[q] += 1
        key = q if k == 0 else f"{q}@{k}"
        self.stack.append(key)
        if is_leaf(m):
            self.in_leaf = 1
            self.read(key, (args, kwargs))

    def module_post(self, m: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
        if self.in_leaf > 1:
            self.in_leaf -= 1
            return
        key = self.stack.pop()
        if self.in_leaf:
            self.in_leaf = 0
            for t in tensors_of(out):
                self.made(t, Crossing(key, t, id(t)))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        outs = tensors_of(out)
        if self.in_leaf or not outs:
            return out
        name = fn_name(func)
        if name == "interpolate":
            mode = kwargs.get("mode", args[3] if len(args) > 3 else "nearest")
            name = "interpolate" if mode != "nearest" else "getitem"  # nearest copies
        ins = [t for t in tensors_of((args, kwargs)) if self.crossing.get(id(t)) is not None]
        if name in FROM_NUMBERS and not ins:
            for t in outs:
                self.made(t, None)
            return out
        if name in MOVES or name in FROM_METADATA:
            for t in outs:
                if id(t) not in self.crossing or t is not (ins[0] if ins else None):
                    self.moved(func, name, ins[0] if ins else None, t)
            return out
        self.block(name, (args, kwargs), outs)
        return out

    def block(self, name: str, args: Any, outs: list[torch.Tensor]) -> None:
        base = f"{self.stack[-1]}.{name}" if self.stack else name
        k = self.block_calls[base]
        self.block_calls[base] += 1
        block = base if k == 0 else f"{base}@{k}"
        self.read(block, args)
        for t in outs:
            self.made(t, Crossing(block, t, id(t)))

    def helper(self, func: Any) -> Any:
        """``func``, a helper wrapped with ``torch.fx.wrap``, as one block (what torch.fx
        records it as)."""

        def call(*args: Any, **kwargs: Any) -> Any:
            self.in_leaf += 1  # (what it calls is its own work)
            try:
                out = func(*args, **kwargs)
            finally:
                self.in_leaf -= 1
            self.block(func.__name__, (args, kwargs), tensors_of(out))
            return out

        return call

    def run(self, inputs: list[torch.Tensor]) -> None:
        params = inspect.signature(self.model.forward).parameters
        for name, x in zip(params, inputs, strict=False):
            self.made(x, Crossing(f"input:{name}", x, id(x)))
        handles = []
        for m in self.model.modules():
            if m is not self.model:
                handles.append(m.register_forward_pre_hook(self.module_pre, with_kwargs=True))
                handles.append(m.register_forward_hook(self.module_post, with_kwargs=True))
        saved = [(mod, name, getattr(mod, name)) for mod, name in self.helpers]
        for mod, name, func in saved:
            setattr(mod, name, self.helper(func))
        try:
            with torch.no_grad(), self:
                out = self.model(*inputs)
        finally:
            for h in handles:
                h.remove()
            for mod, name, func in saved:
                setattr(mod, name, func)
        self.read("output:out", out)

    def edges(self) -> dict[tuple[str, str], list[torch.Tensor]]:
        """(src block, dst block) -> the tensors crossing, a slice dropped where its whole
        tensor crosses the same pair."""
        by_pair: dict[tuple[str, str], list[Crossing]] = {}
        for dst, got in self.reads.items():
            for c in got.values():
                by_pair.setdefault((c.src, dst), []).append(c)
        out = {}
        for pair, cs in by_pair.items():
            whole = {id(c.tensor) for c in cs if c.root == id(c.tensor)}
            out[pair] = [c.tensor for c in cs if c.root == id(c.tensor) or c.root not in whole]
        return out


def width(t: torch.Tensor, own: torch.dtype, precision_bits: int) -> int:
    """The test's own statement of the rule: the model's own floating dtype at the accounted
    precision, every other dtype at its own width."""
    return precision_bits if t.dtype == own else t.dtype.itemsize * 8


def check(
    model: nn.Module,
    inputs: list[torch.Tensor],
    hooks: bool | None,
    dtype: str | None = None,
    helpers: tuple[tuple[Any, str], ...] = (),
) -> int:
    """Trace ``model`` and compare every leaf-level edge with the recorder; returns the number of
    edges checked. ``helpers``: functions wrapped with ``torch.fx.wrap``, one block each on the
    fx path (the hooked path sees what they call)."""
    model.eval()
    recorder = Recorder(model, helpers if hooks is None else ())
    recorder.run(inputs)
    seen = recorder.edges()
    g = tracer.trace(model, inputs, hooks=hooks, dtype=dtype)
    floats = [x.dtype for x in inputs if x.is_floating_point()]
    own = floats[0] if floats else next(p.dtype for p in model.parameters())
    precision_bits = g.precision.bits
    traced = {(same_name(e.src), same_name(e.dst)): e for e in g.edges()}
    only_traced, only_seen = sorted(set(traced) - set(seen)), sorted(set(seen) - set(traced))
    assert not only_traced and not only_seen, f"only traced: {only_traced}; seen: {only_seen}"
    for pair, edge in traced.items():
        want = sorted((tuple(t.shape), str(t.dtype).removeprefix("torch.")) for t in seen[pair])
        got = sorted((t.shape, t.dtype) for t in edge.tensors)
        assert got == want, (pair, got, want)
        bits = sum(t.numel() * width(t, own, precision_bits) for t in seen[pair])
        assert edge.bits == bits, (pair, edge.bits, bits)
    return len(traced)


# --- a zoo of user-style models -------------------------------------------------------------------


class Quantize(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.out = nn.Linear(8, 4)

    def forward(self, x):
        q = self.fc(x).to(torch.int8)  # (2, 8) int8
        return q, self.out(q.float() / 8)


class HalfBranches(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)

    def forward(self, x):
        return self.a(x).half() * self.b(x).half()


class InplaceChain(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.skip = nn.Linear(8, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        h = self.fc(x)
        h.relu_()
        h.add_(self.skip(x))
        h.mul_(0.5)
        return self.head(h)


class Upsample(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.post = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        x = F.interpolate(self.conv(x), scale_factor=2, mode="nearest")
        x = F.interpolate(x, scale_factor=2, mode="bilinear")
        return self.post(x)


class GRULoop(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.cell = nn.GRUCell(8, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):  # (B, T, 4)
        e = self.embed(x)  # (B, T, 8)
        h = e.new_zeros(e.shape[0], 16)  # (B, 16)
        for t in range(3):
            h = self.cell(e[:, t], h)
        return self.head(h)


class SharedTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return self.fc(torch.tanh(self.fc(x)))


class DictOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(8, 8)
        self.cls = nn.Linear(8, 3)

    def forward(self, x):
        feat = self.body(x)
        return {"logits": self.cls(feat), "feat": feat, "pred": self.cls(feat).argmax(-1)}


class LSTMHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 8, batch_first=True)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        out, (h, c) = self.lstm(x)  # (B, T, 8)
        return self.head(out[:, -1]), c


class DenseMoE(nn.Module):
    def __init__(self, experts: int = 4):
        super().__init__()
        self.router = nn.Linear(8, experts)
        self.experts = nn.ModuleList(nn.Linear(8, 8) for _ in range(experts))

    def forward(self, x):  # (N, 8)
        probs = torch.softmax(self.router(x), dim=-1)  # (N, E)
        top, idx = torch.topk(probs, 2, dim=-1)  # (N, 2)
        gates = torch.zeros_like(probs).scatter(-1, idx, top)  # (N, E)
        out = torch.stack([e(x) for e in self.experts], dim=1)  # (N, E, 8)
        return (gates.unsqueeze(-1) * out).sum(1)


class Broadcast(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.g = nn.Linear(8, 8)

    def forward(self, x, z):  # (1, 8), (3, 8)
        h, w = self.fc(x), self.g(z)
        return h.expand(3, 8) + w, h.repeat(3, 1) * w


class ResidualInplace(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(inplace=True))
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.body(x)
        y += x
        return self.bn(y)


class CausalAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(16, 48)
        self.proj = nn.Linear(16, 16)

    def forward(self, x):  # (B, T, 16)
        b, t, _ = x.shape
        q, k, v = self.qkv(x).split(16, dim=-1)  # 3 x (B, T, 16)
        q, k, v = (z.view(b, t, 2, 8).transpose(1, 2) for z in (q, k, v))  # (B, 2, T, 8)
        scores = q @ k.transpose(-2, -1) / 8**0.5  # (B, 2, T, T)
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
        att = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, 16)  # (a copy: not contiguous)
        return self.proj(y)


class ConvToTokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 2, stride=2)
        self.norm = nn.LayerNorm(8)

    def forward(self, x):
        y = self.conv(x)  # (B, 8, H/2, W/2)
        return self.norm(y.flatten(2).transpose(1, 2))  # (B, HW/4, 8)


class ChunkCat(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 16)
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)

    def forward(self, x):
        left, right = self.fc(x).chunk(2, dim=-1)  # 2 x (N, 8)
        return torch.cat([self.a(left), self.b(right)], dim=-1)


class TokenModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(20, 8)
        self.pos = nn.Parameter(torch.randn(16, 8))
        self.head = nn.Linear(8, 20)

    def forward(self, ids):  # (B, T) int64
        h = self.tok(ids) + self.pos[: ids.shape[1]]
        return self.head(h)


class Convs(nn.Module):
    def __init__(self):
        super().__init__()
        self.grouped = nn.Conv2d(4, 8, 3, groups=2, padding=1)
        self.depthwise = nn.Conv2d(8, 8, 3, groups=8, dilation=2, padding=2)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)

    def forward(self, x):
        return self.up(self.depthwise(self.grouped(x)))


class EinsumBilinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 6)
        self.b = nn.Linear(6, 6)
        self.w = nn.Parameter(torch.randn(4, 6, 6))

    def forward(self, x):
        return torch.einsum("ni,kij,nj->nk", self.a(x), self.w, self.b(x))


class BoolMask(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.gate = nn.Linear(8, 8)

    def forward(self, x):
        keep = self.gate(x) > 0  # (N, 8) bool
        return self.fc(x).masked_fill(keep, 0.0), keep


class Float64Norm(nn.Module):
    """An RMS norm computed in float64 (the model's own choice), cast back."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.weight = nn.Parameter(torch.ones(8))
        self.out = nn.Linear(8, 8)

    def forward(self, x):
        h = self.fc(x).double()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
        return self.out(self.weight * h.to(x.dtype))


class TransposedMatmul(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)

    def forward(self, x):
        return torch.matmul(self.a(x), self.b(x).t())


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.ModuleDict({"inner": SharedTwice(), "gate": nn.Sigmoid()})

    def forward(self, x):
        y = self.block["inner"](x)
        return y * self.block["gate"](y)


ZOO = {
    "quantize": (Quantize, [(2, 8)]),
    "half_branches": (HalfBranches, [(2, 8)]),
    "inplace_chain": (InplaceChain, [(2, 8)]),
    "upsample": (Upsample, [(1, 3, 5, 6)]),
    "gru_loop": (GRULoop, [(2, 3, 4)]),
    "shared_twice": (SharedTwice, [(2, 8)]),
    "dict_out": (DictOut, [(2, 8)]),
    "lstm_head": (LSTMHead, [(2, 5, 4)]),
    "dense_moe": (DenseMoE, [(6, 8)]),
    "broadcast": (Broadcast, [(1, 8), (3, 8)]),
    "residual_inplace": (ResidualInplace, [(1, 4, 6, 6)]),
    "causal_attention": (CausalAttention, [(2, 5, 16)]),
    "conv_to_tokens": (ConvToTokens, [(1, 3, 8, 8)]),
    "chunk_cat": (ChunkCat, [(3, 8)]),
    "token_model": (TokenModel, ["ids"]),
    "convs": (Convs, [(1, 4, 6, 6)]),
    "einsum_bilinear": (EinsumBilinear, [(3, 6)]),
    "bool_mask": (BoolMask, [(3, 8)]),
    "float64_norm": (Float64Norm, [(3, 8)]),
    "transposed_matmul": (TransposedMatmul, [(3, 8)]),
    "nested": (Nested, [(2, 8)]),
}
PATHS = pytest.mark.parametrize("hooks", [None, True], ids=["fx", "hooks"])


def _inputs(shapes) -> list[torch.Tensor]:
    return [torch.randint(0, 20, (2, 5)) if s == "ids" else torch.randn(s) for s in shapes]


@PATHS
@pytest.mark.parametrize("name", list(ZOO))
def test_every_edge_of_a_user_model_is_what_its_block_reads(name, hooks):
    torch.manual_seed(0)
    make, shapes = ZOO[name]
    assert check(make(), _inputs(shapes), hooks) > 0


@pytest.mark.parametrize("name", ["quantize", "half_branches", "float64_norm", "bool_mask"])
def test_the_width_rule_holds_at_another_accounted_precision(name):
    torch.manual_seed(0)
    make, shapes = ZOO[name]
    assert check(make(), _inputs(shapes), None, dtype="fp16") > 0


# --- built-in models and torchvision --------------------------------------------------------------

BUILTIN = {
    "lenet5": {},
    "lenet5-dws": {},
    "lenet5-modern": {},
    "lenet5-modern-dws": {},
    "transformer": {"emb": 32, "heads": 4, "seq_len": 6},
}


@PATHS
@pytest.mark.parametrize("name", list(BUILTIN))
def test_every_edge_of_a_built_in_model_is_what_its_block_reads(name, hooks):
    from flowprof.models import transformer

    built = registry.build(name, device="cpu", **BUILTIN[name])
    inputs = list(built.example_inputs("cpu", torch.Generator().manual_seed(0)))
    helpers = ((transformer, "causal_mask"),)  # (torch.fx.wrap: one block on the fx path)
    assert check(built.module, inputs, hooks, helpers=helpers) > 0


def _torchvision(name: str) -> tuple[nn.Module, list[torch.Tensor]]:
    models = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    if name == "vit":  # vit_b_16's architecture at a small size
        model = models.VisionTransformer(
            image_size=32, patch_size=16, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32
        )
        return model, [torch.randn(1, 3, 32, 32)]
    return getattr(models, name)(num_classes=10), [torch.randn(1, 3, 64, 64)]


@PATHS
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "vit"])
def test_every_edge_of_a_torchvision_model_is_what_its_block_reads(name, hooks):
    model, inputs = _torchvision(name)
    assert check(model, inputs, hooks) > 0

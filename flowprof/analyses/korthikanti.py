"""Korthikanti et al.'s activation memory of a transformer layer, reconciled with what PyTorch
saves for it.

"Reducing Activation Recomputation in Large Transformer Models" (Korthikanti et al., 2022, eq. 1
and section 4.1) counts the bytes a GPT layer keeps for its backward as
s·b·h·(34 + 5·a·s/h), for sequence length s, batch b, hidden size h and a heads, under its
assumptions: 16-bit activations, 1-byte dropout masks, dropout after the softmax, after the
attention's output projection and after the MLP, a GELU MLP of 4h, attention computed unfused.
Term by term (bytes):

=====================  =========  ============================================================
term                   bytes      what is kept
=====================  =========  ============================================================
LayerNorm 1            2sbh       its input
QKV projection         2sbh       its input (LayerNorm 1's output)
Q·Kᵀ                   4sbh       Q and K
softmax                2as²b      its output
attention dropout      as²b       its mask
attention · V          2as²b+2sbh the dropout's output and V
output projection      2sbh       its input
projection dropout     sbh        its mask
LayerNorm 2            2sbh       its input
MLP linear 1           2sbh       its input
GELU                   8sbh       its input (4h wide)
MLP linear 2           8sbh       its input (GELU's output)
MLP dropout            sbh        its mask
=====================  =========  ============================================================

:class:`GPTLayer` builds the layer to those assumptions; :class:`ModernLayer` a 2024 one
(RMSNorm, ``scaled_dot_product_attention``, SwiGLU, no dropout). :func:`reconcile` sets the
paper's terms beside the bytes flowprof finds each of the layer's blocks saving
(:func:`flowprof.memory`), with the reason where they differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


class GPTLayer(nn.Module):
    """A pre-LayerNorm GPT layer as Korthikanti et al. assume it: unfused attention, dropout
    after the softmax, the output projection and the MLP, a GELU MLP of 4h."""

    def __init__(self, h: int, a: int, p: float = 0.1) -> None:
        super().__init__()
        self.a = a
        self.ln1 = nn.LayerNorm(h)
        self.qkv = nn.Linear(h, 3 * h)
        self.attn_drop = nn.Dropout(p)
        self.proj = nn.Linear(h, h)
        self.proj_drop = nn.Dropout(p)
        self.ln2 = nn.LayerNorm(h)
        self.fc1 = nn.Linear(h, 4 * h)
        self.gelu = nn.GELU()
        self.fc2 = nn.Linear(4 * h, h)
        self.mlp_drop = nn.Dropout(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (s, b, h), the paper's layout
        s, b, h = x.shape
        a = self.a
        q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)  # each (s, b, h)
        q = q.reshape(s, b * a, h // a).transpose(0, 1)  # (b·a, s, h/a)
        k = k.reshape(s, b * a, h // a).transpose(0, 1)
        v = v.reshape(s, b * a, h // a).transpose(0, 1)
        scores = torch.bmm(q, k.transpose(1, 2)) / math.sqrt(h // a)  # (b·a, s, s)
        probs = self.attn_drop(torch.softmax(scores, dim=-1))
        ctx = torch.bmm(probs, v).transpose(0, 1).reshape(s, b, h)
        x = x + self.proj_drop(self.proj(ctx))
        return x + self.mlp_drop(self.fc2(self.gelu(self.fc1(self.ln2(x)))))


class RMSNorm(nn.Module):
    def __init__(self, h: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(h))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class ModernLayer(nn.Module):
    """A 2024 decoder layer: RMSNorm, fused ``scaled_dot_product_attention`` (causal), a SwiGLU
    MLP of width ``ffn``, no dropout, no biases."""

    def __init__(self, h: int, a: int, ffn: int | None = None) -> None:
        super().__init__()
        ffn = ffn or 4 * h
        self.a = a
        self.norm1 = RMSNorm(h)
        self.qkv = nn.Linear(h, 3 * h, bias=False)
        self.proj = nn.Linear(h, h, bias=False)
        self.norm2 = RMSNorm(h)
        self.gate = nn.Linear(h, ffn, bias=False)
        self.up = nn.Linear(h, ffn, bias=False)
        self.down = nn.Linear(ffn, h, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (b, s, h)
        b, s, h = x.shape
        a = self.a
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        q = q.reshape(b, s, a, h // a).transpose(1, 2)  # (b, a, s, h/a)
        k = k.reshape(b, s, a, h // a).transpose(1, 2)
        v = v.reshape(b, s, a, h // a).transpose(1, 2)
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, s, h))
        z = self.norm2(x)
        return x + self.down(nn.functional.silu(self.gate(z)) * self.up(z))


@dataclass(frozen=True)
class Term:
    """One of the paper's terms beside what flowprof found saved for it."""

    term: str
    paper: int  # bytes, the paper's formula
    blocks: tuple[str, ...]  # the layer's blocks whose saved bytes this term is
    flowprof: int  # bytes those blocks saved
    why: str  # why the two differ ("" where they agree)


def paper_bytes(s: int, b: int, h: int, a: int) -> int:
    """s·b·h·(34 + 5·a·s/h): Korthikanti et al.'s bytes per layer (an integer: 5·a·s²·b)."""
    return 34 * s * b * h + 5 * a * s * s * b


def _paper_terms(s: int, b: int, h: int, a: int) -> list[tuple[str, int]]:
    sbh, as2b = s * b * h, a * s * s * b
    return [
        ("LayerNorm 1: input", 2 * sbh),
        ("QKV projection: input", 2 * sbh),
        ("Q·Kᵀ: Q and K", 4 * sbh),
        ("softmax: output", 2 * as2b),
        ("attention dropout: mask", as2b),
        ("attention · V: dropout output and V", 2 * as2b + 2 * sbh),
        ("output projection: input", 2 * sbh),
        ("projection dropout: mask", sbh),
        ("LayerNorm 2: input", 2 * sbh),
        ("MLP linear 1: input", 2 * sbh),
        ("GELU: input", 8 * sbh),
        ("MLP linear 2: input", 8 * sbh),
        ("MLP dropout: mask", sbh),
    ]


# The blocks of GPTLayer whose saved bytes each paper term is (leaf blocks, fx node names for
# functions), and why the bytes differ where they do.
_GPT_BLOCKS: list[tuple[tuple[str, ...], str]] = [
    (("ln1",), "LayerNorm also keeps its mean and 1/std per row (2·2·sb bytes in fp16 on the CPU)"),
    (("qkv",), ""),
    (("bmm",), ""),
    (("softmax",), ""),
    (
        ("attn_drop",),
        "CPU dropout keeps its scaled noise tensor in the activations' dtype "
        "(2 bytes an element), not a 1-byte mask",
    ),
    (("bmm_1",), ""),
    (("proj",), "the projection's input is the attention's output made contiguous: a copy"),
    (("proj_drop",), "a 2-byte noise tensor, not a 1-byte mask"),
    (("ln2",), "mean and 1/std per row besides the input"),
    (("fc1",), ""),
    (("gelu",), ""),
    (("fc2",), ""),
    (("mlp_drop",), "a 2-byte noise tensor, not a 1-byte mask"),
]


def reconcile(s: int = 32, b: int = 2, h: int = 64, a: int = 4, measure: bool = False):
    """The paper's terms beside flowprof's per-block saved bytes for :class:`GPTLayer` in fp16
    (a training step's forward, the layer's input needing a gradient as inside a model), and
    flowprof's report (``measure``: with the CPU run beside it)."""
    from flowprof.analyses.memory import memory

    layer = GPTLayer(h, a)
    report = memory(
        layer,
        [(s, b, h)],
        phases=("forward", "backward"),
        loss="sum",
        input_grad=True,
        dtype="fp16",
        measure=measure,
    )
    saved = {blk.name: blk.saved for blk in report.blocks}
    terms = []
    for (term, paper), (blocks, why) in zip(_paper_terms(s, b, h, a), _GPT_BLOCKS, strict=True):
        got = sum(saved.get(x, 0) for x in blocks)
        terms.append(Term(term, paper, blocks, got, why if got != paper else ""))
    return terms, report

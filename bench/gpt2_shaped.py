"""A GPT-2-small-shaped decoder of plain nn.Modules (no download, no transformers), for the
timing benchmark's GPU check: 12 layers, d_model 768, 12 heads, MLP 3072, vocab 50257, learned
positions up to 1024, pre-norm blocks with causal self-attention, GELU MLP and a tied LM head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class GPT2Shape:
    hidden: int = 768  # GPT-2 small's d_model
    layers: int = 12
    heads: int = 12
    mlp: int = 3072  # 4 x hidden
    vocab: int = 50257
    positions: int = 1024


class SelfAttention(nn.Module):
    def __init__(self, s: GPT2Shape) -> None:
        super().__init__()
        self.heads = s.heads
        self.q_proj = nn.Linear(s.hidden, s.hidden)
        self.k_proj = nn.Linear(s.hidden, s.hidden)
        self.v_proj = nn.Linear(s.hidden, s.hidden)
        self.out_proj = nn.Linear(s.hidden, s.hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, e = x.shape
        h, d = self.heads, e // self.heads
        q = self.q_proj(x).view(b, t, h, d).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(b, t, h, d).transpose(1, 2)  # (B, H, T, D)
        v = self.v_proj(x).view(b, t, h, d).transpose(1, 2)  # (B, H, T, D)
        scores = torch.matmul(q, k.transpose(-2, -1)) / d**0.5  # (B, H, T, T)
        scores = scores.masked_fill(mask, float("-inf"))
        context = torch.matmul(scores.softmax(-1), v)  # (B, H, T, D)
        return self.out_proj(context.transpose(1, 2).reshape(b, t, e))  # (B, T, E)


class Block(nn.Module):
    def __init__(self, s: GPT2Shape) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(s.hidden)
        self.attn = SelfAttention(s)
        self.norm2 = nn.LayerNorm(s.hidden)
        self.fc = nn.Linear(s.hidden, s.mlp)
        self.act = nn.GELU(approximate="tanh")
        self.proj = nn.Linear(s.mlp, s.hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask)  # (B, T, E)
        return x + self.proj(self.act(self.fc(self.norm2(x))))  # (B, T, E)


class GPT2Shaped(nn.Module):
    def __init__(self, s: GPT2Shape = GPT2Shape()) -> None:
        super().__init__()
        self.tokens = nn.Embedding(s.vocab, s.hidden)
        self.positions = nn.Embedding(s.positions, s.hidden)
        self.layers = nn.ModuleList(Block(s) for _ in range(s.layers))
        self.norm = nn.LayerNorm(s.hidden)
        self.head = nn.Linear(s.hidden, s.vocab, bias=False)
        self.head.weight = self.tokens.weight  # tied, as GPT-2's
        causal = torch.ones(s.positions, s.positions, dtype=torch.bool).triu(1)
        self.register_buffer("causal", causal, persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        pos = torch.arange(t, device=ids.device)
        x = self.tokens(ids) + self.positions(pos)  # (B, T, E)
        mask = self.causal[:t, :t]  # (T, T)
        for layer in self.layers:
            x = layer(x, mask)
        return self.head(self.norm(x))  # (B, T, vocab)

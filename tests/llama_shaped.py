"""A Llama-shaped decoder of plain nn.Modules, for tests (no download, no transformers).

RMSNorm, attention with q/k/v/o projections and no rotary embedding, a SwiGLU MLP; the
defaults are Llama-2-7B's shape (hidden 4096, 32 layers, 32 heads, MLP 11008, vocab 32000).
Built on meta, it allocates nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LlamaShape:
    hidden: int = 4096  # Llama-2-7B's d_model
    layers: int = 32
    heads: int = 32
    mlp: int = 11008  # Llama-2-7B's intermediate size (about 8/3 x hidden, rounded)
    vocab: int = 32000


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)  # (B, T, 1)
        return x * scale * self.weight


class Attention(nn.Module):
    def __init__(self, s: LlamaShape) -> None:
        super().__init__()
        self.heads = s.heads
        self.q_proj = nn.Linear(s.hidden, s.hidden, bias=False)
        self.k_proj = nn.Linear(s.hidden, s.hidden, bias=False)
        self.v_proj = nn.Linear(s.hidden, s.hidden, bias=False)
        self.o_proj = nn.Linear(s.hidden, s.hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.heads
        q = self.q_proj(x).view(b, t, h, d // h).transpose(1, 2)  # (B, heads, T, head_dim)
        k = self.k_proj(x).view(b, t, h, d // h).transpose(1, 2)  # (B, heads, T, head_dim)
        v = self.v_proj(x).view(b, t, h, d // h).transpose(1, 2)  # (B, heads, T, head_dim)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, d))  # (B, T, hidden)


class MLP(nn.Module):
    def __init__(self, s: LlamaShape) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(s.hidden, s.mlp, bias=False)
        self.up_proj = nn.Linear(s.hidden, s.mlp, bias=False)
        self.down_proj = nn.Linear(s.mlp, s.hidden, bias=False)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, s: LlamaShape) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(s.hidden)
        self.self_attn = Attention(s)
        self.post_attention_layernorm = RMSNorm(s.hidden)
        self.mlp = MLP(s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaShaped(nn.Module):
    def __init__(self, s: LlamaShape = LlamaShape()) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(s.vocab, s.hidden)
        self.layers = nn.ModuleList(DecoderLayer(s) for _ in range(s.layers))
        self.norm = RMSNorm(s.hidden)
        self.lm_head = nn.Linear(s.hidden, s.vocab, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(input_ids)  # (B, T, hidden)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.norm(x))  # (B, T, vocab)


def llama_shaped(shape: LlamaShape = LlamaShape(), seq: int = 2048, dtype=torch.float16):
    """The model on meta and its example input (token ids, batch 1)."""
    with torch.device("meta"):
        model = LlamaShaped(shape).to(dtype)
    ids = torch.zeros(1, seq, dtype=torch.int64, device="meta")
    return model, ids

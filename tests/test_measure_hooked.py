"""``--measure`` on the hooked path matches each tensor by what it is (issue 15, item 4).

BERT-style and Llama-style models, written here from small modules (nothing is downloaded), are
traced by hooks and measured on real tensors: every edge must be measured, and its measured bits
must be what the edge's tensors occupy at their traced dtypes, worked out here from the shapes
the test itself knows.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from flowprof import tracer

# --- a BERT-style encoder ------------------------------------------------------------------------


class BertEmbeddings(nn.Module):
    def __init__(self, vocab: int, dim: int, max_len: int):
        super().__init__()
        self.word = nn.Embedding(vocab, dim)
        self.position = nn.Embedding(max_len, dim)
        self.token_type = nn.Embedding(2, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(0.1)
        self.register_buffer("position_ids", torch.arange(max_len)[None])  # (1, max_len)

    def forward(self, ids, token_types):  # (B, T) int64 each
        positions = self.position_ids[:, : ids.shape[1]]  # (1, T)
        h = self.word(ids) + self.token_type(token_types) + self.position(positions)  # (B, T, D)
        return self.dropout(self.norm(h))


class BertSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.dense = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def split(self, x):  # (B, T, D) -> (B, H, T, D/H)
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, h, mask_bias):  # (B, T, D), (B, 1, 1, T)
        q, k, v = self.split(self.query(h)), self.split(self.key(h)), self.split(self.value(h))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)  # (B, H, T, T)
        if mask_bias is not None:
            scores = scores + mask_bias
        ctx = torch.softmax(scores, dim=-1) @ v  # (B, H, T, D/H)
        ctx = ctx.transpose(1, 2).reshape(h.shape)  # (B, T, D)
        return self.norm(h + self.dense(ctx))


class BertLayer(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attention = BertSelfAttention(dim, heads)
        self.intermediate = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.output = nn.Linear(4 * dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, h, mask_bias):
        h = self.attention(h, mask_bias)
        return self.norm(h + self.output(self.act(self.intermediate(h))))


class TinyBert(nn.Module):
    def __init__(
        self, vocab: int = 30, dim: int = 16, heads: int = 2, layers: int = 2, skip_mask_if=1
    ):
        super().__init__()
        self.skip_mask_if = skip_mask_if
        self.embeddings = BertEmbeddings(vocab, dim, max_len=32)
        self.layers = nn.ModuleList(BertLayer(dim, heads) for _ in range(layers))
        self.pooler = nn.Linear(dim, dim)

    def forward(self, ids, attention_mask, token_types):
        # Hugging Face's shortcut: no mask when nothing is padded (every mask value is
        # ``skip_mask_if``), a branch on values that torch.compile does not take: the meta counting
        # run, run as compiled, skips the test that the real run makes, so the two runs make
        # different tensors before the layers.
        if not torch.compiler.is_compiling() and bool((attention_mask == self.skip_mask_if).all()):
            mask_bias = None
        else:  # (B, T) int64 mask -> additive bias (B, 1, 1, T) in the model's dtype
            mask_bias = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * -1e4
        h = self.embeddings(ids, token_types)
        for layer in self.layers:
            h = layer(h, mask_bias)
        return {"last_hidden_state": h, "pooled": torch.tanh(self.pooler(h[:, 0]))}


# --- a Llama-style decoder -----------------------------------------------------------------------


class RMSNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
        return self.weight * h.to(x.dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Rotary(nn.Module):
    def __init__(self, head_dim: int):
        super().__init__()
        inv = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
        self.register_buffer("inv_freq", inv, persistent=False)  # (head_dim/2,)

    def forward(self, x, positions):  # positions (1, T) int64
        freqs = positions[..., None].float() * self.inv_freq  # (1, T, head_dim/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (1, T, head_dim)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


class LlamaAttention(nn.Module):
    def __init__(self, dim: int, heads: int, kv_heads: int):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x, cos, sin, mask):  # (B, T, D); (1, T, hd) x 2; (T, T)
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = cos[:, None], sin[:, None]  # (1, 1, T, hd)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        groups = self.heads // self.kv_heads  # grouped-query attention: repeat the kv heads
        k = k[:, :, None].expand(b, self.kv_heads, groups, t, self.head_dim)
        k = k.reshape(b, self.heads, t, self.head_dim)
        v = v[:, :, None].expand(b, self.kv_heads, groups, t, self.head_dim)
        v = v.reshape(b, self.heads, t, self.head_dim)
        scores = q @ k.transpose(2, 3) / math.sqrt(self.head_dim) + mask  # (B, H, T, T)
        probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        out = (probs @ v).transpose(1, 2).reshape(b, t, -1)  # (B, T, D)
        return self.o_proj(out)


class LlamaMLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class LlamaLayer(nn.Module):
    def __init__(self, dim: int, heads: int, kv_heads: int):
        super().__init__()
        self.input_layernorm = RMSNorm(dim)
        self.self_attn = LlamaAttention(dim, heads, kv_heads)
        self.post_attention_layernorm = RMSNorm(dim)
        self.mlp = LlamaMLP(dim, 3 * dim)

    def forward(self, h, cos, sin, mask):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, mask)
        return h + self.mlp(self.post_attention_layernorm(h))


class TinyLlama(nn.Module):
    def __init__(self, vocab: int = 30, dim: int = 16, heads: int = 4, kv_heads: int = 2):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, dim)
        self.rotary = Rotary(dim // heads)
        self.layers = nn.ModuleList(LlamaLayer(dim, heads, kv_heads) for _ in range(2))
        self.norm = RMSNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)

    def forward(self, ids):  # (B, T) int64
        t = ids.shape[1]
        h = self.embed_tokens(ids)  # (B, T, D)
        positions = torch.arange(t, device=ids.device)[None]  # (1, T)
        cos, sin = self.rotary(h, positions)
        mask = torch.full((t, t), float("-inf"), device=ids.device).triu(1)  # (T, T)
        for layer in self.layers:
            h = layer(h, cos, sin, mask)
        return self.lm_head(self.norm(h))


def _bert_inputs() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 30, (2, 6), generator=g)
    mask = torch.ones(2, 6, dtype=torch.int64)
    mask[1, 4:] = 0  # the second sequence is padded
    return [ids, mask, torch.zeros(2, 6, dtype=torch.int64)]


MODELS = {
    "bert": (TinyBert, _bert_inputs),
    "llama": (TinyLlama, lambda: [torch.randint(0, 30, (2, 6))]),
}


def _on_meta(inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    return [torch.empty(x.shape, dtype=x.dtype, device="meta") for x in inputs]


@pytest.mark.parametrize("given", ["real", "meta"])
@pytest.mark.parametrize("name", list(MODELS))
def test_every_edge_of_a_hooked_model_is_measured_as_the_tensor_it_carries(name, given):
    torch.manual_seed(0)
    make, inputs = MODELS[name]
    model = make().eval()
    # meta inputs: the counting run is on meta tensors (BERT's as compiled), the measured run on
    # real ones (zeros for the integer inputs): BERT's runs differ before the first layer
    example = inputs() if given == "real" else _on_meta(inputs())
    g = tracer.trace(model, example, hooks=True, measure=True)
    assert g.meta["blocks_by_hooks"]
    edges = g.edges()
    assert len(edges) > 40
    unmeasured = [(e.src, e.dst) for e in edges if e.measured_bits is None]
    assert not unmeasured
    for e in edges:
        # what the tensors occupy at their own dtypes: elements x bytes x 8
        own = sum(math.prod(t.shape) * getattr(torch, t.dtype).itemsize * 8 for t in e.tensors)
        assert e.measured_bits == own, (e.src, e.dst, e.shape, e.measured_bits, own)


def test_an_edge_the_measured_run_did_not_make_says_why():
    # Measured on zeros (the real stand-ins of meta integer inputs), this BERT skips its mask,
    # which the counting run (as compiled) applied: the mask's edges have no measured tensor.
    torch.manual_seed(0)
    model = TinyBert(skip_mask_if=0).eval()
    g = tracer.trace(model, _on_meta(_bert_inputs()), hooks=True, measure=True)
    unmeasured = {(e.src, e.dst): e.unmeasured for e in g.edges() if e.measured_bits is None}
    # The mask (B, T) is cast to float on its way to "sub"; the bias (1 - mask) * -1e4 is made
    # by "sub" then "mul", which sends it to the scores' "add" in each of the 2 layers. Without
    # the mask, the measured run's scores go straight to softmax, so the name "add" goes to the
    # residual add (and the counting run's residual "add@1" is not made).
    layers = [f"layers.{i}.attention" for i in range(2)]
    assert set(unmeasured) == {("input:attention_mask", "sub"), ("sub", "mul")} | {
        pair
        for a in layers
        for pair in [("mul", f"{a}.add"), (f"{a}.add", f"{a}.softmax"), (f"{a}.add@1", f"{a}.norm")]
    }
    assert all("another path" in why for why in unmeasured.values())
    # the scores (2, 2, 6, 6) are not matched with the measured residual sum (2, 6, 16)
    assert (
        "another (2x6x16 float32)" in unmeasured[("layers.0.attention.add", f"{layers[0]}.softmax")]
    )
    for e in g.edges():
        if e.measured_bits is not None:
            assert e.unmeasured is None
            own = sum(math.prod(t.shape) * getattr(torch, t.dtype).itemsize * 8 for t in e.tensors)
            assert e.measured_bits == own
    assert g.by_block(1).to_dict()["edges"][0].get("unmeasured") is None


@pytest.mark.parametrize("hooks", [None, True], ids=["fx", "hooks"])
def test_measure_agrees_on_every_edge_of_the_recorder_s_zoo(hooks):
    from tests.test_dataflow_recorder import ZOO, _inputs

    for name, (make, shapes) in ZOO.items():
        torch.manual_seed(0)
        g = tracer.trace(make().eval(), _inputs(shapes), hooks=hooks, measure=True)
        for e in g.edges():
            # the real tensors' bytes, at their own dtypes
            own = sum(math.prod(t.shape) * getattr(torch, t.dtype).itemsize * 8 for t in e.tensors)
            assert e.measured_bits == own, (name, e.src, e.dst, e.unmeasured)

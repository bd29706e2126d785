"""An encoder-decoder Transformer (Vaswani et al., 2017), written from scratch, fp16 by default.

No ``nn.Transformer``, ``nn.MultiheadAttention`` or ``scaled_dot_product_attention``: every
computing step is its own named module, so the traced block graph reads like the paper's Fig. 1
and Fig. 2 (B = batch, S / T = source / target length, E = emb, H = heads, D = E / H)::

    src (B, S, E) -> [src_embed] -> src_pos -> encoder.layers.N -> memory (B, S, E)
    tgt (B, T, E) -> [tgt_embed] -> tgt_pos -> decoder.layers.N (+ memory) -> [generator]

- encoder.layers.N: ``self_attn``, ``add_norm1``, ``ffn``, ``add_norm2``;
- decoder.layers.N: ``self_attn`` (causal), ``add_norm1``, ``cross_attn`` (queries from the
  decoder, keys and values from the encoder's memory), ``add_norm2``, ``ffn``, ``add_norm3``;
- attention: ``q_proj``, ``k_proj``, ``v_proj`` -> ``scores`` (Q K^T / sqrt(D)) -> ``mask``
  (decoder self-attention only) -> ``softmax`` -> ``context`` (weights @ V) -> ``out_proj``;
  splitting and merging heads are views and transposes in the attention module itself;
- ffn: ``linear1``, ``activation`` (ReLU, as in the paper), ``linear2``;
- add_normK: the residual add then ``norm`` (LayerNorm), the paper's post-norm. With
  ``norm="pre"`` a layer reads ``normK`` (LayerNorm) -> sublayer -> ``addK`` (residual add)
  instead, and each stack ends in a final LayerNorm (``encoder.norm``, ``decoder.norm``): without
  it a pre-norm stack's output is never normalised (``nn.Transformer`` with ``norm_first=True``
  does the same).

Without ``vocab`` the inputs are already-embedded tensors of the model's dtype and the output is
the decoder's (B, T, E) features. With ``vocab`` the inputs are int64 token ids, ``src_embed`` /
``tgt_embed`` look them up and scale by sqrt(E) (paper, section 3.4; the two tables and the
generator are not tied, so each block owns its parameters) and ``generator`` projects to
(B, T, vocab) logits (the paper's softmax belongs to the loss).

Every parameter and buffer is cast to ``dtype`` (fp16 by default), so with fp16 inputs every
intermediate is fp16 too, on the CPU as elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import torch
import torch.fx
from torch import Tensor, nn

from flowprof.models.config import TEXT, check_options, option, reject_unknown
from flowprof.models.registry import BuiltModel, InputSpec, ModelError, register


class NormPlacement(StrEnum):
    """Where each sublayer's LayerNorm sits."""

    POST = "post"  # LayerNorm(x + Sublayer(x)): the paper's
    PRE = "pre"  # x + Sublayer(LayerNorm(x)): what most later models use


_DTYPES = {
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
    "fp64": torch.float64,
    "float64": torch.float64,
}


def parse_dtype(value: torch.dtype | str) -> torch.dtype:
    """A floating dtype from a ``torch.dtype`` or a name such as ``"fp16"``, ``"bf16"``."""
    if isinstance(value, torch.dtype):
        if not value.is_floating_point:
            raise ModelError(f"the transformer needs a floating dtype, got {value}")
        return value
    dtype = _DTYPES.get(str(value).lower().removeprefix("torch."))
    if dtype is None:
        raise ModelError(f"unknown dtype {value!r}; use fp16, bf16 or fp32")
    return dtype


@dataclass(frozen=True)
class TransformerConfig:
    """Sizes and options of the transformer; ``None`` fields are derived in ``__post_init__``.

    The fields marked with :func:`option` are the transformer's command-line flags (``emb`` is
    ``--emb``; their help, parsing and checks come from here); ``dropout`` and ``dtype`` are set
    from Python only (the CLI's ``--dtype`` is the precision bits are accounted at, not this).
    ``norm`` also accepts ``"post"`` / ``"pre"`` and ``dtype`` a name such as ``"fp16"``. After
    construction every field holds its effective value (``norm`` a NormPlacement, ``dtype`` a
    torch.dtype, ``ffn``, ``src_len`` and ``tgt_len`` never None). Invalid values raise
    :class:`ModelError` with a one-line message.
    """

    # d_model: ASSIGNMENT Problem 3 fixes 256 (the paper's base model has 512)
    emb: int = field(default=256, metadata=option("embedding size d_model (default {default})"))
    # Problem 3 and the paper's base model both use 8 heads
    heads: int = field(default=8, metadata=option("attention heads (default {default})"))
    # d_ff; None -> 4 * emb, the paper's ratio (2048 = 4 * 512)
    ffn: int | None = field(default=None, metadata=option("feed-forward size (default 4 x emb)"))
    # Problem 3: one encoder layer and one decoder layer (the paper stacks 6 of each)
    enc_layers: int = field(default=1, metadata=option("encoder layers (default {default})"))
    dec_layers: int = field(default=1, metadata=option("decoder layers (default {default})"))
    # 128 tokens: a sentence-sized length at which attention's T x T terms already show beside
    # the T x E ones, and that traces and runs on a CPU in well under a second.
    seq_len: int = field(default=128, metadata=option("source and target length"))
    # None -> seq_len: one length for both unless a task needs two
    src_len: int | None = field(default=None, metadata=option("source length (default --seq-len)"))
    tgt_len: int | None = field(default=None, metadata=option("target length (default --seq-len)"))
    # one sequence pair: the per-example dataflow Problem 3 asks about
    batch: int = field(default=1, metadata=option("batch size (default {default})"))
    # None: inputs arrive embedded, as Problem 3's blocks start there
    vocab: int | None = field(
        default=None, metadata=option("add token embeddings and output projection")
    )
    # the paper's post-norm
    norm: NormPlacement = field(
        default=NormPlacement.POST, metadata=option("'post' (the paper) or 'pre' layer norm", TEXT)
    )
    dropout: float = 0.0  # inference: 0 adds no dropout modules to the traced graph
    dtype: torch.dtype = torch.float16  # Problem 3: 16-bit floats everywhere

    def __post_init__(self) -> None:
        try:
            norm = NormPlacement(str(self.norm).lower())
        except ValueError:
            raise ModelError(f"unknown norm {self.norm!r}; choose post or pre") from None
        object.__setattr__(self, "norm", norm)
        object.__setattr__(self, "dtype", parse_dtype(self.dtype))
        check_options(self)
        if self.emb % self.heads:
            raise ModelError(
                f"emb {self.emb} is not divisible by heads {self.heads}: each head gets emb/heads"
            )
        if not (isinstance(self.dropout, int | float) and 0.0 <= self.dropout < 1.0):
            raise ModelError(f"dropout must be in [0, 1), got {self.dropout!r}")
        object.__setattr__(self, "ffn", self.ffn or 4 * self.emb)
        object.__setattr__(self, "src_len", self.src_len or self.seq_len)
        object.__setattr__(self, "tgt_len", self.tgt_len or self.seq_len)

    @property
    def head_dim(self) -> int:
        """D = emb / heads, the size of each head's queries, keys and values."""
        return self.emb // self.heads

    def input_specs(self) -> tuple[InputSpec, InputSpec]:
        """The example inputs ``src`` and ``tgt``: embedded features, or token ids with vocab."""
        if self.vocab is None:
            return (
                InputSpec("src", (self.batch, self.src_len, self.emb), self.dtype),
                InputSpec("tgt", (self.batch, self.tgt_len, self.emb), self.dtype),
            )
        return (
            InputSpec("src", (self.batch, self.src_len), torch.int64, high=self.vocab),
            InputSpec("tgt", (self.batch, self.tgt_len), torch.int64, high=self.vocab),
        )

    def to_dict(self) -> dict[str, Any]:
        """The effective configuration, JSON-ready (dtype and norm as strings)."""
        return {
            "emb": self.emb,
            "heads": self.heads,
            "head_dim": self.head_dim,
            "ffn": self.ffn,
            "enc_layers": self.enc_layers,
            "dec_layers": self.dec_layers,
            "src_len": self.src_len,
            "tgt_len": self.tgt_len,
            "batch": self.batch,
            "vocab": self.vocab,
            "norm": self.norm.value,
            "dropout": self.dropout,
            "dtype": str(self.dtype).removeprefix("torch."),
        }


def sinusoid_table(length: int, emb: int) -> Tensor:
    """PE[pos, 2i] = sin(pos / 10000^(2i/E)), PE[pos, 2i+1] = cos(same) (paper, section 3.5)."""
    if torch.get_default_device().type == "meta":
        # A meta tensor holds no values, only the shape: computing them would change nothing
        # but cost a second (PyTorch's meta arange is a Python decomposition that imports sympy).
        return torch.empty(length, emb)
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)  # (L, 1)
    two_i = torch.arange(0, emb, 2, dtype=torch.float32)  # (ceil(E/2),)
    angles = position / torch.pow(10000.0, two_i / emb)  # (L, ceil(E/2))
    table = torch.zeros(length, emb)  # (L, E)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles[:, : emb // 2])  # an odd E has one cosine fewer
    return table


@torch.fx.wrap
def causal_mask(t_q: int, t_k: int, device: torch.device) -> Tensor:
    """A bool (T_q, T_k) mask, True where key position > query position (the future).

    Wrapped for torch.fx: its sizes come from the runtime scores, which a symbolic trace cannot
    turn into ``torch.ones`` arguments, so the trace records one call to this function instead.
    It takes the sizes, not the scores: it reads no data, so no tensor flows into it.
    """
    return torch.ones(t_q, t_k, dtype=torch.bool, device=device).triu(1)  # (T_q, T_k)


class PositionalEncoding(nn.Module):
    """Adds the fixed sinusoidal encoding of each position (buffer ``pe``, not trained)."""

    def __init__(self, max_len: int, emb: int, dropout: float = 0.0) -> None:
        super().__init__()
        # A constant the constructor rebuilds exactly, so it is not saved with the weights.
        self.register_buffer("pe", sinusoid_table(max_len, emb), persistent=False)  # (L, E)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None

    def forward(self, x: Tensor) -> Tensor:  # (B, T, E)
        # narrow, not a slice: fx can record a method call whose length is traced, not a slice.
        x = x + self.pe.narrow(0, 0, x.size(1))  # (B, T, E)
        if self.dropout is not None:  # fixed at construction, not data-dependent
            x = self.dropout(x)
        return x


class TokenEmbedding(nn.Module):
    """Token ids -> vectors: the table ``lookup`` scaled by sqrt(emb) (paper, section 3.4)."""

    def __init__(self, vocab: int, emb: int) -> None:
        super().__init__()
        self.lookup = nn.Embedding(vocab, emb)
        self.scale = math.sqrt(emb)

    def forward(self, ids: Tensor) -> Tensor:  # (B, T) int64
        return self.lookup(ids) * self.scale  # (B, T, E)


class ScaledScores(nn.Module):
    """Q K^T / sqrt(D): each query against each key, per head."""

    def __init__(self, head_dim: int) -> None:
        super().__init__()
        self.divisor = math.sqrt(head_dim)

    def forward(self, q: Tensor, k: Tensor) -> Tensor:  # (B, H, T_q, D), (B, H, T_k, D)
        return torch.matmul(q, k.transpose(-2, -1)) / self.divisor  # (B, H, T_q, T_k)


class CausalMask(nn.Module):
    """Sets the scores of future keys to -inf, so softmax gives them zero weight."""

    def forward(self, scores: Tensor) -> Tensor:  # (B, H, T_q, T_k)
        mask = causal_mask(scores.size(-2), scores.size(-1), scores.device)  # (T_q, T_k)
        return scores.masked_fill(mask, float("-inf"))


class WeightedValues(nn.Module):
    """The attention weights times V: each query's weighted sum of the values, per head."""

    def forward(self, weights: Tensor, v: Tensor) -> Tensor:  # (B, H, T_q, T_k), (B, H, T_k, D)
        return torch.matmul(weights, v)  # (B, H, T_q, D)


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention (paper, section 3.2), one module per step."""

    def __init__(self, emb: int, heads: int, causal: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = emb // heads
        self.q_proj = nn.Linear(emb, emb)  # all heads' W^Q side by side
        self.k_proj = nn.Linear(emb, emb)
        self.v_proj = nn.Linear(emb, emb)
        self.scores = ScaledScores(self.head_dim)
        self.mask = CausalMask() if causal else None
        self.softmax = nn.Softmax(dim=-1)
        self.context = WeightedValues()
        self.out_proj = nn.Linear(emb, emb)  # W^O

    def split_heads(self, x: Tensor) -> Tensor:  # (B, T, E)
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)  # (B, H, T, D)

    def forward(self, query: Tensor, memory: Tensor) -> Tensor:  # (B, T_q, E), (B, T_k, E)
        q = self.split_heads(self.q_proj(query))  # (B, H, T_q, D)
        k = self.split_heads(self.k_proj(memory))  # (B, H, T_k, D)
        v = self.split_heads(self.v_proj(memory))  # (B, H, T_k, D)
        scores = self.scores(q, k)  # (B, H, T_q, T_k)
        if self.mask is not None:  # fixed at construction, not data-dependent
            scores = self.mask(scores)
        weights = self.softmax(scores)  # (B, H, T_q, T_k)
        context = self.context(weights, v)  # (B, H, T_q, D)
        merged = context.transpose(1, 2).flatten(2)  # (B, T_q, E): heads side by side again
        return self.out_proj(merged)  # (B, T_q, E)


class FeedForward(nn.Module):
    """Position-wise FFN(x) = max(0, x W1 + b1) W2 + b2 (paper, section 3.3)."""

    def __init__(self, emb: int, ffn: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(emb, ffn)
        self.activation = nn.ReLU()
        self.linear2 = nn.Linear(ffn, emb)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, E)
        return self.linear2(self.activation(self.linear1(x)))  # (B, T, F) inside, (B, T, E) out


class AddNorm(nn.Module):
    """Post-norm "Add & Norm": LayerNorm(x + Sublayer(x)), with residual dropout when set."""

    def __init__(self, emb: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.norm = nn.LayerNorm(emb)

    def forward(self, x: Tensor, sublayer_out: Tensor) -> Tensor:  # (B, T, E) both
        if self.dropout is not None:
            sublayer_out = self.dropout(sublayer_out)
        return self.norm(x + sublayer_out)  # (B, T, E)


class Residual(nn.Module):
    """Pre-norm's residual add: x + Sublayer(LayerNorm(x)), with residual dropout when set."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None

    def forward(self, x: Tensor, sublayer_out: Tensor) -> Tensor:  # (B, T, E) both
        if self.dropout is not None:
            sublayer_out = self.dropout(sublayer_out)
        return x + sublayer_out  # (B, T, E)


class EncoderLayer(nn.Module):
    """Self-attention then feed-forward, each wrapped in a residual and a LayerNorm."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        emb, p = config.emb, config.dropout
        self.pre_norm = config.norm is NormPlacement.PRE
        # Registration order is the order of computation, so listings read like the figure.
        if self.pre_norm:
            self.norm1 = nn.LayerNorm(emb)
        self.self_attn = MultiHeadAttention(emb, config.heads)
        if self.pre_norm:
            self.add1 = Residual(p)
            self.norm2 = nn.LayerNorm(emb)
        else:
            self.add_norm1 = AddNorm(emb, p)
        self.ffn = FeedForward(emb, config.ffn)
        if self.pre_norm:
            self.add2 = Residual(p)
        else:
            self.add_norm2 = AddNorm(emb, p)

    def forward(self, x: Tensor) -> Tensor:  # (B, S, E)
        if self.pre_norm:  # fixed at construction, not data-dependent
            h = self.norm1(x)  # (B, S, E)
            x = self.add1(x, self.self_attn(h, h))  # (B, S, E)
            return self.add2(x, self.ffn(self.norm2(x)))  # (B, S, E)
        x = self.add_norm1(x, self.self_attn(x, x))  # (B, S, E)
        return self.add_norm2(x, self.ffn(x))  # (B, S, E)


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention over the memory, feed-forward; each with add+norm."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        emb, p = config.emb, config.dropout
        self.pre_norm = config.norm is NormPlacement.PRE
        if self.pre_norm:
            self.norm1 = nn.LayerNorm(emb)
        self.self_attn = MultiHeadAttention(emb, config.heads, causal=True)
        if self.pre_norm:
            self.add1 = Residual(p)
            self.norm2 = nn.LayerNorm(emb)
        else:
            self.add_norm1 = AddNorm(emb, p)
        self.cross_attn = MultiHeadAttention(emb, config.heads)
        if self.pre_norm:
            self.add2 = Residual(p)
            self.norm3 = nn.LayerNorm(emb)
        else:
            self.add_norm2 = AddNorm(emb, p)
        self.ffn = FeedForward(emb, config.ffn)
        if self.pre_norm:
            self.add3 = Residual(p)
        else:
            self.add_norm3 = AddNorm(emb, p)

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:  # (B, T, E), (B, S, E)
        if self.pre_norm:  # fixed at construction, not data-dependent
            h = self.norm1(x)  # (B, T, E)
            x = self.add1(x, self.self_attn(h, h))  # (B, T, E)
            x = self.add2(x, self.cross_attn(self.norm2(x), memory))  # (B, T, E)
            return self.add3(x, self.ffn(self.norm3(x)))  # (B, T, E)
        x = self.add_norm1(x, self.self_attn(x, x))  # (B, T, E)
        x = self.add_norm2(x, self.cross_attn(x, memory))  # (B, T, E)
        return self.add_norm3(x, self.ffn(x))  # (B, T, E)


class Encoder(nn.Module):
    """``layers`` encoder layers, plus a final ``norm`` for pre-norm stacks."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.enc_layers))
        self.norm = nn.LayerNorm(config.emb) if config.norm is NormPlacement.PRE else None

    def forward(self, x: Tensor) -> Tensor:  # (B, S, E)
        for layer in self.layers:  # a fixed number of layers: traces as straight-line code
            x = layer(x)  # (B, S, E)
        if self.norm is not None:
            x = self.norm(x)
        return x


class Decoder(nn.Module):
    """``layers`` decoder layers over the encoder's memory, plus a final ``norm`` for pre-norm."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.dec_layers))
        self.norm = nn.LayerNorm(config.emb) if config.norm is NormPlacement.PRE else None

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:  # (B, T, E), (B, S, E)
        for layer in self.layers:
            x = layer(x, memory)  # (B, T, E)
        if self.norm is not None:
            x = self.norm(x)
        return x


class Transformer(nn.Module):
    """The encoder-decoder Transformer of :class:`TransformerConfig`, in ``config.dtype``."""

    def __init__(self, config: TransformerConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or TransformerConfig()
        vocab = config.vocab
        self.src_embed = TokenEmbedding(vocab, config.emb) if vocab else None
        self.src_pos = PositionalEncoding(config.src_len, config.emb, config.dropout)
        self.encoder = Encoder(config)
        self.tgt_embed = TokenEmbedding(vocab, config.emb) if vocab else None
        self.tgt_pos = PositionalEncoding(config.tgt_len, config.emb, config.dropout)
        self.decoder = Decoder(config)
        self.generator = nn.Linear(config.emb, vocab) if vocab else None
        self.reset_parameters()
        self.to(config.dtype)

    def reset_parameters(self) -> None:
        """Xavier-uniform projection weights (as nn.Transformer), embeddings N(0, 1/emb).

        The embedding's scale makes a scaled lookup (times sqrt(emb)) about unit-sized, like the
        positional encoding it is added to. On the meta device these are no-ops.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=self.config.emb**-0.5)

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:  # (B, S[, E]), (B, T[, E])
        if self.src_embed is not None:  # fixed at construction: token ids or features
            src = self.src_embed(src)  # (B, S, E)
        memory = self.encoder(self.src_pos(src))  # (B, S, E)
        if self.tgt_embed is not None:
            tgt = self.tgt_embed(tgt)  # (B, T, E)
        out = self.decoder(self.tgt_pos(tgt), memory)  # (B, T, E)
        if self.generator is not None:
            out = self.generator(out)  # (B, T, vocab): logits
        return out


def _dims(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def _merge_input_shapes(options: dict[str, Any], shapes: Sequence[Sequence[int]]) -> dict[str, Any]:
    """Fold ``--input`` shapes into the options; a disagreement with a given option is an error."""
    if len(shapes) != 2:
        raise ModelError(
            f"transformer takes two inputs, src and tgt (e.g. --input 1x128x256,1x128x256), "
            f"got {len(shapes)} shapes"
        )
    src, tgt = (tuple(s) for s in shapes)
    with_vocab = options.get("vocab") is not None
    layout = "batch x length (token ids)" if with_vocab else "batch x length x emb"
    for name, shape in (("src", src), ("tgt", tgt)):
        if len(shape) != (2 if with_vocab else 3):
            raise ModelError(f"transformer {name} shape must be {layout}, got {_dims(shape)}")
    if src[0] != tgt[0]:
        raise ModelError(f"src and tgt batch sizes differ: {_dims(src)} vs {_dims(tgt)}")
    inferred = {"batch": src[0], "src_len": src[1], "tgt_len": tgt[1]}
    if not with_vocab:
        if src[2] != tgt[2]:
            raise ModelError(f"src and tgt emb sizes differ: {_dims(src)} vs {_dims(tgt)}")
        inferred["emb"] = src[2]
    merged = dict(options)
    for key, value in inferred.items():
        option, given = key, options.get(key)
        if given is None and key in ("src_len", "tgt_len"):
            option, given = "seq_len", options.get("seq_len")
        if given is not None and given != value:
            flag = "--" + option.replace("_", "-")
            what = key.replace("_", " ")
            raise ModelError(f"--input gives {what} {value}, but {flag} is {given}")
        merged[key] = value
    return merged


@register(
    "transformer",
    "Encoder-decoder Transformer of Vaswani et al. 2017, from scratch, fp16",
    TransformerConfig,
)
def build_transformer(
    input_shapes: Sequence[Sequence[int]] | None = None, **options: Any
) -> BuiltModel:
    """The transformer of the options (see :class:`TransformerConfig`; None means default).

    ``input_shapes``, when given, are the src and tgt shapes: they set batch, lengths (and emb
    without vocab) where those options are not given, and must agree with them where they are.
    """
    reject_unknown("transformer", TransformerConfig, options)
    given = {k: v for k, v in options.items() if v is not None}
    if input_shapes:
        given = _merge_input_shapes(given, input_shapes)
    config = TransformerConfig(**given)
    return BuiltModel("transformer", Transformer(config), config.input_specs(), config.to_dict())

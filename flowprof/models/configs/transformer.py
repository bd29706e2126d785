"""The transformer's options (:class:`TransformerConfig`) and its entry in the model catalog.

Declared here, apart from the network (:mod:`flowprof.models.transformer`), so that listing the
models and checking their options imports no torch; :func:`parse_dtype` imports it when a config
is constructed, which is when a model is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from flowprof.errors import ModelError
from flowprof.models.catalog import register
from flowprof.models.config import TEXT, check_options, option

if TYPE_CHECKING:
    import torch


class NormPlacement(StrEnum):
    """Where each sublayer's LayerNorm sits."""

    POST = "post"  # LayerNorm(x + Sublayer(x)): the paper's
    PRE = "pre"  # x + Sublayer(LayerNorm(x)): what most later models use


# The names a dtype may be given by -> torch's name of it (names only: declaring the model must
# not import torch).
_DTYPES = {
    "fp16": "float16",
    "float16": "float16",
    "half": "float16",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp32": "float32",
    "float32": "float32",
    "float": "float32",
    "fp64": "float64",
    "float64": "float64",
}


def parse_dtype(value: torch.dtype | str) -> torch.dtype:
    """A floating dtype from a ``torch.dtype`` or a name such as ``"fp16"``, ``"bf16"``."""
    import torch  # (here: declaring the model must not load torch; a config is made to build)

    if isinstance(value, torch.dtype):
        if not value.is_floating_point:
            raise ModelError(f"the transformer needs a floating dtype, got {value}")
        return value
    name = _DTYPES.get(str(value).lower().removeprefix("torch."))
    if name is None:
        raise ModelError(f"unknown dtype {value!r}; use fp16, bf16 or fp32")
    return getattr(torch, name)


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
    # Problem 3: 16-bit floats everywhere; a name here, a torch.dtype once constructed
    dtype: torch.dtype | str = "fp16"

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


register(
    "transformer",
    "Encoder-decoder Transformer of Vaswani et al. 2017, from scratch, fp16",
    TransformerConfig,
    "flowprof.models.transformer:build_transformer",
)

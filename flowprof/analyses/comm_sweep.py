"""Bits communicated between consecutive computing blocks of the transformer as a model
dimension grows (docs/assignment.md Problem 3b).

:func:`sweep` builds the model for each value of one swept option (``emb``, or ``seq_len``),
traces it on the meta device with every floating tensor accounted at ``dtype`` (fp16: 16 bits),
and sums the bits on every edge of the block graph, edge by edge, into edge *families*.

Consecutive computing blocks
----------------------------
By default (``depth=None``) a block is a leaf unit: one call of a leaf module (``q_proj``,
``softmax``, ``norm``, ``linear1`` ...) or one computing function call (``scores.matmul``, the
residual ``add``): every computing step is a block, and every tensor passed from one step to the
next is an edge. ``depth=3`` gives sublayer blocks (``self_attn``, ``add_norm1``, ``ffn``),
``depth=2`` whole layers, ``depth=1`` the encoder and the decoder. An edge is one (producer,
consumer) pair: a tensor read by four consumers is four edges (point-to-point transfers), and the
total per forward pass is the sum over edges. ``distinct_bits`` counts each tensor once.

Edge families (the classification rule)
---------------------------------------
A block's *role* is the last component of its name that names a step of the transformer
(``scores.matmul`` -> scores, ``add_norm1.norm`` -> norm, ``self_attn`` -> attention; the
``@k`` suffix of repeated calls is dropped). Rules, first match wins:

1. from a model input -> ``model input``; into the model output -> ``model output``;
2. from a block inside ``encoder`` to one inside ``decoder`` -> ``encoder memory`` (the
   memory read by cross-attention's K and V projections);
3. out of the causal-mask function -> ``causal mask`` (the bool mask; the function takes the
   scores' sizes, not the scores);
4. from q_proj / k_proj / v_proj -> ``Q/K/V projections``;
5. from scores or the mask's masked_fill -> ``attention scores`` (pre-softmax);
6. from softmax -> ``attention weights``;
7. from context (weights @ V, per head) -> ``attention context``;
8. from linear1 or the FFN activation -> ``feed-forward hidden``;
9. from out_proj, linear2, or a whole attention / FFN block -> ``sublayer output``;
10. from a token embedding -> ``token embedding``;
11. from a positional encoding, residual add, LayerNorm, or a whole layer / stack ->
    ``residual stream``;
12. anything else -> ``other`` (none for the transformer; the tests assert it).

Closed forms
------------
With B = batch, S / T = source / target length, E = emb, H = heads, F = d_ff, L_e / L_d =
encoder / decoder layers, V = vocabulary and w = bits per element, each family's bits are
(number of edges) x (elements per edge) x w, e.g. a residual-stream edge of the encoder carries
B*S*E*w bits, an attention-scores edge of the decoder's self-attention B*H*T*T*w (independent of
E), a feed-forward hidden edge B*S*F*w. :func:`closed_forms` writes them as code, per depth and
norm placement, and every :class:`SweepPoint` compares them with the traced sums (``mismatches``).
The weights each block must load are its parameters' bits (:attr:`Block.param_bits`), grouped
into attention projections, feed-forward, layer norm, embeddings and generator, each with its
closed form (e.g. 4*(E*E + E)*w per attention). Constant buffers (the positional-encoding
table) are not weights and are not counted.

:func:`explain` turns a sweep into sentences computed from its numbers (growth exponents,
crossovers), so the report's explanation cannot drift from the data.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from flowprof.errors import BadSpecError


class Family(StrEnum):
    """Edge families, in report order."""

    INPUT = "model input"
    EMBEDDING = "token embedding"
    RESIDUAL = "residual stream"
    QKV = "Q/K/V projections"
    SCORES = "attention scores"
    MASK = "causal mask"
    WEIGHTS = "attention weights"
    CONTEXT = "attention context"
    SUBLAYER = "sublayer output"
    FFN_HIDDEN = "feed-forward hidden"
    MEMORY = "encoder memory"
    OUTPUT = "model output"
    OTHER = "other"


class WeightGroup(StrEnum):
    """Groups of the parameters blocks load, in report order."""

    ATTENTION = "attention projections"
    FFN = "feed-forward"
    NORM = "layer norm"
    EMBEDDING = "embedding tables"
    GENERATOR = "generator"
    OTHER = "other weights"


class Variable(StrEnum):
    """The option a sweep varies."""

    EMB = "emb"
    SEQ_LEN = "seq_len"


# --- roles and families ---------------------------------------------------------------------

# Name components -> role; a block's role is the last component of its name found here.
_ROLES = {
    "q_proj": "qkv",
    "k_proj": "qkv",
    "v_proj": "qkv",
    "scores": "scores",
    "causal_mask": "mask_fn",
    "mask": "mask",
    "softmax": "softmax",
    "context": "context",
    "out_proj": "out_proj",
    "linear1": "ffn_hidden",
    "activation": "ffn_hidden",
    "linear2": "linear2",
    "self_attn": "attention",
    "cross_attn": "attention",
    "ffn": "ffn",
    "src_embed": "embed",
    "tgt_embed": "embed",
    "src_pos": "residual",
    "tgt_pos": "residual",
    "generator": "generator",
    "encoder": "residual",
    "decoder": "residual",
    "layers": "residual",
}
_RESIDUAL_PART = re.compile(r"^(add|norm|add_norm|residual)\d*$")


def role(name: str) -> str:
    """The role of a block from its name (see the module docstring), or "" if none."""
    if name.startswith("input:"):
        return "input"
    if name.startswith("output:"):
        return "output"
    parts = [p.split("@")[0] for p in name.split(".")]
    for part in reversed(parts):
        if part in _ROLES:
            return _ROLES[part]
        if _RESIDUAL_PART.match(part):
            return "residual"
    return ""


def _side(name: str) -> str:
    return name.split(".", 1)[0]


def classify(src: str, dst: str) -> Family:
    """The family of an edge from block ``src`` to block ``dst`` (rules in the module doc)."""
    rs, rd = role(src), role(dst)
    if rs == "input":
        return Family.INPUT
    if rd == "output":
        return Family.OUTPUT
    if _side(src) == "encoder" and _side(dst) == "decoder":
        return Family.MEMORY
    if "mask_fn" in (rs, rd):
        return Family.MASK
    by_source = {
        "qkv": Family.QKV,
        "scores": Family.SCORES,
        "mask": Family.SCORES,
        "softmax": Family.WEIGHTS,
        "context": Family.CONTEXT,
        "ffn_hidden": Family.FFN_HIDDEN,
        "out_proj": Family.SUBLAYER,
        "linear2": Family.SUBLAYER,
        "attention": Family.SUBLAYER,
        "ffn": Family.SUBLAYER,
        "embed": Family.EMBEDDING,
        "residual": Family.RESIDUAL,
    }
    return by_source.get(rs, Family.OTHER)


def weight_group(name: str) -> WeightGroup:
    """The weight group of a leaf block's parameters."""
    r = role(name)
    if r in ("qkv", "out_proj"):
        return WeightGroup.ATTENTION
    if r in ("ffn_hidden", "linear2"):
        return WeightGroup.FFN
    if r == "residual":
        return WeightGroup.NORM
    if r == "embed":
        return WeightGroup.EMBEDDING
    if r == "generator":
        return WeightGroup.GENERATOR
    return WeightGroup.OTHER


# --- closed forms ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Dims:
    """The transformer's sizes a closed form depends on; ``bits`` per floating element."""

    batch: int
    src_len: int
    tgt_len: int
    emb: int
    heads: int
    ffn: int
    enc_layers: int
    dec_layers: int
    vocab: int | None = None
    norm: str = "post"
    bits: int = 16

    @classmethod
    def of(cls, config: Mapping[str, Any], bits: int) -> Dims:
        """From a transformer's config (``BuiltModel.config``)."""
        return cls(
            batch=config["batch"],
            src_len=config["src_len"],
            tgt_len=config["tgt_len"],
            emb=config["emb"],
            heads=config["heads"],
            ffn=config["ffn"],
            enc_layers=config["enc_layers"],
            dec_layers=config["dec_layers"],
            vocab=config.get("vocab"),
            norm=str(config.get("norm", "post")),
            bits=bits,
        )

    @property
    def pre(self) -> bool:
        return self.norm == "pre"


@dataclass(frozen=True)
class Term:
    """``count`` edges (or tensors) of ``elements`` elements at ``bits`` each, with symbols."""

    count: int
    count_text: str
    elements: int
    elements_text: str
    bits: int

    @property
    def total(self) -> int:
        return self.count * self.elements * self.bits

    def text(self) -> str:
        return f"{self.count_text} x {self.elements_text}*{self.bits}"


@dataclass(frozen=True)
class ClosedForm:
    """A family's (or weight group's) bits as a sum of terms."""

    name: str
    terms: tuple[Term, ...]

    @property
    def bits(self) -> int:
        return sum(t.total for t in self.terms)

    def text(self) -> str:
        """E.g. ``8*Le x B*S*E*16 + 11*Ld x B*T*E*16``; "0" when the family has no edge."""
        live = [t for t in self.terms if t.count]
        return " + ".join(t.text() for t in live) or "0"


def closed_forms(d: Dims, depth: int | None = None) -> dict[Family, ClosedForm] | None:
    """Each edge family's bits as written-out arithmetic, for the transformer at ``depth``.

    Supported: depth None (leaf units), 4, 3, 2 and 1, post- and pre-norm, with or without a
    vocabulary. Returns None for another depth.
    """
    if depth not in (None, 1, 2, 3, 4):
        return None
    w = d.bits
    b, s, t, e, h, ff = d.batch, d.src_len, d.tgt_len, d.emb, d.heads, d.ffn
    le, ld, v = d.enc_layers, d.dec_layers, d.vocab
    hs, ht = (b * s * e, "B*S*E"), (b * t * e, "B*T*E")
    ass, att, ats = (
        (b * h * s * s, "B*H*S*S"),
        (b * h * t * t, "B*H*T*T"),
        (b * h * t * s, "B*H*T*S"),
    )
    fs, ft = (b * s * ff, "B*S*F"), (b * t * ff, "B*T*F")

    def term(n: tuple[int, str], size: tuple[int, str], bits: int = w) -> Term:
        return Term(n[0], n[1], size[0], size[1], bits)

    leafish = depth is None or depth == 4  # attention steps are separate blocks
    forms: dict[Family, list[Term]] = {f: [] for f in Family}

    # Inputs: embedded features, or int64 token ids with a vocabulary.
    if v is None:
        forms[Family.INPUT] = [term((1, "1"), hs), term((1, "1"), ht)]
        forms[Family.OUTPUT] = [term((1, "1"), ht)]
    else:
        forms[Family.INPUT] = [
            term((1, "1"), (b * s, "B*S"), 64),
            term((1, "1"), (b * t, "B*T"), 64),
        ]
        forms[Family.OUTPUT] = [term((1, "1"), (b * t * v, "B*T*V"))]
        # lookup -> scale -> positional add; at depth 1 the embedding is one block
        k = (1, "1") if depth == 1 else (2, "2")
        forms[Family.EMBEDDING] = [term(k, hs), term(k, ht)]

    # Residual stream: edges per layer (encoder, decoder) and per stack (final norms), by depth.
    per_layer = {
        # depth: (post enc, post dec, pre enc, pre dec)
        None: (8, 11, 8, 11),
        4: (8, 11, 8, 11),
        3: (4, 6, 6, 9),
        2: (1, 1, 1, 1),
        1: (0, 0, 0, 0),
    }[depth]
    enc_n, dec_n = per_layer[2:] if d.pre else per_layer[:2]
    # Pre-norm's final LayerNorm of each stack adds one edge into it (below depth 1).
    final = 1 if d.pre and depth != 1 else 0
    if depth == 1:  # positional encoding -> stack, and nothing else inside
        forms[Family.RESIDUAL] = [term((1, "1"), hs), term((1, "1"), ht)]
    else:
        forms[Family.RESIDUAL] = [
            term((enc_n * le + final, f"({enc_n}*Le + 1)" if final else f"{enc_n}*Le"), hs),
            term((dec_n * ld + final, f"({dec_n}*Ld + 1)" if final else f"{dec_n}*Ld"), ht),
        ]
    if v is not None:  # last hidden state -> generator
        forms[Family.RESIDUAL].append(term((1, "1"), ht))

    # Encoder memory into the decoder: cross-attention's k_proj and v_proj read it (two edges
    # per decoder layer at leaf depth; one value per decoder layer or stack above).
    if depth in (None, 4):
        forms[Family.MEMORY] = [term((2 * ld, "2*Ld"), hs)]
    elif depth in (3, 2):
        forms[Family.MEMORY] = [term((ld, "Ld"), hs)]
    else:
        forms[Family.MEMORY] = [term((1, "1"), hs)]

    # Sublayer outputs into the residual add: out_proj (or the attention block) and linear2 (or
    # the FFN block); 2 per encoder layer, 3 per decoder layer; inside a layer above depth 3.
    if depth in (None, 4, 3):
        forms[Family.SUBLAYER] = [term((2 * le, "2*Le"), hs), term((3 * ld, "3*Ld"), ht)]

    if leafish:
        forms[Family.QKV] = [
            term((3 * le, "3*Le"), hs),  # encoder self-attention: q, k, v of the source
            term((4 * ld, "4*Ld"), ht),  # decoder: self q, k, v and cross q of the target
            term((2 * ld, "2*Ld"), hs),  # cross-attention k, v of the memory
        ]
        forms[Family.WEIGHTS] = [
            term((le, "Le"), ass),
            term((ld, "Ld"), att),
            term((ld, "Ld"), ats),
        ]
        forms[Family.CONTEXT] = [term((le, "Le"), hs), term((2 * ld, "2*Ld"), ht)]
        forms[Family.FFN_HIDDEN] = [term((2 * le, "2*Le"), fs), term((2 * ld, "2*Ld"), ft)]
        if depth is None:
            # matmul -> divide -> softmax (encoder, cross); the decoder's self-attention has
            # matmul -> divide -> masked_fill -> softmax.
            forms[Family.SCORES] = [
                term((2 * le, "2*Le"), ass),
                term((3 * ld, "3*Ld"), att),
                term((2 * ld, "2*Ld"), ats),
            ]
            # The bool mask the mask function makes (it reads only the scores' sizes).
            forms[Family.MASK] = [term((ld, "Ld"), (t * t, "T*T"), 8)]
        else:
            # scores -> softmax, and in the decoder scores -> mask -> softmax.
            forms[Family.SCORES] = [
                term((le, "Le"), ass),
                term((2 * ld, "2*Ld"), att),
                term((ld, "Ld"), ats),
            ]
    return {f: ClosedForm(f.value, tuple(terms)) for f, terms in forms.items()}


def weight_closed_forms(d: Dims) -> dict[WeightGroup, ClosedForm]:
    """Parameter bits of each weight group as written-out arithmetic."""
    w, e, ff, le, ld, v = d.bits, d.emb, d.ffn, d.enc_layers, d.dec_layers, d.vocab
    attentions = (le + 2 * ld, "(Le + 2*Ld)")  # self-attention per layer, cross per decoder
    norms = (2 * le + 3 * ld + (2 if d.pre else 0), "(2*Le + 3*Ld" + (" + 2)" if d.pre else ")"))
    forms = {
        # q, k, v, out: E*E weights + E biases each
        WeightGroup.ATTENTION: [
            Term(attentions[0], attentions[1], 4 * (e * e + e), "4*(E*E + E)", w)
        ],
        # linear1 E*F + F, linear2 F*E + E
        WeightGroup.FFN: [Term(le + ld, "(Le + Ld)", 2 * e * ff + ff + e, "(2*E*F + F + E)", w)],
        # gain and shift per LayerNorm
        WeightGroup.NORM: [Term(norms[0], norms[1], 2 * e, "2*E", w)],
        WeightGroup.EMBEDDING: [],
        WeightGroup.GENERATOR: [],
        WeightGroup.OTHER: [],
    }
    if v is not None:
        forms[WeightGroup.EMBEDDING] = [Term(2, "2", v * e, "V*E", w)]
        forms[WeightGroup.GENERATOR] = [Term(1, "1", v * e + v, "(V*E + V)", w)]
    return {g: ClosedForm(g.value, tuple(terms)) for g, terms in forms.items()}


# --- results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EdgeBits:
    """One traced edge, with its family."""

    src: str
    dst: str
    family: Family
    shape: str
    bits: int


@dataclass(frozen=True)
class Amount:
    """A family's (or weight group's) traced bits, how many edges (or blocks) carry them, and the
    closed form's bits (None where no closed form is defined)."""

    name: str
    items: int
    bits: int
    closed_form_bits: int | None = None
    closed_form: str = ""

    @property
    def matches(self) -> bool | None:
        return None if self.closed_form_bits is None else self.closed_form_bits == self.bits

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "items": self.items,
            "bits": self.bits,
            "closed_form_bits": self.closed_form_bits,
            "closed_form": self.closed_form,
            "matches": self.matches,
        }


@dataclass(frozen=True)
class BlockLoad:
    """A block's traffic: the bits it receives and sends on edges, and the weight bits it loads."""

    name: str
    kind: str
    input_bits: int
    output_bits: int
    weight_bits: int

    @property
    def weight_dominated(self) -> bool:
        """True when loading its weights moves more bits than the activations it receives."""
        return self.weight_bits > self.input_bits

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "input_bits": self.input_bits,
            "output_bits": self.output_bits,
            "weight_bits": self.weight_bits,
        }


@dataclass(frozen=True)
class SweepPoint:
    """One configuration of a sweep: its bits by edge family and by weight group."""

    value: int  # the swept option's value
    config: Mapping[str, Any]
    families: tuple[Amount, ...]  # every Family, in order (zero where the model has none)
    weights: tuple[Amount, ...]  # every WeightGroup, in order
    blocks: tuple[BlockLoad, ...]
    edges: tuple[EdgeBits, ...]
    distinct_bits: int  # each tensor value sent once per producer group

    def family(self, name: Family | str) -> Amount:
        return next(a for a in self.families if a.name == Family(name).value)

    def weight(self, name: WeightGroup | str) -> Amount:
        return next(a for a in self.weights if a.name == WeightGroup(name).value)

    @property
    def activation_bits(self) -> int:
        """Bits on all edges of one forward pass."""
        return sum(a.bits for a in self.families)

    @property
    def weight_bits(self) -> int:
        """Bits of all parameters, each loaded once per forward pass."""
        return sum(a.bits for a in self.weights)

    @property
    def total_bits(self) -> int:
        return self.activation_bits + self.weight_bits

    def mismatches(self) -> list[str]:
        """One line per family or weight group whose traced bits differ from the closed form."""
        return [
            f"{self.value}: {a.name}: traced {a.bits} bits, closed form {a.closed_form_bits}"
            for a in (*self.families, *self.weights)
            if a.matches is False
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "config": dict(self.config),
            "activation_bits": self.activation_bits,
            "distinct_activation_bits": self.distinct_bits,
            "weight_bits": self.weight_bits,
            "total_bits": self.total_bits,
            "families": [a.to_dict() for a in self.families],
            "weights": [a.to_dict() for a in self.weights],
            "blocks": [b.to_dict() for b in self.blocks],
            "edges": [
                {
                    "src": e.src,
                    "dst": e.dst,
                    "family": e.family.value,
                    "shape": e.shape,
                    "bits": e.bits,
                }
                for e in self.edges
            ],
        }


@dataclass(frozen=True)
class Sweep:
    """Bits per edge family and weight bits for each value of the swept option."""

    model: str
    variable: Variable
    depth: int | None
    dtype: str
    bits_per_element: int
    options: Mapping[str, Any]  # the options held fixed
    points: tuple[SweepPoint, ...] = field(default_factory=tuple)
    # how the points were made: "formula" (evaluated from one formula, checked by tracing at
    # ``checked_at``) or "traced" (one trace per point); ``method_note`` says which and why
    method: str = "traced"
    method_note: str = ""
    checked_at: tuple[int, ...] = ()
    traces: int = 0  # traces made

    @property
    def values(self) -> list[int]:
        return [p.value for p in self.points]

    def families(self) -> list[Family]:
        """The families with bits at some point of the sweep, in report order."""
        return [f for f in Family if any(p.family(f).bits for p in self.points)]

    def weight_groups(self) -> list[WeightGroup]:
        return [g for g in WeightGroup if any(p.weight(g).bits for p in self.points)]

    def series(self, family: Family | str) -> list[int]:
        """A family's bits at each point."""
        return [p.family(family).bits for p in self.points]

    def activation_series(self) -> list[int]:
        return [p.activation_bits for p in self.points]

    def weight_series(self) -> list[int]:
        return [p.weight_bits for p in self.points]

    def mismatches(self) -> list[str]:
        """Every family whose traced bits differ from its closed form, at every point."""
        return [line for p in self.points for line in p.mismatches()]

    @property
    def checked(self) -> bool:
        """True when closed forms exist at this depth (and so were compared)."""
        return all(a.matches is not None for p in self.points for a in p.families)

    def unclassified(self) -> list[EdgeBits]:
        """Edges that fell into the ``other`` family."""
        return [e for p in self.points for e in p.edges if e.family is Family.OTHER]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "variable": self.variable.value,
            "values": self.values,
            "depth": self.depth,
            "dtype": self.dtype,
            "bits_per_element": self.bits_per_element,
            "options": dict(self.options),
            "closed_forms_checked": self.checked,
            "mismatches": self.mismatches(),
            "points": [p.to_dict() for p in self.points],
            "explanation": explain(self),
        }

    def to_csv(self) -> str:
        """One row per (point, family or weight group), plus totals; exact integers."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        keys = ("emb", "seq_len", "src_len", "tgt_len", "batch", "heads", "ffn")
        writer.writerow(
            [*keys, "what", "name", "items", "bits", "closed_form_bits", "matches", "closed_form"]
        )
        for p in self.points:
            base = [p.config.get(k) for k in keys]
            for what, amounts in (("activations", p.families), ("weights", p.weights)):
                for a in amounts:
                    match = "" if a.matches is None else str(a.matches).lower()
                    cf = "" if a.closed_form_bits is None else a.closed_form_bits
                    writer.writerow(
                        [*base, what, a.name, a.items, a.bits, cf, match, a.closed_form]
                    )
            writer.writerow(
                [*base, "activations", "all", len(p.edges), p.activation_bits, "", "", ""]
            )
            writer.writerow([*base, "weights", "all", len(p.blocks), p.weight_bits, "", "", ""])
            writer.writerow([*base, "total", "all", "", p.total_bits, "", "", ""])
        return out.getvalue()


# --- sweeping -------------------------------------------------------------------------------

# The embedding sizes, and sequence lengths for the seq_len picture: powers of two from a
# sentence fragment to a long document, all tracing in about 0.1 s each on meta.
DEFAULT_EMBS = (64, 128, 256, 512, 1024, 2048, 4096)
DEFAULT_SEQ_LENS = (16, 32, 64, 128, 256, 512, 1024)
# The emb of the seq_len sweep: Problem 3's embedding size.
SEQ_SWEEP_EMB = 256


def _as_values(value: int | Sequence[int] | None) -> list[int] | None:
    if value is None or isinstance(value, int):
        return None
    return [int(v) for v in value]


# --- the law, derived by flowprof.formula ---------------------------------------------------

# The formula's name of each swept option of a built-in model, and the other option shown held.
_SYMBOL = {Variable.EMB: ("emb", "seq_len"), Variable.SEQ_LEN: ("seq", "emb")}


@dataclass(frozen=True)
class SweepLaw:
    """The bits-versus-``variable`` law of a sweep: exact polynomials in the swept option,
    derived by :func:`flowprof.formula` from traces of the sweep's model with its other options
    as the sweep holds them (``held`` names the other of emb and seq_len, for the text), and
    checked against every traced point of the sweep (integer equality of the activation bits,
    the weight bits and every family's bits)."""

    formula: Any  # the Formula (totals and families) in ``variable``
    held: Mapping[str, int]  # e.g. {"seq_len": 128} for an emb sweep ({} if not known)
    variable: str  # the formula's name of the swept option
    activations: Any  # sympy expressions in ``variable``
    weights: Any
    families: Mapping[str, Any]
    checked: int  # the sweep's points compared
    mismatches: tuple[str, ...]  # one line per disagreement (none expected)

    @property
    def agrees(self) -> bool:
        return self.checked > 0 and not self.mismatches


def law(sw: Sweep, verify: int = 1) -> SweepLaw:
    """Derive ``sw``'s law with :func:`flowprof.formula` (checked at ``verify`` random points of
    its own) and check it at every point of the sweep, which :func:`sweep` with
    ``method="trace"`` traced (else the check is against the sweep's own formula)."""
    from flowprof.analyses.formula import formula, quantities

    user = ":" in sw.model  # (a user's factory: its own argument names)
    var, other = (sw.variable.value, "") if user else _SYMBOL[sw.variable]
    options = {k: v for k, v in sw.options.items() if k != sw.variable.value}

    def totals(graph: Any) -> dict[tuple[str, str, str], int]:  # (no block's, no edge's)
        return {k: n for k, n in quantities(graph, True).items() if k[0] not in ("block", "edge")}

    f = formula(
        sw.model, [var], dtype=sw.dtype, depth=sw.depth, verify=verify, measure=totals, **options
    )
    config = sw.points[0].config
    held = {other: int(config[other])} if other and config.get(other) is not None else {}
    families = {
        fam.value: f.expr("family", fam.value, "bits")
        for fam in Family
        if ("family", fam.value, "bits") in {w.key for w in f.laws}
        and any(p.family(fam).items for p in sw.points)
    }
    mismatches = []
    for p in sw.points:
        value = {var: p.value}
        pairs = [("activations", f.activation_bits, p.activation_bits)]
        pairs.append(("weights", f.weight_bits, p.weight_bits))
        pairs += [(name, expr, p.family(name).bits) for name, expr in families.items()]
        for name, expr, traced in pairs:
            derived = f.evaluate(expr, **value)
            if derived != traced:
                mismatches.append(f"{var} {p.value}: {name}: law {derived}, traced {traced}")
    return SweepLaw(
        f, held, var, f.activation_bits, f.weight_bits, families, len(sw.points), tuple(mismatches)
    )


class Method(StrEnum):
    """How :func:`sweep` makes its points."""

    AUTO = "auto"  # from one formula where it can, else traced (saying why)
    FORMULA = "formula"  # from one formula, or an error saying why it cannot
    TRACE = "trace"  # one trace per point


# The sweep's points checked by tracing when they come from a formula: at most this many.
VERIFY_POINTS = 3
# Fewer points than this are traced (a formula needs 3 traces to fit a quadratic and 1 to check).
FORMULA_FROM_POINTS = 4


def sweep(
    model: str = "transformer",
    *,
    emb: int | Sequence[int] | None = None,
    seq_len: int | Sequence[int] | None = None,
    depth: int | None = None,
    dtype: str = "fp16",
    method: Method | str = Method.AUTO,
    **options: Any,
) -> Sweep:
    """The bits of ``model`` at each value of ``emb`` or of ``seq_len`` (exactly one is a list).

    Other ``options`` (heads, ffn, enc_layers, ...) are passed to the model as given; with no
    ``ffn`` the transformer's default 4*emb applies at every point. ``depth`` picks the blocks
    (None: leaf units, see the module docstring).

    ``method``: ``auto`` (default) derives one formula of every number a point holds (each
    edge's bits and shape, each block's weight bits, ...) with :func:`flowprof.formula`, checks
    it by tracing at up to :data:`VERIFY_POINTS` of the sweep's points (the largest, the middle,
    the smallest outside the fitting grid: integer equality of every number), and evaluates it
    at every point. It traces each point instead, and says why in :attr:`Sweep.method_note`,
    where that cannot be done (a number not polynomial in the swept option, a block graph whose
    structure changes with it) or would not save traces (fewer
    than :data:`FORMULA_FROM_POINTS` points). ``trace`` traces each point; ``formula`` refuses
    to fall back. The points are the same either way.

    Raises BadSpecError for an empty or ambiguous sweep; the registry's ModelError for a
    configuration the model refuses.
    """
    from flowprof.tracer.graph import Precision

    emb_values, seq_values = _as_values(emb), _as_values(seq_len)
    if (emb_values is None) == (seq_values is None):
        raise BadSpecError("sweep exactly one of emb and seq_len over a list of values")
    variable = Variable.EMB if emb_values is not None else Variable.SEQ_LEN
    values = emb_values if emb_values is not None else seq_values
    if not values or any(v < 1 for v in values) or len(set(values)) != len(values):
        raise BadSpecError(f"sweep values must be distinct positive integers, got {values}")
    try:
        method = Method(method)
    except ValueError:
        raise BadSpecError(f"method is one of {', '.join(m.value for m in Method)}") from None
    precision = Precision.parse(dtype)
    fixed = {k: v for k, v in options.items() if v is not None}
    held = {"emb": emb, "seq_len": seq_len}
    fixed |= {k: v for k, v in held.items() if k != variable.value and v is not None}
    values = sorted(values)
    result = Sweep(model, variable, depth, precision.value, precision.bits, fixed)
    why = "asked to trace each point"
    if method is Method.AUTO and len(values) < FORMULA_FROM_POINTS:
        method, why = (
            Method.TRACE,
            f"fewer points than the {FORMULA_FROM_POINTS} traces of a formula",
        )
    if method is not Method.TRACE:
        try:
            return _from_formula(result, values)
        except _NoFormula as exc:
            if method is Method.FORMULA:
                raise BadSpecError(f"no formula for this sweep: {exc}") from None
            why = str(exc)
    points = [_traced_point(result, value) for value in values]
    return replace(
        result,
        points=tuple(points),
        method="traced",
        method_note=f"traced each of the {len(points)} points ({why})",
        traces=len(points),
    )


def _point_options(sw: Sweep, value: int) -> dict[str, Any]:
    return sw.options | {sw.variable.value: value}


def _config(built_config: Mapping[str, Any]) -> dict[str, Any]:
    config = dict(built_config)
    if config.get("src_len") is not None and config.get("src_len") == config.get("tgt_len"):
        config["seq_len"] = config["src_len"]  # the shared length, for tables and CSV
    return config


def _traced_point(sw: Sweep, value: int) -> SweepPoint:
    from flowprof.models import registry
    from flowprof.tracer import trace

    built = registry.build(sw.model, device="meta", **_point_options(sw, value))
    graph = trace(built.module, built.example_inputs("meta"), dtype=sw.dtype)
    return _point(
        value, _config(built.config), _observe(graph, sw.depth), sw.depth, sw.bits_per_element
    )


class _NoFormula(Exception):
    """Why a sweep's points cannot come from one formula (then they are traced)."""


@dataclass(frozen=True)
class _Observed:
    """The numbers a SweepPoint is made of, from one trace (or evaluated from a formula)."""

    # (src, dst, the shape of each tensor, bits) of each edge between the blocks at the depth
    edges: tuple[tuple[str, str, tuple[tuple[int, ...], ...], int], ...]
    blocks: tuple[tuple[str, str, int], ...]  # (name, kind, param bits) of each block
    weights: tuple[tuple[str, int], ...]  # (name, param bits) of each leaf block with params
    distinct_bits: int

    def numbers(self) -> dict[tuple[str, str, str], int]:
        """Every number, by a key that names its place (the same at every point)."""
        out = {("distinct", "model", "bits"): self.distinct_bits}
        for i, (_, _, shapes, bits) in enumerate(self.edges):
            out[("edge", str(i), "bits")] = bits
            for j, shape in enumerate(shapes):
                for k, n in enumerate(shape):
                    out[("edge", str(i), f"shape {j}.{k}")] = n
        for i, (_, _, bits) in enumerate(self.blocks):
            out[("block", str(i), "param_bits")] = bits
        for i, (_, bits) in enumerate(self.weights):
            out[("weights", str(i), "param_bits")] = bits
        return out

    def skeleton(self) -> tuple:
        """Everything but the numbers: names, kinds, tensors per edge and their ranks."""
        return (
            tuple((s, d, tuple(len(x) for x in shapes)) for s, d, shapes, _ in self.edges),
            tuple((n, k) for n, k, _ in self.blocks),
            tuple(n for n, _ in self.weights),
        )

    def with_numbers(self, q: Mapping[tuple[str, str, str], int]) -> _Observed:
        """This structure with the numbers ``q`` (keys of :meth:`numbers`)."""
        edges = tuple(
            (
                src,
                dst,
                tuple(
                    tuple(q[("edge", str(i), f"shape {j}.{k}")] for k in range(len(shape)))
                    for j, shape in enumerate(shapes)
                ),
                q[("edge", str(i), "bits")],
            )
            for i, (src, dst, shapes, _) in enumerate(self.edges)
        )
        blocks = tuple(
            (n, kind, q[("block", str(i), "param_bits")])
            for i, (n, kind, _) in enumerate(self.blocks)
        )
        weights = tuple(
            (n, q[("weights", str(i), "param_bits")]) for i, (n, _) in enumerate(self.weights)
        )
        return _Observed(edges, blocks, weights, q[("distinct", "model", "bits")])


def _observe(leaf: Any, depth: int | None) -> _Observed:
    graph = leaf if depth is None else leaf.by_block(depth)
    return _Observed(
        tuple(
            (e.src, e.dst, tuple(tuple(t.shape) for t in e.tensors), e.bits) for e in graph.edges()
        ),
        tuple((b.name, b.kind, b.param_bits) for b in graph.blocks()),
        tuple((b.name, b.param_bits) for b in leaf.blocks() if b.params),
        sum(b.activation_bits for b in graph.blocks(include_io=True)),
    )


class _Recorder:
    """The formula's measure: a trace's numbers (:meth:`_Observed.numbers`), keeping the first
    trace's structure and noting whether any later one differs, and the configs traced."""

    def __init__(self, depth: int | None) -> None:
        self.depth = depth
        self.first: _Observed | None = None
        self.differs = False
        self.configs: list[dict[str, Any]] = []

    def __call__(self, graph: Any) -> dict[tuple[str, str, str], int]:
        seen = _observe(graph, self.depth)
        if self.first is None:
            self.first = seen
        elif seen.skeleton() != self.first.skeleton():
            self.differs = True
        self.configs.append(_config(graph.meta.get("config", {})))
        return seen.numbers()


def _config_at(sw: Sweep, value: int) -> dict[str, Any]:
    """The model's configuration at a point: a built-in model's from its config dataclass, a
    user's from a build (no trace either way); raises the ModelError a build would for a value
    the model refuses."""
    from flowprof.models import catalog, registry

    options = _point_options(sw, value)
    if ":" in sw.model or not hasattr(catalog.entry(sw.model).config, "to_dict"):
        return _config(registry.build(sw.model, device="meta", **options).config)
    catalog.check(sw.model, options)
    return _config(catalog.entry(sw.model).config(**options).to_dict())


def _from_formula(sw: Sweep, values: list[int]) -> Sweep:
    from flowprof.analyses.formula import formula
    from flowprof.errors import BadInputError, UnsupportedModelError

    # (a user's factory takes seq_len by its own name; the built-in models' dimension is seq)
    var = sw.variable.value if ":" in sw.model else _SYMBOL[sw.variable][0]
    configs = [_config_at(sw, v) for v in values]  # (a refused value fails here, as a build)
    chosen = list(dict.fromkeys(values[i] for i in (-1, len(values) // 2, 0)))
    chosen = chosen[:VERIFY_POINTS]
    recorder = _Recorder(sw.depth)
    try:
        f = formula(
            sw.model,
            [var],
            dtype=sw.dtype,
            verify=1,
            verify_at=[{var: v} for v in chosen],
            measure=recorder,
            **sw.options,
        )
    except (BadInputError, UnsupportedModelError) as exc:
        raise _NoFormula(f"no formula in {var}: {exc}") from None
    except Exception as exc:  # (the model refused a value of the fitting grid, not the sweep's)
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise _NoFormula(
            f"tracing at the formula's own points failed: {type(exc).__name__}: {line}"
        ) from None
    assert recorder.first is not None
    if recorder.differs:
        raise _NoFormula(f"the block graph's structure changes with {var}")
    keys = recorder.first.numbers()
    laws = {w.key: w for w in f.laws}
    missing = [k for k in keys if k not in laws or laws[k].expr is None]
    if missing:
        k = missing[0]
        raise _NoFormula(f"{k[0]} {k[1]} {k[2]} is not polynomial in {var}")
    checked = tuple(sorted(p[var] for p in f.verified_at))
    by_value = dict(zip(values, configs, strict=True))
    for config in recorder.configs:  # the configuration evaluated equals the one built
        v = config.get(sw.variable.value)
        if v in by_value and by_value[v] != config:
            raise _NoFormula(f"the configuration at {var} {v} differs from the model's")
    points = []
    for value, config in zip(values, configs, strict=True):
        numbers = f.values(**{var: value})
        seen = recorder.first.with_numbers(numbers)
        points.append(_point(value, config, seen, sw.depth, sw.bits_per_element))
    at = ", ".join(map(str, checked))
    return replace(
        sw,
        points=tuple(points),
        method="formula",
        method_note=(
            f"evaluated from one formula in {var} fitted on {f.traces} traces; every number "
            f"checked by tracing at {var} {at}: equal"
        ),
        checked_at=checked,
        traces=f.traces,
    )


def _point(
    value: int, config: Mapping[str, Any], seen: _Observed, depth: int | None, bits: int
) -> SweepPoint:
    transformer = {"emb", "heads", "enc_layers", "dec_layers"} <= set(config)
    dims = Dims.of(config, bits) if transformer else None
    forms = closed_forms(dims, depth) if dims else None
    wforms = weight_closed_forms(dims) if dims else None

    edges = tuple(
        EdgeBits(src, dst, classify(src, dst), "+".join(_shape(x) for x in shapes), n)
        for src, dst, shapes, n in seen.edges
    )

    def amount(name: str, count: int, bits: int, form: ClosedForm | None) -> Amount:
        return Amount(name, count, bits, form.bits if form else None, form.text() if form else "")

    families = []
    for fam in Family:
        members = [e for e in edges if e.family is fam]
        total = sum(e.bits for e in members)
        families.append(amount(fam.value, len(members), total, forms[fam] if forms else None))
    # Weight groups from the leaf blocks, whatever the depth: a sublayer block mixes groups.
    weights = []
    for group in WeightGroup:
        members = [n for name, n in seen.weights if weight_group(name) is group]
        weights.append(
            amount(group.value, len(members), sum(members), wforms[group] if wforms else None)
        )
    received: dict[str, int] = {}
    sent: dict[str, int] = {}
    for e in edges:
        received[e.dst] = received.get(e.dst, 0) + e.bits
        sent[e.src] = sent.get(e.src, 0) + e.bits
    blocks = tuple(
        BlockLoad(name, kind, received.get(name, 0), sent.get(name, 0), param_bits)
        for name, kind, param_bits in seen.blocks
    )
    return SweepPoint(
        value, config, tuple(families), tuple(weights), blocks, edges, seen.distinct_bits
    )


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape) or "scalar"  # (TensorMeta.shape_str)


# --- the explanation, generated from the numbers --------------------------------------------

_PREFIXES = ((10**12, "T"), (10**9, "G"), (10**6, "M"), (10**3, "k"))


def _bits(n: float) -> str:
    for scale, prefix in _PREFIXES:
        if abs(n) >= scale:
            return f"{n / scale:.3g} {prefix}bit"
    return f"{n:.0f} bit"


def _edges(n: int) -> str:
    return f"{n} edge" if n == 1 else f"{n} edges"


def slope(values: Sequence[int], bits: Sequence[int]) -> float | None:
    """The log-log slope between the first and last points (None if either has no bits)."""
    if len(values) < 2 or bits[0] <= 0 or bits[-1] <= 0:
        return None
    return math.log(bits[-1] / bits[0]) / math.log(values[-1] / values[0])


def growth(exponent: float | None, variable: str) -> str:
    """A log-log slope in words: independent, linear, quadratic, or ``variable^k``."""
    if exponent is None:
        return "absent at some points"
    words_of = {0: f"does not depend on {variable}", 1: "grows linearly", 2: "grows quadratically"}
    for target, words in words_of.items():
        if abs(exponent - target) < 0.05:
            return words if target == 0 else f"{words} with {variable}"
    return f"grows as {variable}^{exponent:.2f}"


def _dims_at(sw: Sweep, value: float) -> Dims | None:
    """The closed forms' sizes with the swept option set to ``value`` (ffn follows emb when the
    sweep did not fix it)."""
    config = dict(sw.points[0].config)
    if not {"emb", "heads", "enc_layers", "dec_layers"} <= set(config):
        return None
    if sw.variable is Variable.EMB:
        config["emb"] = value
        if "ffn" not in sw.options:
            config["ffn"] = 4 * value
    else:
        config["src_len"] = sw.options.get("src_len", value)
        config["tgt_len"] = sw.options.get("tgt_len", value)
    return Dims.of(config, sw.bits_per_element)


def closed_form_totals(sw: Sweep, value: float) -> tuple[float, float] | None:
    """(activation bits, weight bits) by the closed forms at ``value`` of the swept option."""
    dims = _dims_at(sw, value)
    forms = closed_forms(dims, sw.depth) if dims else None
    if forms is None:
        return None
    activations = sum(f.bits for f in forms.values())
    return activations, sum(f.bits for f in weight_closed_forms(dims).values())


def crossover(sw: Sweep, hi: int = 1 << 22) -> int | None:
    """The smallest integer value of the swept option at which weight bits and activation bits
    swap places, by the closed forms (None without closed forms or without a crossing)."""

    def weights_lead(v: int) -> bool:
        totals = closed_form_totals(sw, v)
        assert totals is not None
        return totals[1] > totals[0]

    if closed_form_totals(sw, 1) is None:
        return None
    lo, first = 1, weights_lead(1)
    if weights_lead(hi) == first:
        return None
    while hi - lo > 1:  # invariant: weights_lead(lo) == first != weights_lead(hi)
        mid = (lo + hi) // 2
        if weights_lead(mid) == first:
            lo = mid
        else:
            hi = mid
    return hi


def explain(sw: Sweep) -> list[str]:
    """Sentences about the sweep, every number in them computed from it."""
    if not sw.points:
        return []
    var = sw.variable.value
    vals = sw.values
    first, last = sw.points[0], sw.points[-1]
    blocks = "leaf computing units" if sw.depth is None else f"blocks at depth {sw.depth}"
    held = ", ".join(f"{k} {v}" for k, v in sorted(sw.options.items())) or "model defaults"
    lines = [
        f"{sw.model}, {var} swept over {', '.join(map(str, vals))} ({held}); blocks are {blocks}; "
        f"{sw.dtype}: {sw.bits_per_element} bits per floating element; an edge is one "
        f"producer-to-consumer transfer ({len(first.edges)} edges per forward pass)."
    ]
    if len(vals) >= 2:
        acts = sw.activation_series()
        lines.append(
            f"Activations on all edges: {_bits(acts[0])} at {var} {vals[0]} -> "
            f"{_bits(acts[-1])} at {var} {vals[-1]}; {growth(slope(vals, acts), var)} overall "
            f"(log-log slope {slope(vals, acts):.2f})."
        )
    by_growth: dict[str, list[str]] = {}
    for fam in sw.families():
        series = sw.series(fam)
        s = slope(vals, series)
        amount = last.family(fam)
        per = f" = {amount.closed_form}" if amount.closed_form else ""
        if len(vals) >= 2:
            words = growth(s, var)
            by_growth.setdefault(words, []).append(fam.value)
            lines.append(
                f"{fam.value} ({_edges(amount.items)}{per}): {_bits(series[0])} -> "
                f"{_bits(series[-1])}, {words} (slope {s:.2f})."
                if s is not None
                else f"{fam.value}: {words}."
            )
        else:
            lines.append(f"{fam.value} ({_edges(amount.items)}{per}): {_bits(series[0])}.")
    for words, names in by_growth.items():
        verb = words.replace("grows", "grow").replace("does", "do")
        lines.append(f"Families that {verb}: {', '.join(names)}.")

    for point in (first, last) if len(vals) >= 2 else (first,):
        top = max(point.families, key=lambda a: a.bits)
        share = top.bits / point.activation_bits if point.activation_bits else 0.0
        lines.append(
            f"At {var} {point.value} the largest family is {top.name}: {_bits(top.bits)}, "
            f"{share:.0%} of the {_bits(point.activation_bits)} of activations."
        )

    weights = sw.weight_series()
    if len(vals) >= 2 and weights[0] > 0:
        s_all = slope(vals, weights)
        s_end = slope(vals[-2:], weights[-2:])
        lines.append(
            f"Weights loaded (all parameters once): {_bits(weights[0])} -> {_bits(weights[-1])}, "
            f"{growth(s_all, var)} overall (slope {s_all:.2f}; {s_end:.2f} over the last step)."
        )
    lines.extend(_dominance(sw))
    lines.extend(_block_dominance(sw))
    mism = sw.mismatches()
    if not sw.checked:
        lines.append(f"No closed forms at depth {sw.depth}: traced numbers only.")
    elif mism:
        lines.append(f"Closed forms disagree with the trace in {len(mism)} cases: {mism[0]} ...")
    else:
        n = len(sw.families()) + len(sw.weight_groups())
        lines.append(
            f"The closed forms agree with the traced bits for all {n} families and weight groups "
            f"at all {len(vals)} points."
        )
    return lines


def _dominance(sw: Sweep) -> list[str]:
    var = sw.variable.value
    lead = [p.weight_bits > p.activation_bits for p in sw.points]
    lines = []
    for p, w_leads in zip(sw.points, lead, strict=True):
        if p is sw.points[0] or p is sw.points[-1]:
            ratio = p.weight_bits / p.activation_bits if p.activation_bits else math.inf
            side = "exceed" if w_leads else "are below"
            lines.append(
                f"At {var} {p.value} weights ({_bits(p.weight_bits)}) {side} activations "
                f"({_bits(p.activation_bits)}): ratio {ratio:.3g}."
            )
    changes = [i for i in range(1, len(lead)) if lead[i] != lead[i - 1]]
    exact = crossover(sw)
    if changes:
        i = changes[0]
        who = "weights" if lead[i] else "activations"
        where = f"between {var} {sw.values[i - 1]} and {sw.values[i]}"
        lines.append(
            f"Crossover {where}: from there on {who} dominate the traffic"
            + (f"; by the closed forms from {var} = {exact} on." if exact else ".")
        )
    elif exact is not None:
        lines.append(f"By the closed forms weights and activations cross at {var} = {exact}.")
    return lines


def _block_dominance(sw: Sweep) -> list[str]:
    var = sw.variable.value
    lines = []
    counts = []
    for p in sw.points:
        weighted = [b for b in p.blocks if b.weight_bits]
        counts.append((sum(b.weight_dominated for b in weighted), len(weighted)))
    if not counts or counts[0][1] == 0:
        return lines
    parts = [f"{k} of {n} at {var} {v}" for (k, n), v in zip(counts, sw.values, strict=True)]
    lines.append(
        "Blocks whose weights outweigh the activations they receive: " + ", ".join(parts) + "."
    )
    full = next((v for (k, n), v in zip(counts, sw.values, strict=True) if k == n), None)
    if full is not None:
        lines.append(f"From {var} {full} on, every block with weights is weight-dominated.")
    last = sw.points[-1]
    below: dict[str, int] = {}
    for b in last.blocks:
        if b.weight_bits and not b.weight_dominated:
            below[b.kind] = below.get(b.kind, 0) + 1
    if below:
        kinds = ", ".join(f"{n} {kind}" for kind, n in below.items())
        lines.append(
            f"At {var} {last.value} the blocks whose inputs still outweigh their weights: {kinds}."
        )
    return lines

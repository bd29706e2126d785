"""Counts as closed-form formulas of a model's dimensions, derived from concrete traces.

``formula("transformer", ["emb", "seq"])`` returns, for every count the tracer gives (macs,
multiplications, additions and the other kinds; params; the bits of every edge), an exact sympy
polynomial in the named dimensions: per block, per edge, in total, and for the transformer per
edge family of the communication sweep (:mod:`flowprof.analyses.comm_sweep`).

Method: exact interpolation over concrete traces
------------------------------------------------
Symbolic shapes were the other candidate; stock modules defeat them (``nn.Linear(d, 4*d)`` fixes
``d`` when it creates its weight, ``nn.LayerNorm`` refuses a SymInt), so every model would need
rewriting. Interpolation needs nothing of the model: it reuses the tracer as it is.

1. **Degree bound per dimension.** Every count of a layer is a product of sizes, so it is a
   polynomial in each dimension, of bounded degree: ``emb`` <= 2 (a linear layer's E x E weight,
   and with ``ffn`` following emb, E x 4E), ``seq`` / ``src`` / ``tgt`` <= 2 (the T x T scores),
   ``batch``, ``heads``, ``ffn``, ``layers``, ``vocab`` <= 1, an input's ``height`` or ``width``
   <= 1 (within one residue class, see below), ``size`` (both) <= 2, any other constructor
   argument <= 2 (:data:`DEGREES`).
2. **Trace a grid.** With degree d_i in dimension i, a tensor-product grid of d_i + 1 values per
   dimension (prod(d_i + 1) traces) determines a polynomial of those degrees exactly; the
   coefficients are solved for in exact rationals (Fractions; the Vandermonde matrix of the grid
   is inverted once and applied to every count).
3. **Verify.** Each formula is evaluated at ``verify`` further random points, never used for the
   fit, and compared with a trace there (integer equality). A count that disagrees makes every
   degree rise by one and the grid grow, up to ``degree + MAX_EXTRA_DEGREE``; a count still wrong
   then is reported as *not polynomial* in the dimensions (:attr:`Law.expr` is None and
   :attr:`Law.reason` says why), never given a wrong formula.

Domains. A value a model refuses is not drawn: ``emb`` is a multiple of ``heads`` (of every
``heads`` drawn, 1..8, when ``heads`` is a dimension too). Convolutions and pooling with stride
compute ``floor((H + 2p - k) / s) + 1``, which is not a polynomial in H; but within one residue
class ``H = P*m + c``, with P a multiple of the product of the strides along the way, every
floor is exact and the counts are polynomials. So spatial dimensions are fitted on such a family:
c is the model's default size modulo P, and P is searched (1, 2, 4, ..., 64, then the period
read off the model's layers when it is coarser: the product of its strides times the lcm of its
adaptive pools' output sizes, e.g. alexnet's 192; the first period at which every count verifies)
unless given. The formula then holds for H = c (mod P) only, and
:attr:`Formula.domains` says so. Writing the floors into the formula (the issue's wish) needs the
layer arithmetic symbolically; this module does not attempt it.

Blocks and edges are matched by name across traces. One that is not present at every point (e.g.
a layer that exists only when ``layers`` >= 3) has no formula of its own and is listed in
:attr:`Formula.varying`; the totals still have theirs.

The coefficients are rationals; a count is an integer at every point of the domain. For fast
sweeps (:meth:`Formula.sweep`), each formula is compiled once into integer arithmetic over a
common denominator, so a sweep stays exact.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

import sympy

from flowprof.errors import BadInputError, UnsupportedModelError
from flowprof.tracer.counts import KINDS

# Degree bound of the counts in each named dimension (see the module docstring).
DEGREES: dict[str, int] = {
    "emb": 2,
    "seq": 2,
    "seq_len": 2,
    "src": 2,
    "src_len": 2,
    "tgt": 2,
    "tgt_len": 2,
    "heads": 1,
    "ffn": 1,
    "layers": 1,
    "enc_layers": 1,
    "dec_layers": 1,
    "batch": 1,
    "vocab": 1,
    "height": 1,
    "width": 1,
    "size": 2,
}
DEFAULT_DEGREE = 2  # any other constructor argument
MAX_EXTRA_DEGREE = 2  # how far verification failures may raise the degrees
PERIODS = (1, 2, 4, 8, 16, 32, 64)  # spatial residue-class periods tried, in order
HEADS_RANGE = (1, 8)  # the heads drawn when heads is a dimension
# Symbol names of the built-in models' options.
ALIASES: dict[str, tuple[str, ...]] = {
    "seq": ("seq_len",),
    "src": ("src_len",),
    "tgt": ("tgt_len",),
    "layers": ("enc_layers", "dec_layers"),
}
# Dimensions of the first input's shape: batch (dim 0), height, width (the last two).
INPUT_DIMS: dict[str, tuple[int, ...]] = {
    "batch": (0,),
    "seq": (1,),  # token ids (batch, seq) of a user model
    "height": (-2,),
    "width": (-1,),
    "size": (-2, -1),
}
SPATIAL = ("height", "width", "size")
# An option missing from a model's configuration, and the one that holds its value.
_DEFAULT_FROM = {"seq_len": "src_len"}
# Count kinds of a block (OpCount's fields), then the other quantities.
BLOCK_QUANTITIES = (*KINDS, "params", "param_bits")
# Transformer block roles (comm_sweep.role) summed into the groups the crossovers compare.
ROLE_GROUPS = {
    "attention products": ("scores", "context"),
    "projections": ("qkv", "out_proj"),
}


@dataclass(frozen=True)
class Dimension:
    """A named dimension: values ``offset + step * m`` for integers m in [lo, hi]."""

    name: str
    degree: int
    targets: tuple[str, ...]  # the model options it sets; () for an input dimension
    input_axes: tuple[int, ...] = ()  # the first input's axes it sets
    step: int = 1
    offset: int = 0
    lo: int = 1
    hi: int = 64
    choices: tuple[int, ...] = ()  # a finite domain instead (m indexes it), e.g. emb's divisors

    def value(self, m: int) -> int:
        if self.choices:
            return self.choices[m]
        return self.offset + self.step * m

    def grid(self, degree: int) -> list[int]:
        return [self.value(self.lo + i) for i in range(degree + 1)]

    def draw(self, rng: random.Random) -> int:
        return self.value(rng.randint(self.lo, self.hi))

    def domain(self) -> str:
        if self.choices:
            return f"{self.name} in {{{', '.join(map(str, self.choices))}}}"
        if self.step == 1:
            return f"{self.name} >= {self.value(self.lo)}"
        return (
            f"{self.name} = {self.offset} (mod {self.step}), {self.name} >= {self.value(self.lo)}"
        )


@dataclass(frozen=True)
class Law:
    """One quantity's formula: ``scope`` (total, block, edge, family, group, weights,
    activations), ``name`` (the block, ``src -> dst``, the family ...), ``quantity`` (a count
    kind, params, param_bits, bits) and ``expr`` (None when it is not polynomial: ``reason``)."""

    scope: str
    name: str
    quantity: str
    expr: sympy.Expr | None
    reason: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.scope, self.name, self.quantity)


@dataclass(frozen=True)
class Crossover:
    """Where ``left`` first exceeds ``right`` as ``symbol`` grows (the others fixed)."""

    left: str
    right: str
    symbol: str
    fixed: Mapping[str, int]
    roots: tuple[sympy.Expr, ...]  # positive real roots of left - right
    first: int | None  # the smallest integer above the last root where left > right

    def describe(self, where: str = "") -> str:
        """One sentence; ``where`` names what is held (default: the fixed dimensions)."""
        at = where or ", ".join(f"{k}={v}" for k, v in self.fixed.items())
        if self.first is None and self.roots:
            on = f" on ({at})" if at else ""
            return (
                f"{self.left} <= {self.right} from {self.symbol} = {float(self.roots[-1]):.6g}{on}"
            )
        if self.first is None:
            on = f" ({at})" if at else ""
            return f"{self.left} and {self.right} do not cross as {self.symbol} grows{on}"
        roots = ", ".join(f"{sympy.nsimplify(r)} ~ {float(r):.6g}" for r in self.roots)
        on = f"{at}; " if at else ""
        return (
            f"{self.left} > {self.right} from {self.symbol} = {self.first} on ({on}"
            f"{self.left} = {self.right} at {self.symbol} = {roots})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "left": self.left,
            "right": self.right,
            "symbol": self.symbol,
            "fixed": dict(self.fixed),
            "roots": [str(r) for r in self.roots],
            "roots_float": [float(r) for r in self.roots],
            "first": self.first,
        }


@dataclass(frozen=True)
class Formula:
    """Every count of a model as a polynomial in its named dimensions (see the module doc)."""

    model: str
    dimensions: tuple[Dimension, ...]
    fixed: Mapping[str, Any]  # the model options and settings not varied
    laws: tuple[Law, ...]
    traces: int  # concrete traces made
    verified_at: tuple[Mapping[str, int], ...]  # the points every formula was checked at
    varying: tuple[str, ...] = ()  # blocks and edges not present at every point
    _index: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _compiled: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index.update({law.key: law for law in self.laws})

    # --- queries -----------------------------------------------------------------------------

    @property
    def symbols(self) -> tuple[sympy.Symbol, ...]:
        return tuple(symbol(d.name) for d in self.dimensions)

    @property
    def domains(self) -> dict[str, str]:
        return {d.name: d.domain() for d in self.dimensions}

    def law(self, scope: str, name: str, quantity: str) -> Law:
        try:
            return self._index[(scope, name, quantity)]
        except KeyError:
            raise BadInputError(f"no formula for {scope} {name!r} {quantity}") from None

    def expr(self, scope: str, name: str, quantity: str) -> sympy.Expr:
        law = self.law(scope, name, quantity)
        if law.expr is None:
            raise UnsupportedModelError(f"{scope} {name} {quantity}: {law.reason}")
        return law.expr

    def total(self, quantity: str = "macs") -> sympy.Expr:
        """The model's total of a count kind, ``params``, or ``param_bits``."""
        return self.expr("total", "model", quantity)

    def block(self, name: str, quantity: str = "macs") -> sympy.Expr:
        return self.expr("block", name, quantity)

    def edge(self, src: str, dst: str) -> sympy.Expr:
        """Bits of the edge from block ``src`` to block ``dst``."""
        return self.expr("edge", f"{src} -> {dst}", "bits")

    @property
    def weight_bits(self) -> sympy.Expr:
        """Bits of all parameters (each loaded once per forward pass)."""
        return self.expr("weights", "model", "bits")

    @property
    def activation_bits(self) -> sympy.Expr:
        """Bits on all edges of one forward pass."""
        return self.expr("activations", "model", "bits")

    def at(self, **values: int) -> Formula:
        """The formulas with some dimensions set (e.g. ``layers=32``): the others stay symbols.
        A law of a dimension fitted on few values holds at any value of it (it was verified at
        random ones), so a 32-layer model's law can come from traces of a few layers."""
        names = {d.name for d in self.dimensions}
        if not values or not set(values) < names:
            raise BadInputError(f"set some, not all, of {sorted(names)}; got {sorted(values)}")
        subs = {symbol(k): int(v) for k, v in values.items()}
        laws = tuple(
            w if w.expr is None else replace(w, expr=sympy.expand(w.expr.subs(subs)))
            for w in self.laws
        )
        return replace(
            self,
            dimensions=tuple(d for d in self.dimensions if d.name not in values),
            fixed={**self.fixed, **{k: int(v) for k, v in values.items()}},
            laws=laws,
        )

    def summary(self) -> Formula:
        """The same formulas without the per-block and per-edge ones."""
        return replace(self, laws=tuple(w for w in self.laws if w.scope not in ("block", "edge")))

    def non_polynomial(self) -> list[Law]:
        return [law for law in self.laws if law.expr is None]

    def evaluate(self, expr: sympy.Expr, **values: int) -> int:
        """``expr`` at the dimensions' ``values`` (all of them), as an exact integer."""
        value = sympy.sympify(expr).subs({symbol(k): v for k, v in values.items()})
        if not value.is_Rational:
            raise BadInputError(f"give every dimension a value: {value} is left")
        if value.q != 1:
            raise BadInputError(f"{values} is outside the formula's domain ({value} is no integer)")
        return int(value)

    def sweep(self, expr: sympy.Expr, points: Sequence[Mapping[str, int]]) -> list[int]:
        """``expr`` at each of ``points`` (mappings from dimension to value), exactly: the formula
        compiled once into integer arithmetic (a sweep of 10,000 points takes milliseconds)."""
        names = [d.name for d in self.dimensions]
        numerator, denominator = sympy.fraction(sympy.together(sympy.sympify(expr)))
        denominator = int(denominator)
        fn = sympy.lambdify([symbol(n) for n in names], sympy.expand(numerator), modules=[{}])
        out = []
        for p in points:
            n = int(fn(*(int(p[k]) for k in names)))
            if n % denominator:
                raise BadInputError(f"{dict(p)} is outside the formula's domain")
            out.append(n // denominator)
        return out

    def values(self, **values: int) -> dict[tuple[str, str, str], int]:
        """Every polynomial law at the dimensions' ``values`` (all of them), as exact integers, by
        key (laws that are not polynomial are left out). Each law is compiled once into integer
        coefficients over a common denominator, so a point costs no sympy."""
        names = [d.name for d in self.dimensions]
        if set(values) != set(names):
            raise BadInputError(f"give every dimension a value: {sorted(names)}")
        if not self._compiled:
            syms = [symbol(n) for n in names]
            for law in self.laws:
                if law.expr is None:
                    continue
                terms = sympy.Poly(law.expr, *syms).terms()
                den = math.lcm(*(int(sympy.Rational(c).q) for _, c in terms))
                self._compiled[law.key] = (
                    [(e, int(sympy.Rational(c) * den)) for e, c in terms],
                    den,
                )
        point = [int(values[n]) for n in names]
        out = {}
        for key, (terms, den) in self._compiled.items():
            n = sum(c * _monomial(point, e) for e, c in terms)
            if n % den:
                raise BadInputError(f"{values} is outside the formula's domain")
            out[key] = n // den
        return out

    def crossover(
        self, left: sympy.Expr | str, right: sympy.Expr | str, var: str, **fixed: int
    ) -> Crossover:
        """Solve ``left = right`` for dimension ``var`` with the other dimensions ``fixed``:
        the positive real roots, and the first integer above the last one where left > right.
        ``left`` and ``right`` are expressions or the names ``weights``, ``activations``,
        ``attention products`` and ``projections`` (macs) or a total's count kind."""
        names = {d.name for d in self.dimensions}
        if var not in names or set(fixed) != names - {var}:
            raise BadInputError(
                f"solve for one of {sorted(names)} and fix the others, "
                f"got {var} and {sorted(fixed)}"
            )
        exprs = [self._named(e) for e in (left, right)]
        x = symbol(var)
        diff = sympy.expand((exprs[0] - exprs[1]).subs({symbol(k): v for k, v in fixed.items()}))
        roots = sorted(
            (r for r in sympy.Poly(diff, x).real_roots() if r > 0), key=lambda r: float(r)
        )
        last = int(math.floor(roots[-1])) if roots else 0
        first = last + 1
        grows = sympy.limit(diff, x, sympy.oo) > 0 if diff.free_symbols else diff > 0
        ahead = diff.subs(x, first) > 0
        return Crossover(
            str(left),
            str(right),
            var,
            dict(fixed),
            tuple(roots),
            first if (roots and ahead and grows) else None,
        )

    def _named(self, e: sympy.Expr | str) -> sympy.Expr:
        if not isinstance(e, str):
            return sympy.sympify(e)
        if e in ("weights", "activations"):
            return self.expr(e, "model", "bits")
        if e in ROLE_GROUPS:
            return self.expr("group", e, "macs")
        return self.total(e)

    # --- output ------------------------------------------------------------------------------

    def crossovers(self) -> list[Crossover]:
        """The transformer's two standard crossovers, at the model's other dimensions fixed at
        their traced defaults: the emb where weights outweigh activations, the seq where
        attention products outweigh the projections' macs."""
        found = []
        names = [d.name for d in self.dimensions]
        for var, left, right in (
            ("emb", "weights", "activations"),
            ("seq", "attention products", "projections"),
        ):
            if var not in names or ("group", "projections", "macs") not in self._index:
                continue
            others = {n: self.default(n) for n in names if n != var}
            try:
                found.append(self.crossover(left, right, var, **others))
            except (UnsupportedModelError, BadInputError):
                continue
        return found

    def default(self, name: str) -> int:
        """The value the model has when the dimension is not varied (its configuration's)."""
        return int(self.fixed.get("defaults", {}).get(name, 1))

    def to_dict(self) -> dict[str, Any]:
        def text(law: Law) -> str | None:
            return None if law.expr is None else str(law.expr)

        by_scope: dict[str, dict[str, dict[str, str | None]]] = {}
        for law in self.laws:
            by_scope.setdefault(law.scope, {}).setdefault(law.name, {})[law.quantity] = text(law)
        return {
            "model": self.model,
            "symbols": [d.name for d in self.dimensions],
            "degrees": {d.name: d.degree for d in self.dimensions},
            "domains": self.domains,
            "fixed": {
                k: v if isinstance(v, (int, float, str, bool)) else str(v)
                for k, v in self.fixed.items()
                if k != "defaults"
            },
            "traces": self.traces,
            "verified_at": [dict(p) for p in self.verified_at],
            "totals": by_scope.get("total", {}).get("model", {}),
            "weight_bits": text(self.law("weights", "model", "bits")),
            "activation_bits": text(self.law("activations", "model", "bits")),
            "families": {k: v["bits"] for k, v in by_scope.get("family", {}).items()},
            "groups": {k: v["macs"] for k, v in by_scope.get("group", {}).items()},
            "blocks": [{"block": k, **v} for k, v in by_scope.get("block", {}).items()],
            "edges": [
                {"src": k.split(" -> ")[0], "dst": k.split(" -> ")[1], "bits": v["bits"]}
                for k, v in by_scope.get("edge", {}).items()
            ],
            "crossovers": [c.to_dict() for c in self.crossovers()],
            "non_polynomial": [
                {"scope": w.scope, "name": w.name, "quantity": w.quantity, "reason": w.reason}
                for w in self.non_polynomial()
            ],
            "varying": list(self.varying),
        }

    def lines(self, render: Callable[[sympy.Expr], str] = str) -> list[tuple[str, str]]:
        """(label, formula) rows, in order: totals, weights and activations, families, groups,
        blocks, edges. Zero counts of a block are left out; non-polynomial ones say so."""
        rows = []
        for law in self.laws:
            if law.expr is not None and law.expr == 0 and law.scope in ("block", "total"):
                continue
            label = law.quantity if law.scope == "total" else f"{law.name}: {law.quantity}"
            if law.scope in ("weights", "activations"):
                label = f"{law.scope} bits"
            formula = f"not polynomial ({law.reason})" if law.expr is None else render(law.expr)
            rows.append((f"[{law.scope}] {label}", formula))
        return rows

    def header(self) -> list[str]:
        dims = "; ".join(f"{d.name} (degree <= {d.degree}, {d.domain()})" for d in self.dimensions)
        fixed = ", ".join(f"{k}={v}" for k, v in self.fixed.items() if k != "defaults")
        return [
            f"{self.model}: counts as polynomials in {dims}",
            f"fixed: {fixed}" if fixed else "fixed: (nothing)",
            f"from {self.traces} traces; every formula checked exactly at "
            f"{len(self.verified_at)} further points",
        ]

    def to_text(self) -> str:
        out = self.header() + [""]
        out += [f"{label} = {formula}" for label, formula in self.lines()]
        out += [f"crossover: {c.describe()}" for c in self.crossovers()]
        if self.varying:
            shown = ", ".join(self.varying[:8]) + (", ..." if len(self.varying) > 8 else "")
            out.append(
                f"{len(self.varying)} blocks and edges are not at every point (no formula of "
                f"their own): {shown}"
            )
        return "\n".join(out) + "\n"

    def to_latex(self) -> str:
        """A LaTeX fragment: one ``align*`` row per formula (sympy's LaTeX)."""

        def tex(s: str) -> str:
            return s.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("&", r"\&")

        out = [f"% {line}" for line in self.header()]
        out.append(r"\begin{align*}")
        for label, formula in self.lines(sympy.latex):
            out.append(rf"\text{{{tex(label)}}} &= {formula} \\")
        out.append(r"\end{align*}")
        return "\n".join(out) + "\n"


def symbol(name: str) -> sympy.Symbol:
    """The sympy symbol of a dimension (a positive integer)."""
    return sympy.Symbol(name, positive=True, integer=True)


# --- fitting ---------------------------------------------------------------------------------


def _solve_inverse(matrix: list[list[Fraction]]) -> list[list[Fraction]]:
    """The inverse of a square matrix of rationals by Gauss-Jordan elimination (exact)."""
    n = len(matrix)
    a = [row[:] + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(matrix)]
    for col in range(n):
        pivot = next(r for r in range(col, n) if a[r][col] != 0)
        a[col], a[pivot] = a[pivot], a[col]
        p = a[col][col]
        a[col] = [v / p for v in a[col]]
        for r in range(n):
            if r != col and a[r][col] != 0:
                f = a[r][col]
                a[r] = [v - f * w for v, w in zip(a[r], a[col], strict=True)]
    return [row[n:] for row in a]


def _monomial(point: Sequence[int], exps: Sequence[int]) -> int:
    return math.prod(x**e for x, e in zip(point, exps, strict=True))


def fit(
    grid_points: Sequence[tuple[int, ...]],
    degrees: Sequence[int],
    columns: Mapping[Any, Sequence[int]],
) -> dict[Any, list[tuple[tuple[int, ...], Fraction]]]:
    """Per column (values at ``grid_points``, a tensor-product grid of ``degrees[i] + 1`` values
    per dimension), the exact coefficients of the polynomial through them: (exponents, coeff)."""
    exps = list(itertools.product(*(range(d + 1) for d in degrees)))
    vander = [[Fraction(_monomial(p, e)) for e in exps] for p in grid_points]
    inverse = _solve_inverse(vander)
    out = {}
    for key, ys in columns.items():
        coeffs = [sum(row[j] * ys[j] for j in range(len(ys)) if ys[j]) for row in inverse]
        out[key] = [(e, Fraction(c)) for e, c in zip(exps, coeffs, strict=True) if c]
    return out


def _at(terms: list[tuple[tuple[int, ...], Fraction]], point: Sequence[int]) -> Fraction:
    return sum((c * _monomial(point, e) for e, c in terms), Fraction(0))


def _expr(terms: list[tuple[tuple[int, ...], Fraction]], syms: Sequence[sympy.Symbol]):
    return sympy.Add(
        *(
            sympy.Rational(c.numerator, c.denominator)
            * sympy.Mul(*(s**k for s, k in zip(syms, e, strict=True)))
            for e, c in terms
        )
    )


# --- quantities of one trace -----------------------------------------------------------------


def quantities(g: Any, families: bool = False) -> dict[tuple[str, str, str], int]:
    """Every quantity of a BlockGraph that gets a formula, by (scope, name, quantity)."""
    from flowprof.analyses import comm_sweep

    q: dict[tuple[str, str, str], int] = {}
    total = g.total().to_dict()
    for kind in BLOCK_QUANTITIES[:-2]:
        q[("total", "model", kind)] = total[kind]
    q[("total", "model", "params")] = g.params()
    blocks = g.blocks()
    q[("total", "model", "param_bits")] = sum(b.param_bits for b in blocks)
    for b in blocks:
        counts = b.count.to_dict()
        for kind in BLOCK_QUANTITIES[:-2]:
            q[("block", b.name, kind)] = counts[kind]
        q[("block", b.name, "params")] = b.params
        q[("block", b.name, "param_bits")] = b.param_bits
    edges = g.edges()
    seen: dict[str, int] = {}
    for e in edges:
        name = f"{e.src} -> {e.dst}"
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:  # (a second edge between the same blocks: numbered)
            name = f"{name} #{seen[name]}"
        q[("edge", name, "bits")] = e.bits
    q[("weights", "model", "bits")] = sum(b.param_bits for b in blocks)
    q[("activations", "model", "bits")] = sum(e.bits for e in edges)
    if families:
        for fam in comm_sweep.Family:
            q[("family", fam.value, "bits")] = 0
        for e in edges:
            q[("family", comm_sweep.classify(e.src, e.dst).value, "bits")] += e.bits
        for group, roles in ROLE_GROUPS.items():
            q[("group", group, "macs")] = sum(
                b.count.macs for b in blocks if comm_sweep.role(b.name) in roles
            )
    return q


# --- the model at a point ----------------------------------------------------------------------


def _dimensions(
    model: Any,
    names: Sequence[str],
    option_names: set[str] | None,
    config: Mapping[str, Any],
    shape: tuple[int, ...] | None,
    degrees: Mapping[str, int],
    period: int | None,
) -> list[Dimension]:
    dims = []
    for name in names:
        degree = degrees.get(name, DEGREES.get(name, DEFAULT_DEGREE))
        # (a user factory's arguments are its own names: no aliases)
        targets = ALIASES.get(name, (name,)) if option_names is not None else (name,)
        if option_names is None or all(t in option_names for t in targets):
            if option_names is None and name in INPUT_DIMS:
                pass  # a user factory's input dimension (it has no such argument)
            else:
                dims.append(Dimension(name, degree, targets, lo=1, hi=64))
                continue
        if name not in INPUT_DIMS:
            known = set(option_names or ()) | set(INPUT_DIMS)
            known |= {a for a, ts in ALIASES.items() if all(t in known for t in ts)}
            raise BadInputError(
                f"{model} has no dimension {name!r}; it has {', '.join(sorted(known))}"
            )
        if shape is None:
            raise BadInputError(f"{name}: the model's input shape is unknown; give inputs")
        axes = INPUT_DIMS[name]
        if len(shape) < 1 + max(len(axes), 2 if name in SPATIAL else 0):
            raise BadInputError(f"{name}: the input {shape} has no such axis")
        if name in SPATIAL:
            p = period or 1
            default = shape[axes[0]]
            dims.append(
                Dimension(
                    name,
                    degree,
                    (),
                    axes,
                    step=p,
                    offset=default % p,
                    lo=max(1, default // p),
                    hi=max(1, default // p) + 8,
                )
            )
        else:
            dims.append(Dimension(name, degree, (), axes, lo=1, hi=16))
    by_name = {d.name: d for d in dims}
    if "emb" in by_name:  # emb must be a multiple of heads
        step = (
            math.lcm(*range(HEADS_RANGE[0], HEADS_RANGE[1] + 1))
            if "heads" in by_name
            else int(config.get("heads", 1) or 1)
        )
        by_name["emb"] = replace(by_name["emb"], step=step, hi=max(8, 512 // step))
    if "heads" in by_name and "emb" in by_name:
        by_name["heads"] = replace(by_name["heads"], lo=HEADS_RANGE[0], hi=HEADS_RANGE[1])
    elif "heads" in by_name and config.get("emb"):  # heads divides the fixed emb
        emb = int(config["emb"])
        divisors = tuple(h for h in range(1, emb + 1) if emb % h == 0)
        by_name["heads"] = replace(by_name["heads"], choices=divisors, lo=0, hi=len(divisors) - 1)
    for layers in ("layers", "enc_layers", "dec_layers"):
        if layers in by_name:  # (a trace of many layers is slow; the law is linear)
            by_name[layers] = replace(by_name[layers], hi=12)
    for seq in ("seq", "src", "tgt", "seq_len", "src_len", "tgt_len"):
        if seq in by_name:
            by_name[seq] = replace(by_name[seq], hi=256)
    return [by_name[d.name] for d in dims]


class _Model:
    """Traces the model at points of its dimensions (each point once)."""

    def __init__(
        self,
        model: Any,
        inputs: Any,
        dtype: Any,
        depth: int | None,
        options: Mapping[str, Any],
    ) -> None:
        self.model, self.inputs, self.dtype, self.depth = model, inputs, dtype, depth
        self.options = dict(options)
        self.measure: Callable[[Any], dict] | None = None  # quantities() unless given
        self.cache: dict[tuple, dict] = {}
        self.families = False
        self.option_names: set[str] | None = set()
        self.config: dict[str, Any] = {}
        self.shapes: list[tuple[int, ...]] | None = None
        self.module: Any = model if not isinstance(model, str) else None
        self.name = model if isinstance(model, str) else type(model).__name__
        if isinstance(model, str):
            from flowprof import api
            from flowprof.models import catalog

            if model.startswith("torchvision:"):
                self.option_names = set()
            elif ":" in model:
                self.option_names = None  # a user factory: any constructor argument
            else:
                self.option_names = {o.name for o in catalog.entry(model).options()}
            built = api.build(model, **self.options, **self._shape_arg(inputs))
            self.module = built.module
            self.config = dict(built.config)
            self.shapes = [tuple(s.shape) for s in built.inputs]
            self.families = model == "transformer"
        elif inputs is not None:
            if isinstance(inputs, tuple) and all(isinstance(d, int) for d in inputs):
                self.shapes = [inputs]
            elif isinstance(inputs, list) and all(isinstance(s, tuple) for s in inputs):
                self.shapes = list(inputs)

    @staticmethod
    def _shape_arg(inputs: Any) -> dict[str, Any]:
        if inputs is None:
            return {}
        if isinstance(inputs, tuple) and all(isinstance(d, int) for d in inputs):
            inputs = [inputs]
        return {"input_shapes": inputs}

    def __call__(self, dims: Sequence[Dimension], point: tuple[int, ...]) -> dict:
        key = tuple((d.name, v) for d, v in zip(dims, point, strict=True))
        if key not in self.cache:
            graph = self._trace(dims, point)
            if self.measure is not None:
                self.cache[key] = self.measure(graph)
            else:
                self.cache[key] = quantities(graph, self.families)
        return self.cache[key]

    def _trace(self, dims: Sequence[Dimension], point: tuple[int, ...]):
        from flowprof import api

        options = dict(self.options)
        shapes = [list(s) for s in self.shapes] if self.shapes else None
        for d, v in zip(dims, point, strict=True):
            for t in d.targets:
                options[t] = v
            for axis in d.input_axes:
                shapes[0][axis] = v
        inputs = [tuple(s) for s in shapes] if shapes and any(d.input_axes for d in dims) else None
        if inputs is None:
            inputs = self.inputs
        if isinstance(self.model, str):
            return api.trace(self.model, inputs, dtype=self.dtype, depth=self.depth, **options)
        return api.trace(self.model, inputs, dtype=self.dtype, depth=self.depth)


def formula(
    model: Any,
    symbols: Sequence[str] | str,
    inputs: Any = None,
    *,
    dtype: str | None = None,
    depth: int | None = None,
    degrees: Mapping[str, int] | None = None,
    verify: int = 3,
    period: int | None = None,
    steps: Mapping[str, int] | None = None,
    seed: int = 0,
    verify_at: Sequence[Mapping[str, int]] = (),
    measure: Callable[[Any], Mapping[tuple[str, str, str], int]] | None = None,
    **options: Any,
) -> Formula:
    """Every count of ``model`` as an exact polynomial in the dimensions ``symbols``.

    ``model``: a built-in name (dimensions: its options, e.g. ``emb``, ``seq`` (= seq_len),
    ``src``, ``tgt``, ``heads``, ``ffn``, ``layers`` (encoder and decoder layers), ``batch``,
    ``vocab``), ``torchvision:NAME`` (``batch``, ``height``, ``width``, ``size``), a
    ``package.module:factory`` (any constructor argument, and the input's dimensions), or an
    ``nn.Module`` with ``inputs`` (the input's dimensions). ``options`` fix the model's other
    options; ``dtype`` and ``depth`` are :func:`flowprof.trace`'s. ``degrees`` overrides the
    degree bounds (:data:`DEGREES`); ``verify`` is the number of random points each formula is
    checked at; ``period`` the residue-class period of spatial dimensions (default: searched);
    ``steps`` draws a dimension's values as multiples of a step (a user model's hidden size
    that must divide into its heads, e.g. ``steps={"hidden": 32}``; emb and heads of the
    built-in transformer get theirs by themselves). ``verify_at``: points (dimension -> value)
    to check at first, those outside the fitting grid (e.g. a sweep's own points); random draws
    make up the rest of ``verify``. ``measure``: what gets a formula, a function from a trace
    (a BlockGraph) to integers by (scope, name, quantity) key, instead of :func:`quantities`.
    See the module docstring for the method. Raises :class:`flowprof.BadInputError` for an
    unknown dimension.
    """
    names = [s.strip() for s in (symbols.split(",") if isinstance(symbols, str) else symbols)]
    names = [n for n in names if n]
    if not names or len(set(names)) != len(names):
        raise BadInputError(f"name one or more distinct dimensions, got {list(symbols)!r}")
    if verify < 1 and not verify_at:
        raise BadInputError("verify at one point at least")
    for n in names:
        if n in options or any(t in options for t in ALIASES.get(n, ())):
            raise BadInputError(f"{n} is a dimension: do not fix it too")
    target = _Model(model, inputs, dtype, depth, options)
    target.measure = measure
    shape = target.shapes[0] if target.shapes else None
    dims = _dimensions(
        target.name,
        names,
        target.option_names,
        {**target.config, **options},
        shape,
        degrees or {},
        period,
    )
    fixed = {k: v for k, v in {**target.config, **options}.items() if v is not None}
    fixed["dtype"] = dtype or "model's"
    defaults = {}
    for d in dims:
        if d.targets:
            t = d.targets[0]
            default = target.config.get(t) or target.config.get(_DEFAULT_FROM.get(t, t))
            defaults[d.name] = int(default or 1)
        elif shape is not None:
            defaults[d.name] = shape[d.input_axes[0]]
        for t in d.targets:
            fixed.pop(t, None)
            if t == "seq_len":  # the source and target lengths follow it
                fixed.pop("src_len", None)
                fixed.pop("tgt_len", None)
    if "ffn" in fixed and "emb" in names and "ffn" not in options:
        fixed.pop("ffn")  # it follows emb (4 x emb)
    fixed.pop("head_dim", None)
    for name, step in (steps or {}).items():
        if name not in names or int(step) < 1:
            raise BadInputError(f"a step is for a dimension named, >= 1: got {name}={step}")
        dims = [
            replace(d, step=int(step), hi=max(d.lo + 16, d.hi // int(step)))
            if d.name == name
            else d
            for d in dims
        ]
    spatial = [d for d in dims if d.name in SPATIAL]
    periods = [period] if period or not spatial else _periods(target.module)
    result = None
    for p in periods:
        tried = [
            replace(
                d,
                step=p,
                offset=defaults[d.name] % p,
                lo=max(1, defaults[d.name] // p),
                hi=max(1, defaults[d.name] // p) + 8,
            )
            if d.name in SPATIAL
            else d
            for d in dims
        ]
        given = [tuple(int(v[d.name]) for d in tried) for v in verify_at]
        result = _fit_verified(
            target, tried, verify, seed, raise_degrees=not spatial or p == periods[-1], given=given
        )
        if not result[0] or p == periods[-1]:
            break
    assert result is not None
    failing, laws, tried, verified_at, varying = result
    fixed["defaults"] = defaults
    return Formula(
        model=target.name,
        dimensions=tuple(tried),
        fixed=fixed,
        laws=tuple(laws),
        traces=len(target.cache),
        verified_at=tuple(verified_at),
        varying=tuple(varying),
    )


def structural_period(module: Any) -> int:
    """A spatial period at which every count of ``module`` is a polynomial, read off its layers:
    the product of the strides of its convolutions and pools (each stride divides the sizes
    after it) times the lcm of its adaptive pools' output sizes (an adaptive pool to o cells
    splits its input into o windows whose bounds floor(i*h/o) and ceil((i+1)*h/o) repeat with h
    modulo o). A branch's strides count too (a multiple of the period needed: coarser, still
    exact); 1 for a module with neither."""
    from torch import nn

    strided = (
        nn.modules.conv._ConvNd,
        nn.modules.pooling._MaxPoolNd,
        nn.modules.pooling._AvgPoolNd,
    )
    adaptive = (nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd)
    period, cells = 1, 1
    for m in module.modules() if module is not None else ():
        if isinstance(m, strided):
            stride = m.stride if m.stride is not None else m.kernel_size
            period *= max(stride) if isinstance(stride, tuple) else int(stride)
        elif isinstance(m, adaptive):
            size = m.output_size if isinstance(m.output_size, tuple) else (m.output_size,)
            cells = math.lcm(cells, *(int(o) for o in size if o is not None))
    return period * cells


def _periods(module: Any) -> list[int]:
    """The spatial periods to try, finest first: :data:`PERIODS`, then the module's structural
    period (e.g. alexnet's 192: strides 4 x 2 x 2 x 2, and its adaptive pool to 6 x 6) when it is
    coarser than all of them."""
    periods = list(PERIODS)
    extra = structural_period(module)
    if extra > periods[-1]:
        periods.append(extra)
    return periods


def _fit_verified(
    target: _Model,
    dims: list[Dimension],
    verify: int,
    seed: int,
    raise_degrees: bool,
    given: Sequence[tuple[int, ...]] = (),
):
    """Fit at the dimensions' degrees, verify, raise the degrees on a failure (see the doc)."""
    rng = random.Random(seed)
    extras = MAX_EXTRA_DEGREE if raise_degrees else 0
    # a finite domain (heads dividing emb) keeps one value outside its largest grid
    extras = min([extras] + [d.hi - d.lo - 1 - d.degree for d in dims if d.choices])
    if extras < 0:
        raise BadInputError(
            f"{', '.join(d.name for d in dims if d.choices)}: too few values to fit and verify at"
        )
    top = [d.degree + extras for d in dims]
    biggest_grid = set(itertools.product(*(d.grid(t) for d, t in zip(dims, top, strict=True))))
    checks = list(dict.fromkeys(p for p in given if p not in biggest_grid))
    for _ in range(50 * max(verify - len(checks), 0)):
        p = tuple(d.draw(rng) for d in dims)
        if p not in biggest_grid and p not in checks:
            checks.append(p)
        if len(checks) >= verify:
            break
    if not checks or len(checks) < verify and not (checks and any(d.choices for d in dims)):
        raise BadInputError("too few points outside the fitting grid to verify at; widen the range")
    syms = [symbol(d.name) for d in dims]
    found: dict[tuple, Any] = {}
    failing: set[tuple] = set()
    for extra in range(extras + 1):
        degrees = [d.degree + extra for d in dims]
        grid = list(itertools.product(*(d.grid(k) for d, k in zip(dims, degrees, strict=True))))
        observed = [target(dims, p) for p in grid]
        checked = [target(dims, p) for p in checks]
        keys = set(observed[0])
        for q in observed[1:] + checked:
            keys &= set(q)
        present_somewhere = set().union(*observed, *checked)
        todo = [k for k in observed[0] if k in keys and k not in found]
        coeffs = fit(grid, degrees, {k: [q[k] for q in observed] for k in todo})
        failing = set()
        for k in todo:
            if all(_at(coeffs[k], p) == c[k] for p, c in zip(checks, checked, strict=True)):
                found[k] = coeffs[k]
            else:
                failing.add(k)
        if not failing:
            break
    order = list(observed[0]) + [k for k in sorted(present_somewhere) if k not in observed[0]]
    laws = []
    varying = sorted({k[1] for k in present_somewhere - keys if k[0] in ("block", "edge")})
    powers = ", ".join(f"{d.name}^{k}" for d, k in zip(dims, degrees, strict=True))
    reason = f"no polynomial of degree <= {powers} in each dimension fits"
    for k in order:
        if k in found:
            laws.append(Law(*k, sympy.expand(_expr(found[k], syms))))
        elif k in failing:
            laws.append(Law(*k, None, reason))
    dims = [replace(d, degree=k) for d, k in zip(dims, degrees, strict=True)]
    verified_at = [{d.name: v for d, v in zip(dims, p, strict=True)} for p in checks]
    return failing, laws, dims, verified_at, varying

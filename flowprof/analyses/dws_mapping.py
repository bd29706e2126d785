r"""The mapping f from a regular convolution's operation count x to the count y of its
depthwise-separable replacement (docs/assignment.md Problem 2d).

The replacement computes the same output size: a depthwise K-tap convolution (one filter per
input map, ``groups = C_in``, the same stride, padding and dilation) followed by a pointwise 1x1
convolution from C_in to C_out maps.

Notation
--------
- C_in, C_out: input and output maps; K = k_h * k_w: taps of one filter.
- P = N * H_out * W_out: output positions (batch times output height times width). The depthwise
  stage has the same stride, padding and dilation, so it produces P positions too.
- M: connections, the (input map, output map) pairs the layer computes. A dense convolution has
  M = C_in * C_out; a partially connected one (LeNet-5's C3, Table I) has fewer, output map j
  reading n_j input maps, M = sum_j n_j. The replacement's pointwise stage keeps the same table.
- b_r, b_d, b_p in {0, 1}: whether the regular, depthwise and pointwise convolutions have biases.

Counts (the tracer's convention, ``tracer/counts.py``: a dot product of length n is n
multiplications and n - 1 additions, a bias one more addition per output element; padding taps
are computed, so they count)
-------------------------------------------------------------------------------------------------
Regular: output map j at each position is a dot product of length n_j * K::

    x_mul = P * K * M
    x_add = P * (K * M - C_out) + b_r * P * C_out

Depthwise: C_in maps, each position a dot product of length K::

    dw_mul = P * C_in * K,      dw_add = P * C_in * (K - 1) + b_d * P * C_in

Pointwise: output map j a dot product of length n_j::

    pw_mul = P * M,             pw_add = P * (M - C_out) + b_p * P * C_out

so ``y_mul = P * (C_in * K + M)`` and
``y_add = P * (C_in * (K - 1) + M - C_out + b_d * C_in + b_p * C_out)``.

The mapping
-----------
Every count is P times a per-position count, so P (batch and output size) cancels:
``y = x * (y per position) / (x per position)``. With a dense layer (M = C_in * C_out):

- multiplications: ``y = x * (C_in / M + 1 / K)``; dense: ``y = x * (1/C_out + 1/K)``;
- additions, no biases: ``y = x * (C_in*(K-1) + M - C_out) / (K*M - C_out)``;
  dense: ``y = x * (C_in*(K-1) + C_out*(C_in-1)) / (C_out*(C_in*K - 1))``;
- additions, all three biases: ``y = x * (C_in / M + 1 / K)``, the same factor as multiplications;
- additions, regular and pointwise biases only (the depthwise bias is redundant: the pointwise
  bias absorbs it; this is what ``lenet5-dws`` builds): ``y = x * (C_in*(K-1) + M) / (K*M)``;
- the sum of multiplications and additions: the per-position sums,
  e.g. no biases ``y = x * (C_in*(2K-1) + 2M - C_out) / (2K*M - C_out)``,
  all biases ``y = x * (C_in / M + 1 / K)``.

Any other combination of biases follows from the same per-position counts
(:func:`coefficient`). When the regular layer does no additions at all (C_in = K = 1, no bias)
x is 0 whatever P is, and f cannot recover y from it: :func:`coefficient` returns None.
Grouped regular convolutions are a connection table too (M = C_in * C_out / groups), provided the
pointwise stage keeps the same grouping.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction


class Quantity(StrEnum):
    """Which operations f maps."""

    MUL = "multiplications"
    ADD = "additions"
    SUM = "sum"  # multiplications + additions


class BiasMode(StrEnum):
    """Named bias configurations of the regular layer and its replacement."""

    NONE = "none"  # no biases anywhere
    ALL = "all"  # regular, depthwise and pointwise each have a bias
    POINTWISE = "pointwise"  # regular and pointwise biases; depthwise without (lenet5-dws)


@dataclass(frozen=True)
class Biases:
    """Whether the regular, depthwise and pointwise convolutions each have a bias."""

    regular: bool
    depthwise: bool
    pointwise: bool

    @classmethod
    def of(cls, mode: BiasMode | str | Biases) -> Biases:
        """A named :class:`BiasMode` (or its value) as flags; flags are returned as they are."""
        if isinstance(mode, Biases):
            return mode
        mode = BiasMode(mode)
        return {
            BiasMode.NONE: cls(False, False, False),
            BiasMode.ALL: cls(True, True, True),
            BiasMode.POINTWISE: cls(True, False, True),
        }[mode]

    def mode(self) -> BiasMode | None:
        """The named mode these flags are, or None for another combination."""
        for mode in BiasMode:
            if Biases.of(mode) == self:
                return mode
        return None


@dataclass(frozen=True)
class Ops:
    """Multiplications and additions of one layer (or one stage of it)."""

    multiplications: int
    additions: int

    def get(self, quantity: Quantity | str) -> int:
        quantity = Quantity(quantity)
        if quantity is Quantity.MUL:
            return self.multiplications
        if quantity is Quantity.ADD:
            return self.additions
        return self.multiplications + self.additions

    def __add__(self, other: Ops) -> Ops:
        return Ops(self.multiplications + other.multiplications, self.additions + other.additions)


def _connections(c_in: int, c_out: int, connections: int | None) -> int:
    m = c_in * c_out if connections is None else connections
    if min(c_in, c_out) < 1 or not c_out <= m <= c_in * c_out:
        raise ValueError(
            f"connections must be between C_out={c_out} and C_in*C_out={c_in * c_out}, got {m}"
        )
    return m


def regular_counts(
    c_in: int,
    c_out: int,
    kernel_taps: int,
    positions: int,
    connections: int | None = None,
    bias: bool = True,
) -> Ops:
    """x: a regular convolution's operations (``positions`` = N * H_out * W_out)."""
    m = _connections(c_in, c_out, connections)
    k, p = kernel_taps, positions
    return Ops(p * k * m, p * (k * m - c_out) + (p * c_out if bias else 0))


def depthwise_counts(c_in: int, kernel_taps: int, positions: int, bias: bool = False) -> Ops:
    """The depthwise stage: C_in dot products of length K per position (+ a bias each)."""
    k, p = kernel_taps, positions
    return Ops(p * c_in * k, p * c_in * (k - 1) + (p * c_in if bias else 0))


def pointwise_counts(
    c_in: int, c_out: int, positions: int, connections: int | None = None, bias: bool = True
) -> Ops:
    """The pointwise stage: output map j a dot product of length n_j per position (+ a bias)."""
    m = _connections(c_in, c_out, connections)
    p = positions
    return Ops(p * m, p * (m - c_out) + (p * c_out if bias else 0))


def separable_counts(
    c_in: int,
    c_out: int,
    kernel_taps: int,
    positions: int,
    connections: int | None = None,
    biases: BiasMode | str | Biases = BiasMode.POINTWISE,
) -> Ops:
    """y: the depthwise-separable replacement's operations, depthwise plus pointwise."""
    b = Biases.of(biases)
    return depthwise_counts(c_in, kernel_taps, positions, b.depthwise) + pointwise_counts(
        c_in, c_out, positions, connections, b.pointwise
    )


def coefficient(
    quantity: Quantity | str,
    c_in: int,
    c_out: int,
    kernel_taps: int,
    connections: int | None = None,
    biases: BiasMode | str | Biases = BiasMode.POINTWISE,
) -> Fraction | None:
    """y / x for ``quantity``, exactly: the per-position counts' ratio (P cancels).

    None when the regular layer does none of these operations (x = 0 for every output size).
    """
    b = Biases.of(biases)
    # Per-position counts: the counts of one output position (P = 1) of the batch.
    x = regular_counts(c_in, c_out, kernel_taps, 1, connections, b.regular).get(quantity)
    y = separable_counts(c_in, c_out, kernel_taps, 1, connections, b).get(quantity)
    return None if x == 0 else Fraction(y, x)


def f(
    x: int,
    quantity: Quantity | str,
    c_in: int,
    c_out: int,
    kernel_taps: int,
    connections: int | None = None,
    biases: BiasMode | str | Biases = BiasMode.POINTWISE,
) -> Fraction | None:
    """y = f(x, C_in, C_out, K[, M], biases): the replacement's count from the regular one's.

    Exact (a Fraction; an integer whenever x is a real layer's count). None when f is undefined
    (see :func:`coefficient`).
    """
    c = coefficient(quantity, c_in, c_out, kernel_taps, connections, biases)
    return None if c is None else x * c


# --- the derivation, for the report ---------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One step of the derivation, as plain text and as a LaTeX math fragment."""

    text: str
    latex: str


DERIVATION: tuple[Line, ...] = (
    Line(
        "C_in, C_out: input and output maps; K = k_h*k_w taps per filter; "
        "P = N*H_out*W_out output positions; M connections (dense: M = C_in*C_out); "
        "b_r, b_d, b_p in {0,1}: biases of the regular, depthwise and pointwise convolutions",
        r"C_{in},\ C_{out},\ K = k_h k_w,\ P = N H_{out} W_{out},\ "
        r"M \le C_{in} C_{out}\ (\text{dense: } M = C_{in} C_{out}),\ b_r, b_d, b_p \in \{0,1\}",
    ),
    Line(
        "convention: a dot product of length n = n multiplications + (n - 1) additions; "
        "a bias = +1 addition per output element",
        r"\text{dot product of length } n:\ n \text{ mult.},\ n-1 \text{ add.};\ "
        r"\text{bias: } +1 \text{ add. per output}",
    ),
    Line("x_mul = P*K*M", r"x_{\times} = P K M"),
    Line("x_add = P*(K*M - C_out) + b_r*P*C_out", r"x_{+} = P (K M - C_{out}) + b_r P C_{out}"),
    Line(
        "depthwise: P*C_in*K mult., P*C_in*(K-1) + b_d*P*C_in add.",
        r"\text{dw: } P C_{in} K\ \times,\ P C_{in} (K-1) + b_d P C_{in}\ +",
    ),
    Line(
        "pointwise: P*M mult., P*(M - C_out) + b_p*P*C_out add.",
        r"\text{pw: } P M\ \times,\ P (M - C_{out}) + b_p P C_{out}\ +",
    ),
    Line("y_mul = P*(C_in*K + M)", r"y_{\times} = P (C_{in} K + M)"),
    Line(
        "y_add = P*(C_in*(K-1) + M - C_out + b_d*C_in + b_p*C_out)",
        r"y_{+} = P \left(C_{in}(K-1) + M - C_{out} + b_d C_{in} + b_p C_{out}\right)",
    ),
    Line(
        "P cancels: y = x * (y per position) / (x per position)",
        r"y = x \cdot \frac{y / P}{x / P}",
    ),
    Line(
        "f_mul(x) = x*(C_in/M + 1/K); dense: x*(1/C_out + 1/K)",
        r"f_{\times}(x) = x \left(\frac{C_{in}}{M} + \frac{1}{K}\right)"
        r" \overset{\text{dense}}{=} x \left(\frac{1}{C_{out}} + \frac{1}{K}\right)",
    ),
    Line(
        "f_add(x), no biases = x*(C_in*(K-1) + M - C_out)/(K*M - C_out); "
        "dense: x*(C_in*(K-1) + C_out*(C_in-1))/(C_out*(C_in*K-1))",
        r"f_{+}^{\emptyset}(x) = x \frac{C_{in}(K-1) + M - C_{out}}{K M - C_{out}}"
        r" \overset{\text{dense}}{=} x \frac{C_{in}(K-1) + C_{out}(C_{in}-1)}"
        r"{C_{out}(C_{in} K - 1)}",
    ),
    Line(
        "f_add(x), all biases = x*(C_in/M + 1/K)",
        r"f_{+}^{r,d,p}(x) = x \left(\frac{C_{in}}{M} + \frac{1}{K}\right)",
    ),
    Line(
        "f_add(x), regular and pointwise biases = x*(C_in*(K-1) + M)/(K*M)",
        r"f_{+}^{r,p}(x) = x \frac{C_{in}(K-1) + M}{K M}",
    ),
    Line(
        "f_sum(x), no biases = x*(C_in*(2K-1) + 2M - C_out)/(2K*M - C_out)",
        r"f_{\Sigma}^{\emptyset}(x) = x \frac{C_{in}(2K-1) + 2M - C_{out}}{2 K M - C_{out}}",
    ),
    Line(
        "f_sum(x), all biases = x*(C_in/M + 1/K)",
        r"f_{\Sigma}^{r,d,p}(x) = x \left(\frac{C_{in}}{M} + \frac{1}{K}\right)",
    ),
    Line(
        "f_sum(x), regular and pointwise biases = x*(C_in*(2K-1) + 2M)/(2K*M)",
        r"f_{\Sigma}^{r,p}(x) = x \frac{C_{in}(2K-1) + 2M}{2 K M}",
    ),
    Line(
        "LeNet-5 C3 (Table I): C_in = 6, C_out = 16, K = 25, M = 60 (not 96): "
        "f_mul(x) = x*(6/60 + 1/25) = 0.14*x",
        r"\text{C3: } C_{in}=6,\ C_{out}=16,\ K=25,\ M=60:\ "
        r"f_{\times}(x) = x\left(\tfrac{6}{60} + \tfrac{1}{25}\right) = 0.14\,x",
    ),
)


def derivation(style: str = "text") -> list[str]:
    """The derivation of f, one step a line: ``style`` "text" (plain) or "latex" (math mode)."""
    if style not in ("text", "latex"):
        raise ValueError(f"style must be 'text' or 'latex', got {style!r}")
    return [line.text if style == "text" else line.latex for line in DERIVATION]


def formula_text(
    quantity: Quantity | str, biases: BiasMode | str | Biases, dense: bool = False
) -> str:
    """f for ``quantity`` and ``biases`` as a plain-text expression in x, C_in, C_out, K, M
    (``dense``: M written as C_in*C_out), e.g. ``x*(C_in*(K-1) + M)/(K*M)``.

    Written from the per-position counts of the module docstring, for every bias combination.
    """
    b = Biases.of(biases)
    quantity = Quantity(quantity)
    m = "C_in*C_out" if dense else "M"
    same_as_mul = b.regular and b.depthwise and b.pointwise
    if quantity is Quantity.MUL or same_as_mul:
        return "x*(1/C_out + 1/K)" if dense else "x*(C_in/M + 1/K)"
    # A bias turns a dot product's n - 1 additions into n: the "-1" terms vanish with it.
    if quantity is Quantity.ADD:
        y_dw = "C_in*K" if b.depthwise else "C_in*(K-1)"
        y_pw = m if b.pointwise else f"{m} - C_out"
        x_reg = f"K*{m}" if b.regular else f"K*{m} - C_out"
    else:
        y_dw = "2*C_in*K" if b.depthwise else "C_in*(2*K-1)"
        y_pw = f"2*{m}" if b.pointwise else f"2*{m} - C_out"
        x_reg = f"2*K*{m}" if b.regular else f"2*K*{m} - C_out"
    return f"x*({y_dw} + {y_pw})/({x_reg})"

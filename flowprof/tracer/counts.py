"""The operation-count record and the counting convention, stated once.

Convention (also in the README):

* A dot product of length K is K multiplications and K-1 additions; a bias adds one addition per
  output element. Subtraction counts as an addition; division is its own kind.
* ``macs`` are the multiply-accumulates of convolution, linear, matmul and attention products
  only: the number peers report, kept apart so it can be compared. Their multiplications are
  also in ``multiplications``; 1 MAC = 2 FLOPs when a FLOP figure is wanted.
* Everything else is counted by kind: divisions, comparisons (max, ReLU, max-pool), exponentials,
  logarithms, square roots, nonlinearities (tanh, erf, ...), selects (where, masked_fill).
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from enum import StrEnum

CONVENTION_VERSION = "1"

CONVENTION = (
    "dot product of length K = K multiplications + K-1 additions; bias = +1 addition per output; "
    "subtraction counts as addition; macs = multiply-accumulates of conv/linear/matmul/attention "
    "only (1 MAC = 2 FLOPs); other ops counted by kind"
)

# Kinds that are neither multiplications nor additions, in report order.
OTHER_KINDS = (
    "divisions",
    "comparisons",
    "exponentials",
    "logarithms",
    "square_roots",
    "nonlinearities",
    "selects",
)


@dataclass(frozen=True)
class OpCount:
    """Operations of one op, block or model, by kind."""

    macs: int = 0
    multiplications: int = 0
    additions: int = 0
    divisions: int = 0
    comparisons: int = 0
    exponentials: int = 0
    logarithms: int = 0
    square_roots: int = 0
    nonlinearities: int = 0
    selects: int = 0

    def __add__(self, other: OpCount) -> OpCount:
        return OpCount(*map(operator.add, _values(self), _values(other)))

    def scale(self, k: int) -> OpCount:
        return OpCount(*(v * k for v in _values(self)))

    @property
    def other(self) -> int:
        """Every operation that is not a multiplication or an addition."""
        return sum(getattr(self, k) for k in OTHER_KINDS)

    @property
    def total(self) -> int:
        """All elementary operations (macs are not added again: they are in multiplications)."""
        return self.multiplications + self.additions + self.other

    def is_zero(self) -> bool:
        return not any(_values(self))

    def to_dict(self) -> dict[str, int]:
        return dict(zip(KINDS, _values(self), strict=True))

    @classmethod
    def sum(cls, counts) -> OpCount:
        total = cls()
        for c in counts:
            total = total + c
        return total


KINDS = tuple(f.name for f in fields(OpCount))  # every field, in order
_values = operator.attrgetter(*KINDS)  # (a hot path: counts are added once per op)
ZERO = OpCount()


def dot_products(n: int, k: int, bias: bool = False) -> OpCount:
    """``n`` dot products of length ``k`` (plus a bias each): n*k mults, n*(k-1) (+n) adds."""
    if k <= 0 or n <= 0:
        return ZERO
    return OpCount(macs=n * k, multiplications=n * k, additions=n * (k - 1) + (n if bias else 0))


class Phase(StrEnum):
    """The part of a model's work that counts belong to.

    ``forward`` is an inference pass (what a trace counts today); a training step adds
    ``backward`` (the gradients autograd computes), ``optimizer`` (the parameter update) and
    ``recompute`` (forward work run again for activation checkpointing). A unit's or block's
    ``count`` is its forward count; the other phases are kept beside it by phase.
    """

    FORWARD = "forward"
    BACKWARD = "backward"
    OPTIMIZER = "optimizer"
    RECOMPUTE = "recompute"


PhaseCounts = tuple[tuple[Phase, OpCount], ...]  # counts of the phases besides forward, in order


def add_phases(parts: Iterable[PhaseCounts]) -> PhaseCounts:
    """The sums by phase of several (units') phase counts, phases in :class:`Phase` order; a
    phase any part has is present in the sum (with its sum, zero or not)."""
    sums: dict[Phase, OpCount] = {}
    for part in parts:
        for phase, count in part:
            sums[phase] = sums[phase] + count if phase in sums else count
    return tuple((p, sums[p]) for p in Phase if p in sums)


@dataclass
class Tally:
    """What one intercepted piece of a run computed: its counts, the formulas that gave them
    (name -> calls) and the ops that have none (name -> calls). The counting modes add to the
    tally of whatever is running: an fx node, a module call, a function call."""

    count: OpCount = field(default_factory=OpCount)
    ops: Counter = field(default_factory=Counter)
    uncounted: Counter = field(default_factory=Counter)
    # a training step: what the other phases ran for this piece (backward, optimizer, ...)
    phases: dict[Phase, Tally] = field(default_factory=dict)

    def is_empty(self) -> bool:
        """Nothing counted and nothing uncounted: a view, a copy, a constant."""
        return self.count.is_zero() and not self.ops and not self.uncounted

    def phase(self, phase: Phase) -> Tally:
        """The tally of another phase of this piece (made on first use)."""
        t = self.phases.get(phase)
        if t is None:
            t = self.phases[phase] = Tally()
        return t

    def absorb_phases(self, other: Tally) -> None:
        """Add ``other``'s other-phase tallies to this one's (a view's backward belongs to the
        unit that made what it viewed)."""
        for phase, t in other.phases.items():
            mine = self.phase(phase)
            mine.count = mine.count + t.count
            mine.ops.update(t.ops)
            mine.uncounted.update(t.uncounted)
        other.phases = {}

    def phase_counts(self) -> tuple[tuple[Phase, OpCount], ...]:
        """The counts of the other phases, in :class:`Phase` order."""
        return tuple(
            (p, t.count)
            for p in Phase
            if (t := self.phases.get(p)) is not None and not t.is_empty()
        )

    def all_ops(self) -> tuple[Counter, Counter]:
        """(counted, uncounted) op calls of every phase; another phase's ops by
        ``phase:name``."""
        ops, uncounted = Counter(self.ops), Counter(self.uncounted)
        for phase, t in self.phases.items():
            ops.update({f"{phase.value}:{k}": n for k, n in t.ops.items()})
            uncounted.update({f"{phase.value}:{k}": n for k, n in t.uncounted.items()})
        return ops, uncounted

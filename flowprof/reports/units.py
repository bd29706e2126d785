"""Human units for counts and bits (exact numbers stay in CSV and JSON)."""

from __future__ import annotations

_SI = ((10**12, "T"), (10**9, "G"), (10**6, "M"), (10**3, "k"))


def si(n: float, unit: str = "", digits: int = 3) -> str:
    """``1234567`` -> ``"1.23 M"``; exact below a thousand."""
    for scale, prefix in _SI:
        if abs(n) >= scale:
            return f"{n / scale:.{digits}g} {prefix}{unit}".rstrip()
    return f"{n:g} {unit}".rstrip() if isinstance(n, float) else f"{n} {unit}".rstrip()


def bits(n: int) -> str:
    """Bits in SI units: ``2097152`` -> ``"2.1 Mbit"``."""
    return si(n, "bit")


def count(n: int) -> str:
    """An exact count with thousands separators."""
    return f"{n:,}"

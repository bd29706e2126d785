"""Sizes checked before anything is built or run: a tensor torch can describe at all, and the
memory a real run needs against the memory this machine has.

Imports nothing heavy (no torch), so the CLI checks ``--input`` while it parses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from flowprof.errors import BadSpecError

# torch counts a tensor's bytes in a signed 64-bit integer ("Storage size calculation
# overflowed" past it). At the widest element (8 bytes: float64, int64) that is 2**60 elements.
MAX_ELEMENT_BYTES = 8
MAX_ELEMENTS = (2**63 - 1) // MAX_ELEMENT_BYTES


def check_size(shape: Sequence[int], what: str) -> None:
    """BadSpecError when a tensor of ``shape`` is too large for torch to describe."""
    elements = math.prod(int(d) for d in shape)
    if elements > MAX_ELEMENTS:
        text = "x".join(str(d) for d in shape)
        raise BadSpecError(
            f"{what} is too large: {text} is {elements:.3g} elements, and a tensor holds at most "
            f"2^60 (torch counts its bytes in a signed 64-bit integer)"
        )


def available_memory_bytes() -> int | None:
    """The memory a new allocation can still get: ``MemAvailable`` of /proc/meminfo, or less
    where this process's cgroup (a container's limit) or its address-space limit (``ulimit -v``)
    allows less; None where none is known."""
    found = []
    address_space = _address_space_headroom()
    if address_space is not None:
        found.append(address_space)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
                break
    except (OSError, ValueError, IndexError):
        pass
    cgroup = _cgroup_headroom()
    if cgroup is not None:
        found.append(cgroup)
    return min(found) if found else None


def _address_space_headroom() -> int | None:
    """RLIMIT_AS (``ulimit -v``) less this process's virtual size; None if unlimited."""
    try:
        import resource

        limit, _ = resource.getrlimit(resource.RLIMIT_AS)
        if limit == resource.RLIM_INFINITY:
            return None
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return max(0, limit - int(line.split()[1]) * 1024)
    except (ImportError, OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_headroom() -> int | None:
    """The cgroup's memory limit less what it uses (cgroup v2, else v1); None if unlimited."""
    pairs = (
        ("memory.max", "memory.current"),  # v2
        ("memory.limit_in_bytes", "memory.usage_in_bytes"),  # v1
    )
    for folder in _cgroup_folders():
        for limit_name, usage_name in pairs:
            try:
                limit_text = (folder / limit_name).read_text().strip()
                usage = int((folder / usage_name).read_text().strip())
            except (OSError, ValueError):
                continue
            if limit_text == "max":
                return None
            limit = int(limit_text)
            if limit >= 2**60:  # v1's "unlimited" is a huge number
                return None
            return max(0, limit - usage + _reclaimable(folder))
    return None


def _reclaimable(folder: Path) -> int:
    """The page cache the kernel drops before it refuses memory (inactive files), which the
    cgroup's usage counts."""
    try:
        for line in (folder / "memory.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key in ("inactive_file", "total_inactive_file"):
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _cgroup_folders() -> list[Path]:
    """This process's cgroup folders, most specific first."""
    root = Path("/sys/fs/cgroup")
    folders = []
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers in ("", "memory") or "memory" in controllers.split(","):
                base = root if controllers == "" else root / "memory"
                folders.append(base / path.lstrip("/"))
    except (OSError, ValueError):
        pass
    return [*folders, root]


def gigabytes(n: int) -> str:
    return f"{n / 1e9:,.1f} GB"


def check_memory(needed_bytes: int, what: str, available: int | None = None) -> None:
    """BadSpecError when ``needed_bytes`` exceed the memory available (``available``, else
    :func:`available_memory_bytes`); nothing when the machine does not say."""
    if available is None:
        available = available_memory_bytes()
    if available is not None and needed_bytes > available:
        raise BadSpecError(
            f"{what} needs about {gigabytes(needed_bytes)} of memory and this machine has "
            f"{gigabytes(available)} available: use smaller sizes, or leave out --measure "
            "(counting needs no memory for tensors)"
        )

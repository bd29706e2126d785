"""Running Graphviz with bounds: a time limit, and a child that dies with its parent.

``dot`` on a big graph can run for hours (a 48+48-layer transformer's full diagram was still
being laid out after 20 minutes). So every render here has a time limit (:class:`RenderTimeout`
when it is hit; the process is killed), and on Linux the ``dot`` process is told by the kernel
(``PR_SET_PDEATHSIG``) to die when the process that started it dies, however that happens
(SIGTERM, SIGKILL, a crash): no renderer outlives flowprof. Elsewhere the time limit still holds,
and an interrupted render is killed on the way out (not on SIGKILL).

:func:`render` returns the bytes; the caller writes them. What to draw for a big model is
:func:`flowprof.reports.diagram.plan`'s choice.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable

from flowprof.errors import RenderError, RenderTimeout

DEFAULT_TIMEOUT_S = 60.0


def dot_program() -> str | None:
    """The path of Graphviz's ``dot``, or None when it is not installed."""
    return shutil.which("dot")


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks Linux to SIGKILL the child when its parent dies."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def render(
    source: str,
    fmt: str,
    timeout: float | None = DEFAULT_TIMEOUT_S,
    program: str | None = None,
) -> bytes:
    """Lay out DOT ``source`` with Graphviz and return the ``fmt`` output (``svg``, ``png``,
    ``pdf``, ...). ``timeout`` in seconds (None: no limit). dot's warnings (e.g. a big bitmap
    scaled to fit) are dropped; its errors raise :class:`RenderError`; the time limit raises
    :class:`RenderTimeout`. Raises FileNotFoundError when ``dot`` is not installed."""
    exe = program or dot_program()
    if exe is None:
        raise FileNotFoundError("Graphviz's dot program is not installed")
    try:
        done = subprocess.run(
            [exe, f"-T{fmt}"],
            input=source.encode("utf-8"),
            capture_output=True,
            timeout=timeout,
            preexec_fn=_die_with_parent(os.getpid()),  # noqa: PLW1509 (no threads start dot)
        )
    except subprocess.TimeoutExpired:  # subprocess.run has killed it and waited for it
        raise RenderTimeout(
            f"dot -T{fmt} did not finish in {timeout:g} s; it was stopped"
        ) from None
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RenderError(f"dot -T{fmt} failed: {message[-1] if message else done.returncode}")
    return done.stdout

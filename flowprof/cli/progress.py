"""Progress of long commands: Rich's live display at a terminal, plain lines on stderr elsewhere.

Rich draws a live progress bar only when stdout is a terminal; piped (CI, ``| tee``,
``make demo > log``) it draws nothing until the end, and a 20-minute run looks hung. So when
stdout is not a terminal, a command reports progress as :class:`Lines`: one plain line on stderr
per step or epoch that it is told to say at once, and at most one every ``every`` seconds of
what it is told between them (a batch count), each flushed as it is written. stdout keeps only
the results, so ``--format json`` stays parseable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from flowprof.cli.options import PROG

# Between two forced lines (a step, an epoch) at most one line in this many seconds.
EVERY_SECONDS = 30.0


def live(console) -> bool:
    """Whether ``console`` can draw Rich's live display (it writes to a terminal)."""
    return bool(console.is_terminal)


class Lines:
    """Plain progress lines, ``flowprof: WHAT ... (elapsed m:ss)``, on ``stream`` (stderr)."""

    def __init__(
        self,
        what: str,
        every: float = EVERY_SECONDS,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.every = every
        self.stream = stream
        self.clock = clock
        self.start = clock()
        self._last: float | None = None
        self._said = ""

    def say(self, text: str, force: bool = True) -> bool:
        """Write ``text`` (unless it repeats the last line); when not ``force``d, only if
        ``every`` seconds have passed since the last line. Returns whether it was written."""
        now = self.clock()
        if text == self._said:
            return False
        if not force and self._last is not None and now - self._last < self.every:
            return False
        minutes, seconds = divmod(int(now - self.start), 60)
        stream = self.stream or sys.stderr
        print(f"{PROG}: {self.what}: {text} ({minutes}:{seconds:02d})", file=stream, flush=True)
        self._last, self._said = now, text
        return True

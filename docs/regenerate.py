"""Redraw the README's pictures with today's flowprof: ``make docs`` (needs Graphviz's dot).

Each picture is the file that the command in its README caption writes, so the README shows what
the command draws now. tests/test_docs.py draws them again and fails when a committed picture
no longer shows the same blocks, edges and labels.
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# picture -> (the caption's command, without "python cli.py", and the file it writes)
PICTURES: dict[str, tuple[list[str], str]] = {
    "docs/transformer-depth3.svg": (["trace", "transformer", "--depth", "3"], "graph.svg"),
}


def draw(picture: str) -> bytes:
    """The picture as its command draws it today."""
    from flowprof import cli

    argv, produced = PICTURES[picture]
    with tempfile.TemporaryDirectory(prefix="flowprof-docs-") as tmp:
        with contextlib.redirect_stdout(io.StringIO()):
            rc = cli.main([*argv, "--format", "json", "--out", tmp])
        if rc != 0:
            raise RuntimeError(f"python cli.py {' '.join(argv)} exited with {rc}")
        return (Path(tmp) / produced).read_bytes()


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from flowprof import atomic

    for picture in PICTURES:
        atomic.write_bytes(ROOT / picture, draw(picture))
        print(f"wrote {picture}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

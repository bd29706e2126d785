"""The one emitter: what a command shows on stdout, in the ``--format`` chosen, and every file it
writes.

- :class:`Format` is the one format vocabulary; :func:`add_format` gives a command its
  ``--format`` option over some of it.
- :meth:`Emitter.show` is the one place that picks table, CSV or JSON: a command hands it one
  renderer per format it supports, and only the chosen one runs (so a JSON run imports no table
  code).
- :class:`OutputDir` is the one place that writes files: each through :mod:`flowprof.atomic`
  (a temporary name, then a rename), each recorded, so the command can say what it wrote.

To add an output format: a member of :class:`Format` and its branch in :meth:`Emitter.show`.
"""

from __future__ import annotations

import argparse
import errno
import io
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

from flowprof.cli.options import PROG
from flowprof.errors import InternalError, UsageError


class Format(StrEnum):
    """What ``--format`` takes: how a command's result is written to stdout."""

    TABLE = "table"  # Rich tables and lines, for a person at a terminal
    CSV = "csv"  # one CSV table per result, separated by a blank line
    JSON = "json"  # one JSON document
    LATEX = "latex"  # a LaTeX fragment (formulas)


def add_format(p: argparse.ArgumentParser, *formats: Format, help: str | None = None) -> None:
    """``--format`` over ``formats`` (the first is the default)."""
    p.add_argument(
        "--format", choices=[f.value for f in formats], default=formats[0].value, help=help
    )


def json_text(data: Any) -> str:
    """JSON as flowprof writes it everywhere: indented, anything else as its ``str``."""
    return json.dumps(data, indent=2, default=str) + "\n"


class Line(str):
    """A line of table output written as it is: no Rich wrapping, markup or highlighting."""


def console():
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            # Rich exits with code 1 here; a closed pipe is the reader's choice, not an error:
            # the CLI's main turns it into a quiet exit 0 (flowprof.cli.main._closed_pipe).
            self.quiet = True
            raise BrokenPipeError(errno.EPIPE, "stdout was closed")

    # Piped output (CI logs, files) gets a wide page rather than Rich's 80 columns.
    return _Console(width=None if sys.stdout.isatty() else 160)


class Emitter:
    """A command's stdout in the format the user chose (``table`` for commands without one)."""

    def __init__(self, fmt: str | Format = Format.TABLE) -> None:
        self.format = Format(fmt)
        self._console = None

    @property
    def console(self):
        if self._console is None:
            self._console = console()
        return self._console

    def show(
        self,
        *,
        table: Callable[[], Iterable[Any]] | None = None,
        csv: Callable[[], Sequence[str]] | None = None,
        json: Callable[[], Any] | None = None,
        latex: Callable[[], str] | None = None,
    ) -> None:
        """Write the result in the chosen format: ``table`` yields Rich renderables, markup
        strings or :class:`Line`; ``csv`` returns CSV texts; ``json`` returns JSON-ready data;
        ``latex`` returns LaTeX source."""
        render = {Format.TABLE: table, Format.CSV: csv, Format.JSON: json, Format.LATEX: latex}[
            self.format
        ]
        if render is None:  # argparse's choices keep this from a user
            raise InternalError(f"this command has no {self.format} output")
        if self.format is Format.JSON:
            sys.stdout.write(json_text(render()))
        elif self.format is Format.LATEX:
            sys.stdout.write(render())
        elif self.format is Format.CSV:
            sys.stdout.write("\n".join(render()))
        else:
            for item in render():
                self.print(item)

    def print(self, item: Any) -> None:
        """One renderable, markup string or :class:`Line`, whatever the format."""
        if isinstance(item, Line):
            print(item)
        else:
            self.console.print(item)

    def note(self, text: str) -> None:
        """A remark for a person (what was written where): table output only, so CSV and JSON
        on stdout stay parseable."""
        if self.format is Format.TABLE:
            self.print(text)


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write to a temporary file beside ``path``, then rename: never a half-written file."""
    from flowprof import atomic  # one implementation for the library and the CLI

    atomic.write_bytes(path, data.encode("utf-8") if isinstance(data, str) else data)
    return path


def save_figure(fig, stem: Path, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """A matplotlib figure as PNG and SVG, each written atomically (SVG without a timestamp)."""
    written = []
    for fmt in formats:
        buf = io.BytesIO()
        metadata = {"Date": None} if fmt == "svg" else None
        fig.savefig(buf, format=fmt, dpi=150, metadata=metadata)
        written.append(write_atomic(stem.with_name(f"{stem.name}.{fmt}"), buf.getvalue()))
    return written


def dot_available() -> bool:
    import shutil

    return shutil.which("dot") is not None


class OutputDir:
    """A command's output folder: every file is written atomically and recorded in
    :attr:`written`, in order. One line and exit 2 if the folder cannot be made or used.

    Two ways (:func:`flowprof.atomic.atomic_dir` explains the first):

    - ``with OutputDir(path, staged=True) as out``: the outputs of one run, which appear
      together or not at all. Files are written into a staging folder beside ``path``
      (:attr:`path`), which replaces ``path`` whole when the block ends without an exception,
      so no earlier run's file is left beside them, and a kill or a concurrent run leaves one
      run's whole set. ``path`` must be absent, empty or a folder of flowprof's (its manifest
      ``.flowprof-run.json`` lists every file in it): :meth:`check` says so before the work.
    - ``OutputDir(path)``: files written in place, one by one (``train``, whose checkpoints must
      outlive a killed run for ``--resume``).
    """

    def __init__(self, path: str | Path, *, staged: bool = False, command: str = "") -> None:
        self.target = Path(path)
        self.staged = staged
        self.command = command
        self.written: list[Path] = []
        self._swap = None
        if staged:
            self.check(path)
            self.path = self.target  # (the staging folder once the block is entered)
            return
        self.path = self.target
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"{PROG}: error: cannot create output folder {path}: {exc.strerror} (give --out a "
                "folder you can write to)"
            ) from None
        if not os.access(self.path, os.W_OK):
            raise UsageError(
                f"{PROG}: error: output folder {path} is not writable (give --out a folder you "
                "can write to)"
            )

    @staticmethod
    def check(path: str | Path) -> None:
        """Whether a staged run may write ``path``: UsageError (one line) if not. Commands call
        it before their work, so that a bad folder is refused at once."""
        from flowprof import atomic
        from flowprof.errors import OutputFolderError

        target = Path(path).absolute()
        above = next((p for p in target.parents if p.exists()), Path("/"))
        if not above.is_dir():
            raise UsageError(
                f"{PROG}: error: cannot create output folder {path}: {above} is a file (give "
                "--out a folder you can write to)"
            )
        if not os.access(above, os.W_OK):  # (the new set is made beside the folder, then swapped)
            raise UsageError(
                f"{PROG}: error: cannot write output folder {path}: {above} is not writable "
                "(give --out a folder you can write to)"
            )
        try:
            atomic.check_replaceable(Path(path))
        except OutputFolderError as exc:
            raise UsageError(f"{PROG}: error: output folder {exc}") from None

    def __enter__(self) -> OutputDir:
        if self.staged:
            from flowprof import __version__, atomic

            run = {"flowprof": __version__, "command": self.command, "argv": sys.argv[1:]}
            self._swap = atomic.atomic_dir(self.target, run)
            try:
                self.path = self._swap.__enter__()
            except OSError as exc:
                raise UsageError(
                    f"{PROG}: error: cannot create output folder {self.target}: {exc.strerror}"
                ) from None
        return self

    def __exit__(self, kind, error, tb) -> bool:
        if self._swap is None:
            return False
        swap, self._swap, staging = self._swap, None, self.path
        try:
            swap.__exit__(kind, error, tb)  # (re-raises only errors of its own)
        finally:
            # the files are where the user asked for them now (or nowhere)
            self.written = [self.target / p.relative_to(staging) for p in self.written]
            self.path = self.target
        name = Path(error.filename) if isinstance(error, OSError) and error.filename else None
        if name is not None and name.is_relative_to(staging):  # (a full disk): name the file
            target = self.target / name.relative_to(staging)  # the user asked for
            raise OSError(error.errno, error.strerror, str(target)) from error
        return False

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.target)

    def kept(self, paths: Iterable[Path]) -> list[Path]:
        """Record files a library function wrote here, atomically too (``BlockGraph.to_csv``)."""
        paths = [Path(p) for p in paths]
        self.written += paths
        return paths

    def text(self, name: str, data: str | bytes) -> Path:
        """``data`` as the file ``name`` (a path relative to the folder)."""
        return self.kept([write_atomic(self.path / name, data)])[0]

    def json(self, name: str, data: Any) -> Path:
        return self.text(name, json_text(data))

    def figure(self, stem: str, fig, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
        """A matplotlib figure as ``stem.png`` and ``stem.svg``."""
        return self.kept(save_figure(fig, self.path / stem, formats))

    def diagram(self, stem: str, dot, formats: Sequence[str] = ("svg",)) -> list[Path]:
        """``stem.dot`` always; the rendered formats when Graphviz's dot is installed. dot's
        warnings (a large graph's bitmap scaled to fit) are not passed on; its errors raise."""
        from flowprof.reports.render import render

        written = [self.text(f"{stem}.dot", dot.source)]
        if dot_available():
            for fmt in formats:
                data = render(dot.source, fmt)  # time-limited; dot dies with flowprof
                written.append(self.text(f"{stem}.{fmt}", data))
        return written

    def names(self) -> str:
        """The names of the files written, for a "wrote ..." line."""
        return ", ".join(p.name for p in self.written)

"""The parser built from the commands, and the one place that turns errors into exit codes:
0 success, 2 bad input or usage (one line on stderr, no traceback), 1 internal error."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from collections.abc import Sequence

from flowprof.cli.command import Command, commands
from flowprof.cli.options import PROG
from flowprof.errors import BadInputError, UnsupportedModelError, UsageError


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see --help)")


class _CommandParser(_Parser):
    """A command's parser, whose arguments are added when the command is chosen: ``flowprof
    --help`` and the other commands never import what one command's arguments need (the model
    options come from the model files, which import torch)."""

    def __init__(self, *args, command: Command, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.command = command
        self._ready = False

    def ready(self) -> _CommandParser:
        if not self._ready:
            self._ready = True
            self.command.arguments(self)
            self.set_defaults(fn=self.command.run)
        return self

    def parse_known_args(self, args=None, namespace=None):
        self.ready()
        return super().parse_known_args(args, namespace)


def build_parser() -> argparse.ArgumentParser:
    """``flowprof`` and one subparser per command (:func:`flowprof.cli.command.commands`)."""
    found = commands()
    p = _Parser(
        prog=PROG,
        description="Exact operation counts and the dataflow between blocks of PyTorch models.",
        epilog=f"example: {found[0].example}",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)
    for command in found:
        sub.add_parser(
            command.name,
            help=command.help,
            description=command.help,
            epilog=command.epilog(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            command=command,
        )
    return p


def command_parser(name: str) -> argparse.ArgumentParser:
    """The parser of one command, its arguments added (for tests and documentation)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name].ready()


def main(argv: Sequence[str] | None = None) -> int:
    debug = bool(os.environ.get("FLOWPROF_DEBUG"))
    # torch logs some failures it recovers from, or that flowprof reports in one line (a
    # fake-tensor op that fails logs its whole traceback): none of it is for the user.
    disabled = logging.root.manager.disable
    if not debug:
        logging.disable(logging.CRITICAL)
    try:
        return _main(argv, debug)
    finally:
        logging.disable(disabled)  # (as it was: main may run inside a test's process)


def _main(argv: Sequence[str] | None, debug: bool) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "fn", None):
            parser.print_help()
            return 2
        code = args.fn(args)
        sys.stdout.flush()  # (a closed pipe shows here, while it can still be handled)
        return code
    except UsageError as exc:
        line = str(exc)  # every error line starts with the program's name
        print(line if line.startswith(PROG) else f"{PROG}: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _closed_pipe()
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno in _OS_ERRORS and not debug:
            print(f"{PROG}: error: {os_error(exc)}", file=sys.stderr)
            return 2
        if _is_user_error(exc):
            print(f"{PROG}: error: {first_line(exc)}{_hint(exc)}", file=sys.stderr)
            return 2
        if _disk_full(exc):
            print(f"{PROG}: error: the disk is full ({first_line(exc)})", file=sys.stderr)
            return 2
        if debug:
            raise
        print(
            f"{PROG}: internal error: {type(exc).__name__}: {first_line(exc)} "
            "(set FLOWPROF_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1


def _closed_pipe() -> int:
    """stdout's reader went away (``flowprof trace ... | head -1``): stop quietly with exit 0, as
    other tools do. stdout is pointed at /dev/null so that Python's flush at exit, which would
    fail again, succeeds (the Python documentation's recipe for SIGPIPE)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 0


# What each OS error a user can cause means, said the way the user would look for it.
_OS_ERRORS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "the file is too large for this file system or limit",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "the file system is read-only",
    errno.ENOTDIR: "not a directory",
    errno.EISDIR: "is a directory",
    errno.ENOENT: "no such file or directory",
    errno.EEXIST: "already exists",
    errno.ENAMETOOLONG: "the name is too long",
    errno.EMFILE: "too many open files",
    errno.ENOMEM: "out of memory",
}


def os_error(exc: OSError) -> str:
    """An OS error as one line: what happened (the disk is full, permission denied ...) and the
    file it happened to."""
    what = _OS_ERRORS.get(exc.errno) or (exc.strerror or type(exc).__name__).lower()
    files = [f for f in (exc.filename, exc.filename2) if f]
    if not files:
        return f"{what} ({first_line(exc)})" if exc.strerror is None else what
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"{what} writing {files[0]}: free some space, or write elsewhere"
    return f"{what}: {files[0]}"


def _disk_full(exc: BaseException) -> bool:
    """An error that a full disk caused, where a library reported it as something else (torch's
    zip writer says "unexpected pos ... vs ..." when a write came up short)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _hint(exc: BaseException) -> str:
    """What to do about a known cause, appended to the error line."""
    text = str(exc)
    if "'indices'" in text and "Long" in text:  # an Embedding given a floating input
        return " (inputs that hold token ids need an integer dtype: --input SHAPE:int64)"
    return ""


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _is_user_error(exc: BaseException) -> bool:
    """Errors that are the input's fault, not flowprof's (flowprof.errors: exit code 2)."""
    return isinstance(exc, (BadInputError, UnsupportedModelError))

"""A CLI command is one :class:`Command` record, in one module of ``flowprof/cli/commands/``:
its name, one line of help, its ``--help`` example, the function that adds its arguments and the
function that runs it. :func:`commands` finds them all; nothing else lists commands.

Command modules import only light packages at the top (argparse, flowprof.errors, the CLI's
helpers); torch, the reports and the analyses are imported inside ``run``, so ``--help`` stays
fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """One subcommand of ``flowprof``."""

    name: str
    help: str  # one line: the command list of ``flowprof --help`` and the command's description
    example: str  # a whole command line, ``python cli.py NAME ...``; a test parses it
    arguments: Callable[[argparse.ArgumentParser], None]  # adds the command's arguments
    run: Callable[[argparse.Namespace], int]  # does the work; returns the exit code
    order: int  # place in ``flowprof --help``: the most used first
    notes: str = ""  # more lines for the end of ``--help``, after the example

    def epilog(self) -> str:
        return f"example: {self.example}" + (f"\n{self.notes}" if self.notes else "")


def commands() -> list[Command]:
    """Every command: the ``COMMAND`` of each module of ``flowprof/cli/commands/``, in order."""
    from flowprof.cli import commands as package

    found: dict[str, Command] = {}
    for info in pkgutil.iter_modules(package.__path__):
        command = importlib.import_module(f"{package.__name__}.{info.name}").COMMAND
        if command.name in found:
            raise RuntimeError(f"command {command.name!r} is defined twice")
        found[command.name] = command
    return sorted(found.values(), key=lambda c: (c.order, c.name))

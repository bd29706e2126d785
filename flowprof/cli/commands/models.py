"""``flowprof models``: the built-in models, and the other ways to name one."""

from __future__ import annotations

import argparse

from flowprof.cli.command import Command
from flowprof.cli.emit import Emitter


def arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    Emitter().show(table=_tables)
    return 0


def _tables():
    from rich.table import Table

    from flowprof.models import registry

    t = Table(title="models", header_style="bold")
    t.add_column("name")
    t.add_column("what it is")
    for e in registry.entries():
        t.add_row(e.name, e.summary)
    t.add_row("torchvision:NAME", "any torchvision classification model, random weights")
    t.add_row(
        "package.module:factory",
        "any model of yours: a factory (or class) returning an nn.Module; also path/to/file.py:Net",
    )
    return [t]


COMMAND = Command(
    name="models",
    help="list the built-in models",
    example="python cli.py models",
    arguments=arguments,
    run=run,
    order=100,
)

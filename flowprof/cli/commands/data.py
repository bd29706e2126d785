"""``flowprof data``: provision MNIST offline, or say which source is used."""

from __future__ import annotations

import argparse

from flowprof.cli.command import Command
from flowprof.cli.emit import Emitter, Format, Line, add_format
from flowprof.cli.options import add_data_options


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("provision", "info"))
    add_data_options(p)
    add_format(p, Format.TABLE, Format.JSON)


def run(args: argparse.Namespace) -> int:
    from flowprof.training import mnist

    emit = Emitter(args.format)
    if args.action == "provision":
        result = mnist.provision(args.dataset, args.data_dir, download_allowed=args.download)
        emit.print(Line(result.message))
        return 0
    data = mnist.load(args.dataset, args.data_dir, download_allowed=args.download)
    emit.show(
        table=lambda: [Line(data.description)],
        json=lambda: {
            "source": str(data.source),
            "description": data.description,
            "train": len(data.train_labels),
            "test": len(data.test_labels),
        },
    )
    return 0


COMMAND = Command(
    name="data",
    help="provision MNIST offline, or say which source is used",
    example="python cli.py data info",
    arguments=arguments,
    run=run,
    order=80,
)

"""Argument types and the option groups several commands share (model, data, analysis options).

A model's own options (``--emb``, ``--heads``, ``--activation`` ...) are not listed here: they
come from the fields of each built-in model's config dataclass (:mod:`flowprof.models.config`),
through :func:`flowprof.models.catalog.options`, which imports no torch.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from typing import Any

from flowprof import limits
from flowprof.errors import BadSpecError, UsageError
from flowprof.models.config import POSITIVE_INT, Kind

PROG = "flowprof"

# Input dtypes the --input suffix accepts (names only: parsing must not import torch).
INPUT_DTYPES = "float64 float32 float16 bfloat16 int64 int32 int16 int8 uint8 bool".split()
# Precisions bits are accounted at (the tracer's Precision values; named here without torch).
DTYPES = ("fp64", "fp32", "fp16", "bf16", "fp8", "int8")


def of_kind(kind: Kind):
    """An argparse ``type`` for values of ``kind``: its one-line message on a bad value."""

    def parse(text: str) -> Any:
        try:
            return kind.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


positive_int = of_kind(POSITIVE_INT)


def int_list(text: str) -> list[int]:
    """``64,128,256`` -> ``[64, 128, 256]``, each a positive integer (an empty item, as in
    ``64,,128`` or ``,,,``, is refused: it is a typo, not "the default")."""
    parts = [p.strip() for p in text.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(
            f"expected positive integers separated by commas, e.g. 64,128,256; got {text!r}"
        )
    return [positive_int(p) for p in parts]


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number above zero (a learning rate)."""
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number, zero or more (a tolerance)."""
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of 0 or more, got {text!r}")
    return value


def fraction(text: str) -> float:
    """A number in (0, 1] (a per-epoch decay factor)."""
    value = _finite(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number above 0 and at most 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An integer, zero or more (a pixel shift)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer of 0 or more, got {text!r}"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer of 0 or more, got {text!r}")
    return value


class Inputs(list):
    """Parsed ``--input``: the shapes (this list), per shape a dtype name or None, and the
    forward parameter each is for (``names``; empty when given in forward's order)."""

    def __init__(self, shapes, dtypes, names=()):
        super().__init__(shapes)
        self.dtypes = list(dtypes)
        self.names = list(names)


def shapes(text: str) -> Inputs:
    """``1x3x224x224,4x16:int64`` -> shapes ``[(1, 3, 224, 224), (4, 16)]``, dtypes
    ``[None, "int64"]`` (None: the model's own floating dtype). With names,
    ``input_ids=1x32:int64,decoder_input_ids=1x8:int64``: the inputs of those forward parameters
    (all named or none)."""
    found, dtypes, names = [], [], []
    for part in text.split(","):
        name, eq, spec = part.strip().rpartition("=")
        if eq and not name.isidentifier():
            raise argparse.ArgumentTypeError(f"not a parameter name: {name!r} in {part!r}")
        names.append(name or None)
        shape_text, _, dtype = spec.lower().partition(":")
        if dtype and dtype not in INPUT_DTYPES:
            raise argparse.ArgumentTypeError(
                f"unknown input dtype {dtype!r} in {part!r} (known: {', '.join(INPUT_DTYPES)})"
            )
        try:
            dims = tuple(int(d) for d in shape_text.split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"malformed shape {part!r}: expected sizes joined by 'x', e.g. 1x3x32x32"
            ) from None
        if any(d <= 0 for d in dims):
            raise argparse.ArgumentTypeError(f"malformed shape {part!r}: sizes must be positive")
        try:
            limits.check_size(dims, "the input shape")
        except BadSpecError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        found.append(dims)
        dtypes.append(dtype or None)
    if any(names) and not all(names):
        raise argparse.ArgumentTypeError(
            f"name every input or none: {text!r} (e.g. input_ids=1x32:int64,mask=1x32)"
        )
    return Inputs(found, dtypes, names if all(names) else ())


def input_dtypes(args: argparse.Namespace) -> list[str | None] | None:
    return args.input.dtypes if args.input else None


def positional_inputs(args: argparse.Namespace) -> Inputs | None:
    """``--input`` for a command that gives inputs in forward's order only."""
    if args.input and args.input.names:
        raise UsageError(
            f"{PROG} {args.command}: --input takes shapes in forward's order here, without "
            "names (names are for trace)"
        )
    return args.input


def _model_flags():
    from flowprof.models import catalog  # (the models' declarations: no torch)

    return catalog.options()


def add_model_options(p: argparse.ArgumentParser, exclude: Sequence[str] = ()) -> None:
    """``--input`` and every built-in model's options (from the models' config dataclasses)."""
    g = p.add_argument_group("model options")
    g.add_argument(
        "--input",
        type=shapes,
        metavar="[NAME=]SHAPE[:DTYPE][,...]",
        help="example input shapes, e.g. 1x3x224x224 (default: per model); a dtype suffix "
        "for inputs that are not floating point, e.g. token ids 4x16:int64; named for "
        "forward's parameters to give them by name (trace), e.g. "
        "input_ids=1x32:int64,decoder_input_ids=1x8:int64",
    )
    for opt, model in _model_flags():
        if opt.name not in exclude:
            g.add_argument(
                opt.flag, type=of_kind(opt.kind), help=f"{model}: {opt.help_text()}", dest=opt.name
            )


def model_options(args: argparse.Namespace, exclude: Sequence[str] = ()) -> dict[str, Any]:
    """The model options the user gave (only those: a model keeps its defaults for the rest)."""
    return {
        opt.name: getattr(args, opt.name)
        for opt, _ in _model_flags()
        if opt.name not in exclude and getattr(args, opt.name, None) is not None
    }


def check_model(name: str, options: dict[str, Any]) -> None:
    """Refuse an unknown built-in model, or an option it does not take, before anything heavy
    is imported: the library's own check (:func:`flowprof.models.catalog.check`), made early."""
    from flowprof.models import catalog

    catalog.check(name, options)


def add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", choices=("mnist", "fashion-mnist"), default="mnist")
    p.add_argument(
        "--data-dir", metavar="DIR", help="a folder with the IDX files in torchvision's layout"
    )
    p.add_argument(
        "--download", action="store_true", help="allow torchvision's download (needs a network)"
    )


def add_analysis_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--depth",
        type=positive_int,
        metavar="N",
        help="group blocks by module hierarchy (1 = children of the model)",
    )
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        help="precision that bits are accounted at (default: the model's dtype)",
    )

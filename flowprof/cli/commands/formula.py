"""``flowprof formula``: a model's counts, params and edge bits as exact polynomials in the
dimensions named, derived from concrete traces (:mod:`flowprof.analyses.formula`)."""

from __future__ import annotations

import argparse

from flowprof.cli.command import Command
from flowprof.cli.emit import Emitter, Format, Line, OutputDir, add_format
from flowprof.cli.options import (
    add_analysis_options,
    add_model_options,
    check_model,
    input_dtypes,
    model_options,
    positional_inputs,
)
from flowprof.errors import UsageError


def _degrees(text: str) -> dict[str, int]:
    """``emb=3,seq=2`` -> ``{"emb": 3, "seq": 2}`` (degrees, or steps)."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not value.isdigit():
            raise argparse.ArgumentTypeError(f"expected NAME=DEGREE, got {part!r}")
        out[name.strip()] = int(value)
    return out


def _symbols(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise argparse.ArgumentTypeError("name at least one dimension, e.g. emb,seq")
    return names


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="transformer, lenet5, torchvision:NAME or package.module:factory")
    p.add_argument(
        "--symbols",
        type=_symbols,
        required=True,
        metavar="NAME[,NAME...]",
        help="the dimensions: a built-in model's options (emb, seq, src, tgt, heads, ffn, "
        "layers, batch, vocab), the input's batch, seq, height, width or size (both), or a "
        "user factory's constructor arguments",
    )
    add_model_options(p)
    add_analysis_options(p)
    p.add_argument(
        "--degree",
        type=_degrees,
        metavar="NAME=D[,...]",
        help="degree bounds to start from (default: per dimension, e.g. emb=2, batch=1)",
    )
    p.add_argument(
        "--step",
        type=_degrees,
        metavar="NAME=S[,...]",
        help="draw a dimension's values as multiples of S, e.g. a user model's hidden=32 "
        "when it must divide into 32 heads",
    )
    p.add_argument(
        "--verify",
        type=int,
        default=3,
        metavar="N",
        help="random points, outside the fitting grid, every formula is checked at (default 3)",
    )
    p.add_argument(
        "--period",
        type=int,
        metavar="P",
        help="spatial sizes in one residue class modulo P (default: the first of 1, 2, 4, ... "
        "64, then the model's strides times its adaptive pools' sizes, e.g. alexnet's 192, at "
        "which every count is polynomial)",
    )
    p.add_argument(
        "--totals", action="store_true", help="totals, families and crossovers only (no blocks)"
    )
    add_format(
        p,
        Format.TABLE,
        Format.LATEX,
        Format.JSON,
        help="table: the formulas as plain text (default); latex: an align* fragment; json",
    )
    p.add_argument("--out", metavar="DIR", help="also write formula.txt, formula.tex, formula.json")


def run(args: argparse.Namespace) -> int:
    options = model_options(args)
    check_model(args.model, options)  # (before torch is imported)
    if args.verify < 1:
        raise UsageError("--verify takes a positive number of points")
    if args.period is not None and args.period < 1:
        raise UsageError("--period takes a positive integer")
    from flowprof.analyses.formula import formula

    shapes = positional_inputs(args)
    dtypes = input_dtypes(args)
    if dtypes is not None:
        options["input_dtypes"] = dtypes
    result = formula(
        args.model,
        args.symbols,
        list(shapes) if shapes else None,
        dtype=args.dtype,
        depth=args.depth,
        degrees=args.degree,
        verify=args.verify,
        period=args.period,
        steps=args.step,
        **options,
    )
    if args.totals:
        result = result.summary()
    Emitter(args.format).show(
        table=lambda: [Line(result.to_text().rstrip("\n"))],
        latex=result.to_latex,
        json=result.to_dict,
    )
    if args.out:
        out = OutputDir(args.out)
        out.text("formula.txt", result.to_text())
        out.text("formula.tex", result.to_latex())
        out.json("formula.json", result.to_dict())
        if args.format == Format.TABLE:
            print(f"wrote {out.names()} to {out}")
    return 0


COMMAND = Command(
    name="formula",
    help="counts, params and edge bits as exact polynomials in the model's dimensions",
    example="python cli.py formula transformer --symbols emb,seq --dtype fp16",
    arguments=arguments,
    run=run,
    order=55,
    notes="Each formula is fitted on a grid of concrete traces and checked exactly at random "
    "further points; a count that is not polynomial is reported as such.",
)

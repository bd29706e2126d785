"""``trace --device``: each block's predicted time on a device (the roofline model of
flowprof/device/roofline.py), beside the measured time with ``--measure``; with ``--out``, the
roofline plot and the predicted and measured timelines as a Perfetto trace.

Kept apart from the command so that ``trace`` adds the option with one call and uses the
prediction with another.
"""

from __future__ import annotations

import argparse
from typing import Any


def _device(text: str) -> str:
    from flowprof.device.table import check_name  # (plain data: no torch)
    from flowprof.errors import BadSpecError

    try:
        return check_name(text)
    except BadSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_options(p: argparse.ArgumentParser) -> None:
    from flowprof.device.table import names

    p.add_argument(
        "--device",
        type=_device,
        metavar="NAME",
        help=f"predict each block's time on a device ({', '.join(names())}; cpu and cuda are "
        "measured here by micro-benchmarks, once, and cached); with --measure, the measured "
        "time and the error beside it; with --out, roofline.png/.svg and timeline.json (the "
        "predicted and measured timelines, for ui.perfetto.dev or chrome://tracing)",
    )


def predict(graph: Any, args: argparse.Namespace) -> tuple[Any, list[str]]:
    """(the Prediction, notes for a person), or (None, []) without ``--device``."""
    if not getattr(args, "device", None):
        return None, []
    from flowprof.device import get_with_notes
    from flowprof.device.roofline import predict_time

    device, notes = get_with_notes(args.device)
    return predict_time(graph, device), notes


def tables(prediction: Any):
    from flowprof.reports.timing_tables import timing_table

    yield timing_table(prediction)


def write(prediction: Any, out: Any) -> None:
    """``roofline.png``, ``roofline.svg`` and ``timeline.json`` into the OutputDir ``out``."""
    from flowprof.reports.roofline_plot import roofline_figure
    from flowprof.reports.timeline import trace_events

    out.figure("roofline", roofline_figure(prediction))
    out.json("timeline.json", trace_events(prediction))

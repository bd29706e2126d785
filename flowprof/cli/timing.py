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
        "time and the error beside it; with --train, per phase (forward, backward, "
        "optimizer); with --out, roofline.png/.svg and timeline.json (the predicted and "
        "measured timelines, for ui.perfetto.dev or chrome://tracing)",
    )


def predict(graph: Any, args: argparse.Namespace) -> tuple[list[Any], list[str]]:
    """(the Predictions, one per phase: the forward, and a training step's backward and
    optimizer; notes for a person), or ([], []) without ``--device``."""
    if not getattr(args, "device", None):
        return [], []
    from flowprof.device import get_with_notes
    from flowprof.device.roofline import predict_phases

    device, notes = get_with_notes(args.device)
    predictions = predict_phases(graph, device)
    notes += [n for p in predictions for n in p.notes]
    return predictions, list(dict.fromkeys(notes))


def tables(predictions: list[Any]):
    from rich.text import Text

    from flowprof.reports.timing_tables import error_line, timing_table

    for p in predictions:
        yield timing_table(p)
        line = error_line(p)
        if line:
            yield Text(line)


def to_json(predictions: list[Any]) -> dict[str, Any]:
    """``timing``: the forward's prediction (as without --train); with --train also
    ``timing_phases``: each phase's, by name."""
    if not predictions:
        return {}
    out: dict[str, Any] = {"timing": predictions[0].to_dict()}
    if len(predictions) > 1:
        out["timing_phases"] = {p.phase: p.to_dict() for p in predictions}
    return out


def write(predictions: list[Any], out: Any) -> None:
    """``roofline.png``, ``roofline.svg`` and ``timeline.json`` into the OutputDir ``out``."""
    from flowprof.reports.roofline_plot import roofline_figure
    from flowprof.reports.timeline import trace_events

    out.figure("roofline", roofline_figure(predictions))
    out.json("timeline.json", trace_events(predictions))


def step_notes(graph: Any) -> list[str]:
    """What a measured training step could attribute to the blocks (tracer/measure_step.py)."""
    m = graph.meta.get("measured_step")
    if not m:
        return []
    whole, nodes = m["backward_seconds"], m["backward_attributed_seconds"]
    share = f" ({nodes / whole:.0%})" if whole else ""
    return [
        f"measured backward {whole * 1e3:.3f} ms, of which {nodes * 1e3:.3f} ms{share} in the "
        "blocks' autograd nodes; the rest is autograd's engine between nodes (not a block's); "
        f"optimizer steps {m['optimizer_seconds'] * 1e3:.3f} ms (medians of {m['runs']} steps)"
    ]

"""Where flowprof's analysis time goes: its four phases, timed one by one on a benchmark model.

``tracer.trace`` is (1) the fx symbolic trace (structure), (2) the counting run on meta tensors,
(3) leaf units and the tensors that cross between them, (4) grouping into the BlockGraph. Each is
timed here on its own, warm, with the garbage collector paused as ``trace`` pauses it, next to the
whole call, so the benchmark can say which phase a gap to a peer comes from; torch.fx's own
symbolic trace of the model, with no flowprof code, as the floor the fx design sets; and the whole
call on the path without fx (``hooks=True``: blocks recorded by hooks as the model runs).

Run in a child process of bench/run.py (one model per process, like the tool runs):
``python -m bench.phases MODEL REPEATS`` prints one JSON object.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


def _median_s(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(key: str, repeats: int = 20) -> dict[str, Any]:
    import torch

    from bench import peers
    from flowprof import tracer

    torch.set_num_threads(1)
    model, inputs = peers.build(peers.MODELS[key], "meta")
    inputs = list(inputs)
    for _ in range(3):  # warm: lazy imports, caches
        tracer.trace(model, inputs)
    with tracer.gc_paused(), tracer.eval_mode(model):
        structure = tracer.trace_structure(model, inputs)
        record = tracer.counting_run(structure, model, inputs)
        leaf = tracer.build_units(record)
        precision = tracer.Precision.FP32
        phases = {
            "fx symbolic trace": _median_s(lambda: tracer.trace_structure(model, inputs), repeats),
            "counting run": _median_s(
                lambda: tracer.counting_run(structure, model, inputs), repeats
            ),
            "units and edges": _median_s(lambda: tracer.build_units(record), repeats),
            "grouping": _median_s(
                lambda: tracer.group(leaf.units, leaf.crossings, precision, None, {}), repeats
            ),
        }
    whole = _median_s(lambda: tracer.trace(model, inputs), repeats)
    return {
        "model": key,
        "fx_nodes": len(structure.graph.nodes),
        "phases_s": phases,
        "trace_s": whole,
        "stock_fx_s": _stock_fx_s(model, repeats),
        # the path without torch.fx: blocks recorded by hooks (what models fx cannot trace take)
        "hooks_s": _median_s(lambda: tracer.trace(model, inputs, hooks=True), repeats),
        "repeats": repeats,
    }


def _stock_fx_s(model, repeats: int) -> float | None:
    """torch.fx's own symbolic trace of the model, with no flowprof code: ``fx.Tracer().trace``
    with its default leaves, in eval mode. A floor under any analysis that traces with torch.fx,
    as the design card has flowprof do. None where the stock tracer fails on the model (flowprof
    then makes the failing module a leaf and retries)."""
    import torch.fx as fx

    from flowprof import tracer

    with tracer.eval_mode(model):
        try:
            fx.Tracer().trace(model)
        except Exception:
            return None
        return _median_s(lambda: fx.Tracer().trace(model), repeats)


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 20)))

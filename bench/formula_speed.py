"""Speed of ``flowprof.formula`` (issue 18): a sweep evaluated from one formula, and the formula
of a 32-layer Llama-2-7B-shaped decoder.

1. Sweep: the transformer's formulas in emb, seq and batch, then 10,000 configurations
   (emb 8..800 in steps of 8, seq 1..100, batch 1) of its total MACs and its activation bits
   evaluated from them (:meth:`Formula.sweep`: exact integers), timed apart from the fit. Five of
   the points are traced and compared.
2. Llama-2-7B-shaped: hidden 4096, 32 heads, 32 layers, MLP 11008, vocab 32000
   (tests/llama_shaped.py), token ids of length seq. Two ways, both timed:
   - ``direct``: formulas in hidden and seq fitted on traces of the 32-layer model itself;
   - ``layers``: formulas in hidden, seq and layers fitted on traces of 1- to 3-layer models (the
     counts are linear in layers, verified at further points), then ``layers`` set to 32
     (:meth:`Formula.at`); totals only, since a layer's blocks exist only where it does.
   Each is checked against one trace of the real 32-layer model at hidden 4096, seq 2048.

``python -m bench.formula_speed`` prints one JSON object.
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch

from tests.llama_shaped import LlamaShape, LlamaShaped

LLAMA = LlamaShape()  # hidden 4096, 32 layers, 32 heads, MLP 11008, vocab 32000
SPEC = "bench.formula_speed:llama"


def llama(hidden: int = LLAMA.hidden, layers: int = LLAMA.layers) -> torch.nn.Module:
    """The Llama-2-7B-shaped decoder with ``hidden`` and ``layers`` as constructor arguments."""
    return LlamaShaped(
        LlamaShape(
            hidden=hidden, layers=layers, heads=LLAMA.heads, mlp=LLAMA.mlp, vocab=LLAMA.vocab
        )
    )


def sweep() -> dict[str, Any]:
    import flowprof

    t0 = time.perf_counter()
    f = flowprof.formula("transformer", ["emb", "seq", "batch"], dtype="fp16")
    fit_s = time.perf_counter() - t0
    points = [{"emb": 8 * e, "seq": s, "batch": 1} for e in range(1, 101) for s in range(1, 101)]
    t0 = time.perf_counter()
    macs = f.sweep(f.total("macs"), points)
    bits = f.sweep(f.activation_bits, points)
    sweep_s = time.perf_counter() - t0
    checks = []
    for i in (0, 1234, 5000, 8765, 9999):
        p = points[i]
        g = flowprof.trace("transformer", emb=p["emb"], seq_len=p["seq"], dtype="fp16")
        checks.append(g.total().macs == macs[i] and sum(e.bits for e in g.edges()) == bits[i])
    return {
        "configurations": len(points),
        "quantities": 2,
        "fit_seconds": round(fit_s, 3),
        "traces": f.traces,
        "sweep_seconds": round(sweep_s, 4),
        "under_1_s": sweep_s < 1.0,
        "traced_points_equal": all(checks),
    }


def _check(f, seq: int = 2048) -> bool:
    import flowprof

    g = flowprof.trace(SPEC, [(1, seq)], dtype="fp16", input_dtypes=["int64"])
    values = {d.name: v for d, v in zip(f.dimensions, (LLAMA.hidden, seq), strict=True)}
    return (
        f.evaluate(f.total("macs"), **values) == g.total().macs
        and f.evaluate(f.total("params"), **values) == g.params()
        and f.evaluate(f.activation_bits, **values) == sum(e.bits for e in g.edges())
    )


def llama_formula() -> dict[str, Any]:
    import flowprof

    out: dict[str, Any] = {}
    options = {"dtype": "fp16", "input_dtypes": ["int64"]}
    t0 = time.perf_counter()
    f = flowprof.formula(
        SPEC, ["hidden", "seq"], [(1, 16)], steps={"hidden": LLAMA.heads}, **options
    )
    direct_s = time.perf_counter() - t0
    out["direct"] = {
        "seconds": round(direct_s, 2),
        "traces": f.traces,
        "under_5_s": direct_s < 5.0,
        "macs": str(f.total("macs")),
        "equals_trace_at_4096_2048": _check(f),
    }
    t0 = time.perf_counter()
    f = flowprof.formula(
        SPEC, ["hidden", "seq", "layers"], [(1, 16)], steps={"hidden": LLAMA.heads}, **options
    ).at(layers=LLAMA.layers)
    layers_s = time.perf_counter() - t0
    out["layers"] = {
        "seconds": round(layers_s, 2),
        "traces": f.traces,
        "under_5_s": layers_s < 5.0,
        "macs": str(f.total("macs")),
        "equals_trace_at_4096_2048": _check(f),
    }
    return out


def main() -> None:
    import flowprof

    flowprof.trace("lenet5")  # (imports and first-call set-up, outside the timings)
    print(json.dumps({"sweep": sweep(), "llama_2_7b_shaped": llama_formula()}, indent=2))


if __name__ == "__main__":
    main()

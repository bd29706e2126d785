"""The training step: its scale, and its matrix products against FlopCounterMode on every
torchvision classifier.

1. Scale: the giant reference transformer (emb 12288, seq 2048, one encoder and one decoder
   layer, fp16: 4.2 billion parameters) traced for one training step with Adam on meta tensors,
   in a fresh process: wall time and peak resident memory (VmHWM from /proc/self/status, the
   kernel's own high-water mark, not flowprof's bookkeeping).
2. FlopCounterMode: for every torchvision classification model, one forward + cross-entropy +
   backward on meta tensors under FlopCounterMode, and flowprof's trace of the same step: MACs
   of forward and backward against FlopCounterMode's FLOPs / 2, less its overcount of grouped
   convolutions' weight gradients ((groups - 1) x their true MACs: it ignores ``groups`` there,
   see tests/test_training_vs_flopcounter.py).

Run by bench/run.py (section ``training_step``), or alone:
``python -m bench.training_step scale|flopcounter`` prints one JSON object.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCALE_EMB, SCALE_SEQ = 12288, 2048


def _vm_hwm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def scale() -> dict[str, Any]:
    """One Adam training step of the giant transformer on meta, in this (fresh) process."""
    import_start = time.perf_counter()
    import flowprof
    from flowprof.tracer import Phase

    imported = time.perf_counter() - import_start
    before = _vm_hwm_bytes()
    start = time.perf_counter()
    g = flowprof.trace(
        "transformer",
        emb=SCALE_EMB,
        seq_len=SCALE_SEQ,
        heads=SCALE_EMB // 128,
        phases=("forward", "backward", "optimizer"),
        optimizer="adam",
    )
    seconds = time.perf_counter() - start
    return {
        "emb": SCALE_EMB,
        "seq_len": SCALE_SEQ,
        "params": g.params(),
        "seconds": seconds,
        "import_seconds": imported,
        "peak_bytes": _vm_hwm_bytes(),
        "peak_bytes_before_trace": before,
        "macs": {p.value: g.total(p).macs for p in g.phases()},
        "ops": {p.value: g.total(p).total for p in g.phases()},
        "uncounted": g.uncounted(),
        "optimizer_ops_per_param": g.total(Phase.OPTIMIZER).total / g.params(),
    }


def flopcounter() -> list[dict[str, Any]]:
    """flowprof's forward + backward MACs against FlopCounterMode's on every classifier."""
    import torch
    import torchvision
    from torch import nn
    from torch.utils.flop_counter import FlopCounterMode

    import flowprof
    from flowprof.tracer import Phase

    rows = []
    for name in torchvision.models.list_models(module=torchvision.models):
        row: dict[str, Any] = {"model": name}
        built = flowprof.build(f"torchvision:{name}", device="meta")
        model = built.module.train()
        inputs = built.example_inputs("meta")
        if name == "inception_v3":  # its auxiliary classifier needs 299 x 299 in training
            inputs = [torch.empty(1, 3, 299, 299, device="meta")]
        shapes: dict[nn.Module, torch.Size] = {}
        grouped = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]

        def keep(mod: nn.Module, args: Any, out: Any, shapes: dict = shapes) -> None:
            shapes[mod] = out.shape

        hooks = [m.register_forward_hook(keep) for m in grouped]
        counter = FlopCounterMode(display=False, depth=None)
        start = time.perf_counter()
        try:
            with counter, torch.device("meta"):
                out = model(*inputs)
                out = out[0] if isinstance(out, tuple) else out
                target = torch.zeros(out.shape[0], dtype=torch.long)
                nn.functional.cross_entropy(out, target).backward()
            row["flopcounter_macs"] = sum(counter.get_flop_counts()["Global"].values()) // 2
        except Exception as exc:  # noqa: BLE001 - a peer's failure is a result
            row["flopcounter_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
        finally:
            for h in hooks:
                h.remove()
        row["flopcounter_s"] = time.perf_counter() - start
        row["grouped_overcount"] = sum(
            (m.groups - 1) * m.weight.numel() * s[0] * math.prod(s[2:]) for m, s in shapes.items()
        )
        start = time.perf_counter()
        g = flowprof.trace(model, inputs, phases=("forward", "backward"), loss="cross-entropy")
        row["flowprof_s"] = time.perf_counter() - start
        row["flowprof_macs"] = g.total(Phase.FORWARD).macs + g.total(Phase.BACKWARD).macs
        row["backward_over_forward"] = g.total(Phase.BACKWARD).total / g.total(Phase.FORWARD).total
        row["uncounted"] = g.uncounted()
        if "flopcounter_macs" in row:
            expected = row["flopcounter_macs"] - row["grouped_overcount"]
            row["agree"] = row["flowprof_macs"] == expected
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def run_isolated(what: str) -> Any:
    """``what`` in a fresh process (its memory high-water mark is its own)."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.training_step", what],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


if __name__ == "__main__":
    result = {"scale": scale, "flopcounter": flopcounter}[sys.argv[1]]()
    print(json.dumps(result))

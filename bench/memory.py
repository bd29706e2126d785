"""Memory (issue 17): the prediction against a real CPU run at every block boundary, Korthikanti
et al.'s closed form reconciled term by term, and Llama-2-7B's configuration by category, timed.
Writes the section of BENCHMARKS.md between the ``memory`` markers.

    python bench/memory.py            # about 2 minutes on this 2-core machine

Every sentence of the section is made from the numbers this run measured.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "tests"):  # run as a script: the packages and tests' llama_shaped
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

MARKDOWN = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- memory:begin -->", "<!-- memory:end -->"


def _mib(n: int) -> str:
    return f"{n / 2**20:,.2f} MiB"


def cpu_checks(say) -> list[str]:
    import flowprof

    rows = [
        "| model | step | boundaries equal | peak predicted | peak measured | differences |",
        "|---|---|---|---|---|---|",
    ]
    cases = [
        ("torchvision:resnet18", {"inputs": [(8, 3, 224, 224)]}, None),
        ("torchvision:resnet18", {"inputs": [(8, 3, 224, 224)]}, "bf16"),
        ("transformer", {"batch": 8, "dtype": "fp32"}, None),
        ("transformer", {"batch": 8, "dtype": "fp32"}, "bf16"),
    ]
    for name, kw, amp in cases:
        say(f"{name} amp={amp}: predicting and measuring")
        kw = dict(kw)
        inputs = kw.pop("inputs", None)
        r = flowprof.memory(name, inputs, optimizer="adam", amp=amp, measure=True, **kw)
        p, m = r.predicted, r.measured
        equal = r.boundaries_equal()
        step = "Adam, " + ("fp32" if amp is None else f"mixed precision ({amp})")
        diffs = "; ".join(f"{d.block} ({d.phase}) {d.bytes:+,} B" for d in r.differences)
        rows.append(
            f"| {name} | {step}, batch 8 | {equal} of {len(p.segments)} | {p.peak:,} B | "
            f"{m.peak:,} B | {diffs or 'none'} |"
        )
    return rows


def what_ifs(say) -> list[str]:
    import flowprof

    rows = [
        "What-ifs on resnet18 (Adam, one step, predicted): the peak and what is alive at it.",
        "",
        "| variant | peak | parameters | optimizer state | gradients | saved activations "
        "| at the peak |",
        "|---|---|---|---|---|---|---|",
    ]
    variants = [
        ("fp32, batch 8", {}, 8),
        ("bf16 weights and activations, batch 8", {"dtype": "bf16"}, 8),
        ("fp16, batch 8", {"dtype": "fp16"}, 8),
        ("mixed precision bf16 (fp32 weights), batch 8", {"amp": "bf16"}, 8),
        (
            "fp32, layer1-layer4 checkpointed, batch 8",
            {"checkpoint": ["layer1", "layer2", "layer3", "layer4"]},
            8,
        ),
        ("fp32, batch 16", {}, 16),
        ("fp32, batch 32", {}, 32),
    ]
    saved = {}
    for label, kw, batch in variants:
        say(f"what-if: {label}")
        r = flowprof.memory("torchvision:resnet18", [(batch, 3, 224, 224)], optimizer="adam", **kw)
        t = r.totals()
        saved[label] = t["saved activations"]
        rows.append(
            f"| {label} | {_mib(r.peak)} | {_mib(t['parameters'])} | "
            f"{_mib(t['optimizer state'])} | {_mib(t['gradients'])} | "
            f"{_mib(t['saved activations'])} | {r.peak_at[0]} ({r.peak_at[1]}) |"
        )
    ratio = saved["fp32, batch 32"] / saved["fp32, batch 8"]
    rows += [
        "",
        f"Saved activations grow with the batch: {ratio:.4f} x from batch 8 to 32 "
        "(the parameters, gradients and optimizer state do not).",
    ]
    return rows


def korthikanti_rows(say) -> list[str]:
    import flowprof
    from flowprof.analyses import korthikanti

    say("Korthikanti's layer")
    s, b, h, a = 32, 2, 64, 4
    terms, _ = korthikanti.reconcile(s, b, h, a)
    rows = [
        f"GPT layer to the paper's assumptions (fp16, s={s}, b={b}, h={h}, a={a}), "
        "flowprof's saved bytes per block against the paper's terms:",
        "",
        "| paper's term | paper | flowprof | why they differ |",
        "|---|---|---|---|",
    ]
    for t in terms:
        rows.append(f"| {t.term} | {t.paper:,} | {t.flowprof:,} | {t.why} |")
    total_p, total_f = sum(t.paper for t in terms), sum(t.flowprof for t in terms)
    rows += [f"| **layer** | **{total_p:,}** | **{total_f:,}** | |", ""]
    modern = flowprof.memory(
        korthikanti.ModernLayer(h, a),
        [(b, s, h)],
        phases=("forward", "backward"),
        loss="sum",
        input_grad=True,
        dtype="bf16",
    )
    rows += [
        "The same shape as a 2024 layer (RMSNorm, scaled_dot_product_attention on the CPU's "
        "flash kernel, SwiGLU of 4h, no dropout, bf16), per block:",
        "",
        "| block | saved bytes |",
        "|---|---|",
    ]
    for blk in modern.blocks:
        if blk.saved:
            rows.append(f"| {blk.name} | {blk.saved:,} |")
    rows.append(f"| **layer** | **{sum(x.saved for x in modern.blocks):,}** |")
    return rows


_LLAMA = """
import sys, time
t0 = time.perf_counter()
sys.path[:0] = [{root!r}, {tests!r}]
import torch
import flowprof
from llama_shaped import llama_shaped
model, ids = llama_shaped(dtype=torch.bfloat16)
t = time.perf_counter()
r = flowprof.memory(model, [ids], optimizer="adam", loss="cross-entropy")
at, ever = r.at_peak(), r.totals()
print(repr((time.perf_counter() - t, r.peak, r.peak_at, at, ever)))
print(repr(time.perf_counter() - t0))
"""


def llama(say) -> list[str]:
    """Llama-2-7B's configuration analysed in a fresh process (imports included), as a user's
    first call would be."""
    import ast
    import subprocess

    say("Llama-2-7B's configuration, seq 2048, batch 1, bf16, Adam (a fresh process)")
    code = _LLAMA.format(root=str(ROOT), tests=str(ROOT / "tests"))
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    wall = time.perf_counter() - t
    seconds, peak, peak_at, at, ever = ast.literal_eval(out[-2])
    rows = [
        f"Llama-2-7B's configuration (32 layers, hidden 4096, seq 2048, batch 1, bf16 weights and "
        f"Adam state, cross-entropy over 32,000 tokens), in a fresh Python process: "
        f"`flowprof.memory` took {seconds:.1f} s on meta tensors, {wall:.1f} s with starting "
        f"Python and importing torch; peak {peak / 2**30:.2f} GiB in {peak_at[0]} "
        f"({peak_at[1]}).",
        "",
        "| category | at the peak | allocated in the step |",
        "|---|---|---|",
    ]
    for c in at:
        if at[c] or ever[c]:
            rows.append(f"| {c} | {at[c] / 2**30:.2f} GiB | {ever[c] / 2**30:.2f} GiB |")
    return rows


def section(say) -> str:
    out = [
        BEGIN,
        "## Memory: predicted on meta tensors, measured on the CPU",
        "",
        f"Made by `python bench/memory.py` (load average {os.getloadavg()[0]:.1f} when it "
        "started, on this 2-core machine). A prediction runs the step on meta tensors; the "
        "measurement runs it on real CPU tensors and records every storage allocated and freed "
        "(tracer/lifetimes.py). Boundaries: the live bytes at the end of each block's stretch "
        "in each phase.",
        "",
        *cpu_checks(say),
        "",
        *what_ifs(say),
        "",
        *korthikanti_rows(say),
        "",
        *llama(say),
        END,
    ]
    return "\n".join(out) + "\n"


def kept(text: str) -> str | None:
    """The section as ``text`` (BENCHMARKS.md) has it, markers included, or None (bench/run.py
    keeps it when it writes the file anew)."""
    if BEGIN not in text or END not in text:
        return None
    return BEGIN + text.split(BEGIN, 1)[1].split(END, 1)[0] + END + "\n"


def main() -> None:
    from rich.console import Console

    console = Console(stderr=True)
    with console.status("memory") as status:
        text = section(lambda s: status.update(f"memory: {s}"))
    from bench.timing import insert_section
    from flowprof import atomic

    new = insert_section(MARKDOWN.read_text(), text, BEGIN, END)
    atomic.write_bytes(MARKDOWN, new.encode())
    print(text)


if __name__ == "__main__":
    main()

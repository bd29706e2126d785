"""flowprof beside its peers, in one run on one machine: writes BENCHMARKS.md, bench/results.json
and the plot bench/analysis_time.png (and .svg).

Run: ``.venv/bin/python bench/run.py`` (about 20 minutes on two cores; ``--quick`` for a smoke
run of a minute or two). Sections:

1. analysis: flowprof and each peer (bench/peers.py) on each reference model, one fresh process
   per tool and model: counts against the exact total, warm analysis time (median and min-max of
   ``--repeats`` calls after ``--warmup``), first-call time, model build time, peak memory;
2. scale: the giant transformer configurations of bench/scale.py, peers under a memory and a time
   limit;
3. training: bench/bench_training.py (``train`` vs a bare PyTorch loop and a tuned ceiling, at 1
   and 2 threads, as found and with one core busy);
4. training_step: bench/training_step.py (the giant transformer's Adam training step traced on
   meta: time and peak memory; every torchvision classifier's training-step MACs against
   FlopCounterMode's).

``--render-only`` rewrites BENCHMARKS.md and the plot from bench/results.json without measuring.
Every sentence of the summary in BENCHMARKS.md is generated from the numbers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(ROOT))

from bench import peers, scale  # noqa: E402

RESULTS = ROOT / "bench" / "results.json"
MARKDOWN = ROOT / "BENCHMARKS.md"
PLOT = ROOT / "bench" / "analysis_time"  # .png and .svg
COMMAND = ".venv/bin/python bench/run.py"


# --- the machine ---------------------------------------------------------------------------------


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
        platform.processor() or "unknown",
    )
    flags = next(
        (line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), []
    )
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")
    meminfo = dict(
        line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line
    )
    versions = {}
    for package in ("torch", "torchvision", "fvcore", "thop", "ptflops", "torchinfo", "flowprof"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpu": cpu,
        "cpu_extensions": ", ".join(f for f in wanted if f in flags),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "memory_bytes": int(meminfo["MemTotal"].split()[0]) * 1024,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": versions,
        "commit": commit,
    }


# What the numbers are of: flowprof's tracer and its models.
MEASURED_SOURCES = ("flowprof/tracer", "flowprof/models")


def source_digest() -> str:
    """A hash of flowprof's measured source files, to tell whether they changed during a run."""
    import hashlib

    digest = hashlib.sha256()
    for package in MEASURED_SOURCES:
        for path in sorted((ROOT / package).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def wait_for_load(threshold: float, max_wait_s: float, say: Callable[[str], None]) -> list[float]:
    """Poll the 1-minute load average every minute until it is below ``threshold``."""
    deadline = time.monotonic() + max_wait_s
    while (load := load_average())[0] >= threshold and time.monotonic() < deadline:
        say(f"load average {load[0]:.2f} >= {threshold}: waiting a minute")
        time.sleep(60)
    return load


# --- measuring -----------------------------------------------------------------------------------


def progress_bar():
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[section]:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
    )


def run_analysis(
    models: Sequence[str], tools: Sequence[str], repeats: int, warmup: int, progress
) -> list[dict[str, Any]]:
    task = progress.add_task("", total=len(models) * len(tools), section="analysis")
    results = []
    for key in models:
        for tool in tools:
            progress.update(task, description=f"{tool} on {key}")
            results.append(peers.run_isolated(tool, peers.MODELS[key], repeats, warmup))
            progress.advance(task)
    return results


def run_phases(models: Sequence[str], progress) -> list[dict[str, Any]]:
    """flowprof's phases on each model, each model in a fresh process (bench/phases.py)."""
    task = progress.add_task("", total=len(models), section="phases")
    results = []
    for key in models:
        progress.update(task, description=f"flowprof's phases on {key}")
        out = subprocess.run(
            [sys.executable, "-m", "bench.phases", key, "20"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(out.stdout))
        progress.advance(task)
    return results


def run_scale(args: argparse.Namespace, progress) -> list[dict[str, Any]]:
    total = scale.planned(args.scale_embs, args.peer_embs, args.scale_tools)
    task = progress.add_task("", total=total, section="scale")

    def done(result: dict[str, Any]) -> None:
        progress.update(task, description=f"{result['tool']} at emb {result['emb']}")
        progress.advance(task)

    return scale.run(
        args.scale_embs,
        args.peer_embs,
        args.scale_tools,
        time_limit_s=args.time_limit,
        mem_limit_bytes=int(args.mem_limit_gb * (1 << 30)),
        on_result=done,
    )


def run_training(args: argparse.Namespace, progress) -> dict[str, Any]:
    from bench import bench_training

    task = progress.add_task(
        f"train vs bare loop and ceiling on {args.train_model}", total=1, section="training"
    )
    out = bench_training.run(
        model=args.train_model, samples=args.train_samples, rounds=args.train_rounds
    )
    progress.advance(task)
    return out


def run_training_step(progress) -> dict[str, Any]:
    from bench import training_step

    task = progress.add_task("", total=2, section="step")
    progress.update(task, description="Adam step of the emb-12288 transformer on meta")
    out = {"scale": training_step.run_isolated("scale")}
    progress.advance(task)
    progress.update(task, description="every torchvision classifier vs FlopCounterMode")
    out["flopcounter"] = training_step.run_isolated("flopcounter")
    progress.advance(task)
    return out


# --- derived numbers -----------------------------------------------------------------------------


def by_model(analysis: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for r in analysis:
        table.setdefault(r["model"], {})[r["tool"]] = r
    return table


def is_exact(r: dict[str, Any]) -> bool:
    return r.get("status") == "ok" and r.get("macs") == r.get("exact_macs")


def fastest(rows: dict[str, dict[str, Any]], exact_only: bool) -> dict[str, Any] | None:
    """The peer (never flowprof) with the least warm median, among the exact ones if asked."""
    candidates = [
        r
        for tool, r in rows.items()
        if tool in peers.PEERS and "median_s" in r and (is_exact(r) or not exact_only)
    ]
    return min(candidates, key=lambda r: r["median_s"], default=None)


def cold_total(r: dict[str, Any]) -> float | None:
    """What a fresh process pays for one answer: imports, model build, first analysis call."""
    parts = [r.get("import_s"), r.get("build_s"), r.get("first_s")]
    return None if None in parts else sum(parts)


def comparisons(analysis: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model: flowprof beside the fastest peer and the fastest exact peer."""
    out = []
    for model, rows in by_model(analysis).items():
        mine = rows.get("flowprof", {})
        fast, fast_exact = fastest(rows, False), fastest(rows, True)
        row = {
            "model": model,
            "exact_macs": mine.get("exact_macs"),
            "flowprof_exact": is_exact(mine),
            "flowprof_s": mine.get("median_s"),
            "flowprof_peak_bytes": mine.get("peak_bytes"),
            "fastest_peer": fast and fast["tool"],
            "fastest_peer_s": fast and fast["median_s"],
            "fastest_exact_peer": fast_exact and fast_exact["tool"],
            "fastest_exact_peer_s": fast_exact and fast_exact["median_s"],
            "exact_peers": [t for t, r in rows.items() if t in peers.PEERS and is_exact(r)],
        }
        if mine.get("median_s") and fast:
            row["ratio_fastest"] = mine["median_s"] / fast["median_s"]
        if mine.get("median_s") and fast_exact:
            row["ratio_fastest_exact"] = mine["median_s"] / fast_exact["median_s"]
        out.append(row)
    return out


# --- formatting ----------------------------------------------------------------------------------


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.3g} ms"
    return f"{seconds:.3g} s"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    if abs(n) < 1e9:
        return f"{n / 1e6:.3g} MB"
    return f"{n / 1e9:.3g} GB"


def fmt_error(r: dict[str, Any]) -> str:
    if r.get("status") != "ok":
        return r.get("status", "-")
    pct = r.get("error_pct")
    if pct is None:
        return "-"
    if pct == 0:
        return "**exact**"
    return f"{pct:+.2g}%" if abs(pct) < 0.01 else f"{pct:+.2f}%"


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2g}x" if x < 10 else f"{x:.0f}x"


def fmt_int(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def tools_in(rows: dict[str, dict[str, Any]]) -> list[str]:
    """The tools (in TOOLS order) that have a result on some model of ``by_model``'s table."""
    return [t for t in peers.TOOLS if any(t in r for r in rows.values())]


def scale_tools_in(cells: list[dict[str, Any]]) -> list[str]:
    """The scale tools (in SCALE_TOOLS order) that have a cell in ``cells``."""
    return [t for t in scale.SCALE_TOOLS if any(c["tool"] == t for c in cells)]


def seen_peak(r: dict[str, Any]) -> int | None:
    """Peak memory of a run, or for a child killed before reporting it, what the parent saw."""
    return r.get("peak_bytes") or r.get("seen_peak_rss_bytes")


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> list[str]:
    """A Markdown table; ``align`` has one letter per column (l or r, default r after the first)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def status_cell(r: dict[str, Any]) -> str:
    """A scale cell: analysis time (and build time), peak memory; or how it failed."""
    status = r.get("status")
    if status == "ok":
        return (
            f"{fmt_s(r.get('first_s'))} (build {fmt_s(r.get('build_s'))}), "
            f"{fmt_bytes(r.get('peak_bytes'))}"
        )
    if status == "not run":
        reason = r.get("reason", "")
        return "-" if reason.startswith("size not selected") else f"not run ({reason})"
    seen = seen_peak(r)
    if status == "timeout":
        return f"**timeout** ({r.get('error')}; {fmt_bytes(seen)} resident when killed)"
    if status == "out of memory":
        return f"**out of memory** ({r.get('stage', '')}; peak {fmt_bytes(seen)})"
    return f"**{status}**: {r.get('error', '')}"


# --- the summary (generated from the numbers) ----------------------------------------------------


def summary(results: dict[str, Any]) -> list[str]:
    """Bullet points; every claim is computed here from ``results``."""
    analysis = results.get("analysis", [])
    lines: list[str] = []
    if analysis:
        rows = by_model(analysis)
        comps = comparisons(analysis)
        n = len(rows)
        exact_mine = [c["model"] for c in comps if c["flowprof_exact"]]
        lines.append(
            f"Counts: flowprof's total equals the exact MACs on {len(exact_mine)} of {n} models"
            + (
                "."
                if len(exact_mine) == n
                else f" (not on {', '.join(c['model'] for c in comps if not c['flowprof_exact'])})."
            )
        )
        for tool in peers.PEERS:
            mine = [rows[m][tool] for m in rows if tool in rows[m]]
            if not mine:
                continue
            exact = [r["model"] for r in mine if is_exact(r)]
            wrong = [r for r in mine if r.get("status") == "ok" and not is_exact(r)]
            failed = [r["model"] for r in mine if r.get("status") != "ok"]
            worst = max(wrong, key=lambda r: abs(r["error_pct"]), default=None)
            text = f"{tool} is exact on {len(exact)} of {len(mine)}"
            if worst:
                text += f"; its largest error is {fmt_error(worst)} ({worst['model']})"
            if failed:
                text += f"; it failed on {', '.join(failed)}"
            lines.append("  - " + text + ".")
        with_exact = [c for c in comps if c.get("ratio_fastest_exact") is not None]
        no_exact = [c["model"] for c in comps if c["fastest_exact_peer"] is None]
        within = [c for c in with_exact if c["ratio_fastest_exact"] <= 1]
        slower = [c for c in with_exact if c["ratio_fastest_exact"] > 1]
        lines.append(
            f"Speed (warm median): flowprof is as fast as or faster than the fastest exact peer "
            f"on {len(within)} of the {len(with_exact)} models that have an exact peer"
            + (f" ({', '.join(c['model'] for c in within)})" if within else "")
            + "."
        )
        for c in slower:
            lines.append(
                f"  - slower on {c['model']}: {fmt_s(c['flowprof_s'])} vs "
                f"{c['fastest_exact_peer']} {fmt_s(c['fastest_exact_peer_s'])} "
                f"({fmt_ratio(c['ratio_fastest_exact'])})."
            )
            lines += phase_line(results, c)
        if no_exact:
            lines.append(f"  - no peer is exact on {', '.join(no_exact)}.")
        beat_all = [c["model"] for c in comps if (c.get("ratio_fastest") or 2) <= 1]
        lines.append(
            f"Against the fastest peer whatever its error, flowprof is as fast or faster on "
            f"{len(beat_all)} of {n} models"
            + (f" ({', '.join(beat_all)})" if beat_all else "")
            + "."
        )
        mine_first = [
            r["first_s"]
            for r in analysis
            if r["tool"] == "flowprof" and r.get("first_s") is not None
        ]
        if mine_first:
            lines.append(
                f"First call in a fresh process (lazy imports and caches included): flowprof "
                f"{fmt_s(min(mine_first))} to {fmt_s(max(mine_first))} across the models."
            )
        mem = [(c["model"], c["flowprof_peak_bytes"]) for c in comps if c["flowprof_peak_bytes"]]
        peer_mem = {
            m: min(
                (
                    r["peak_bytes"]
                    for t, r in rows[m].items()
                    if t in peers.PEERS and "median_s" in r
                ),
                default=None,
            )
            for m in rows
        }
        less = [m for m, b in mem if peer_mem.get(m) is not None and b <= peer_mem[m]]
        lines.append(
            f"Memory (peak above the import baseline, model included): flowprof needs at most "
            f"as much as the leanest peer on {len(less)} of {len(mem)} models"
            + (
                f"; more on {', '.join(m for m, _ in mem if m not in less)}"
                if len(less) < len(mem)
                else ""
            )
            + "."
        )
        mine_rows = [r for r in analysis if r["tool"] == "flowprof" and r.get("status") == "ok"]
        if mine_rows:
            warm_peak = max(r.get("analysis_peak_bytes", 0) for r in mine_rows)
            first_peak = max(r.get("first_peak_bytes", 0) for r in mine_rows)
            lines.append(
                f"  - flowprof's warm calls need at most {fmt_bytes(warm_peak)} above the "
                f"resident size before them; its first call in a process up to "
                f"{fmt_bytes(first_peak)} (lazy imports included)."
            )
    cells = results.get("scale", [])
    if cells:
        lines += _scale_summary(cells)
    training = results.get("training")
    if training:
        lines += _training_summary(training)
    return lines


def _training_summary(t: dict[str, Any]) -> list[str]:
    parts = []
    for cell in t["cells"]:
        if "median_train_to_ceiling" not in cell:  # an older run's results.json
            return []
        rate = cell["median_samples_per_s"]
        parts.append(
            f"{cell['condition']}, {cell['threads']} thread(s): `train` {rate['train']:,.0f} "
            f"samples/s, {cell['median_train_to_ceiling']:.0%} of the ceiling "
            f"({rate['ceiling']:,.0f}), {cell['train_to_best_ceiling']:.0%} of the condition's "
            f"best ({cell['best_ceiling']['median_samples_per_s']:,.0f} at "
            f"{cell['best_ceiling']['threads']} thread(s))"
        )
    return [f"Training ({t['model']}, batch {t['batch_size']}, medians): " + "; ".join(parts)]


def _scale_summary(cells: list[dict[str, Any]]) -> list[str]:
    lines = []
    mine = [c for c in cells if c["tool"] == "flowprof" and c["status"] == "ok"]
    if mine:
        exact = all(c.get("macs") == c["exact_macs"] for c in mine)
        lines.append(
            f"Scale: flowprof traced every size up to emb {max(c['emb'] for c in mine)} "
            f"(seq {mine[0]['seq_len']}), {'exactly' if exact else 'NOT exactly'}, in at most "
            f"{fmt_s(max(c['first_s'] for c in mine))} (first call) and "
            f"{fmt_bytes(max(c['peak_bytes'] for c in mine))} above its imports."
        )
    for tool in scale.SCALE_TOOLS:
        if tool == "flowprof":
            continue
        run = [c for c in cells if c["tool"] == tool and c["status"] != "not run"]
        if not run:
            continue
        ok = [c for c in run if c["status"] == "ok"]
        bad = [c for c in run if c["status"] != "ok"]
        text = f"{tool}: "
        if ok:
            top = max(ok, key=lambda c: c["emb"])
            text += (
                f"largest size done emb {top['emb']} in {fmt_s(top['first_s'])} with "
                f"{fmt_bytes(top['peak_bytes'])}"
            )
        else:
            text += "no size done"
        if bad:
            text += "; " + ", ".join(f"{c['status']} at emb {c['emb']}" for c in bad)
        lines.append("  - " + text + ".")
    return lines


# --- BENCHMARKS.md -------------------------------------------------------------------------------


def render(results: dict[str, Any], plot_name: str = "bench/analysis_time.png") -> str:
    m = results["machine"]
    s = results["settings"]
    loads = results.get("load", {})
    out = [
        "# Benchmarks: flowprof beside fvcore, thop, ptflops, torchinfo and FlopCounterMode",
        "",
        "Generated by `bench/run.py`; do not edit by hand. Every number below comes from one run "
        "on the machine described here; the summary is generated from the numbers.",
        "",
        f"Reproduce: `{COMMAND}` (this file was written by `{results['command']}`).",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']}, {m['logical_cpus']} logical CPUs ({m['usable_cpus']} usable); "
        f"vector extensions: {m.get('cpu_extensions') or 'not read'}",
        f"- memory: {m['memory_bytes'] / 2**30:.1f} GiB; {m['os']}; Python {m['python']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"- date: {results['started']} (took {results['duration_s'] / 60:.1f} min); "
        f"commit {m['commit'] or 'unknown'}; flowprof sources (flowprof/tracer/, flowprof/models/) "
        + (
            f"unchanged during the run (digest {results['source_digest']['start']})"
            if len(set(results.get("source_digest", {}).values())) == 1
            else f"**CHANGED during the run** ({results.get('source_digest')}): rerun"
        ),
        "- load average (1, 5, 15 min) during the run, shared with other work: "
        + "; ".join(f"{k} {'/'.join(f'{x:.2f}' for x in v)}" for k, v in loads.items()),
        *(
            [
                f"- sections {', '.join(results['kept_from']['sections'])} are kept from the run "
                f"of {results['kept_from']['started']} (not rerun)"
            ]
            if results.get("kept_from", {}).get("sections")
            else []
        ),
        "",
        "## Summary",
        "",
    ]
    out += [line if line.startswith(" ") else f"- {line}" for line in summary(results)]
    out += ["", f"![analysis time, memory and scale]({plot_name})", ""]
    analysis = results.get("analysis", [])
    if analysis:
        out += _analysis_section(analysis, s)
    if results.get("phases"):
        out += _phases_section(results["phases"], analysis)
    if results.get("scale"):
        out += _scale_section(results["scale"], s)
    if results.get("training"):
        out += _training_section(results["training"])
    if results.get("training_step"):
        out += _training_step_section(results["training_step"])
    out += _method_section(s)
    text = "\n".join(out) + "\n"
    from bench import timing  # (its own run, bench/timing.py: its section is kept here)

    if timing.RESULTS.is_file():
        text = timing.insert_section(text, timing.markdown(json.loads(timing.RESULTS.read_text())))
    from bench import formula_speed  # (likewise bench/formula_speed.py's section)

    if formula_speed.RESULTS.is_file():
        section = formula_speed.markdown(json.loads(formula_speed.RESULTS.read_text()))
        text = timing.insert_section(text, section, formula_speed.BEGIN, formula_speed.END)
    from bench import memory  # (bench/memory.py's section, kept as the file has it)

    if MARKDOWN.is_file() and (section := memory.kept(MARKDOWN.read_text())):
        text = timing.insert_section(text, section, memory.BEGIN, memory.END)
    return text


def _analysis_section(analysis: list[dict[str, Any]], s: dict[str, Any]) -> list[str]:
    rows = by_model(analysis)
    tools = tools_in(rows)
    out = [
        "## Exactness: MACs reported vs the exact total",
        "",
        "Each tool's number converted to multiply-accumulates (FlopCounterMode's FLOPs / 2), and "
        "its error against the exact total derived by hand (bench/peers.py, tests/test_peers.py).",
        "",
    ]
    header = ["model", "exact MACs", *tools]
    table = []
    for model, by_tool in rows.items():
        exact = next(iter(by_tool.values())).get("exact_macs")
        table.append([model, fmt_int(exact), *(fmt_error(by_tool.get(t, {})) for t in tools)])
    out += md_table(header, table)
    out += [
        "",
        "## Analysis time and memory",
        "",
        f"Warm time: median and min-max of {s['repeats']} calls after {s['warmup']} warm-up "
        "call(s), model already built. First call: the first analysis in a fresh process "
        "(pays lazy imports and caches). Cold total: import + build + first call, what one "
        "answer costs a fresh process. Build: constructing the model (flowprof on the meta "
        "device, no weights; the peers on the CPU with real weights, which they run). Peak: "
        "resident high-water mark above the process's footprint after importing torch, the "
        "model registry and the tool (the import baseline, in its own column); warm peak: above "
        "the resident size just before the warm calls. Ratio: warm median over the fastest "
        "peer's on that model. Threads: torch's CPU threads for the warm calls, 1 or the default, "
        "whichever a timed trial after the first call found faster (a busy second core stalls "
        "small models' parallel regions).",
        "",
    ]
    comps = {c["model"]: c for c in comparisons(analysis)}
    header = [
        "tool",
        "MACs",
        "error",
        "warm median",
        "min-max",
        "vs fastest peer",
        "first call",
        "cold total",
        "build",
        "peak",
        "warm peak",
        "threads",
        "import",
        "import RSS",
    ]
    for model, by_tool in rows.items():
        c = comps[model]
        out += [f"### {model}", ""]
        table = []
        for tool in tools:
            r = by_tool.get(tool)
            if r is None:
                continue
            ok = r.get("status") == "ok"
            ratio = r["median_s"] / c["fastest_peer_s"] if ok and c["fastest_peer_s"] else None
            table.append(
                [
                    f"**{tool}**" if tool == "flowprof" else tool,
                    fmt_int(r.get("macs")) if ok else r.get("status"),
                    fmt_error(r),
                    fmt_s(r.get("median_s")),
                    f"{fmt_s(r.get('min_s'))} - {fmt_s(r.get('max_s'))}" if ok else "-",
                    fmt_ratio(ratio),
                    fmt_s(r.get("first_s")),
                    fmt_s(cold_total(r)),
                    f"{fmt_s(r.get('build_s'))} ({r.get('device', '-')})",
                    fmt_bytes(r.get("peak_bytes")),
                    fmt_bytes(r.get("analysis_peak_bytes")),
                    str(r.get("threads", "-")),
                    fmt_s(r.get("import_s")),
                    fmt_bytes(r.get("import_rss_bytes")),
                ]
            )
        out += md_table(header, table)
        failed = [r for r in by_tool.values() if r.get("status") != "ok"]
        out += [f"- {r['tool']}: {r.get('status')}: {r.get('error', '')}" for r in failed]
        exact_text = (
            f"fastest exact peer {c['fastest_exact_peer']} ({fmt_s(c['fastest_exact_peer_s'])}): "
            f"flowprof {fmt_ratio(c.get('ratio_fastest_exact'))} its time"
            if c["fastest_exact_peer"]
            else "no peer is exact on this model"
        )
        out += ["", f"Fastest peer: {c['fastest_peer']}; {exact_text}.", ""]
    return out


PHASES = ("fx symbolic trace", "counting run", "units and edges", "grouping")


def _phases_section(phases: list[dict[str, Any]], analysis: list[dict[str, Any]]) -> list[str]:
    exact_peer = {c["model"]: c for c in comparisons(analysis)}
    out = [
        "## Where flowprof's time goes",
        "",
        "Each phase of `tracer.trace` timed on its own (bench/phases.py: warm, median of "
        f"{phases[0]['repeats']} calls, one thread, a fresh process per model), next to the whole "
        "call and to the fastest exact peer's whole analysis from the table above. The fx "
        "symbolic trace costs about the same per graph node on every model: it sets a floor "
        "under flowprof's time that grows with the number of nodes, not with the arithmetic. "
        "The floor is torch.fx's, not flowprof's: the last column but one is torch.fx's own "
        "symbolic trace of the model (`torch.fx.Tracer().trace(model)`, default leaves, no "
        "flowprof code), which any tool that traces with torch.fx, as flowprof's design card "
        "has it do, pays before counting anything. The last column but two is flowprof's whole "
        "call on its path without torch.fx (`hooks=True`: the blocks recorded by hooks as the "
        "model runs, the path models fx cannot trace take), the same graph on these models.",
        "",
    ]
    header = [
        "model",
        "fx nodes",
        *PHASES,
        "trace() total",
        "without fx (hooks)",
        "fx per node",
        "torch.fx alone",
        "fastest exact peer",
    ]
    table = []
    for r in phases:
        c = exact_peer.get(r["model"], {})
        peer = (
            f"{c['fastest_exact_peer']} {fmt_s(c['fastest_exact_peer_s'])}"
            if c.get("fastest_exact_peer")
            else "none"
        )
        fx_s = r["phases_s"]["fx symbolic trace"]
        table.append(
            [
                r["model"],
                str(r["fx_nodes"]),
                *(fmt_s(r["phases_s"][p]) for p in PHASES),
                fmt_s(r["trace_s"]),
                fmt_s(r.get("hooks_s")),
                f"{fx_s / r['fx_nodes'] * 1e6:.0f} us",
                fmt_s(r["stock_fx_s"]) if r.get("stock_fx_s") is not None else "fails",
                peer,
            ]
        )
    out += md_table(header, table)
    return out + [""]


def phase_line(results: dict[str, Any], c: dict[str, Any]) -> list[str]:
    """Where the time goes on a model where flowprof is slower than the fastest exact peer."""
    r = next((r for r in results.get("phases", []) if r["model"] == c["model"]), None)
    if r is None:
        return []
    fx_s = r["phases_s"]["fx symbolic trace"]
    peer_s = c["fastest_exact_peer_s"]
    rest = r["phases_s"]["units and edges"] + r["phases_s"]["grouping"]

    def against_peer(seconds: float) -> str:
        return "longer than" if seconds > peer_s else f"{seconds / peer_s:.0%} of"

    stock, hooks = r.get("stock_fx_s"), r.get("hooks_s")
    floor = (
        ""
        if stock is None
        else f" torch.fx's own Tracer on this model, without flowprof, takes {fmt_s(stock)}, "
        f"{against_peer(stock)} the peer's whole analysis."
    )
    if hooks is not None:
        floor += (
            f" Without torch.fx (blocks recorded by hooks) the whole call takes {fmt_s(hooks)}, "
            f"{against_peer(hooks)} the peer's."
        )
    return [
        f"    - where the time goes: the fx symbolic trace alone ({r['fx_nodes']} nodes) takes "
        f"{fmt_s(fx_s)}, {against_peer(fx_s)} {c['fastest_exact_peer']}'s whole analysis "
        f"({fmt_s(peer_s)}); the counting run {fmt_s(r['phases_s']['counting run'])}, units, "
        f"edges and grouping {fmt_s(rest)}.{floor}"
    ]


def _scale_section(cells: list[dict[str, Any]], s: dict[str, Any]) -> list[str]:
    tools = scale_tools_in(cells)
    embs = sorted({c["emb"] for c in cells})
    seq = cells[0]["seq_len"]
    out = [
        f"## Scale: the transformer at seq {seq}, emb {embs[0]} to {embs[-1]}",
        "",
        f"One encoder and one decoder layer, fp16, batch 1, d_ff = 4 x emb, one head per 128 "
        f"features (at least 8). Each cell: time of one analysis in a fresh process (flowprof: "
        f"its first call; warm median in the flowprof column's note) and peak resident memory "
        f"above the import baseline, model included. Peers build the model's real fp16 weights "
        f"and run it, each under an address-space limit of {s['mem_limit_gb']:g} GiB above its "
        f"import footprint and a wall-time limit of {s['time_limit_s']:g} s for imports and "
        f"build, and as long again for the analysis. Build: constructing the model (flowprof: "
        f"on meta; peers: real fp16 weights with the model's initialisation).",
        "",
    ]
    header = ["emb", "heads", "exact MACs", "fp16 weights", *tools]
    table = []
    for emb in embs:
        row_cells = {c["tool"]: c for c in cells if c["emb"] == emb}
        first = next(iter(row_cells.values()))
        row = [str(emb), str(first["heads"]), fmt_int(first["exact_macs"])]
        row.append(fmt_bytes(first["weight_bytes"]))
        for tool in tools:
            c = row_cells.get(tool, {"status": "not run", "reason": "-"})
            text = status_cell(c)
            if tool == "flowprof" and c.get("status") == "ok":
                text += f"; warm {fmt_s(c.get('median_s'))}"
            if c.get("status") == "ok":
                text += "; exact" if c.get("macs") == c["exact_macs"] else f"; {fmt_error(c)}"
            row.append(text)
        table.append(row)
    out += md_table(header, table)
    out += [
        "",
        "-: that size is not run for that tool by default (the peers' forward passes take most "
        "of the benchmark's time; `--peer-embs` runs them). A peer that timed out or ran out of "
        "memory at one size is not run at larger ones.",
        "",
    ]
    return out


def _training_section(t: dict[str, Any]) -> list[str]:
    if t["cells"] and "median_train_to_ceiling" not in t["cells"][0]:
        return ["## Training throughput", "", "(an older run's format: rerun bench/run.py)", ""]
    rows = []
    for cell in t["cells"]:
        median, best = cell["median_samples_per_s"], cell["best_samples_per_s"]
        load = "/".join(f"{x:.2f}" for x in cell["load"])
        for name in t["variants"]:
            of_ceiling = ""
            if name == "train":
                of_ceiling = (
                    f"**{cell['median_train_to_ceiling']:.0%}** (rounds: "
                    + ", ".join(f"{r:.0%}" for r in cell["train_to_ceiling"])
                    + f"); {cell['train_to_best_ceiling']:.0%} of the condition's best"
                )
            elif name != "ceiling":
                of_ceiling = f"{median[name] / median['ceiling']:.0%}"
            label = name + (f" ({cell['ceiling_layout']})" if name == "ceiling" else "")
            rows.append(
                [
                    cell["condition"],
                    str(cell["threads"]),
                    load,
                    str(cell["rounds"]),
                    label,
                    f"{median[name]:,.0f}",
                    f"{best[name]:,.0f}",
                    of_ceiling,
                ]
            )
    header = [
        "condition",
        "threads",
        "load at start",
        "rounds",
        "loop",
        "median samples/s",
        "best samples/s",
        "of the cell's ceiling (median)",
    ]
    first = t["cells"][0]
    out = [
        "## Training throughput",
        "",
        f"bench/bench_training.py: {t['model']}, batch {t['batch_size']}, criterion "
        f"{t.get('criterion', 'cross entropy')}; {t['data']}. `train` is `training.loop.train` "
        "itself (its own samples/s of the training pass); `bare` a minimal PyTorch loop over the "
        "same tensors on the model as `train` builds it (training/kernels.py); `plain` the same "
        "loop on the model as registered, without those kernels; `ceiling` forward, backward and "
        "step on one batch already in memory, in whichever layout (contiguous or channels-last) "
        "a trial at that thread count found faster. The condition's best ceiling is its best "
        "layout and thread count. Variants are interleaved: each of "
        f"up to {max(c['rounds'] for c in t['cells'])} rounds (as many as start within a "
        "cell's time budget; see the rounds column) runs every variant once on "
        f"{first['samples_per_round']:,} training digits after a warm-up epoch; `train`'s share "
        "of the ceiling is taken within each round and its median given. 'one core busy' adds a "
        "process spinning on one core (started by the bench) to whatever else ran; the machine "
        "was shared (see the load).",
        "",
        *md_table(header, rows),
        "",
    ]
    p = t.get("profile")
    if p:
        out += [
            "Where `train`'s time goes (torch.profiler over one `train` call at one thread: "
            f"{p['steps']} training steps and a test pass of 200 digits; "
            f"{p['self_cpu_ms_per_step']:.1f} ms self CPU per training step):",
            "",
            *md_table(
                ["op", "share of self CPU", "ms per step", "calls per step"],
                [
                    [
                        f"`{e['op']}`",
                        f"{e['share']:.1%}",
                        f"{e['ms_per_step']:.2f}",
                        f"{e['calls_per_step']:g}",
                    ]
                    for e in p["top"]
                ],
            ),
            "",
        ]
    return out


def _training_step_section(t: dict[str, Any]) -> list[str]:
    sc = t["scale"]
    out = [
        "## Training step",
        "",
        "bench/training_step.py. One training step (forward, loss, backward, Adam update) of the "
        f"reference transformer at emb {sc['emb']:,}, seq {sc['seq_len']:,} "
        f"({sc['params']:,} parameters), traced on meta tensors in a fresh process: "
        f"**{sc['seconds']:.1f} s** (after {sc['import_seconds']:.1f} s of imports), peak "
        f"resident memory **{fmt_bytes(sc['peak_bytes'])}** (the kernel's VmHWM; "
        f"{fmt_bytes(sc['peak_bytes_before_trace'])} before the trace), uncounted ops: "
        f"{sc['uncounted'] or 'none'}. MACs by phase: "
        + ", ".join(f"{k} {v:,}" for k, v in sc["macs"].items())
        + "; Adam: "
        f"{sc['optimizer_ops_per_param']:.2f} operations per parameter.",
        "",
    ]
    rows = t["flopcounter"]
    agree = [r for r in rows if r.get("agree")]
    failed = [r for r in rows if "flopcounter_error" in r]
    out += [
        "Every torchvision classifier, one forward + cross-entropy + backward on meta tensors: "
        "flowprof's MACs of forward and backward against FlopCounterMode's FLOPs / 2, less "
        "FlopCounterMode's overcount of grouped convolutions' weight gradients (it ignores "
        "`groups` there: (groups - 1) x the true MACs, computed from each layer's shapes). "
        f"**{len(agree)} of {len(rows) - len(failed)}** models FlopCounterMode could run agree "
        f"exactly; {len(failed)} it could not run.",
        "",
    ]
    table = []
    for r in rows:
        if "flowprof_error" in r:
            failed = f"flowprof failed: {r['flowprof_error']}"
            table.append([r["model"], "-", "-", "-", "-", failed, "-", "-"])
            continue
        if "flopcounter_error" in r:
            status, theirs = f"FlopCounterMode failed: {r['flopcounter_error']}", "-"
        else:
            status = "exact" if r["agree"] else "**differs**"
            theirs = f"{r['flopcounter_macs']:,}"
        table.append(
            [
                r["model"],
                f"{r['flowprof_macs']:,}",
                theirs,
                f"{r['grouped_overcount']:,}" if r["grouped_overcount"] else "0",
                f"{r['backward_over_forward']:.2f}",
                status,
                f"{r['flowprof_s']:.2f}",
                f"{r['flopcounter_s']:.2f}",
            ]
        )
    header = [
        "model",
        "flowprof MACs",
        "FlopCounterMode FLOPs/2",
        "its grouped-conv overcount",
        "bwd/fwd ops",
        "agreement",
        "flowprof s",
        "FlopCounterMode s",
    ]
    return out + md_table(header, table) + [""]


def _method_section(s: dict[str, Any]) -> list[str]:
    return [
        "## How it is measured",
        "",
        "- One fresh Python process per tool and model (bench/peers.py), so each tool's memory "
        "is its own and a crash, an out-of-memory or a hang of one tool is recorded, not fatal.",
        "- Memory: VmHWM from /proc/self/status, reset between phases by writing 5 to "
        "/proc/self/clear_refs; reported above the import baseline.",
        "- Counts: fvcore's flops, thop's ops, ptflops' MACs and torchinfo's mult-adds are one "
        "per multiply-accumulate; FlopCounterMode's FLOPs are two. FlopCounterMode runs with "
        "grad mode as it is (enabled), as its documentation calls it; ptflops runs with its "
        "default (pytorch) backend and, as ptflops-aten, its aten backend.",
        "- Exact totals: LeNet-5 and its twin from the paper's layer sizes and Table I; the "
        "transformer from its closed form; resnet18, mobilenet_v2 and vit_b_16 from the "
        "architecture walks in tests/test_peers.py (which also explains each peer's deviation).",
        f"- Threads: torch's default here is {s.get('default_threads', '?')}. In the analysis "
        "tables each tool's warm calls use 1 thread or the default, whichever a timed trial "
        "after the first call found faster (the threads column); the scale runs use the "
        "default. flowprof's trace is single-threaded Python either way.",
        "",
    ]


# --- the plot ------------------------------------------------------------------------------------


def plot(results: dict[str, Any], stem: Path) -> list[Path]:
    """Analysis time and memory per model and tool; time and memory vs emb at scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    analysis = results.get("analysis", [])
    cells = results.get("scale", [])
    fig, axes = plt.subplots(2, 2, figsize=(14, 9), constrained_layout=True)
    colors = {t: f"C{i}" for i, t in enumerate(peers.TOOLS)}
    rows = by_model(analysis)
    models = list(rows)
    tools = tools_in(rows)
    width = 0.8 / max(len(tools), 1)
    for ax, key, label in (
        (axes[0, 0], "median_s", "warm analysis time (s), median, min-max"),
        (axes[0, 1], "peak_bytes", "peak memory above imports (MB)"),
    ):
        for i, tool in enumerate(tools):
            xs, ys, lo, hi = [], [], [], []
            for j, model in enumerate(models):
                r = rows[model].get(tool, {})
                if r.get(key) is None:
                    continue
                scale_by = 1e-6 if key == "peak_bytes" else 1
                y = max(r[key] * scale_by, 1e-3)
                xs.append(j + (i - (len(tools) - 1) / 2) * width)
                ys.append(y)
                lo.append(y - r["min_s"] if key == "median_s" else 0)
                hi.append(r["max_s"] - y if key == "median_s" else 0)
            ax.bar(xs, ys, width, label=tool, color=colors[tool], yerr=[lo, hi] if xs else None)
        ax.set_yscale("log")
        ax.set_xticks(range(len(models)), models, rotation=20)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=8, ncols=2)
    axes[0, 0].set_title("analysis time per model (log scale)")
    axes[0, 1].set_title("peak memory per model (log scale)")
    limit = results["settings"].get("time_limit_s")
    markers = {"timeout": "x", "out of memory": "v", "error": "D", "crashed": "D"}
    embs = sorted({c["emb"] for c in cells})
    scale_tools = scale_tools_in(cells)
    for ax, key, label in (
        (axes[1, 0], "first_s", "time of one analysis (s); failures drawn at the time limit"),
        (axes[1, 1], "peak_bytes", "peak memory above imports (GB)"),
    ):
        for i, tool in enumerate(scale_tools):
            ok = [c for c in cells if c["tool"] == tool and c["status"] == "ok"]
            bad = [c for c in cells if c["tool"] == tool and c["status"] not in ("ok", "not run")]
            to_y = (lambda b: b / 1e9) if key == "peak_bytes" else (lambda s: s)
            if ok:
                ax.plot(
                    [c["emb"] for c in ok],
                    [max(to_y(c[key]), 1e-4) for c in ok],
                    "o-",
                    color=colors[tool],
                    label=tool,
                )
            for c in bad:  # spread side by side so that several failures at one size show
                seen = seen_peak(c) or 0
                y = limit if key == "first_s" else max(seen / 1e9, 1e-4)
                x = c["emb"] * 2 ** (0.06 * (i - len(scale_tools) / 2))
                ax.plot(x, y, markers.get(c["status"], "D"), color=colors[tool], ms=9, mew=2)
        if key == "first_s" and limit:
            ax.axhline(limit, color="grey", ls="--", lw=1)
            ax.text(embs[len(embs) // 2] if embs else 256, limit * 1.15, "time limit", color="grey")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(embs, [str(e) for e in embs])
        ax.minorticks_off()
        ax.set_xlabel("emb (seq 2048)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    from matplotlib.lines import Line2D

    failure_keys = [
        Line2D([], [], color="grey", ls="", marker=m, mew=2, label=status)
        for status, m in markers.items()
        if status != "crashed"
    ]
    axes[1, 0].legend(handles=axes[1, 0].get_legend_handles_labels()[0] + failure_keys, fontsize=8)
    axes[1, 0].set_title("scale: time of one analysis in a fresh process (log scale)")
    axes[1, 1].set_title("scale: peak memory, failures at the memory they reached")
    for ax in axes.flat:
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1, 2, 5)))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    paths = []
    for suffix in (".png", ".svg"):
        path = stem.with_suffix(suffix)
        tmp = path.with_name(path.name + ".tmp")
        fig.savefig(tmp, dpi=110, format=suffix[1:])
        os.replace(tmp, path)
        paths.append(path)
    plt.close(fig)
    return paths


# --- main ----------------------------------------------------------------------------------------


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def names(valid: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        chosen = [x for x in text.split(",") if x]
        unknown = [x for x in chosen if x not in valid]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {', '.join(valid)}")
        return chosen

    return parse


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="flowprof vs its peers: writes BENCHMARKS.md, bench/results.json and a plot.",
        epilog=f"example: {COMMAND} --quick",
    )
    p.add_argument("--repeats", type=int, default=5, help="timed calls per tool and model")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before them")
    p.add_argument("--models", type=names(list(peers.MODELS)), default=list(peers.MODELS))
    p.add_argument("--tools", type=names(list(peers.TOOLS)), default=list(peers.TOOLS))
    p.add_argument("--scale-embs", type=ints, default=list(scale.EMBS), help="flowprof's sizes")
    p.add_argument("--peer-embs", type=ints, default=list(scale.PEER_EMBS), help="peers' sizes")
    p.add_argument(
        "--scale-tools", type=names(list(scale.SCALE_TOOLS)), default=list(scale.SCALE_TOOLS)
    )
    p.add_argument("--time-limit", type=float, default=120.0, help="seconds per scale run")
    p.add_argument("--mem-limit-gb", type=float, default=12.0, help="GiB per scale run")
    p.add_argument("--train-model", default="lenet5")
    p.add_argument("--train-samples", type=int, default=1280, help="training samples per round")
    p.add_argument("--train-rounds", type=int, default=5)
    p.add_argument(
        "--skip",
        type=names(["analysis", "phases", "scale", "training", "training_step"]),
        default=[],
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke run: 1 repeat, small scale, short training"
    )
    p.add_argument(
        "--wait-for-load",
        type=float,
        default=None,
        metavar="LOAD",
        help="first wait (up to --max-wait s) for the 1-minute load to drop below LOAD",
    )
    p.add_argument("--max-wait", type=float, default=900.0)
    p.add_argument("--render-only", action="store_true", help="rewrite outputs from results.json")
    p.add_argument(
        "--keep-skipped",
        action="store_true",
        help="take the --skip sections (and their load readings) from the existing results.json",
    )
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--markdown", type=Path, default=MARKDOWN)
    p.add_argument("--plot", type=Path, default=PLOT, help="plot path without suffix")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup = 1, 1
        args.scale_embs, args.peer_embs = [256, 1024], [256]
        args.train_rounds, args.train_samples = 1, 512
    return args


def write_outputs(results: dict[str, Any], args: argparse.Namespace) -> None:
    write_atomic(args.results, json.dumps(results, indent=1) + "\n")
    plot_paths = plot(results, args.plot)
    rel = os.path.relpath(plot_paths[0], args.markdown.resolve().parent)
    write_atomic(args.markdown, render(results, rel))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from rich.console import Console

    console = Console(stderr=True)
    if args.render_only:
        write_outputs(json.loads(args.results.read_text()), args)
        console.print(f"rewrote {args.markdown} and {args.plot}.png/.svg from {args.results}")
        return 0
    if args.wait_for_load is not None:
        wait_for_load(args.wait_for_load, args.max_wait, console.print)
    started = time.time()
    results: dict[str, Any] = {
        "command": " ".join([".venv/bin/python", "bench/run.py", *(argv or sys.argv[1:])]),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {
            "repeats": args.repeats,
            "warmup": args.warmup,
            "time_limit_s": args.time_limit,
            "mem_limit_gb": args.mem_limit_gb,
            "scale_embs": args.scale_embs,
            "peer_embs": args.peer_embs,
        },
        "load": {"start": load_average()},
        "source_digest": {"start": source_digest()},
    }
    with progress_bar() as progress:
        if "analysis" not in args.skip:
            results["analysis"] = run_analysis(
                args.models, args.tools, args.repeats, args.warmup, progress
            )
            defaults = {r["default_threads"] for r in results["analysis"] if "default_threads" in r}
            results["settings"]["default_threads"] = ",".join(str(t) for t in sorted(defaults))
            results["load"]["after analysis"] = load_average()
        if "phases" not in args.skip:
            results["phases"] = run_phases(args.models, progress)
        if "scale" not in args.skip:
            results["scale"] = run_scale(args, progress)
            results["load"]["after scale"] = load_average()
        if "training" not in args.skip:
            results["training"] = run_training(args, progress)
            results["load"]["after training"] = load_average()
        if "training_step" not in args.skip:
            results["training_step"] = run_training_step(progress)
            results["load"]["after training step"] = load_average()
    results["duration_s"] = time.time() - started
    if args.keep_skipped and args.results.is_file():
        earlier = json.loads(args.results.read_text())
        for section in args.skip:
            if section in earlier:
                results[section] = earlier[section]
        if {"analysis", "scale"} & set(args.skip):  # their settings (repeats, threads, sizes)
            results["settings"] = earlier.get("settings", results["settings"])
        results["kept_from"] = {
            "sections": [s for s in args.skip if s in earlier],
            "started": earlier.get("started"),
            "load": earlier.get("load"),
        }
    results["source_digest"]["end"] = source_digest()
    if results["source_digest"]["end"] != results["source_digest"]["start"]:
        console.print(
            "warning: flowprof/tracer/ or flowprof/models/ changed during the run: "
            "the numbers mix versions"
        )
    write_outputs(results, args)
    for line in summary(results):
        console.print(line, markup=False, highlight=False)
    console.print(f"wrote {args.markdown}, {args.results} and {args.plot}.png/.svg")
    return 0


if __name__ == "__main__":
    sys.exit(main())

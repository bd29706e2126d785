"""Tests of the assignment's answers (analyses/assignment.py), their report
(reports/assignment_report.py), the diagram's folding of repeated layers (reports/diagram.py), and
the HTML report in headless Chromium.

The answers are computed once for the module in quick mode (a small MNIST subset, two epochs,
three embedding sizes): about ten seconds on an idle machine.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from flowprof import tracer
from flowprof.analyses import assignment
from flowprof.analyses.assignment import AssignmentResults, run_assignment
from flowprof.models import registry
from flowprof.reports import diagram
from flowprof.reports.assignment_report import build_report
from flowprof.reports.document import (
    Document,
    Figure,
    compile_pdf,
    latex_engine,
    render_html,
    render_latex,
    render_markdown,
)
from flowprof.reports.units import si
from flowprof.tracer.counts import OpCount
from tests.chromium import PROBE, chromium

ROOT = Path(__file__).resolve().parents[1]

EXTERNAL = re.compile(
    r"""(?:src|href)\s*=\s*["']?\s*(?:https?:|//)|url\(\s*["']?\s*(?:https?:|//)|@import""",
    re.IGNORECASE,
)


@pytest.fixture(scope="module")
def progress_calls() -> list[tuple[str, int, int]]:
    return []


@pytest.fixture(scope="module")
def results(progress_calls: list[tuple[str, int, int]], tmp_path_factory) -> AssignmentResults:
    cache = tmp_path_factory.mktemp("checkpoints")  # empty: both LeNets are really trained
    return run_assignment(
        quick=True, progress=lambda *call: progress_calls.append(call), cache_dir=cache
    )


@pytest.fixture(scope="module")
def report_doc(results: AssignmentResults) -> Document:
    return build_report(results)


@pytest.fixture(scope="module")
def report_html(report_doc: Document) -> str:
    return render_html(report_doc)


# --- the answers ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_progress_reports_every_step(
    results: AssignmentResults, progress_calls: list[tuple[str, int, int]]
) -> None:
    total = progress_calls[0][2]
    assert progress_calls[0] == ("Problem 1: shapes and the convolution solver", 0, total)
    assert progress_calls[-1] == ("done", total, total)
    done = [d for _, d, _ in progress_calls]
    assert done == sorted(done)
    # one call per step plus one per epoch of each training run
    epochs = sum(len(run.history) for run in results.problem2.runs.values())
    assert len(progress_calls) == total + 1 + epochs
    steps = {name for name, _, _ in progress_calls if ": epoch" not in name and name != "done"}
    assert set(results.seconds) == steps


@pytest.mark.slow
def test_problem1_answers(results: AssignmentResults) -> None:
    p1 = results.problem1
    # 13x15 -> (13-4+1)x(15-6+1) = 10x10x7 -> floor((10+2-3)/2)+1 x floor((10+2-4)/2)+1 = 5x5x8
    # -> max-pool 2x2: 2x2x8.
    assert [str(s.output) for s in p1.steps] == ["10x10x7", "5x5x8", "2x2x8"]
    assert p1.final_shape == "2x2x8"
    first, second = p1.examples(2)
    assert str(first.layer) == "conv:3@4x4" and first.weight_shape == (3, 5, 4, 4)
    assert second.layer.kernel != first.layer.kernel
    assert str(second.output) == "5x5x3"
    assert p1.kernels["3x3"].possible and p1.kernels["2x2"].possible
    assert len(p1.solutions) == 20


@pytest.mark.slow
def test_problem2_training_and_counts(results: AssignmentResults) -> None:
    p2 = results.problem2
    assert p2.train_samples == assignment.QUICK_TRAIN_SAMPLES
    assert p2.test_samples == assignment.QUICK_TEST_SAMPLES
    for name in assignment.LENETS:
        run = p2.runs[name]
        assert len(run.history) == assignment.QUICK_EPOCHS
        assert 0 <= run.final.test_acc <= 1
    cmp = p2.comparison
    assert (cmp.model_a, cmp.model_b) == assignment.LENETS
    # Per-layer rows add up to the totals, which are the traced graphs' totals.
    for side, name in (("a", "lenet5"), ("b", "lenet5-dws")):
        rows = [getattr(r, side) for r in cmp.rows]
        total = getattr(cmp.total, side)
        assert sum(r.multiplications for r in rows) == total.multiplications
        assert sum(r.additions for r in rows) == total.additions
        assert total.multiplications == p2.graphs[name].total().multiplications
        assert results.our_counts[name]["macs"] == total.macs
    # The paper's network: 325,680 MACs (c1 117,600 + c3 150,000 + c5 48,000 + f6 10,080).
    assert cmp.total.a.macs == 117_600 + 150_000 + 48_000 + 10_080
    assert cmp.convs and all(conv.ok for conv in cmp.convs)
    assert p2.derivation_text and len(p2.derivation_text) == len(p2.derivation_latex)


@pytest.mark.slow
def test_problem3_graphs_and_sweep(results: AssignmentResults) -> None:
    p3 = results.problem3
    assert p3.config["emb"] == 256 and p3.config["heads"] == 8
    assert sorted(p3.graphs) == [1, 2, 3]
    totals = {d: g.total() for d, g in p3.graphs.items()}
    assert totals[1] == totals[2] == totals[3]  # grouping never changes the counts
    assert all(g.precision.bits == 16 for g in p3.graphs.values())
    assert p3.sweep is not None and p3.sweep.values == list(assignment.QUICK_SWEEP_EMB)
    assert set(p3.sweep.families()) >= {"residual stream", "attention scores"}
    assert p3.explanation and p3.seq_sweep is None  # the seq_len sweep is for full runs


@pytest.mark.slow
def test_pipeline_check(results: AssignmentResults) -> None:
    check = results.pipeline
    assert check is not None
    if check.result is None:
        pytest.skip(f"pipeline not run: {check.error}")
    assert check.result.ok
    assert all(c.measured_bits == c.predicted_bits for c in check.result.cuts)


def test_analyses_do_not_import_drawing_or_printing() -> None:
    code = (
        "import sys\n"
        "import flowprof.analyses.assignment, flowprof.analyses.comm_sweep\n"
        "import flowprof.analyses.op_compare\n"
        "import flowprof.training.loop, flowprof.training.mnist\n"
        "print(sorted(m for m in ('rich', 'matplotlib', 'graphviz') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --- the report ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_report_states_the_computed_numbers(results: AssignmentResults, report_html: str) -> None:
    page = report_html
    p2 = results.problem2
    ta, tb = p2.comparison.total.a, p2.comparison.total.b
    for number in (ta.multiplications, ta.additions, tb.multiplications, tb.additions):
        assert f"{number:,}" in page
    assert "<strong>2x2x8</strong>" in page
    assert p2.source_description.split(" (")[0] in page  # which MNIST source
    assert f"{p2.train_samples:,} training and {p2.test_samples:,} test samples" in page
    assert tracer.CONVENTION in page  # the counting convention
    for command in (
        "python cli.py shape 13x15x3 conv:7@4x6 conv:8@3x4/s2/p1 maxpool:2x2",
        "python cli.py solve-conv --in 8x8x5 --out 5x5x3 --kernel 3x3",
        "python cli.py solve-conv --in 8x8x5 --out 5x5x3 --kernel 2x2",
        "python cli.py train lenet5 --epochs 2",
        "python cli.py train lenet5-dws --epochs 2",
        "python cli.py compare lenet5 lenet5-dws",
        "python cli.py sweep transformer --emb 64,256,1024",
        "python cli.py report --out out/report --quick",
    ):
        assert command in page, command
    for line in results.problem3.explanation:
        assert line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in page
    acc = p2.runs["lenet5"].final.test_acc
    assert f"test accuracy {100 * acc:.2f}%" in page
    # the twin's own learning rate (training.loop.MODEL_LR) is stated beside the shared recipe
    assert p2.runs["lenet5-dws"].config.lr == 1e-2 and p2.runs["lenet5"].config.lr == 2e-3
    assert "except for its starting learning rate, 0.01:" in page


@pytest.mark.slow
def test_report_shows_the_derived_laws(results: AssignmentResults, report_html: str) -> None:
    page = report_html
    law = results.problem3.law
    # 3(b): the law in emb at the report's seq 128, checked at the quick sweep's 3 points; by
    # hand (tests/test_formula_laws.py): activations 912*128 E + 1288*128^2, weights 16(28E^2+32E)
    assert law is not None and law.agrees and law.checked == len(results.problem3.sweep.points)
    assert "activation bits = 116736*emb + 21102592" in page
    assert "weight bits = 448*emb**2 + 512*emb" in page
    assert f"Checked at {law.checked} points" in page and "each family's bits): equal" in page
    # 2(d): f derived for c1, c3, c5 of the two LeNets, beside the hand f, all agreeing
    d = results.problem2.derived_f
    assert [x.layer for x in d.layers] == ["c1", "c3", "c5"] and d.agree
    assert "f derived by the tool from traces" in page
    n = len(d.checks())
    assert f"the two agree in {n} of {n} cases" in page
    assert "y = 7*x/50" in page  # C3's multiplications: 6/60 + 1/25 = 7/50


@pytest.mark.slow
def test_report_figures_in_every_format(report_doc: Document, report_html: str) -> None:
    doc = report_doc
    figures = doc.figures()
    names = [f.name for f in figures]
    for name in (
        "train-lenet5-accuracy",
        "train-lenet5-loss",
        "train-lenet5-dws-accuracy",
        "train-lenet5-dws-loss",
        "train-comparison",
        "dataflow-lenet5",
        "dataflow-lenet5-dws",
        "dataflow-transformer-depth3",
        "sweep-families",
        "sweep-totals",
    ):
        assert name in names
    assert len(set(names)) == len(names)
    # HTML: every figure embedded, nothing fetched from elsewhere.
    assert EXTERNAL.search(report_html) is None
    assert report_html.count("<figure") == len(figures)
    drawn = [f for f in figures if f.images]
    embedded = report_html.count("<svg") + report_html.count('src="data:image/png;base64,')
    assert embedded == len(drawn)
    # Markdown: every reference is a returned file (with the attached views).
    text, files = render_markdown(doc)
    refs = re.findall(r"!\[[^\]]*\]\((figures/[^)]+)\)", text)
    attached = {a.path for a in doc.attachments()}
    assert len(refs) == len(drawn) and set(refs) | attached == set(files)
    # LaTeX: every included file is returned.
    tex, tex_files = render_latex(doc)
    included = re.findall(r"\\includegraphics\[[^\]]*\]\{([^}]+)\}", tex)
    assert set(included) | attached == set(tex_files) and len(included) == len(drawn)


@pytest.mark.slow
@pytest.mark.skipif(latex_engine() is None, reason="no LaTeX engine (pdflatex, xelatex, ...)")
def test_report_compiles_to_pdf(report_doc: Document) -> None:
    tex, files = render_latex(report_doc)
    pdf = compile_pdf(tex, files)
    assert pdf is not None and pdf.startswith(b"%PDF")


# --- folding repeated layers ---------------------------------------------------------------------


def _transformer(depth: int, layers: int) -> tracer.BlockGraph:
    built = registry.build("transformer", device="meta", enc_layers=layers, dec_layers=layers)
    return tracer.trace(built.module, built.example_inputs("meta"), depth=depth)


def _labels(source: str) -> dict[str, str]:
    return dict(re.findall(r'^\s*"?([^"\s]+)"? \[label="([^"]*)"', source, re.MULTILINE))


def test_fold_six_layers_at_depth2() -> None:
    graph = _transformer(depth=2, layers=6)
    dot = diagram.dataflow(graph, fold=True).source
    labels = _labels(dot)
    encoders = [n for n, text in labels.items() if "EncoderLayer" in text]
    assert encoders == ["encoder.layers.0"]
    enc = labels["encoder.layers.0"]
    assert "layers.0-5 ×6" in enc
    one = graph.block("encoder.layers.0")
    # The label shows one copy and the total of six: 6 x 109 MMAC = 654 MMAC.
    assert f"6 × {si(one.macs, 'MAC')} = {si(6 * one.macs, 'MAC')}" in enc
    assert f"6 × {si(one.params)} = {si(6 * one.params)} params" in enc
    assert not any(f"encoder.layers.{i}" in labels for i in range(1, 6))
    # Drawn nodes' totals add up to the model's totals.
    folding = diagram.fold(graph)
    drawn = folding.drawn(graph)
    assert OpCount.sum(n.count for n in drawn) == graph.total()
    assert sum(n.params for n in drawn) == graph.params()
    assert {n.name: n.copies for n in drawn if n.copies > 1} == {
        "encoder.layers.0": 6,
        "decoder.layers.0": 6,
    }
    # Memory read by all six decoder layers: one edge, six tensors' bits.
    memory = [e for e in graph.edges() if e.src == "encoder.layers.5"]
    assert len(memory) == 6
    total = sum(e.bits for e in memory)
    assert re.search(
        rf'"encoder.layers.0" -> "decoder.layers.0" \[label="6 × 1x128x256\\n{si(total, "bit")}"',
        dot,
    )
    assert '"encoder.layers.0" -> "encoder.layers.0"' in dot  # copy to next copy, a loop


def test_fold_clusters_at_depth3() -> None:
    graph = _transformer(depth=3, layers=4)
    dot = diagram.dataflow(graph, fold=True).source
    assert dot.count('label="layers.0-3 ×4"') == 2  # the encoder's and the decoder's
    assert "encoder.layers.1" not in dot
    folding = diagram.fold(graph)
    assert OpCount.sum(n.count for n in folding.drawn(graph)) == graph.total()
    assert folding.copies["encoder.layers.0.ffn"] == 4


def test_fold_leaves_unrepeated_models_alone_and_is_deterministic() -> None:
    built = registry.build("lenet5", device="meta")
    graph = tracer.trace(built.module, built.example_inputs("meta"), depth=1)
    assert diagram.dataflow(graph, fold=True).source == diagram.dataflow(graph).source
    one = diagram.dataflow(_transformer(2, 3), fold=True).source
    two = diagram.dataflow(_transformer(2, 3), fold=True).source
    assert one == two


@pytest.mark.dot
@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot program is missing")
def test_folded_24_layer_diagram_renders() -> None:
    graph = _transformer(depth=3, layers=24)
    figure = Figure.from_graphviz(diagram.dataflow(graph, fold=True), "t24", "24 layers")
    assert figure.images["svg"].count(b'class="node"') == len(diagram.fold(graph).drawn(graph)) + 3


# --- the browser ---------------------------------------------------------------------------------

# Injected at the top of a copy of the page: records console errors and warnings, failed loads
# and uncaught errors, then, once loaded, what rendered, into <body data-check>.
_PROBE = (
    PROBE.removesuffix("</script>")
    + """addEventListener("load", () => {
  const visible = (el) => {
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0;
  };
  const figures = [...document.querySelectorAll("figure")];
  document.body.dataset.check = JSON.stringify({
    figures: figures.length,
    svgs: figures.filter((f) => f.querySelector("svg") && visible(f.querySelector("svg"))).length,
    imgs: [...document.images].filter((i) => i.complete && i.naturalWidth > 0 && visible(i)).length,
    broken: [...document.images].filter((i) => !i.complete || i.naturalWidth === 0).length,
    resources: performance.getEntriesByType("resource").map((r) => r.name),
    problems: window.__problems,
  });
});
</script>"""
)


def _chromium_check(html: str) -> tuple[dict, list[str]]:
    """Load ``html`` (with the probe) in headless Chromium: the probe's findings and the
    console lines Chromium logged."""
    with tempfile.TemporaryDirectory(prefix="flowprof-chromium-") as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(html.replace("<head>", "<head>" + _PROBE, 1), encoding="utf-8")
        done = subprocess.run(
            [
                chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={Path(tmp) / 'profile'}",
                "--enable-logging=stderr",
                "--v=0",
                "--virtual-time-budget=5000",
                "--window-size=1200,900",
                "--dump-dom",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=120,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    match = re.search(r'<body data-check="([^"]*)"', done.stdout)
    assert match, "the page did not finish loading: " + done.stderr[-2000:]
    check = json.loads(match[1].replace("&quot;", '"').replace("&amp;", "&"))
    return check, [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


needs_chromium = pytest.mark.skipif(
    chromium() is None,
    reason="headless Chromium is missing (apt-get update && apt-get install -y chromium)",
)


@pytest.mark.browser
@needs_chromium
def test_chromium_probe_sees_a_broken_page() -> None:
    # The negative control: the probe must report what the report check asserts is absent.
    broken = (
        "<!DOCTYPE html><html><head><title>x</title></head><body>"
        '<figure><img src="missing.png"></figure><script>console.error("boom")</script>'
        "</body></html>"
    )
    check, console = _chromium_check(broken)
    assert check["figures"] == 1 and check["broken"] == 1 and check["imgs"] == 0
    assert any("boom" in p for p in check["problems"])
    assert any("missing.png" in p for p in check["problems"])
    assert console


@pytest.mark.slow
@pytest.mark.browser
@needs_chromium
def test_report_renders_in_headless_chromium(report_doc: Document, report_html: str) -> None:
    doc = report_doc
    drawn_svg = sum(1 for f in doc.figures() if "svg" in f.images)
    drawn_png = sum(1 for f in doc.figures() if f.images and "svg" not in f.images)
    check, console = _chromium_check(report_html)
    assert check["problems"] == []
    assert check["resources"] == []  # nothing fetched: data URIs and inline SVG only
    assert check["figures"] == len(doc.figures())
    assert check["svgs"] == drawn_svg
    assert check["imgs"] == drawn_png and check["broken"] == 0
    assert console == [], console


def test_report_links_one_view_per_model(report_doc: Document, report_html: str) -> None:
    views = report_doc.attachments()
    assert [a.path for a in views] == [
        "views/lenet5.html",
        "views/lenet5-dws.html",
        "views/transformer.html",
    ]
    for a in views:
        assert f'href="{a.path}"' in report_html
        assert a.data.startswith(b"<!DOCTYPE html>") and b'id="flowprof-data"' in a.data
    _, md_files = render_markdown(report_doc)
    assert {a.path for a in views} <= set(md_files)  # written beside the report with the figures

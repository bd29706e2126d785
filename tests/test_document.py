"""Tests of reports/document.py: the document model and its HTML, Markdown and LaTeX renderers."""

from __future__ import annotations

import re
import shutil

import pytest

from flowprof.reports.document import (
    Attachment,
    CodeBlock,
    Document,
    Figure,
    Math,
    Table,
    compile_pdf,
    escape_latex,
    inline_runs,
    latex_engine,
    render_html,
    render_latex,
    render_markdown,
    scoped_svg,
)

# Resource references that would leave the file: http(s) or protocol-relative src/href, CSS url()
# and @import. (The SVG namespace URIs are names, not fetched.)
EXTERNAL = re.compile(
    r"""(?:src|href)\s*=\s*["']?\s*(?:https?:|//)|url\(\s*["']?\s*(?:https?:|//)|@import""",
    re.IGNORECASE,
)


def _matplotlib_figure(title: str):
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(3, 2))
    ax = fig.add_subplot()
    ax.plot([1, 2, 3], [1, 4, 9], label="squares")
    ax.set_title(title)
    ax.legend()
    return fig


def sample_document() -> Document:
    doc = Document("Report <one> & two", "a subtitle with `code` and **bold**")
    intro = doc.section("Intro: 100% of $5 & #1")
    intro.paragraph("Text with <tags>, a * star, an _underscore_ and `a|b code`.")
    intro.bullets(["first `item`", "second **item**"])
    intro.table(
        ("name", "count", "ratio", "bits"),
        [("a|b", 1234567, 0.5, "2.1 Mbit"), ("c", 7, 1.25, "524 kbit")],
        "A table with a pipe in a cell",
    )
    intro.command("python cli.py trace transformer --emb 256 --out out/t")
    intro.math(["y = x*(1/C_out + 1/K)"], [r"y = x \left(\frac{1}{C_{out}} + \frac{1}{K}\right)"])
    sub = intro.section("Figures")
    sub.add(Figure.from_matplotlib(_matplotlib_figure("one"), "plot-one", "First plot"))
    sub.add(Figure.from_matplotlib(_matplotlib_figure("two"), "plot-two", "Second plot"))
    png = Figure.from_matplotlib(_matplotlib_figure("png"), "x", "x", formats=("png",))
    sub.add(Figure("png-only", "A PNG figure", {"png": png.images["png"]}))
    sub.add(Figure("no-image", "A diagram without dot", {}, "digraph { a -> b }"))
    deeper = sub.section("Deeper")
    deeper.add(Math(("plain formula only: a <= b",)))
    deeper.add(CodeBlock("x = 1 × 2 → 3", "python", "Code with symbols"))
    return doc


# --- model ---------------------------------------------------------------------------------------


def test_inline_runs() -> None:
    assert inline_runs("a `b` **c** d") == [
        ("text", "a "),
        ("code", "b"),
        ("text", " "),
        ("bold", "c"),
        ("text", " d"),
    ]
    assert inline_runs("2*d and 3*p") == [("text", "2*d and 3*p")]


def test_walk_numbers_sections_and_figures_in_order() -> None:
    doc = sample_document()
    assert [n for n, _ in doc.walk()] == [(1,), (1, 1), (1, 1, 1)]
    assert [f.name for f in doc.figures()] == ["plot-one", "plot-two", "png-only", "no-image"]


def test_table_cells_and_numeric_columns() -> None:
    t = Table(("a", "b", "c"), (("x", 1234, 0.125), ("y", 5, 2.0)))
    assert t.cell_text(1234) == "1,234"
    assert t.cell_text(0.125) == "0.125"
    assert t.cell_text(True) == "yes"
    assert t.numeric_columns() == [False, True, True]
    assert Table(("v",), (("2.1 Mbit",), ("-3",), ("12%",))).numeric_columns() == [True]


def test_figure_names_are_file_safe() -> None:
    with pytest.raises(ValueError, match="figure name"):
        Figure("../evil", "x", {})


def test_matplotlib_figure_is_deterministic() -> None:
    a = Figure.from_matplotlib(_matplotlib_figure("same"), "a", "a")
    b = Figure.from_matplotlib(_matplotlib_figure("same"), "a", "a")
    assert set(a.images) == {"svg", "png", "pdf"}
    assert a.images["svg"] == b.images["svg"]
    assert a.images["pdf"] == b.images["pdf"]


# --- HTML ----------------------------------------------------------------------------------------


def test_html_is_self_contained_with_embedded_figures() -> None:
    doc = sample_document()
    page = render_html(doc)
    assert page.startswith("<!DOCTYPE html>")
    assert EXTERNAL.search(page) is None
    # Two matplotlib SVGs inline, the PNG as a data URI, the missing diagram as its source.
    assert page.count("<figure") == 4
    assert page.count("<svg") == 2
    assert page.count('src="data:image/png;base64,') == 1
    assert "digraph { a -&gt; b }" in page
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page
    # Every section has an anchor and a table-of-contents link to it.
    for number in ("1", "1-1", "1-1-1"):
        assert f"id='sec-{number}'" in page
        assert f"href='#sec-{number}'" in page
    # Text is escaped; inline marks become elements.
    assert "Text with &lt;tags&gt;" in page
    assert "<code>a|b code</code>" in page
    assert "<strong>bold</strong>" in page
    assert "<title>Report &lt;one&gt; &amp; two</title>" in page
    # Numeric columns are right-aligned.
    assert "<td class=n>1,234,567</td>" in page


def test_html_svg_ids_are_unique_across_figures() -> None:
    page = render_html(sample_document())
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert ids, "matplotlib SVGs carry ids"
    assert len(ids) == len(set(ids))
    # Every internal reference points at an id that exists.
    refs = re.findall(r"""(?:url\(#|href=["']#)([^)"']+)""", page)
    known = set(ids) | set(re.findall(r"id='([^']+)'", page))
    assert refs and set(refs) <= known


def test_scoped_svg_prefixes_ids_and_references() -> None:
    svg = (
        '<?xml version="1.0"?><svg><defs><path id="g1"/><clipPath id="c"/></defs>'
        '<use xlink:href="#g1"/><g clip-path="url(#c)"/><a href="#other"/></svg>'
    )
    out = scoped_svg(svg, "f1-")
    assert out.startswith("<svg>")
    assert 'id="f1-g1"' in out and 'xlink:href="#f1-g1"' in out and "url(#f1-c)" in out
    assert 'href="#other"' in out  # not an id of this SVG: left alone


def test_html_is_deterministic() -> None:
    assert render_html(sample_document()) == render_html(sample_document())


# --- Markdown ------------------------------------------------------------------------------------


def test_markdown_references_the_returned_figure_files() -> None:
    text, files = render_markdown(sample_document())
    refs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert refs == ["figures/plot-one.png", "figures/plot-two.png", "figures/png-only.png"]
    assert set(refs) == set(files)
    assert all(files[r].startswith(b"\x89PNG") for r in refs)
    assert "```dot\ndigraph { a -> b }\n```" in text  # the diagram that could not be drawn


def test_markdown_escaping_tables_and_toc() -> None:
    text, _ = render_markdown(sample_document())
    assert text.startswith("# Report \\<one\\> & two\n")
    assert "- [1 Intro: 100% of $5 & \\#1](#sec-1)" in text
    assert "  - [1.1 Figures](#sec-1-1)" in text
    assert '<a id="sec-1-1"></a>' in text
    assert "a \\* star, an \\_underscore\\_ and `a|b code`" in text
    # A pipe in a cell is escaped; the numeric columns are right-aligned.
    assert "| a\\|b | 1,234,567 | 0.5 | 2.1 Mbit |" in text
    assert "|---|---:|---:|---:|" in text
    assert "```console\npython cli.py trace transformer --emb 256 --out out/t\n```" in text


# --- LaTeX ---------------------------------------------------------------------------------------


def test_escape_latex_special_characters() -> None:
    assert escape_latex("100% of $5 & #1") == r"100\% of \$5 \& \#1"
    assert escape_latex("a_b {c} ~ ^ \\") == (
        r"a\_b \{c\} \textasciitilde{} \textasciicircum{} \textbackslash{}"
    )
    assert escape_latex("<x> | y") == r"\textless{}x\textgreater{} \textbar{} y"
    assert escape_latex("--quick") == "-{}-quick"
    assert escape_latex("`code`") == r"\textasciigrave{}code\textasciigrave{}"
    assert escape_latex("6 × 2 → 12 · ok ≤ 1") == (
        r"6 \ensuremath{\times} 2 \ensuremath{\rightarrow} 12 \ensuremath{\cdot} ok "
        r"\ensuremath{\le} 1"
    )
    assert escape_latex("☃") == "?"  # never an unknown-character compile error


def test_latex_source_and_figure_files() -> None:
    tex, files = render_latex(sample_document())
    assert tex.startswith(r"\documentclass")
    assert r"\title{Report \textless{}one\textgreater{} \& two}" in tex
    assert r"\section{Intro: 100\% of \$5 \& \#1}\label{sec-1}" in tex
    assert r"\subsection{Figures}\label{sec-1-1}" in tex
    assert r"\subsubsection{Deeper}\label{sec-1-1-1}" in tex
    # Figures as files: PDF where there is one, else PNG; the missing diagram is a note.
    assert set(files) == {"figures/plot-one.pdf", "figures/plot-two.pdf", "figures/png-only.png"}
    for path in files:
        assert f"{{{path}}}" in tex
    assert "Graphviz's dot program is missing" in tex
    # Inline code and the table's pipe; code blocks are ASCII inside listings.
    assert r"\texttt{a\textbar{}b code}" in tex
    assert r"a\textbar{}b & 1,234,567 & 0.5 & 2.1 Mbit \\" in tex
    assert "x = 1 x 2 -> 3" in tex
    assert "$ python cli.py trace transformer" in tex
    assert r"\fitmath{y = x \left(\frac{1}{C_{out}} + \frac{1}{K}\right)}" in tex


@pytest.mark.skipif(latex_engine() is None, reason="no LaTeX engine (pdflatex, xelatex, ...)")
def test_latex_compiles_to_pdf() -> None:
    tex, files = render_latex(sample_document())
    pdf = compile_pdf(tex, files)
    assert pdf is not None and pdf.startswith(b"%PDF")


def test_compile_pdf_without_engine_returns_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert compile_pdf("x", {}) is None


def test_attachments_are_linked_and_returned_with_the_files() -> None:
    doc = Document("t")
    sec = doc.section("views")
    page = b"<!DOCTYPE html><title>v</title>"
    sec.add(Attachment("lenet5", "views/lenet5.html", page, "the interactive view"))
    assert doc.attachments() == [sec.blocks[0]]
    html_text = render_html(doc)
    assert '<a href="views/lenet5.html">lenet5</a>: the interactive view' in html_text
    markdown, md_files = render_markdown(doc)
    assert "[lenet5](views/lenet5.html): the interactive view" in markdown
    assert md_files == {"views/lenet5.html": page}
    latex, tex_files = render_latex(doc)
    assert r"\texttt{views/lenet5.html}" in latex and tex_files == {"views/lenet5.html": page}
    for bad in ("../x.html", "/etc/x", "a//b.html"):
        with pytest.raises(ValueError, match="relative path"):
            Attachment("x", bad, b"")

"""A small document model and three renderers: self-contained HTML, Markdown and LaTeX.

A :class:`Document` is a title and nested :class:`Section` s holding blocks: :class:`Paragraph`,
:class:`BulletList`, :class:`Table` (header and rows of data), :class:`Figure` (SVG, PNG or PDF
bytes, from matplotlib or Graphviz), :class:`CodeBlock` (e.g. the command that reproduces an
answer) and :class:`Math` (formula lines, as plain text and optionally as LaTeX).

Text of paragraphs, list items, captions and table cells may hold two inline marks: ```code```
and ``**bold**``; everything else is literal and each renderer escapes it for its format.

The renderers return text and bytes; writing files is the caller's business:

- :func:`render_html` -> one HTML string, figures embedded (inline SVG, or PNG as a data URI),
  its own stylesheet and table of contents, no external resource of any kind;
- :func:`render_markdown` -> (text, {"figures/NAME.png": bytes, ...});
- :func:`render_latex` -> (text, {"figures/NAME.pdf": bytes, ...});
- :func:`compile_pdf` runs a LaTeX engine on that in a temporary folder and returns the PDF's
  bytes, or None when no engine (pdflatex, xelatex, lualatex, tectonic) is installed.

Output is deterministic: the same document renders to the same text (no dates, no random ids).
"""

from __future__ import annotations

import base64
import html
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowprof.errors import LatexError

# --- the model ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Paragraph:
    """A paragraph of text (inline ```code``` and ``**bold**`` allowed)."""

    text: str


@dataclass(frozen=True)
class BulletList:
    """An unordered list; each item is inline text."""

    items: tuple[str, ...]


Cell = str | int | float


@dataclass(frozen=True)
class Table:
    """A table as data: a header and rows of cells (str, int or float).

    Integers are shown with thousands separators, floats with ``float_format``. Columns whose
    cells are all numbers (or look like numbers) are right-aligned.
    """

    header: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    caption: str = ""
    float_format: str = "{:.4g}"

    def cell_text(self, value: Cell) -> str:
        """The text a cell is shown as."""
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, int):
            return f"{value:,}"
        if isinstance(value, float):
            return self.float_format.format(value)
        return str(value)

    def numeric_columns(self) -> list[bool]:
        """Per column: True when every non-empty cell is a number or reads like one."""
        out = []
        for j in range(len(self.header)):
            cells = [row[j] for row in self.rows if j < len(row) and row[j] != ""]
            out.append(bool(cells) and all(_numeric(c) for c in cells))
        return out


_NUMBER_TEXT = re.compile(r"^[-+−]?[\d,]*\.?\d+(e[-+]?\d+)?\s?(%|[kMGTP]?(bit|B|MAC)?|×)?$")


def _numeric(value: Cell) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    return bool(_NUMBER_TEXT.match(value.strip()))


# Preference of image formats per renderer.
_HTML_FORMATS = ("svg", "png")
_MARKDOWN_FORMATS = ("png", "svg")
_LATEX_FORMATS = ("pdf", "png")


@dataclass(frozen=True)
class Figure:
    """An image in one or more formats (``{"svg": bytes, "png": bytes, "pdf": bytes}``).

    ``name`` is the file stem the Markdown and LaTeX renderers give it (``figures/NAME.png``);
    it must be unique in a document. ``source`` is shown instead when there is no image (e.g.
    a Graphviz diagram's DOT source when the ``dot`` program is missing).
    """

    name: str
    caption: str
    images: Mapping[str, bytes] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name):
            raise ValueError(f"figure name {self.name!r}: use letters, digits, '-', '_', '.'")

    def best(self, formats: Sequence[str]) -> tuple[str, bytes] | None:
        """The first of ``formats`` this figure has, with its bytes."""
        for fmt in formats:
            if fmt in self.images:
                return fmt, self.images[fmt]
        return None

    @classmethod
    def from_matplotlib(
        cls,
        fig: Any,
        name: str,
        caption: str,
        formats: Sequence[str] = ("svg", "png", "pdf"),
        dpi: int = 150,
    ) -> Figure:
        """Render a matplotlib ``Figure`` (deterministically: fixed SVG ids, no dates)."""
        import io

        import matplotlib

        images = {}
        metadata = {"svg": {"Date": None}, "pdf": {"CreationDate": None}, "png": None}
        with matplotlib.rc_context({"svg.hashsalt": "flowprof", "svg.fonttype": "path"}):
            for fmt in formats:
                buffer = io.BytesIO()
                fig.savefig(buffer, format=fmt, dpi=dpi, metadata=metadata.get(fmt))
                images[fmt] = buffer.getvalue()
        return cls(name, caption, images)

    @classmethod
    def from_graphviz(
        cls, digraph: Any, name: str, caption: str, formats: Sequence[str] = ("svg", "png", "pdf")
    ) -> Figure:
        """Render a ``graphviz.Digraph`` with the ``dot`` program; without it the figure holds
        the DOT source only (renderers show that instead)."""
        if shutil.which("dot") is None:
            return cls(name, caption, {}, digraph.source)
        images = {fmt: digraph.pipe(format=fmt, quiet=True) for fmt in formats}  # (no warnings)
        return cls(name, caption, images, digraph.source)


@dataclass(frozen=True)
class CodeBlock:
    """Preformatted text, e.g. a shell command (``language="console"``)."""

    code: str
    language: str = ""
    caption: str = ""


@dataclass(frozen=True)
class Math:
    """Formula lines: ``lines`` as plain text (HTML, Markdown); ``latex`` (math mode, one per
    line) for the LaTeX renderer, which falls back to the plain lines when it is empty."""

    lines: tuple[str, ...]
    latex: tuple[str, ...] = ()


@dataclass(frozen=True)
class Attachment:
    """A file that goes beside the report, linked from it: ``path`` relative to the report
    (e.g. ``views/lenet5.html``), ``data`` its bytes, ``text`` the link's words, ``note`` what
    it is. The Markdown and LaTeX renderers return it with their figures; HTML links to it."""

    text: str
    path: str
    data: bytes
    note: str = ""

    def __post_init__(self) -> None:
        parts = self.path.split("/")
        if not all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", p) for p in parts):
            raise ValueError(f"attachment path {self.path!r}: a relative path without '..'")


Block = Paragraph | BulletList | Table | Figure | CodeBlock | Math | Attachment


@dataclass
class Section:
    """A heading with blocks and subsections; build it with the ``add_*`` helpers."""

    title: str
    blocks: list[Block] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)

    def add(self, block: Block) -> Block:
        self.blocks.append(block)
        return block

    def paragraph(self, text: str) -> Paragraph:
        return self.add(Paragraph(text))  # type: ignore[return-value]

    def bullets(self, items: Sequence[str]) -> BulletList:
        return self.add(BulletList(tuple(items)))  # type: ignore[return-value]

    def table(
        self, header: Sequence[str], rows: Sequence[Sequence[Cell]], caption: str = ""
    ) -> Table:
        return self.add(  # type: ignore[return-value]
            Table(tuple(header), tuple(tuple(r) for r in rows), caption)
        )

    def code(self, code: str, language: str = "", caption: str = "") -> CodeBlock:
        return self.add(CodeBlock(code, language, caption))  # type: ignore[return-value]

    def command(self, command: str, caption: str = "Reproduce with") -> CodeBlock:
        """The shell command that reproduces an answer."""
        return self.code(command, "console", caption)

    def math(self, lines: Sequence[str], latex: Sequence[str] = ()) -> Math:
        return self.add(Math(tuple(lines), tuple(latex)))  # type: ignore[return-value]

    def section(self, title: str) -> Section:
        sub = Section(title)
        self.sections.append(sub)
        return sub


@dataclass
class Document:
    """A titled document: an optional lead (blocks before the first section) and sections."""

    title: str
    subtitle: str = ""
    lead: list[Block] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)

    def section(self, title: str) -> Section:
        sub = Section(title)
        self.sections.append(sub)
        return sub

    def walk(self) -> Iterator[tuple[tuple[int, ...], Section]]:
        """Every section with its number, e.g. ``(2, 1)`` for 2.1, in document order."""

        def go(sections: list[Section], prefix: tuple[int, ...]):
            for i, s in enumerate(sections, start=1):
                yield (*prefix, i), s
                yield from go(s.sections, (*prefix, i))

        yield from go(self.sections, ())

    def attachments(self) -> list[Attachment]:
        """All attached files, in document order (written beside the report)."""
        out = [b for b in self.lead if isinstance(b, Attachment)]
        for _, s in self.walk():
            out.extend(b for b in s.blocks if isinstance(b, Attachment))
        return out

    def figures(self) -> list[Figure]:
        """All figures, in document order."""
        out = [b for b in self.lead if isinstance(b, Figure)]
        for _, s in self.walk():
            out.extend(b for b in s.blocks if isinstance(b, Figure))
        return out


def _anchor(number: tuple[int, ...]) -> str:
    return "sec-" + "-".join(map(str, number))


def _number(number: tuple[int, ...]) -> str:
    return ".".join(map(str, number))


# --- inline marks --------------------------------------------------------------------------------

_INLINE = re.compile(r"`([^`]+)`|\*\*(.+?)\*\*")


def inline_runs(text: str) -> list[tuple[str, str]]:
    """``text`` as (kind, text) runs, kind "text", "code" or "bold"."""
    runs: list[tuple[str, str]] = []
    pos = 0
    for m in _INLINE.finditer(text):
        if m.start() > pos:
            runs.append(("text", text[pos : m.start()]))
        runs.append(("code", m[1]) if m[1] is not None else ("bold", m[2]))
        pos = m.end()
    if pos < len(text):
        runs.append(("text", text[pos:]))
    return runs


# --- HTML ----------------------------------------------------------------------------------------

_CSS = """
:root { --fg: #1d2430; --muted: #5b6573; --line: #d8dee8; --accent: #2f5d9a; --code: #f4f6f9; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff; line-height: 1.55;
  font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; }
.page { max-width: 62rem; margin: 0 auto; padding: 2rem 1.5rem 4rem; }
header h1 { font-size: 2rem; margin: 0 0 .25rem; }
header .subtitle { color: var(--muted); margin: 0 0 1.5rem; }
h2, h3, h4, h5 { line-height: 1.25; margin: 2rem 0 .75rem; }
h2 { font-size: 1.55rem; border-bottom: 2px solid var(--line); padding-bottom: .3rem; }
h3 { font-size: 1.25rem; } h4 { font-size: 1.08rem; }
.num { color: var(--muted); font-weight: normal; margin-right: .4rem; }
a { color: var(--accent); text-decoration: none; } a:hover { text-decoration: underline; }
nav.toc { background: #f8f9fb; border: 1px solid var(--line); border-radius: 8px;
  padding: .75rem 1.25rem; margin: 0 0 2rem; }
nav.toc h2 { font-size: 1.05rem; border: 0; margin: .25rem 0 .5rem; padding: 0; }
nav.toc ol { list-style: none; padding-left: 1.1rem; margin: .1rem 0; }
nav.toc > ol { padding-left: 0; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono",
  monospace; font-size: .88em; }
code { background: var(--code); padding: .08em .3em; border-radius: 4px; }
pre { background: var(--code); border: 1px solid var(--line); border-radius: 6px;
  padding: .7rem .9rem; overflow-x: auto; white-space: pre-wrap; word-break: break-word; }
pre code { background: none; padding: 0; }
pre.console::before { content: "$ "; color: var(--muted); }
.codecap, .mathcap { color: var(--muted); font-size: .9rem; margin: .8rem 0 .2rem; }
.math { background: #fbfaf4; border-left: 3px solid #c9b458; padding: .5rem .9rem;
  font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .9rem; overflow-x: auto; }
.math div { white-space: pre-wrap; margin: .15rem 0; }
.tablewrap { overflow-x: auto; margin: 1rem 0; }
table { border-collapse: collapse; font-size: .9rem; min-width: 40%; }
caption { caption-side: top; text-align: left; color: var(--muted); padding: .3rem 0; }
th, td { border-bottom: 1px solid var(--line); padding: .35rem .65rem; text-align: left;
  vertical-align: top; }
th { background: #f1f4f8; font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fafbfc; }
figure { margin: 1.5rem 0; text-align: center; }
figure svg, figure img { max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: .9rem; margin-top: .4rem; }
.missing { color: #8a5300; }
@media print { nav.toc { display: none; } .page { max-width: none; }
  figure, table, pre { break-inside: avoid; } }
"""


def _html_inline(text: str) -> str:
    out = []
    for kind, run in inline_runs(text):
        escaped = html.escape(run, quote=False)
        if kind == "code":
            out.append(f"<code>{escaped}</code>")
        elif kind == "bold":
            out.append(f"<strong>{escaped}</strong>")
        else:
            out.append(escaped)
    return "".join(out)


_XML_PROLOGUE = re.compile(r"<\?xml[^>]*\?>|<!DOCTYPE[^>]*>", re.IGNORECASE)
_SVG_ID = re.compile(r'\bid="([^"]+)"')


def scoped_svg(svg: str, prefix: str) -> str:
    """An SVG document made fit to inline into HTML: no XML prologue, every id prefixed with
    ``prefix`` (and every ``#id`` reference with it), so several SVGs on one page keep apart."""
    svg = _XML_PROLOGUE.sub("", svg).strip()
    ids = set(_SVG_ID.findall(svg))
    if not ids:
        return svg

    def ref(m: re.Match[str]) -> str:
        name = m[2]
        return f"{m[1]}{prefix}{name}" if name in ids else m[0]

    svg = _SVG_ID.sub(lambda m: f'id="{prefix}{m[1]}"', svg)
    # url(#id), href="#id" and xlink:href="#id"
    return re.sub(r"""(url\(#|href=["']#)([^)"']+)""", ref, svg)


def _html_block(block: Block, counters: dict[str, int], out: list[str]) -> None:
    if isinstance(block, Paragraph):
        out.append(f"<p>{_html_inline(block.text)}</p>")
    elif isinstance(block, BulletList):
        items = "".join(f"<li>{_html_inline(i)}</li>" for i in block.items)
        out.append(f"<ul>{items}</ul>")
    elif isinstance(block, Table):
        counters["table"] += 1
        numeric = block.numeric_columns()
        rows = ["<div class='tablewrap'><table>"]
        if block.caption:
            rows.append(
                f"<caption>Table {counters['table']}: {_html_inline(block.caption)}</caption>"
            )
        head = "".join(
            f"<th{' class=n' if n else ''}>{_html_inline(h)}</th>"
            for h, n in zip(block.header, numeric, strict=False)
        )
        rows.append(f"<thead><tr>{head}</tr></thead><tbody>")
        for row in block.rows:
            cells = "".join(
                f"<td{' class=n' if n else ''}>{_html_inline(block.cell_text(c))}</td>"
                for c, n in zip(row, numeric, strict=False)
            )
            rows.append(f"<tr>{cells}</tr>")
        rows.append("</tbody></table></div>")
        out.append("\n".join(rows))
    elif isinstance(block, Figure):
        counters["figure"] += 1
        n = counters["figure"]
        caption = f"<figcaption>Figure {n}: {_html_inline(block.caption)}</figcaption>"
        best = block.best(_HTML_FORMATS)
        if best is None:
            body = (
                "<p class='missing'>Not rendered (Graphviz's dot program is missing); "
                f"its source:</p><pre><code>{html.escape(block.source)}</code></pre>"
            )
        elif best[0] == "svg":
            body = scoped_svg(best[1].decode("utf-8"), f"f{n}-")
        else:
            data = base64.b64encode(best[1]).decode("ascii")
            alt = html.escape(block.caption)
            body = f'<img alt="{alt}" src="data:image/png;base64,{data}">'
        out.append(f'<figure id="fig-{html.escape(block.name)}">\n{body}\n{caption}</figure>')
    elif isinstance(block, CodeBlock):
        if block.caption:
            out.append(f"<p class='codecap'>{_html_inline(block.caption)}</p>")
        cls = f" class='{html.escape(block.language)}'" if block.language else ""
        out.append(f"<pre{cls}><code>{html.escape(block.code)}</code></pre>")
    elif isinstance(block, Math):
        lines = "".join(f"<div>{html.escape(line)}</div>" for line in block.lines)
        out.append(f"<div class='math'>{lines}</div>")
    elif isinstance(block, Attachment):
        note = f": {_html_inline(block.note)}" if block.note else ""
        href = html.escape(block.path)
        out.append(
            f"<p class='attachment'><a href=\"{href}\">{_html_inline(block.text)}</a>{note}</p>"
        )
    else:  # pragma: no cover - the Block union is closed
        raise TypeError(f"not a document block: {block!r}")


def render_html(doc: Document) -> str:
    """The document as one self-contained HTML page (see the module docstring)."""
    counters = {"table": 0, "figure": 0}
    title = html.escape(doc.title)
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # An empty icon: the browser does not go looking for /favicon.ico.
        '<link rel="icon" href="data:,">',
        f"<title>{title}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<div class='page'>",
        f"<header><h1>{title}</h1>",
    ]
    if doc.subtitle:
        out.append(f"<p class='subtitle'>{_html_inline(doc.subtitle)}</p>")
    out.append("</header>")
    out.append(_html_toc(doc))
    out.append("<main>")
    for block in doc.lead:
        _html_block(block, counters, out)
    for number, section in doc.walk():
        level = min(len(number) + 1, 6)
        out.append(
            f"<section id='{_anchor(number)}'><h{level}><span class='num'>{_number(number)}"
            f"</span>{_html_inline(section.title)}</h{level}>"
        )
        for block in section.blocks:
            _html_block(block, counters, out)
        out.append("</section>")
    out += ["</main>", "</div>", "</body>", "</html>", ""]
    return "\n".join(out)


def _html_toc(doc: Document) -> str:
    def items(sections: list[Section], prefix: tuple[int, ...]) -> str:
        if not sections:
            return ""
        parts = []
        for i, s in enumerate(sections, start=1):
            number = (*prefix, i)
            link = (
                f"<a href='#{_anchor(number)}'><span class='num'>{_number(number)}</span>"
                f"{_html_inline(s.title)}</a>"
            )
            parts.append(f"<li>{link}{items(s.sections, number)}</li>")
        return "<ol>" + "".join(parts) + "</ol>"

    return f"<nav class='toc'><h2>Contents</h2>{items(doc.sections, ())}</nav>"


# --- Markdown ------------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


def _md_text(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", text)


def _md_inline(text: str, in_table: bool = False) -> str:
    out = []
    for kind, run in inline_runs(text):
        if kind == "code":
            if in_table:
                run = run.replace("|", "\\|")  # GFM ends a cell at a pipe, even in code
            fence = "``" if "`" in run else "`"
            pad = " " if run.startswith("`") or run.endswith("`") else ""
            out.append(f"{fence}{pad}{run}{pad}{fence}")
        elif kind == "bold":
            out.append(f"**{_md_text(run)}**")
        else:
            out.append(_md_text(run))
    return "".join(out)


def _md_cell(text: str) -> str:
    return _md_inline(text.replace("\n", " "), in_table=True)


def _fence(code: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", code)), default=0)
    return "`" * max(3, longest + 1)


def _md_block(
    block: Block, counters: dict[str, int], out: list[str], files: dict[str, bytes]
) -> None:
    if isinstance(block, Paragraph):
        out.append(_md_inline(block.text))
    elif isinstance(block, BulletList):
        # Two lists in a row would merge into one unless their markers differ.
        counters["list"] += 1
        marker = "-" if counters["list"] % 2 else "*"
        out.append("\n".join(f"{marker} {_md_inline(i)}" for i in block.items))
    elif isinstance(block, Table):
        counters["table"] += 1
        numeric = block.numeric_columns()
        lines = []
        if block.caption:
            lines.append(f"*Table {counters['table']}: {_md_inline(block.caption)}*\n")
        lines.append("| " + " | ".join(_md_cell(h) for h in block.header) + " |")
        lines.append("|" + "|".join("---:" if n else "---" for n in numeric) + "|")
        for row in block.rows:
            lines.append("| " + " | ".join(_md_cell(block.cell_text(c)) for c in row) + " |")
        out.append("\n".join(lines))
    elif isinstance(block, Figure):
        counters["figure"] += 1
        caption = f"Figure {counters['figure']}: {block.caption}"
        best = block.best(_MARKDOWN_FORMATS)
        if best is None:
            fence = _fence(block.source)
            out.append(
                f"*{_md_inline(caption)}* (not rendered: Graphviz's dot program is missing)"
                f"\n\n{fence}dot\n{block.source}\n{fence}"
            )
        else:
            path = f"figures/{block.name}.{best[0]}"
            files[path] = best[1]
            alt = block.caption.replace("[", "(").replace("]", ")").replace("\n", " ")
            out.append(f"![{alt}]({path})\n\n*{_md_inline(caption)}*")
    elif isinstance(block, CodeBlock):
        if block.caption:
            out.append(f"*{_md_inline(block.caption)}*")
        fence = _fence(block.code)
        out.append(f"{fence}{block.language}\n{block.code}\n{fence}")
    elif isinstance(block, Math):
        text = "\n".join(block.lines)
        fence = _fence(text)
        out.append(f"{fence}text\n{text}\n{fence}")
    elif isinstance(block, Attachment):
        files[block.path] = block.data
        text = block.text.replace("[", "(").replace("]", ")")
        note = f": {_md_inline(block.note)}" if block.note else ""
        out.append(f"[{text}]({block.path}){note}")
    else:  # pragma: no cover
        raise TypeError(f"not a document block: {block!r}")


def render_markdown(doc: Document) -> tuple[str, dict[str, bytes]]:
    """The document as Markdown (GitHub flavour) and its figure files, by relative path."""
    counters = {"table": 0, "figure": 0, "list": 0}
    files: dict[str, bytes] = {}
    out = [f"# {_md_text(doc.title)}"]
    if doc.subtitle:
        out.append(_md_inline(doc.subtitle))
    toc = ["**Contents**", ""]
    for number, section in doc.walk():
        indent = "  " * (len(number) - 1)
        toc.append(f"{indent}- [{_number(number)} {_md_text(section.title)}](#{_anchor(number)})")
    out.append("\n".join(toc))
    for block in doc.lead:
        _md_block(block, counters, out, files)
    for number, section in doc.walk():
        hashes = "#" * min(len(number) + 1, 6)
        out.append(
            f'<a id="{_anchor(number)}"></a>\n\n'
            f"{hashes} {_number(number)} {_md_inline(section.title)}"
        )
        for block in section.blocks:
            _md_block(block, counters, out, files)
    return "\n\n".join(out) + "\n", files


# --- LaTeX ---------------------------------------------------------------------------------------

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
}
# Characters pdflatex's utf8 input does not know, or sets badly, as LaTeX.
_LATEX_UNICODE = {
    "×": r"\ensuremath{\times}",
    "·": r"\ensuremath{\cdot}",
    "→": r"\ensuremath{\rightarrow}",
    "←": r"\ensuremath{\leftarrow}",
    "≤": r"\ensuremath{\le}",
    "≥": r"\ensuremath{\ge}",
    "≈": r"\ensuremath{\approx}",
    "≠": r"\ensuremath{\neq}",
    "±": r"\ensuremath{\pm}",
    "∞": r"\ensuremath{\infty}",
    "√": r"\ensuremath{\surd}",
    "Σ": r"\ensuremath{\Sigma}",
    "µ": r"\ensuremath{\mu}",
    "μ": r"\ensuremath{\mu}",
    "∅": r"\ensuremath{\emptyset}",
    "−": "-",
    "–": "--",
    "—": "---",
    "…": r"\ldots{}",
    "²": r"\textsuperscript{2}",
    "³": r"\textsuperscript{3}",
    "’": "'",
    "‘": "`",
    "“": "``",
    "”": "''",
    "\u00a0": "~",
}
# In code (listings), plain ASCII stand-ins.
_ASCII = {
    "×": "x",
    "·": "*",
    "→": "->",
    "←": "<-",
    "≤": "<=",
    "≥": ">=",
    "≈": "~",
    "≠": "!=",
    "±": "+/-",
    "−": "-",
    "–": "-",
    "—": "--",
    "…": "...",
    "²": "^2",
    "µ": "u",
    "μ": "u",
    "’": "'",
    "‘": "'",
    "“": '"',
    "”": '"',
    "\u00a0": " ",
}


def escape_latex(text: str) -> str:
    """``text`` as LaTeX that prints it literally (special characters and symbols escaped)."""
    out = []
    for i, ch in enumerate(text):
        if ch in _LATEX_SPECIAL:
            out.append(_LATEX_SPECIAL[ch])
        elif ch in _LATEX_UNICODE:
            out.append(_LATEX_UNICODE[ch])
        elif ch == "`":
            out.append(r"\textasciigrave{}")  # a literal backquote, not an opening quote
        elif ch == "-" and text[i + 1 : i + 2] == "-":
            out.append("-{}")  # "--" stays two hyphens (no en-dash ligature), as in --quick
        elif ord(ch) < 128 or (ch.isalpha() and ord(ch) < 0x250):
            out.append(ch)  # ASCII, and Latin letters that utf8 inputenc knows
        else:
            out.append("?")  # a symbol pdflatex cannot set: visible, never a compile error
    return "".join(out)


def _ascii(text: str) -> str:
    return "".join(_ASCII.get(ch, ch if ord(ch) < 128 else "?") for ch in text)


def _latex_inline(text: str) -> str:
    out = []
    for kind, run in inline_runs(text):
        if kind == "code":
            out.append(r"\texttt{" + escape_latex(run) + "}")
        elif kind == "bold":
            out.append(r"\textbf{" + escape_latex(run) + "}")
        else:
            out.append(escape_latex(run))
    return "".join(out)


_LATEX_PREAMBLE = r"""\documentclass[11pt]{article}
\usepackage[T1]{fontenc}
\usepackage[utf8]{inputenc}
\usepackage{lmodern}
\usepackage[a4paper,margin=2.2cm]{geometry}
\usepackage{amsmath,amssymb}
\usepackage{graphicx}
\usepackage{array}
\usepackage{booktabs}
\usepackage{longtable}
\usepackage{xcolor}
\usepackage{listings}
\usepackage[hidelinks]{hyperref}
\lstset{basicstyle=\ttfamily\small,breaklines=true,columns=fullflexible,keepspaces=true,
  frame=single,rulecolor=\color{black!25},backgroundcolor=\color{black!3},upquote=true}
\setlength{\parskip}{0.5em}
\setlength{\parindent}{0pt}
% A display formula shrunk to the line width when it is wider (never enlarged).
\newcommand{\fitmath}[1]{%
  \resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{$\displaystyle #1$}}
"""

_LATEX_HEADINGS = ("section", "subsection", "subsubsection", "paragraph", "subparagraph")


def _latex_block(
    block: Block, out: list[str], files: dict[str, bytes], figure_files: dict[str, str]
) -> None:
    if isinstance(block, Paragraph):
        out.append(_latex_inline(block.text) + "\n")
    elif isinstance(block, BulletList):
        items = "\n".join(r"  \item " + _latex_inline(i) for i in block.items)
        out.append("\\begin{itemize}\n" + items + "\n\\end{itemize}\n")
    elif isinstance(block, Table):
        out.append(_latex_table(block))
    elif isinstance(block, Figure):
        best = block.best(_LATEX_FORMATS)
        caption = r"\caption{" + _latex_inline(block.caption) + "}"
        if best is None:
            out.append(
                "\\begin{figure}[htbp]\n\\centering\n"
                r"\fbox{\parbox{0.9\linewidth}{Not rendered: Graphviz's dot program is "
                r"missing (the DOT source is in the Markdown and HTML reports).}}"
                f"\n{caption}\n\\end{{figure}}\n"
            )
            return
        path = f"figures/{block.name}.{best[0]}"
        files[path] = best[1]
        figure_files[block.name] = path
        out.append(
            "\\begin{figure}[htbp]\n\\centering\n"
            f"\\includegraphics[width=0.9\\linewidth,height=0.75\\textheight,keepaspectratio]{{{path}}}"
            f"\n{caption}\n\\end{{figure}}\n"
        )
    elif isinstance(block, CodeBlock):
        if block.caption:
            out.append(r"\textit{" + _latex_inline(block.caption) + "}")
        code = _ascii(block.code)
        if block.language == "console":
            code = "\n".join(f"$ {line}" if line else line for line in code.split("\n"))
        # A line "\end{lstlisting}" would end the listing early: break it up.
        code = code.replace("\\end{lstlisting}", "\\end {lstlisting}")
        out.append("\\begin{lstlisting}\n" + code + "\n\\end{lstlisting}\n")
    elif isinstance(block, Math):
        if block.latex:
            lines = [r"\[ \fitmath{" + line + r"} \]" for line in block.latex]
            out.append("\n".join(lines) + "\n")
        else:
            text = _ascii("\n".join(block.lines)).replace("\\end{lstlisting}", "\\end {lstlisting}")
            out.append("\\begin{lstlisting}\n" + text + "\n\\end{lstlisting}\n")
    elif isinstance(block, Attachment):
        files[block.path] = block.data
        note = f": {_latex_inline(block.note)}" if block.note else ""
        out.append(
            _latex_inline(block.text)
            + r" (file \texttt{"
            + escape_latex(block.path)
            + "})"
            + note
            + "\n"
        )
    else:  # pragma: no cover
        raise TypeError(f"not a document block: {block!r}")


def _latex_table(table: Table) -> str:
    numeric = table.numeric_columns()
    widths = [
        max([len(header)] + [len(table.cell_text(row[j])) for row in table.rows if j < len(row)])
        for j, header in enumerate(table.header)
    ]
    cols = []
    for n, w in zip(numeric, widths, strict=True):
        if n:
            cols.append("r")
        elif w > 36:  # long text wraps in a paragraph column instead of running off the page
            cols.append(r">{\raggedright\arraybackslash}p{0.42\linewidth}")
        else:
            cols.append("l")
    lines = [
        "\\begingroup\\small\\setlength{\\tabcolsep}{4pt}",
        "\\begin{longtable}{" + "".join(cols) + "}",
    ]
    if table.caption:
        lines.append(r"\caption{" + _latex_inline(table.caption) + r"}\\")
    lines.append(r"\toprule")
    lines.append(" & ".join(r"\textbf{" + _latex_inline(h) + "}" for h in table.header) + r" \\")
    lines += [r"\midrule", r"\endhead"]
    for row in table.rows:
        lines.append(" & ".join(_latex_inline(table.cell_text(c)) for c in row) + r" \\")
    lines += [r"\bottomrule", r"\end{longtable}", r"\endgroup", ""]
    return "\n".join(lines)


def render_latex(doc: Document) -> tuple[str, dict[str, bytes]]:
    """The document as LaTeX source and its figure files (PDF, else PNG), by relative path."""
    files: dict[str, bytes] = {}
    figure_files: dict[str, str] = {}
    out = [
        _LATEX_PREAMBLE,
        r"\title{" + _latex_inline(doc.title) + "}",
        r"\author{" + _latex_inline(doc.subtitle) + "}",
        r"\date{}",
        r"\begin{document}",
        r"\maketitle",
        r"\tableofcontents",
        "",
    ]
    for block in doc.lead:
        _latex_block(block, out, files, figure_files)
    for number, section in doc.walk():
        command = _LATEX_HEADINGS[min(len(number), len(_LATEX_HEADINGS)) - 1]
        out.append(f"\\{command}{{{_latex_inline(section.title)}}}\\label{{{_anchor(number)}}}")
        for block in section.blocks:
            _latex_block(block, out, files, figure_files)
    out += [r"\end{document}", ""]
    return "\n".join(out), files


# --- PDF -----------------------------------------------------------------------------------------

LATEX_ENGINES = ("pdflatex", "xelatex", "lualatex", "tectonic")


def latex_engine() -> str | None:
    """The first LaTeX engine on PATH (pdflatex, xelatex, lualatex, tectonic), or None."""
    return next((e for e in LATEX_ENGINES if shutil.which(e)), None)


def compile_pdf(
    tex: str,
    files: Mapping[str, bytes],
    engine: str | None = None,
    timeout: float = 300,
) -> bytes | None:
    """Compile ``tex`` with its ``files`` in a temporary folder; the PDF's bytes.

    None when no LaTeX engine is installed; :class:`LatexError` when the engine fails.
    """
    engine = engine or latex_engine()
    if engine is None or shutil.which(engine) is None:
        return None
    with tempfile.TemporaryDirectory(prefix="flowprof-latex-") as tmp:
        root = Path(tmp)
        (root / "report.tex").write_text(tex, encoding="utf-8")
        for rel, data in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        if engine == "tectonic":
            runs = [["tectonic", "--keep-logs", "report.tex"]]
        else:
            command = [engine, "-interaction=nonstopmode", "-halt-on-error", "report.tex"]
            runs = [command, command]  # twice: the table of contents and longtable widths
        for command in runs:
            try:
                done = subprocess.run(
                    command,
                    cwd=root,
                    capture_output=True,
                    text=True,
                    errors="replace",
                    timeout=timeout,
                    stdin=subprocess.DEVNULL,
                )
            except subprocess.TimeoutExpired:
                raise LatexError(f"{engine} took more than {timeout:g} s") from None
            if done.returncode != 0:
                log_path = root / "report.log"
                log = log_path.read_text(errors="replace") if log_path.exists() else done.stdout
                tail = "\n".join(log.splitlines()[-40:])
                first = next((ln for ln in log.splitlines() if ln.startswith("!")), "")
                raise LatexError(f"{engine} failed: {first or 'see its log'}", tail)
        pdf = root / "report.pdf"
        return pdf.read_bytes() if pdf.exists() else None

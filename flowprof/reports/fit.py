"""Rich tables that fit the terminal without cutting a number.

Rich fits a table that is too wide by squeezing every column and ending what no longer fits
with an ellipsis: ``8,388,…``. For a tool whose point is exact numbers that is the one thing a
table must not do. :func:`fit` wraps a built ``Table`` so that, when it is drawn, at whatever
width the console has:

- every whitespace-free token of a cell (a number, a shape, a unit) is kept whole: a column is
  never narrower than its longest token, and nothing is ever ended with an ellipsis;
- a name (a block or module path) longer than its column is shortened, its outer components
  abbreviated (``e.l.0.sel.out_proj``; the layer indexes and the last part kept), else in the
  middle, so that it neither wraps into five lines nor pushes numbers off the page; text with
  spaces wraps at the spaces;
- columns that still do not fit are folded into a continuation table below, which repeats the
  name column, so every number is still shown (``--format csv`` has them all on one row).

The width is read when the table is drawn (``__rich_console__``), so a table built once fits an
80-column terminal, a 160-column log and a test's ``Console(width=60)`` alike; a builder only
calls ``fit(table)`` on what it returns. :func:`short_name` gives titles a short model name.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePath

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.measure import Measurement
from rich.padding import Padding
from rich.table import Column, Table
from rich.text import Text

ELLIPSIS = "…"
# A name column is given at least this many cells (or its whole width if less) before any
# column is folded away: shorter, a shortened path says too little.
NAME_MIN = 18
# What is never broken across lines: a word, or a number with its unit (``2.1 Mbit``).
_TOKEN = re.compile(r"[\d.,]+ [A-Za-z]{1,5}\b|\S+")


class FitTable(Table):
    """A ``Table`` that fits itself to the console's width when drawn (see the module
    docstring). Made by :func:`fit`; everything else about it is a plain ``Table``."""

    names: tuple[int, ...] = (0,)  # indexes of the columns holding names (shortened)
    keys: tuple[int, ...] = (0,)  # the columns repeated in a continuation table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for part in _fitted(self, console, options.max_width):
            yield from Table.__rich_console__(part, console, options)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        parts = _fitted(self, console, options.max_width)
        widths = [Table.__rich_measure__(p, console, options) for p in parts]
        return Measurement(max(w.minimum for w in widths), max(w.maximum for w in widths))


def fit(
    table: Table, names: Sequence[str] | None = None, keys: Sequence[str] | None = None
) -> FitTable:
    """``table`` as a :class:`FitTable`: the same columns, rows and styles, fitted when drawn.

    ``names``: headers of the columns that hold names, shortened when too long (default: the
    first column; ``()``: none, for prose that wraps at its spaces). ``keys``: headers of the
    columns that say what a row is, repeated at the left of a continuation table (default:
    ``names``).
    """
    fitted = FitTable.__new__(FitTable)
    fitted.__dict__.update(table.__dict__)
    fitted.columns = [_copy_column(c, c._index) for c in table.columns]
    headers = [str(c.header) for c in table.columns]
    fitted.names = tuple(headers.index(n) for n in names) if names is not None else (0,)
    fitted.keys = tuple(headers.index(k) for k in keys) if keys is not None else fitted.names
    return fitted


def short_name(model: str) -> str:
    """A model's name for a title: a factory in a file by the file's name, not its whole path
    (``/home/me/proj/nets.py:unet`` -> ``nets.py:unet``); other names as they are."""
    path, colon, attr = model.rpartition(":")
    if colon and ("/" in path or "\\" in path or path.endswith(".py")):
        return f"{PurePath(path).name}:{attr}"
    return model


def shorten_name(name: str, width: int) -> str:
    """A dotted module path in at most ``width`` cells, its distinguishing parts kept:
    the outer components are abbreviated first (``encoder.layers.0.self_attn.out_proj`` ->
    ``e.l.0.sel.out_proj``), layer indexes and the last component never; if that is not
    enough, the middle gives way to an ellipsis."""
    if cell_len(name) <= width:
        return name
    parts = name.split(".")
    shrinkable = [i for i, p in enumerate(parts[:-1]) if not p.isdigit()]
    for keep in (3, 1):
        for i in shrinkable:
            if len(parts[i]) > keep:
                parts[i] = parts[i][:keep]
                if cell_len(".".join(parts)) <= width:
                    return ".".join(parts)
    return shorten_middle(Text(name), width).plain


def shorten_middle(text: Text, width: int) -> Text:
    """``text`` in at most ``width`` cells, the middle replaced by an ellipsis (its styles
    kept): the start and the end of a name say the most."""
    if cell_len(text.plain) <= width:
        return text
    if width <= 1:
        return Text(ELLIPSIS)
    keep = width - 1
    head, tail = (keep + 1) // 2, keep // 2
    n = len(text.plain)
    parts = text.divide([head, n - tail])
    out = parts[0].copy()
    out.append(ELLIPSIS)
    if tail:
        out.append_text(parts[-1])
    return out


def _shorten_word(word: Text, width: int) -> Text:
    if cell_len(word.plain) <= width:
        return word
    if "." in word.plain:
        return Text(shorten_name(word.plain, width), style=word.style)
    return shorten_middle(word, width)


# --- the fitting --------------------------------------------------------------------------------


@dataclass
class _Col:
    index: int
    need: int  # the narrowest content width that cuts no token (names: NAME_MIN at most)
    want: int  # the content width that wraps nothing
    name: bool
    pad: int


def _copy_column(column: Column, index: int) -> Column:
    new = copy.copy(column)
    new._cells = list(column._cells)
    new._index = index
    return new


def _texts(console: Console, table: Table, column: Column) -> Iterable[Text | None]:
    """The column's header, footer and cells as Text (None for another kind of renderable)."""
    cells: list[RenderableType] = list(column._cells)
    if table.show_header:
        cells.append(column.header)
    if table.show_footer:
        cells.append(column.footer)
    for cell in cells:
        if isinstance(cell, Text):
            yield cell
        elif isinstance(cell, str):
            yield console.render_str(cell, highlight=False)
        else:
            yield None


def _measure(console: Console, table: Table, column: Column, name: bool, pad: int) -> _Col:
    need, want = 1, 1
    for text in _texts(console, table, column):
        if text is None:
            continue
        for line in text.plain.splitlines() or [""]:
            want = max(want, cell_len(line))
            tokens = [cell_len(t) for t in _TOKEN.findall(line)]
            if tokens:
                need = max(need, max(tokens))
    if name:
        need = min(need, NAME_MIN)
    return _Col(column._index, need, want, name, pad)


def _pads(table: Table, count: int) -> list[int]:
    _, right, _, left = Padding.unpack(table.padding)
    pads = [left + right] * count
    if not table.pad_edge and count:
        pads[0] -= left
        pads[-1] -= right
    return pads


def _border(table: Table, count: int) -> int:
    if not table.box:
        return 0
    return count - 1 + (2 if table.show_edge else 0)


def _span(table: Table, cols: list[_Col], attr: str) -> int:
    return sum(getattr(c, attr) + c.pad for c in cols) + _border(table, len(cols))


def _fitted(table: FitTable, console: Console, width: int) -> list[Table]:
    """The table as one or more plain Tables, each at most ``width`` wide where that can be."""
    count = len(table.columns)
    if count == 0:
        return [_plain(console, table, [], {}, first=True, last=True)]
    pads = _pads(table, count)
    cols = [
        _measure(console, table, c, c._index in table.names, pads[c._index]) for c in table.columns
    ]
    if _span(table, cols, "want") <= width:
        widths = {c.index: c.want for c in cols}
        return [_plain(console, table, cols, widths, first=True, last=True)]
    parts: list[list[_Col]] = []
    rest = list(cols)
    keys = [cols[k] for k in table.keys]
    while rest:
        page: list[_Col] = [] if not parts else list(keys)
        while rest and (
            len(page) == (0 if not parts else len(keys))  # a page shows one column at least
            or _span(table, [*page, rest[0]], "need") <= width
        ):
            page.append(rest.pop(0))
        parts.append(page)
    return [
        _plain(console, table, page, _widths(table, page, width), i == 0, i == len(parts) - 1)
        for i, page in enumerate(parts)
    ]


def _widths(table: Table, page: list[_Col], width: int) -> dict[int, int]:
    """Content widths: every column its ``need``, then the room left given to the other
    columns (a number with its unit on one line), then to the names in equal shares, each up to
    its ``want``."""
    widths = {c.index: c.need for c in page}
    room = width - _span(table, page, "need")
    for c in page:
        if not c.name:
            extra = max(0, min(room, c.want - widths[c.index]))
            widths[c.index] += extra
            room -= extra
    hungry = [c for c in page if c.name and widths[c.index] < c.want]
    while room > 0 and hungry:  # the names share what is left, a cell at a time
        for c in hungry[:room]:
            widths[c.index] += 1
        room -= min(room, len(hungry))
        hungry = [c for c in hungry if widths[c.index] < c.want]
    return widths


def _plain(
    console: Console,
    table: Table,
    page: list[_Col],
    widths: dict[int, int],
    first: bool,
    last: bool,
) -> Table:
    """A plain Table of ``page``'s columns at ``widths``, names shortened to fit; the title
    marked "(continued)" after the first page, the caption under the last only."""
    out = copy.copy(table)
    out.__class__ = Table
    out.columns = []
    for i, c in enumerate(page):
        column = _copy_column(table.columns[c.index], i)
        w = widths[c.index]
        column.width = w
        column.min_width = column.max_width = None
        column.overflow = "fold"  # never "ellipsis"; with ``w >= need`` nothing is folded
        column.no_wrap = c.want <= w
        if c.name:
            column._cells = [_short(console, cell, w) for cell in column._cells]
        out.columns.append(column)
    if not first:
        out.title = f"{table.title} (continued)" if table.title else None
    if not last:
        out.caption = None
    return out


def _short(console: Console, cell: RenderableType, width: int) -> RenderableType:
    """A name cell whose single words fit ``width``: an over-long word shortened."""
    if isinstance(cell, str):
        cell = console.render_str(cell, highlight=False)
    text = cell if isinstance(cell, Text) else None
    if text is None or cell_len(text.plain) <= width:
        return cell
    if " " not in text.plain.strip():
        return _shorten_word(text, width)
    # words wrap at the spaces; only a word longer than the column is shortened
    out = Text(style=text.style, end=text.end)
    pos = 0
    for match in re.finditer(r"\S+", text.plain):
        out.append_text(text[pos : match.start()])
        word = text[match.start() : match.end()]
        out.append_text(_shorten_word(word, width))
        pos = match.end()
    out.append_text(text[pos:])
    return out

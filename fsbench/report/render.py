"""Render a :class:`~fsbench.report.tables.TableView` as text: pandas for files, rich for terminals.

* markdown: ``DataFrame.to_markdown`` (GitHub pipe table), marked cells in ``**bold**``;
* CSV: ``DataFrame.to_csv``, marked cells with a trailing ``*``;
* LaTeX: ``Styler.to_latex`` with booktabs rules, marked cells in ``\\textbf``;
* HTML: ``Styler.to_html``, marked cells with the ``fsbench-marked`` class (bold);
* rich: a :class:`rich.table.Table` plus the notes (:func:`to_rich`), or its plain text.

Empty cells read ``–`` (LaTeX ``--``; CSV leaves them empty). Notes follow the table.

Every string of a view (labels, title, notes, cells) may come from data: method and dataset names
are whatever a run directory says. Each renderer makes them inert for its format, and the
output's size is that of its input plus a bounded escaping overhead:

* all formats: control characters (terminal escapes, newlines, bidirectional overrides) are
  spelled out (``\\x1b``, ``\\n``: :func:`fsbench.safetext.printable`);
* labels never reach pandas' ``Styler.relabel_index`` as templates: it calls ``str.format`` on
  them, so braces are doubled (:func:`_literal`) and ``{0}`` or ``x{0:^30000000}`` print as they are;
* HTML: ``html.escape`` (``<``, ``>``, ``&``, quotes);
* LaTeX: every special character and ``[``/``]`` (after a row's ``\\\\``) as text (:func:`latex_escape`);
* markdown: raw HTML (``<``, ``>``, ``&`` as entities), links and images (``[``, ``]``), code
  spans, emphasis stars, pipes and backslashes escaped; a note cannot start a heading or list;
* CSV: a field that starts with ``=``, ``+``, ``-``, ``@`` (a spreadsheet formula) gets a leading
  ``'`` unless it is a number fsbench formatted (``-0.5``, ``+1.23 ± 0.40``, ``61.2 ± 0.8 (seeds
  ± 1.5, n=3)``, a trailing ``*``: :data:`FSBENCH_NUMBER`); labels and notes come from data and
  are always neutralised;
* rich: every string is a :class:`rich.text.Text`, so markup such as ``[bold red]`` prints as it is.
"""

from __future__ import annotations

import html
import io
import re

import pandas as pd

from fsbench.results import ResultsError
from fsbench.safetext import printable, text

from .tables import TableView

FORMATS = ("rich", "markdown", "csv", "latex", "html")

EMPTY = "–"  # shown for an empty cell (CSV keeps it empty)

MARKED_CLASS = "fsbench-marked"

_NUM = r"(?:\d+(?:\.\d+)?|nan|inf)"
#: A signed number as fsbench's tables format it; CSV leaves these as they are.
FSBENCH_NUMBER = re.compile(rf"[+-]{_NUM}(?: ± {_NUM})?(?: \([a-z0-9 .,=±]*\))?\*?")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cells(view: TableView, fmt) -> pd.DataFrame:
    """``fmt(text, marked)`` applied to every cell (rows by position: labels may repeat)."""
    cells = view.cells.astype(str)
    marked = view.marked.to_numpy(dtype=bool)
    out = [
        [fmt(text, bool(marked[i, j]) and bool(text)) for j, text in enumerate(row)]
        for i, row in enumerate(cells.itertuples(index=False))
    ]
    return pd.DataFrame(out, index=cells.index, columns=cells.columns)


def _literal(label: str) -> str:
    """``label`` for ``Styler.relabel_index``, which ``str.format``s it: braces doubled."""
    return label.replace("{", "{{").replace("}", "}}")


_MD_SPECIAL = {"\\": "\\\\", "`": "\\`", "*": "\\*", "[": "\\[", "]": "\\]", "|": "\\|",
               "<": "&lt;", ">": "&gt;", "&": "&amp;"}


def _md_escape(value: object, line: bool = False) -> str:
    """Inline markdown text; ``line``: a note's line, which must not start a heading or list."""
    escaped = "".join(_MD_SPECIAL.get(ch, ch) for ch in printable(value))
    return "\\" + escaped if line and escaped[:1] in ("#", "-", "+", "=") else escaped


def render_markdown(view: TableView) -> str:
    def cell(text: str, mark: bool) -> str:
        text = _md_escape(text) if text else EMPTY
        return f"**{text}**" if mark else text

    table = _cells(view, cell)
    table.index = [_md_escape(label) for label in table.index]
    table.columns = [_md_escape(col) for col in table.columns]
    table.index.name = _md_escape(view.cells.index.name or "")
    body = table.to_markdown(
        tablefmt="pipe", colalign=("left", *["right"] * len(table.columns)), disable_numparse=True
    )
    lines = [f"**{_md_escape(view.title)}**", "", body]
    if view.notes:
        lines += [""] + [f"- {_md_escape(note, line=True)}" for note in view.notes]
    return "\n".join(lines) + "\n"


def csv_field(value: object, formatted_number: bool = False) -> str:
    """A CSV field that no spreadsheet evaluates as a formula (see the module docstring)."""
    field = printable(value)
    if field.lstrip().startswith(_FORMULA_START):
        if not (formatted_number and FSBENCH_NUMBER.fullmatch(field)):
            return "'" + field
    return field


def render_csv(view: TableView) -> str:
    table = _cells(view, lambda text, mark: csv_field(f"{text}*" if mark else text, True))
    table.index = pd.Index([csv_field(label) for label in table.index],
                           name=csv_field(view.cells.index.name or "") or None)
    table.columns = [csv_field(col) for col in table.columns]
    return table.to_csv(lineterminator="\n")


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
    "[": "{[}",  # a row's first cell starting with [ would be read as \\[length]
    "]": "{]}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    '"': r"\textquotedbl{}",
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "–": "--",
    "−": "-",
}


def latex_escape(text: object) -> str:
    """LaTeX-safe text; unlike pandas' ``escape="latex"`` it also maps ``±``, ``Δ`` and dashes,
    brackets, and spells control characters out (a blank line would end the table)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in printable(text))


def _styler(view: TableView, empty: str):
    table = view.cells.astype(str).replace("", empty)
    table = table.reset_index(drop=True)  # positional rows: labels may repeat
    styler = table.style.format(escape=None)
    return table, styler


def render_latex(view: TableView) -> str:
    table, styler = _styler(view, "--")
    marked = view.marked.reset_index(drop=True).astype(bool) & (table != "--")
    styler = (
        styler.format(latex_escape)
        .relabel_index([_literal(latex_escape(label)) for label in view.cells.index], axis=0)
        .relabel_index([_literal(latex_escape(col)) for col in view.cells.columns], axis=1)
        .apply(lambda _: marked.map(lambda m: "textbf: --rwrap;" if m else ""), axis=None)
    )
    text = styler.to_latex(
        hrules=True,
        column_format="l" + "r" * len(table.columns),
        caption=latex_escape(view.title),
        environment="table",
        position="t",
        position_float="centering",
    )
    if view.notes:
        notes = "\\par\\smallskip\\footnotesize\n" + "".join(
            latex_escape(note) + "\\\\\n" for note in view.notes
        )
        text = text.replace("\\end{table}", notes + "\\end{table}")
    return "% Requires \\usepackage{booktabs}\n" + text


def _html(value: object) -> str:
    return html.escape(printable(value), quote=True)


def render_html(view: TableView) -> str:
    table, styler = _styler(view, EMPTY)
    marked = view.marked.reset_index(drop=True).astype(bool) & (table != EMPTY)
    styler = (
        styler.format(_html)
        .relabel_index([_literal(_html(label)) for label in view.cells.index], axis=0)
        .relabel_index([_literal(_html(col)) for col in view.cells.columns], axis=1)
        .set_td_classes(marked.map(lambda m: MARKED_CLASS if m else ""))
        .set_table_styles([{"selector": f".{MARKED_CLASS}", "props": "font-weight: bold;"}])
        .set_table_attributes('class="fsbench-report"')
        .set_caption(_html(view.title))
        .set_uuid("fsbench")
    )
    page = styler.to_html(doctype_html=False)
    page += "".join(f'<p class="fsbench-note">{_html(note)}</p>\n' for note in view.notes)
    return page


def to_rich(view: TableView):
    """The view as a :class:`rich.table.Table` followed by its notes (a rich ``Group``).

    The notes are printed as lines under the table rather than as its caption, which rich
    would wrap to the table's width. ``to_rich(view).renderables[0]`` is the Table itself.
    Every string is a :func:`fsbench.safetext.text`: printed literally, never as markup.
    """
    from rich.console import Group
    from rich.table import Table

    table = Table(title=text(view.title, style="bold"))
    table.add_column(text(view.cells.index.name or ""), no_wrap=True)
    for col in view.cells.columns:
        table.add_column(text(col), justify="right")
    styled = _cells(view, lambda cell, mark: text(cell or EMPTY, style="bold" if mark else ""))
    for label, row in zip(view.cells.index, styled.itertuples(index=False), strict=True):
        table.add_row(text(label), *row)
    notes = [text(note, style="dim") for note in view.notes]
    return Group(table, *notes)


def render_text(view: TableView, width: int = 200) -> str:
    """The rich table as plain text (no colour codes), for files."""
    from rich.console import Console

    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False)
    console.print(to_rich(view))
    return buffer.getvalue()


_RENDERERS = {
    "markdown": render_markdown,
    "csv": render_csv,
    "latex": render_latex,
    "html": render_html,
    "rich": render_text,
}


def render(view: TableView, fmt: str) -> str:
    """Render ``view`` as text in one of :data:`FORMATS` (``rich`` gives rich's plain text)."""
    try:
        renderer = _RENDERERS[fmt]
    except KeyError:
        raise ResultsError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}") from None
    return renderer(view)

"""Render a :class:`~fsbench.report.tables.TableView` as text: pandas for files, rich for terminals.

* markdown: ``DataFrame.to_markdown`` (GitHub pipe table), marked cells in ``**bold**``;
* CSV: ``DataFrame.to_csv``, marked cells with a trailing ``*``;
* LaTeX: ``Styler.to_latex`` with booktabs rules, marked cells in ``\\textbf``;
* HTML: ``Styler.to_html``, marked cells with the ``fsbench-marked`` class (bold);
* rich: a :class:`rich.table.Table` plus the notes (:func:`to_rich`), or its plain text.

Empty cells read ``–`` (LaTeX ``--``; CSV leaves them empty). Notes follow the table.
"""

from __future__ import annotations

import html
import io

import pandas as pd

from fsbench.results import ResultsError

from .tables import TableView

FORMATS = ("rich", "markdown", "csv", "latex", "html")

EMPTY = "–"  # shown for an empty cell (CSV keeps it empty)

MARKED_CLASS = "fsbench-marked"


def _cells(view: TableView, fmt) -> pd.DataFrame:
    """``fmt(text, marked)`` applied to every cell (rows by position: labels may repeat)."""
    cells = view.cells.astype(str)
    marked = view.marked.to_numpy(dtype=bool)
    out = [
        [fmt(text, bool(marked[i, j]) and bool(text)) for j, text in enumerate(row)]
        for i, row in enumerate(cells.itertuples(index=False))
    ]
    return pd.DataFrame(out, index=cells.index, columns=cells.columns)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(view: TableView) -> str:
    def cell(text: str, mark: bool) -> str:
        text = _md_escape(text) if text else EMPTY
        return f"**{text}**" if mark else text

    table = _cells(view, cell)
    table.index = [_md_escape(str(label)) for label in table.index]
    table.columns = [_md_escape(str(col)) for col in table.columns]
    table.index.name = view.cells.index.name or ""
    body = table.to_markdown(
        tablefmt="pipe", colalign=("left", *["right"] * len(table.columns)), disable_numparse=True
    )
    lines = [f"**{_md_escape(view.title)}**", "", body]
    if view.notes:
        lines += [""] + [f"- {_md_escape(note)}" for note in view.notes]
    return "\n".join(lines) + "\n"


def render_csv(view: TableView) -> str:
    return _cells(view, lambda text, mark: f"{text}*" if mark else text).to_csv(
        lineterminator="\n"
    )


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
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "–": "--",
    "−": "-",
}


def latex_escape(text: str) -> str:
    """LaTeX-safe text; unlike pandas' ``escape="latex"`` it also maps ``±``, ``Δ`` and dashes."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


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
        .relabel_index([latex_escape(label) for label in view.cells.index], axis=0)
        .relabel_index([latex_escape(col) for col in view.cells.columns], axis=1)
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


def render_html(view: TableView) -> str:
    table, styler = _styler(view, EMPTY)
    marked = view.marked.reset_index(drop=True).astype(bool) & (table != EMPTY)
    styler = (
        styler.format(html.escape)
        .relabel_index([html.escape(str(label)) for label in view.cells.index], axis=0)
        .relabel_index([html.escape(str(col)) for col in view.cells.columns], axis=1)
        .set_td_classes(marked.map(lambda m: MARKED_CLASS if m else ""))
        .set_table_styles([{"selector": f".{MARKED_CLASS}", "props": "font-weight: bold;"}])
        .set_table_attributes('class="fsbench-report"')
        .set_caption(html.escape(view.title))
        .set_uuid("fsbench")
    )
    text = styler.to_html(doctype_html=False)
    text += "".join(f'<p class="fsbench-note">{html.escape(note)}</p>\n' for note in view.notes)
    return text


def to_rich(view: TableView):
    """The view as a :class:`rich.table.Table` followed by its notes (a rich ``Group``).

    The notes are printed as lines under the table rather than as its caption, which rich
    would wrap to the table's width. ``to_rich(view).renderables[0]`` is the Table itself.
    """
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(view.title, style="bold"))
    table.add_column(Text(view.cells.index.name or ""), no_wrap=True)
    for col in view.cells.columns:
        table.add_column(Text(str(col)), justify="right")
    styled = _cells(view, lambda text, mark: Text(text or EMPTY, style="bold" if mark else ""))
    for label, row in zip(view.cells.index, styled.itertuples(index=False), strict=True):
        table.add_row(Text(str(label)), *row)
    notes = [Text(note, style="dim") for note in view.notes]
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

"""Fault injection, reports: hostile method, dataset and note strings in every output format.

Run directories come from anywhere (a colleague, a CI artifact, a download); their method and
dataset names reach HTML, LaTeX, markdown, CSV and the terminal. Each test feeds a renderer
strings aimed at it and checks that the output is inert for its format and bounded in size.
"""

from __future__ import annotations

import csv
import io
import json
import re

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from fsbench.cli import main
from fsbench.report.aggregate import paired_table
from fsbench.report.render import FSBENCH_NUMBER, render, to_rich
from fsbench.report.tables import TableView, accuracy_table, paired_view
from fsbench.results import load_runs
from fsbench.summary import print_summary

try:
    from runfactory import make_run
except ImportError:  # pragma: no cover
    from tests.runfactory import make_run

HOSTILE = {
    "html": "<script>alert(1)</script>{0}",
    "latex": "\\input /etc/passwd \\def\\x{y}",
    "format": "m{x}",
    "format_width": "x{0:^30000000}",
    "newline": "line1\nline2\r\n\nline3",
    "ansi": "\x1b[31mred\x1b[0m\x1b]8;;https://evil\x07link\x1b]8;;\x07",
    "csv": "=cmd|' /C calc'!A0",
    "csv_plus": "+1+cmd|' /C calc'!A0",
    "csv_at": "@SUM(1+1)*cmd|' /C calc'!A0",
    "markup": "[bold red]loud[/] [link=https://evil]click[/link]",
    "markdown": "[x](javascript:alert(1)) ![i](https://evil/i.png) `code` | *em* <b>b</b>",
    "latex_bracket": "[2cm] & % $ # _ ~ ^ }",
    "bidi": "abc\u202edcba",
}
MAX_OUTPUT = 60_000  # bytes: the hostile strings are about 500; an injection wrote 30 MB


def _accs(seed: int, mean: float) -> list[float]:
    rng = np.random.default_rng(seed)
    return [round(float(a), 4) for a in np.clip(rng.normal(mean, 0.1, 20), 0, 1)]


@pytest.fixture(scope="module")
def hostile_runs(tmp_path_factory):
    """One run per hostile string as method, with the next one as its dataset, and a reference
    method on the same datasets and episodes (for the paired tables)."""
    root = tmp_path_factory.mktemp("hostile")
    names = list(HOSTILE.values())
    for i, name in enumerate(names):
        dataset = names[(i + 1) % len(names)]
        make_run(root, name, _accs(i, 0.6), dataset=dataset, run_id=f"r{i}")
        make_run(root, "ref", _accs(i, 0.7), dataset=dataset, run_id=f"ref{i}")
    return load_runs(root)


def _views(df) -> list[TableView]:
    table = accuracy_table(df)
    notes = [*table.notes, *HOSTILE.values()]
    titled = TableView(HOSTILE["latex"] + HOSTILE["html"], table.cells, table.marked, notes)
    return [titled, paired_view(paired_table(df, "ref"))]


@pytest.mark.parametrize("fmt", ["html", "latex", "markdown", "csv", "rich"])
def test_every_format_is_bounded_and_without_raw_controls(hostile_runs, fmt):
    for view in _views(hostile_runs):
        out = render(view, fmt)
        assert len(out.encode()) < MAX_OUTPUT
        assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
        assert "x1b" in out  # spelled out, visible


def test_html_escapes_scripts_and_format_braces(hostile_runs):
    page = "".join(render(view, "html") for view in _views(hostile_runs))
    assert "<script" not in page.lower() and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;{0}" in page  # {0} stayed literal
    assert "m{x}" in page and "x{0:^30000000}" in page
    assert "line1\\nline2\\r\\n\\nline3" in page


def test_latex_has_no_live_command_or_row_break(hostile_runs):
    for view in _views(hostile_runs):
        tex = render(view, "latex")
        body = tex[tex.index("\\begin{table}"):]
        commands = set(re.findall(r"\\([A-Za-z]+)", body))
        assert commands <= {"begin", "end", "centering", "caption", "toprule", "midrule",
                            "bottomrule", "textbf", "textbackslash", "textless", "textgreater",
                            "textbar", "textasciitilde", "textasciicircum", "textquotedbl", "pm",
                            "Delta", "par", "smallskip", "footnotesize"}, commands
        assert "\\textbackslash{}input /etc/passwd" in body
        assert "\n\n" not in body  # a blank line would end the tabular
        assert "\\\\\n[" not in body and "{[}2cm{]}" in body  # no \\[2cm] after a row


def test_markdown_table_holds_together_and_has_no_html_or_links(hostile_runs):
    view = _views(hostile_runs)[0]
    md = render(view, "markdown")
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table) == len(view.cells) + 2  # header, rule, one line per row: no line broke
    assert all(line.endswith("|") for line in table)
    assert "<" not in md and ">" not in md
    assert not re.search(r"(?<!\\)\[", md), "an unescaped [ could start a link or image"
    assert not re.search(r"(?<!\\)`", md)
    notes = md.split(table[-1], 1)[1]
    assert all(line.startswith("- ") and line[2:3] not in "#-+=" for line in notes.split("\n") if line)


def test_csv_neutralises_formulas_but_keeps_numbers(hostile_runs):
    for view in _views(hostile_runs):
        out = render(view, "csv")
        rows = list(csv.reader(io.StringIO(out)))
        assert len(rows) == len(view.cells) + 1  # newlines stayed inside their fields
        fields = [field for row in rows for field in row]
        numbers = [f for f in fields if FSBENCH_NUMBER.fullmatch(f)]
        for field in fields:
            if field[:1] in ("=", "+", "-", "@", "\t", "\r"):
                assert field in numbers, field
        assert "'=cmd|' /C calc'!A0" in out and "'+1+cmd" in out and "'@SUM" in out
    paired = pd.read_csv(io.StringIO(render(_views(hostile_runs)[1], "csv")), index_col=0)
    diffs = paired[[c for c in paired.columns if c.startswith("Δ")][0]]
    assert diffs.str.match(r"^-\d").all()  # fsbench's own negative numbers are left alone


def test_rich_prints_markup_and_escapes_literally(hostile_runs):
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, color_system="truecolor", width=400)
    for view in _views(hostile_runs):
        console.print(to_rich(view))
    out = buffer.getvalue()
    assert "[bold red]loud[/]" in out and "[link=https://evil]click[/link]" in out
    assert "\x1b]8;" not in out  # no hyperlink escape (rich writes OSC 8 for [link])
    assert "\\x1b[31mred" in out


def _compact(out: str) -> str:
    """Terminal output without whitespace and box lines: a cell wrapped over lines reads whole."""
    return re.sub(r"[\s│┃║┆]", "", out)


MARKUP_COMPACT = ("[boldred]loud[/]", "[link=https://evil]click[/link]")


@pytest.mark.parametrize("width", [200, 80])
def test_run_summary_table_is_inert(width):
    summary = {"method": HOSTILE["markup"], "dataset": HOSTILE["ansi"], "eval_split": "test",
               "backbone": HOSTILE["newline"], "way": 5, "shot": 1, "episodes": 20,
               "accuracy": 50.0, "ci95": 1.0, "pretrain_seconds": 0.0, "train_seconds": 1.0,
               "eval_seconds": 1.0}
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, color_system=None, width=width)
    print_summary([summary], console=console)
    out = buffer.getvalue()
    assert "\x1b" not in out and "\x07" not in out
    assert all(m in _compact(out) for m in MARKUP_COMPACT) and "\\x1b[31mred" in _compact(out)
    assert "line1\\nline2" in _compact(out)


def test_compare_table_is_inert(tmp_path, capsys):
    for name in ("base", "new"):
        make_run(tmp_path / name, HOSTILE["markup"] + HOSTILE["ansi"], _accs(0, 0.6),
                 dataset=HOSTILE["newline"], run_id="r0")
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "new")]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert all(m in _compact(out) for m in MARKUP_COMPACT) and "\\x1b[31mred" in _compact(out)


def test_report_cli_writes_an_inert_bounded_file(hostile_runs, tmp_path):
    root = tmp_path / "runs"
    make_run(root, HOSTILE["format_width"], _accs(1, 0.5), dataset=HOSTILE["html"], run_id="r")
    for fmt, suffix in (("html", "html"), ("latex", "tex"), ("markdown", "md"), ("csv", "csv")):
        target = tmp_path / f"report.{suffix}"
        assert main(["report", str(root), "--format", fmt, "--output", str(target)]) == 0
        assert target.stat().st_size < MAX_OUTPUT
        assert "x{0:" in target.read_text() or "x\\{0:" in target.read_text()
    summary = json.loads(next(root.glob("*/summary.json")).read_text())
    assert summary["method"] == HOSTILE["format_width"]

"""A report from run directories: its tables (printed or written to a file) and its plots.

``fsbench report`` and the end of ``fsbench sweep`` both call :func:`make_report`; the command
line only parses. Bad input raises :class:`fsbench.results.ResultsError` (one line).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fsbench.errors import FsbenchError

__all__ = ["ReportOptions", "make_report", "report_views", "write_plots"]


@dataclass(frozen=True)
class ReportOptions:
    """What a report shows and where it goes."""

    ablation: bool = False  # the paper's ablation rows (those present)
    paper: bool = False  # the paper's comparison table, its number beside ours
    paired: str | None = None  # also paired differences against this method
    format: str = "rich"  # one of fsbench.report.render.FORMATS
    output: Path | None = None  # a file instead of stdout
    plots: Path | None = None  # also validation-curve and accuracy-vs-shot plots in this folder


def report_views(df: pd.DataFrame, options: ReportOptions) -> list:
    """The tables of ``options`` for the runs of ``df`` (:func:`fsbench.results.load_runs`).

    With ``paired`` and the csv format, only the paired tables (one CSV table per file).
    """
    from fsbench.report.aggregate import paired_table, seed_paired_table
    from fsbench.report.tables import accuracy_table, paired_view, seed_paired_view

    views = [accuracy_table(df, ablation=options.ablation, paper=options.paper)]
    if not options.paired:
        return views
    per_seed = paired_table(df, options.paired)
    paired = [paired_view(per_seed)]
    across = seed_paired_table(per_seed)
    if (across["n_seeds"] > 1).any():
        paired.append(seed_paired_view(across))
    return paired if options.format == "csv" else views + paired


def make_report(results: Sequence[Path], options: ReportOptions) -> None:
    """Load the runs under ``results``, then print or write their tables, then the plots."""
    from fsbench.atomic import atomic_write_text
    from fsbench.report.render import render, to_rich
    from fsbench.results import load_runs

    df = load_runs(list(results))
    views = report_views(df, options)
    if options.format == "rich" and options.output is None:
        from rich.console import Console

        console = Console(width=None if sys.stdout.isatty() else 200)
        for view in views:
            console.print(to_rich(view))
    else:
        text = "\n".join(render(view, options.format) for view in views)
        if options.output is None:
            sys.stdout.write(text)
        else:
            if not options.output.parent.is_dir():
                raise FsbenchError(f"--output {options.output}: folder {options.output.parent} "
                                   "does not exist")
            atomic_write_text(options.output, text)
            print(f"wrote {options.output}", file=sys.stderr)
    if options.plots is not None:
        for path in write_plots(df, options.plots):
            print(f"wrote {path}", file=sys.stderr)


def write_plots(df: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Validation-curve and accuracy-vs-shot plots of ``df``'s runs in ``out_dir``; the files.

    Says so (stderr) when no run has a validation history to plot.
    """
    from fsbench.report.plots import plot_accuracy_vs_shot, plot_val_curves

    written = plot_val_curves(df, out_dir) + plot_accuracy_vs_shot(df, out_dir)
    if not any("val_curves" in p.name for p in written):
        print("no validation history in these runs; no validation-curve plot", file=sys.stderr)
    return written

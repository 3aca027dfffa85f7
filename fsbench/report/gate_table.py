"""The regression gate's report as a rich table (:func:`compare_table`); the gate itself is
:mod:`fsbench.report.compare`."""

from __future__ import annotations

from .compare import CompareReport, CompareRow

_STATUS_STYLE = {"regression": "bold red", "missing": "bold red", "ok": "green", "new": "cyan"}


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "–" if value is None else format(value, spec)


def compare_table(report: CompareReport):
    """The report as a rich Table."""
    from rich.table import Table
    from rich.text import Text

    from fsbench.safetext import text

    table = Table(
        title="fsbench compare: new vs baseline",
        caption=(
            f"paired: fail if the CI of new - baseline is below 0 and the drop > {report.min_drop:g} pts; "
            f"unpaired: fail if the drop > {report.tolerance:g} pts; time: fail if > "
            f"{report.time_ratio:g}x max(baseline, {report.time_floor:g}s)"
        ),
        caption_justify="left",
    )
    for name, justify in (
        ("status", "left"),
        ("method", "left"),
        ("setting", "left"),
        ("seeds", "left"),
        ("baseline", "right"),
        ("new", "right"),
        ("Δ (pts)", "right"),
        ("test", "left"),
        ("train s", "right"),
        ("eval s", "right"),
        ("details", "left"),
    ):
        # Nothing is cut (long names wrap); the method column keeps room for its names first.
        widest = max((len(r.method) for r in report.rows), default=0) if name == "method" else 0
        table.add_column(name, justify=justify, overflow="fold", min_width=min(widest, 48) or None)
    for row in report.rows:
        if row.diff is None:
            diff = "–"
        elif row.ci95 is not None:
            diff = f"{row.diff:+.2f} ± {row.ci95:.2f}"
        else:
            diff = f"{row.diff:+.2f}"
        seeds = row.paired_seeds or row.new_seeds or row.baseline_seeds

        def times(label: str, row: CompareRow = row) -> str:
            if label not in row.baseline_seconds:
                return "–"
            return f"{row.baseline_seconds[label]:.1f} → {row.new_seconds[label]:.1f}"

        style = _STATUS_STYLE[row.status]
        table.add_row(
            Text(row.status.upper() if row.failed else row.status, style=style),
            text(row.method, style="bold" if row.failed else ""),
            text(row.setting),
            ",".join(map(str, seeds)),
            _fmt(row.baseline_accuracy),
            _fmt(row.new_accuracy),
            diff,
            ", ".join(t for t in (row.test, row.verdict) if t) or "–",
            times("train"),
            times("eval"),
            text("; ".join(row.reasons + row.notes), style=style if row.reasons else "dim"),
        )
    return table

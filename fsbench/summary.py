"""The final table of a run (or a suite): accuracy ± 95% CI per run, on stdout.

The table fits its terminal: from :data:`WIDE` columns up, one column per setting; below, the
settings of a run are stacked in one cell (method over ``dataset/split · backbone · 5w1s``), the
episode count under the accuracy and the times in a third cell, so that at 80 columns no header
or cell is cut and ``71.06 ± 0.95`` stays on one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from fsbench.safetext import text

#: At this console width and above the table has one column per setting.
WIDE = 110

TITLE = "fsbench results: accuracy %, mean ± 95% CI over test episodes"


def _method(s: dict[str, Any]) -> str:
    return s["method"] + (f" (HT: {s['hard_tasks_used']} hard tasks)" if s.get("hard_tasks") else "")


def _accuracy(s: dict[str, Any]) -> Text:
    return Text(f"{s['accuracy']:.2f} ± {s['ci95']:.2f}", style="bold")


def _train_seconds(s: dict[str, Any]) -> float:
    return (s.get("pretrain_seconds") or 0.0) + (s.get("train_seconds") or 0.0)


def results_table(summaries: list[dict[str, Any]], width: int) -> Table:
    """The runs' table laid out for a console ``width`` characters wide."""
    if width >= WIDE:
        table = Table(title=TITLE)
        for col in ("method", "dataset", "split", "backbone", "way-shot", "episodes"):
            table.add_column(col, justify="right" if col == "episodes" else "left")
        table.add_column("accuracy", justify="right", no_wrap=True)
        table.add_column("train s", justify="right", no_wrap=True)
        table.add_column("eval s", justify="right", no_wrap=True)
        for s in summaries:
            table.add_row(
                text(_method(s)), text(s["dataset"]), text(s["eval_split"]), text(s["backbone"]),
                f"{s['way']}-{s['shot']}", str(s["episodes"]), _accuracy(s),
                f"{_train_seconds(s):.0f}", f"{s['eval_seconds']:.1f}",
            )
        return table
    table = Table(title=Text(TITLE, overflow="fold"), expand=False)
    table.add_column("run", overflow="fold")
    table.add_column("accuracy", justify="right", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    for s in summaries:
        setting = f"{s['dataset']}/{s['eval_split']} · {s['backbone']} · {s['way']}w{s['shot']}s"
        table.add_row(
            text(_method(s), style="bold") + Text("\n") + text(setting, style="dim"),
            _accuracy(s) + Text(f"\n{s['episodes']} episodes", style="dim"),
            f"train {_train_seconds(s):.0f} s\neval {s['eval_seconds']:.1f} s",
        )
    return table


def print_summary(summaries: list[dict[str, Any]], where: Path | None = None,
                  console: Console | None = None) -> None:
    console = console or Console()
    console.print(results_table(summaries, console.size.width))
    for s in summaries:
        if line := throughput_line(s):
            console.print(text(line))
    if where is not None:
        console.print(text(f"results: {where}"))


def throughput_line(s: dict[str, Any]) -> str:
    """One line of a run's speed figures (device, precision, images/s, episodes/s), or ''."""
    parts = []
    if s.get("pretrain_images_per_s"):
        parts.append(f"pre-train {s['pretrain_images_per_s']:,.0f} images/s")
    if s.get("meta_train_episodes_per_s"):
        parts.append(f"meta-train {s['meta_train_episodes_per_s']:,.1f} episodes/s "
                     f"({s['meta_train_episodes']} episodes)")
    if s.get("eval_seconds") is not None and s.get("episodes"):
        parts.append(f"evaluation {s['episodes']} episodes in {s['eval_seconds']:.1f} s")
    if not parts or "device_name" not in s:
        return ""
    return f"{s['method']}: {s['device_name']}, {s['precision']}; " + ", ".join(parts)

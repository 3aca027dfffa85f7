"""The final table of a run (or a suite): accuracy +- 95% CI per run, on stdout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def print_summary(summaries: list[dict[str, Any]], where: Path | None = None) -> None:
    table = Table(title="fsbench results (accuracy %, mean +- 95% CI over test episodes)")
    for col in ("method", "dataset", "split", "backbone", "way-shot", "episodes", "accuracy",
                "train s", "eval s"):
        table.add_column(col, justify="right" if col in ("episodes", "train s", "eval s") else "left")
    for s in summaries:
        ht = f" (HT: {s['hard_tasks_used']} hard tasks)" if s.get("hard_tasks") else ""
        table.add_row(
            s["method"] + ht, s["dataset"], s["eval_split"], s["backbone"], f"{s['way']}-{s['shot']}",
            str(s["episodes"]), f"[bold]{s['accuracy']:.2f} +- {s['ci95']:.2f}[/]",
            f"{s['pretrain_seconds'] + s['train_seconds']:.0f}", f"{s['eval_seconds']:.1f}",
        )
    console = Console()
    console.print(table)
    for s in summaries:
        if line := throughput_line(s):
            console.print(line)
    if where is not None:
        console.print(f"results: {where}")


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

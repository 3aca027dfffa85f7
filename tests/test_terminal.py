"""Terminal output fits: the run's results table and the progress bars at 80 and 200 columns."""

from __future__ import annotations

import io
import re

from rich.console import Console

from fsbench.progress import make_progress
from fsbench.summary import print_summary

SUMMARY = {
    "method": "mtl_ht", "hard_tasks": True, "hard_tasks_used": 240, "dataset": "miniimagenet",
    "eval_split": "val", "backbone": "resnet12_tiny", "way": 5, "shot": 1, "episodes": 600,
    "accuracy": 71.06, "ci95": 0.95, "pretrain_seconds": 612.0, "train_seconds": 239.4,
    "eval_seconds": 48.2,
}


def rendered(width: int, draw) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False)
    draw(console)
    return console.file.getvalue()


def test_results_table_at_80_columns_cuts_nothing():
    text = rendered(80, lambda c: print_summary([SUMMARY, dict(SUMMARY, method="finetune",
                                                               hard_tasks=False)], console=c))
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    for token in ("71.06 ± 0.95", "mtl_ht", "240 hard tasks", "finetune", "miniimagenet/val",
                  "resnet12_tiny", "5w1s", "600 episodes", "train 851 s", "eval 48.2 s"):
        assert token in text, token


def test_results_table_at_200_columns_has_a_column_per_setting():
    text = rendered(200, lambda c: print_summary([SUMMARY], console=c))
    header = next(line for line in text.splitlines() if "backbone" in line)
    for name in ("method", "dataset", "split", "backbone", "way-shot", "episodes", "accuracy",
                 "train s", "eval s"):
        assert name in header, name
    assert "71.06 ± 0.95" in text and "…" not in text


def _progress_text(width: int) -> str:
    def draw(console: Console) -> None:
        progress = make_progress(console)
        progress.add_task("pre-train", total=600, completed=600,
                          info="loss 1.234  val 45.6±1.2%  best 47.0% at epoch 5 of 6")
        progress.add_task("evaluate (test)", total=600, completed=37, info="")
        console.print(progress.make_tasks_table(progress.tasks))

    return rendered(width, draw)


def test_progress_at_80_columns_keeps_counts_and_times_whole():
    text = _progress_text(80)
    lines = text.splitlines()
    assert len(lines) == 2 and max(len(line) for line in lines) <= 80
    assert "600/600" in lines[0] and " 37/600" in lines[1]
    for line in lines:  # elapsed and remaining, uncut
        assert len(re.findall(r"(?:\d|-):(?:\d\d|--):(?:\d\d|--)", line)) == 2, line
    assert "loss 1.2" in lines[0]  # the note is what gets clipped, and only at its end


def test_progress_at_200_columns_shows_the_whole_note():
    assert "best 47.0% at epoch 5 of 6" in _progress_text(200)


def test_methods_table_at_80_columns_cuts_nothing(capsys, monkeypatch):
    from fsbench import cli

    monkeypatch.setenv("COLUMNS", "80")
    assert cli.main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= 80
    for token in ("mtl_ht", "episodic.meta_batch=2", "resnet12_mtl", "official_pytorch"):
        assert token in out, token

"""Read run directories and render the paper's tables: mean accuracy ± 95% CI per method.

A run directory (written by the runner) holds ``summary.json``, ``episodes.jsonl`` (one
``{"index", "accuracy"}`` line per test episode, accuracy a fraction) and optionally
``history.jsonl`` (the validation curve). :func:`load_runs` reads any mix of run directories and
roots that contain run directories into one pandas DataFrame, one row per run.

Aggregation over seeds
    Runs whose configuration differs only in ``seed`` form one table cell. Its accuracy is the
    mean of the per-seed accuracies. Its CI is the run's own CI when there is one seed; with
    several seeds, all episodes of all seeds are pooled and the CI is computed over the pool
    (``1.96*std(ddof=0)/sqrt(total episodes)``). Different seeds draw different episodes, so the
    pool is a larger sample of the same task distribution; the interval describes uncertainty
    over tasks, not seed-to-seed training variance (which the seed count in the cell flags).
    Two runs with the same configuration *and* seed are duplicates: the newest (``created``) is
    kept and a note says so.

Tables
    :func:`accuracy_table` (methods x ``dataset shot`` columns, best per column marked,
    optionally the paper's ablation rows and the paper's numbers beside ours) and
    :func:`paired_table` (per-episode paired differences against a reference method) build a
    :class:`TableView`; :func:`render` turns it into markdown, CSV, LaTeX (booktabs), HTML or
    plain text, :func:`to_rich` into a rich Table (with its notes). Validation-split results are labelled
    ``(val)`` in their column and noted under the table.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import io
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fsbench.errors import FsbenchError
from fsbench.paper import ABLATION_ORDER, PAPER_ORDER, method_label, paper_accuracy
from fsbench.stats import CI_FORMULA, mean_ci95, paired_difference

FORMATS = ("rich", "markdown", "csv", "latex", "html")

SUMMARY_FILE = "summary.json"
EPISODES_FILE = "episodes.jsonl"
HISTORY_FILE = "history.jsonl"

#: Summary fields every run must have, with their types.
REQUIRED_FIELDS: dict[str, type] = {
    "run_id": str,
    "method": str,
    "dataset": str,
    "way": int,
    "shot": int,
    "query": int,
    "episodes": int,
    "seed": int,
    "eval_split": str,
    "accuracy": float,
    "ci95": float,
}

#: Optional summary fields and the value used when a summary lacks them.
OPTIONAL_FIELDS: dict[str, Any] = {
    "backbone": "",
    "preset": "",
    "hard_tasks": False,
    "ci_formula": "",
    "pretrain_seconds": math.nan,
    "train_seconds": math.nan,
    "eval_seconds": math.nan,
    "device": "",
    "created": "",
}

EVAL_SPLITS = ("test", "val")

#: Runs equal on all of these (they may differ in seed) are aggregated into one table cell.
CONFIG_KEYS: tuple[str, ...] = (
    "method",
    "dataset",
    "backbone",
    "way",
    "shot",
    "query",
    "episodes",
    "preset",
    "eval_split",
    "hard_tasks",
)

#: Runs equal on all of these saw identical test episodes (index by index).
EPISODE_KEYS: tuple[str, ...] = ("dataset", "eval_split", "way", "shot", "query", "seed")

#: Configuration keys that go into a row label when one method has runs differing in them.
VARIANT_KEYS: tuple[str, ...] = ("backbone", "preset", "query", "episodes", "hard_tasks")

DATASET_ORDER: tuple[str, ...] = ("miniimagenet", "fc100", "synthetic")

EMPTY = "–"  # shown for an empty cell (CSV keeps it empty)


class ReportError(FsbenchError):
    """Unreadable results or an impossible report request; the message is one line."""


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def find_run_dirs(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Run directories named by ``paths``: each is a run directory or a root searched recursively."""
    found: dict[Path, None] = {}
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise ReportError(f"{path}: no such file or directory")
        if path.is_file():
            if path.name == SUMMARY_FILE:
                found[path.parent.resolve()] = None
                continue
            raise ReportError(f"{path}: expected a run directory or a folder of runs, got a file")
        if (path / SUMMARY_FILE).is_file():
            found[path.resolve()] = None
            continue
        summaries = sorted(path.rglob(SUMMARY_FILE))
        if not summaries:
            raise ReportError(f"{path}: no runs found (no {SUMMARY_FILE} in it or below it)")
        for summary in summaries:
            found[summary.parent.resolve()] = None
    return list(found)


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReportError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ReportError(f"{path}: cannot read ({exc.strerror or exc})") from None
    records = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ReportError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise ReportError(f"{path}:{lineno}: expected a JSON object")
        records.append(record)
    return records


def _check_type(path: Path, name: str, value: Any, kind: type) -> Any:
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return float(value) if ok else _type_error(path, name, value, "a number")
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return value if ok else _type_error(path, name, value, "an integer")
    if kind is str:
        return value if isinstance(value, str) else _type_error(path, name, value, "a string")
    raise AssertionError(kind)


def _type_error(path: Path, name: str, value: Any, expected: str) -> Any:
    raise ReportError(f"{path}: field {name!r} must be {expected}, got {value!r}")


def _load_summary(path: Path) -> dict[str, Any]:
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a JSON object")
    missing = [name for name in REQUIRED_FIELDS if name not in data]
    if missing:
        raise ReportError(f"{path}: missing field(s) {', '.join(missing)}")
    summary = dict(data)
    for name, kind in REQUIRED_FIELDS.items():
        summary[name] = _check_type(path, name, data[name], kind)
    for name, default in OPTIONAL_FIELDS.items():
        value = data.get(name)
        if value is None:
            summary[name] = default
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                _type_error(path, name, value, "true or false")
        elif isinstance(default, float):
            summary[name] = _check_type(path, name, value, float)
        else:
            summary[name] = _check_type(path, name, value, str)
    if summary["eval_split"] not in EVAL_SPLITS:
        raise ReportError(
            f"{path}: eval_split must be one of {', '.join(EVAL_SPLITS)}, "
            f"got {summary['eval_split']!r}"
        )
    if summary["episodes"] < 1:
        raise ReportError(f"{path}: episodes must be at least 1, got {summary['episodes']}")
    return summary


def _load_episodes(path: Path, expected: int) -> np.ndarray:
    if not path.is_file():
        raise ReportError(f"{path}: missing (every run needs its per-episode accuracies)")
    acc = np.full(expected, np.nan)
    records = _read_jsonl(path)
    for lineno, record in enumerate(records, start=1):
        index, value = record.get("index"), record.get("accuracy")
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < expected:
            raise ReportError(
                f"{path}: record {lineno}: index must be an integer in 0..{expected - 1}, "
                f"got {index!r}"
            )
        if (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not 0.0 <= value <= 1.0
        ):
            raise ReportError(
                f"{path}: record {lineno}: accuracy must be a fraction in [0, 1], got {value!r}"
            )
        if not np.isnan(acc[index]):
            raise ReportError(f"{path}: episode index {index} appears twice")
        acc[index] = float(value)
    if len(records) != expected:
        raise ReportError(
            f"{path}: {len(records)} episodes, but summary.json says episodes={expected}"
        )
    return acc


def _load_history(path: Path) -> list[dict[str, Any]] | None:
    if not path.exists():
        return None
    history = _read_jsonl(path)
    for lineno, record in enumerate(history, start=1):
        for name in ("phase", "step", "val_accuracy"):
            if name not in record:
                raise ReportError(f"{path}: record {lineno}: missing field {name!r}")
    return history


def load_run(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """One run as a dict: its summary fields, ``run_dir``, ``episode_acc`` and ``history``."""
    run_dir = Path(run_dir)
    summary = _load_summary(run_dir / SUMMARY_FILE)
    summary["run_dir"] = str(run_dir)
    summary["episode_acc"] = _load_episodes(run_dir / EPISODES_FILE, summary["episodes"])
    summary["history"] = _load_history(run_dir / HISTORY_FILE)
    return summary


def load_runs(paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str]) -> pd.DataFrame:
    """Load runs into a DataFrame, one row per run.

    Columns: every summary field (optional ones filled with defaults), ``run_dir``,
    ``episode_acc`` (numpy array of per-episode accuracies as fractions, indexed by episode
    index) and ``history`` (list of dicts, or None when the run has no ``history.jsonl``).
    Raises :class:`ReportError` naming the file at fault.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    run_dirs = find_run_dirs(paths)
    if not run_dirs:
        raise ReportError("no results given")
    records = [load_run(run_dir) for run_dir in sorted(run_dirs)]
    columns = list(REQUIRED_FIELDS) + list(OPTIONAL_FIELDS)
    extra = sorted(
        {key for r in records for key in r} - set(columns) - {"run_dir", "episode_acc", "history"}
    )
    df = pd.DataFrame.from_records(
        records, columns=columns + extra + ["run_dir", "episode_acc", "history"]
    )
    return df.reset_index(drop=True)


# ----------------------------------------------------------------------------------------------
# Aggregation and ordering
# ----------------------------------------------------------------------------------------------


def dataset_sort_key(dataset: str) -> tuple[int, str]:
    rank = DATASET_ORDER.index(dataset) if dataset in DATASET_ORDER else len(DATASET_ORDER)
    return rank, dataset


def method_sort_key(method: str, order: Sequence[str] = PAPER_ORDER) -> tuple[int, str]:
    return (order.index(method) if method in order else len(order)), method


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (runs differing only in seed merged); see the module docstring.

    Columns: :data:`CONFIG_KEYS`, ``accuracy`` and ``ci95`` (%), ``n_seeds``, ``seeds``,
    ``n_episodes`` (all seeds), ``ci_source`` ("run" or "pooled"), ``run_ids``,
    ``duplicates_dropped`` and ``ci_formulas``.
    """
    columns = list(CONFIG_KEYS) + [
        "accuracy",
        "ci95",
        "n_seeds",
        "seeds",
        "n_episodes",
        "ci_source",
        "run_ids",
        "duplicates_dropped",
        "ci_formulas",
    ]
    rows = []
    for key, group in df.groupby(list(CONFIG_KEYS), sort=False, dropna=False):
        kept = group.sort_values(["created", "run_dir"]).drop_duplicates("seed", keep="last")
        kept = kept.sort_values("seed")
        if len(kept) == 1:
            ci, source = float(kept["ci95"].iloc[0]), "run"
        else:
            pooled = np.concatenate(list(kept["episode_acc"])) * 100.0
            ci, source = mean_ci95(pooled)[1], "pooled"
        rows.append(
            {
                **dict(zip(CONFIG_KEYS, key, strict=True)),
                "accuracy": float(kept["accuracy"].mean()),
                "ci95": ci,
                "n_seeds": len(kept),
                "seeds": tuple(int(s) for s in kept["seed"]),
                "n_episodes": int(sum(len(a) for a in kept["episode_acc"])),
                "ci_source": source,
                "run_ids": tuple(kept["run_id"]),
                "duplicates_dropped": len(group) - len(kept),
                "ci_formulas": tuple(sorted(set(kept["ci_formula"]))),
            }
        )
    return pd.DataFrame(rows, columns=columns)


def row_labels(agg: pd.DataFrame, *, paper_names: bool = False) -> list[str]:
    """A label per aggregated row: the method, plus the settings in which its runs differ."""
    labels = []
    for _, row in agg.iterrows():
        same_method = agg[agg["method"] == row["method"]]
        varying = [k for k in VARIANT_KEYS if same_method[k].nunique(dropna=False) > 1]
        label = method_label(row["method"]) if paper_names else row["method"]
        if varying:
            label += " [" + ", ".join(f"{k}={row[k]}" for k in varying) + "]"
        labels.append(label)
    return labels


def column_label(dataset: str, way: int, shot: int, eval_split: str) -> str:
    """``"miniimagenet 1-shot"``; the way is named when it is not 5, ``(val)`` marks val runs."""
    label = f"{dataset} {shot}-shot" if way == 5 else f"{dataset} {way}-way {shot}-shot"
    return label + (" (val)" if eval_split == "val" else "")


def _column_sort_key(key: tuple[str, int, int, str]) -> tuple[Any, ...]:
    dataset, way, shot, split = key
    return dataset_sort_key(dataset), EVAL_SPLITS.index(split), way, shot


def format_acc(accuracy: float, ci95: float, n_seeds: int = 1) -> str:
    """``61.2 ± 1.8``, with ``(3 seeds)`` appended for several seeds."""
    text = f"{accuracy:.1f} ± {ci95:.1f}"
    return text + (f" ({n_seeds} seeds)" if n_seeds > 1 else "")


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------


@dataclass
class TableView:
    """Table data ready to render: string cells, which cells to mark, a title and notes.

    ``cells`` is a DataFrame of strings (``""`` = empty) whose index holds the row labels;
    ``marked`` is a same-shaped boolean DataFrame (best per column, or a significant
    difference): bold in rich/markdown/LaTeX/HTML, a trailing ``*`` in CSV. ``values`` keeps the
    numbers behind the cells for programmatic use.
    """

    title: str
    cells: pd.DataFrame
    marked: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    values: pd.DataFrame | None = None


def accuracy_table(df: pd.DataFrame, *, ablation: bool = False, paper: bool = False) -> TableView:
    """Methods as rows, ``dataset shot`` as columns, cells ``mean ± CI`` (best per column marked).

    ``ablation`` keeps only the paper's ablation rows (train from scratch, finetune, MTL,
    MTL + HT) in the paper's order and names. ``paper`` adds, beside each column, the paper's
    number and the difference ours - paper (see :mod:`fsbench.paper`).
    """
    if df.empty:
        raise ReportError("no runs to report")
    agg = aggregate(df)
    order: Sequence[str] = PAPER_ORDER
    if ablation:
        agg = agg[agg["method"].isin(ABLATION_ORDER)].reset_index(drop=True)
        if agg.empty:
            raise ReportError(
                f"--ablation needs runs of {', '.join(ABLATION_ORDER)}; found only "
                f"{', '.join(sorted(set(df['method'])))}"
            )
        order = ABLATION_ORDER
    agg = agg.assign(row=row_labels(agg, paper_names=ablation))
    agg["col"] = [column_label(r.dataset, r.way, r.shot, r.eval_split) for r in agg.itertuples()]
    # Row and column order.
    row_keys = sorted(
        {
            (r.row, r.method, tuple(str(getattr(r, k)) for k in VARIANT_KEYS))
            for r in agg.itertuples()
        },
        key=lambda t: (method_sort_key(t[1], order), t[2]),
    )
    rows = list(dict.fromkeys(t[0] for t in row_keys))
    col_keys = sorted(
        {(r.dataset, r.way, r.shot, r.eval_split) for r in agg.itertuples()}, key=_column_sort_key
    )
    cols = [column_label(*k) for k in col_keys]

    values = agg.pivot(index="row", columns="col", values="accuracy").reindex(
        index=rows, columns=cols
    )
    lookup = {(r.row, r.col): r for r in agg.itertuples()}
    row_method = {r.row: r.method for r in agg.itertuples()}

    out_cols: list[str] = []
    cell_data: dict[str, list[str]] = {}
    marked_data: dict[str, list[bool]] = {}
    any_paper = False
    for col_key, col in zip(col_keys, cols, strict=True):
        rounded = values[col].round(1)
        best = rounded.max() if rounded.notna().sum() >= 2 else math.nan
        ours, mark = [], []
        for row in rows:
            rec = lookup.get((row, col))
            ours.append(format_acc(rec.accuracy, rec.ci95, rec.n_seeds) if rec else "")
            mark.append(bool(rec is not None and round(rec.accuracy, 1) == best))
        out_cols.append(col)
        cell_data[col], marked_data[col] = ours, mark
        if not paper:
            continue
        dataset, way, shot, split = col_key
        reported = [paper_accuracy(row_method[row], dataset, shot, way, split) for row in rows]
        if all(p is None for p in reported):
            continue
        any_paper = True
        paper_col, diff_col = f"{col} paper", f"{col} Δ"
        paper_cells, diff_cells = [], []
        for row, ref in zip(rows, reported, strict=True):
            rec = lookup.get((row, col))
            # Only beside a number of ours: a paper value on an empty row reads as our result.
            paper_cells.append("" if ref is None or rec is None else f"{ref:.1f}")
            diff_cells.append("" if ref is None or rec is None else f"{rec.accuracy - ref:+.1f}")
        out_cols += [paper_col, diff_col]
        cell_data[paper_col], cell_data[diff_col] = paper_cells, diff_cells
        marked_data[paper_col] = marked_data[diff_col] = [False] * len(rows)

    index = pd.Index(rows, name="method")
    cells = pd.DataFrame(cell_data, index=index, columns=out_cols)
    marked = pd.DataFrame(marked_data, index=index, columns=out_cols)

    title = "Ablation: " if ablation else ""
    ways = sorted(set(agg["way"]))
    title += f"{'/'.join(map(str, ways))}-way accuracy (%), mean ± 95% CI"
    notes = [f"95% CI over episodes, {CI_FORMULA}; best per column marked (bold, or * in CSV)."]
    formulas = sorted({f for fs in agg["ci_formulas"] for f in fs if f and f != CI_FORMULA})
    if formulas:
        notes.append(f"Some runs recorded another CI formula: {', '.join(formulas)}.")
    if (agg["n_seeds"] > 1).any():
        notes.append(
            "Several seeds: accuracy is the mean of the per-seed accuracies; the CI pools all "
            "episodes of all seeds."
        )
    dropped = int(agg["duplicates_dropped"].sum())
    if dropped:
        notes.append(
            f"{dropped} duplicate run(s) (same configuration and seed) ignored; newest kept."
        )
    if (agg["eval_split"] == "val").any():
        notes.append(
            "Columns marked (val) are VALIDATION-split results, not test results; "
            "do not compare them with test numbers."
        )
    if paper:
        if any_paper:
            notes.append(
                "paper: Sun et al., Meta-Transfer Learning for Few-Shot Learning (CVPR 2019), "
                "test split; MAML, MAML + HT and ProtoNets with Conv4, the others ResNet-12. "
                "Δ = ours - paper (points)."
            )
        else:
            notes.append("The paper reports no numbers for these methods and settings.")
    return TableView(title=title, cells=cells, marked=marked, notes=notes, values=values)


def paired_table(df: pd.DataFrame, reference_method: str) -> pd.DataFrame:
    """Paired per-episode differences of every run against the reference method's run(s).

    Two runs pair up when they share episodes: same dataset, eval_split, way, shot, query and
    seed. For each pair the per-episode differences ``other - reference`` (in points) give the
    mean and its 95% CI; ``significant`` marks an interval that excludes 0. When the runs have
    different episode counts, the common prefix of episodes is compared (``n``).
    """
    if df.empty:
        raise ReportError("no runs to report")
    methods = sorted(set(df["method"]))
    if reference_method not in methods:
        raise ReportError(
            f"--paired {reference_method!r}: no runs of that method; methods present: "
            f"{', '.join(methods)}"
        )
    rows = []
    for key, group in df.groupby(list(EPISODE_KEYS), sort=False):
        refs = group[group["method"] == reference_method]
        others = group[group["method"] != reference_method]
        for ref in refs.itertuples():
            for other in others.itertuples():
                n = min(len(ref.episode_acc), len(other.episode_acc))
                res = paired_difference(ref.episode_acc[:n] * 100.0, other.episode_acc[:n] * 100.0)
                rows.append(
                    {
                        "method": other.method,
                        "run_id": other.run_id,
                        "reference": reference_method,
                        "reference_run_id": ref.run_id,
                        **dict(zip(EPISODE_KEYS, key, strict=True)),
                        "backbone": other.backbone,
                        "preset": other.preset,
                        "n": res.n,
                        "accuracy": float(np.mean(other.episode_acc[:n]) * 100.0),
                        "reference_accuracy": float(np.mean(ref.episode_acc[:n]) * 100.0),
                        "mean_diff": res.mean_diff,
                        "ci95": res.ci95,
                        "low": res.low,
                        "high": res.high,
                        "significant": res.significant,
                    }
                )
    if not rows:
        raise ReportError(
            f"--paired {reference_method!r}: no other run shares episodes with it (same dataset, "
            "eval_split, way, shot, query and seed)"
        )
    out = pd.DataFrame(rows)
    out = out.assign(
        _d=[dataset_sort_key(d) for d in out["dataset"]],
        _m=[method_sort_key(m) for m in out["method"]],
    )
    out = out.sort_values(["_d", "eval_split", "way", "shot", "query", "seed", "_m", "run_id"])
    return out.drop(columns=["_d", "_m"]).reset_index(drop=True)


def paired_view(paired: pd.DataFrame) -> TableView:
    """A renderable view of :func:`paired_table`'s result."""
    reference = ", ".join(sorted(set(paired["reference"])))
    diff_col = f"Δ vs {reference} (points)"
    settings = [
        column_label(r.dataset, r.way, r.shot, r.eval_split) + f", seed {r.seed}"
        for r in paired.itertuples()
    ]
    labels = paired["method"].tolist()
    dup = pd.Series(list(zip(labels, settings, strict=True))).duplicated(keep=False)
    labels = [
        f"{m} [{rid}]" if d else m for m, rid, d in zip(labels, paired["run_id"], dup, strict=True)
    ]
    cells = pd.DataFrame(
        {
            "setting": settings,
            "episodes": [str(n) for n in paired["n"]],
            "accuracy": [f"{a:.1f}" for a in paired["accuracy"]],
            reference + " accuracy": [f"{a:.1f}" for a in paired["reference_accuracy"]],
            diff_col: [
                f"{d:+.2f} ± {c:.2f}"
                for d, c in zip(paired["mean_diff"], paired["ci95"], strict=True)
            ],
            "significant": ["yes" if s else "" for s in paired["significant"]],
        },
        index=pd.Index(labels, name="method"),
    )
    marked = pd.DataFrame(False, index=cells.index, columns=cells.columns)
    marked[diff_col] = paired["significant"].to_numpy(bool)
    notes = [
        f"Per-episode differences (method - {reference}) on identical episodes; mean ± 95% CI "
        f"({CI_FORMULA}). Marked: the CI excludes 0."
    ]
    if (paired["eval_split"] == "val").any():
        notes.append("Settings marked (val) are VALIDATION-split results, not test results.")
    title = f"Paired comparison against {reference}"
    return TableView(title=title, cells=cells, marked=marked, notes=notes, values=paired)


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------


def _rows(view: TableView) -> list[tuple[str, list[tuple[str, bool]]]]:
    """Row label and (cell, marked) pairs, by position (row labels may repeat)."""
    cells, marked = view.cells.to_numpy(dtype=object), view.marked.to_numpy(dtype=bool)
    return [
        (
            str(label),
            [(str(c), bool(m) and bool(c)) for c, m in zip(cells[i], marked[i], strict=True)],
        )
        for i, label in enumerate(view.cells.index)
    ]


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(view: TableView) -> str:
    header = [view.cells.index.name or ""] + list(view.cells.columns)
    lines = [f"**{_md_escape(view.title)}**", ""]
    lines.append("| " + " | ".join(_md_escape(h) for h in header) + " |")
    lines.append("|" + "|".join([":---"] + ["---:"] * len(view.cells.columns)) + "|")
    for label, row in _rows(view):
        out = [_md_escape(label)]
        for cell, mark in row:
            text = _md_escape(cell) if cell else EMPTY
            out.append(f"**{text}**" if mark else text)
        lines.append("| " + " | ".join(out) + " |")
    if view.notes:
        lines.append("")
        lines += [f"- {_md_escape(note)}" for note in view.notes]
    return "\n".join(lines) + "\n"


def render_csv(view: TableView) -> str:
    cells = pd.DataFrame(
        [[f"{cell}*" if mark else cell for cell, mark in row] for _, row in _rows(view)],
        index=view.cells.index,
        columns=view.cells.columns,
    )
    return cells.to_csv(lineterminator="\n")


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
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def render_latex(view: TableView) -> str:
    ncols = len(view.cells.columns)
    header = [view.cells.index.name or ""] + list(view.cells.columns)
    lines = [
        "% Requires \\usepackage{booktabs}",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{latex_escape(view.title)}}}",
        f"\\begin{{tabular}}{{l{'r' * ncols}}}",
        "\\toprule",
        " & ".join(latex_escape(h) for h in header) + " \\\\",
        "\\midrule",
    ]
    for label, row in _rows(view):
        out = [latex_escape(label)]
        for cell, mark in row:
            text = latex_escape(cell) if cell else "--"
            out.append(f"\\textbf{{{text}}}" if mark else text)
        lines.append(" & ".join(out) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    if view.notes:
        lines.append("\\par\\smallskip\\footnotesize")
        lines += [latex_escape(note) + "\\\\" for note in view.notes]
    lines.append("\\end{table}")
    return "\n".join(lines) + "\n"


def render_html(view: TableView) -> str:
    esc = html.escape
    header = [view.cells.index.name or ""] + list(view.cells.columns)
    lines = [
        '<table class="fsbench-report">',
        f"  <caption>{esc(view.title)}</caption>",
        "  <thead>",
        "    <tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>",
        "  </thead>",
        "  <tbody>",
    ]
    for label, row in _rows(view):
        out = [f"<th>{esc(label)}</th>"]
        for cell, mark in row:
            text = esc(cell) if cell else EMPTY
            if mark:
                text = f"<strong>{text}</strong>"
            out.append(f"<td>{text}</td>")
        lines.append("    <tr>" + "".join(out) + "</tr>")
    lines += ["  </tbody>", "</table>"]
    lines += [f'<p class="fsbench-note">{esc(note)}</p>' for note in view.notes]
    return "\n".join(lines) + "\n"


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
    for label, row in _rows(view):
        out = [Text(label)]
        for cell, mark in row:
            out.append(Text(cell or EMPTY, style="bold" if mark else ""))
        table.add_row(*out)
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
        raise ReportError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}") from None
    return renderer(view)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_readable(fd: int) -> None:
    """Give a ``mkstemp`` file (mode 0600) the mode a plain ``open`` would (0666 minus umask)."""
    with contextlib.suppress(OSError):
        os.fchmod(fd, 0o666 & ~_umask())


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and ``os.replace`` (never half-written)."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise ReportError(f"{path}: folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        make_readable(fd)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------


def add_report_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``report`` subcommand to an argparse ``subparsers`` object."""
    parser = subparsers.add_parser(
        "report",
        help="tables of mean accuracy ± 95%% CI from run directories",
        description=(
            "Tables of mean accuracy ± 95% CI per method from run directories (or folders "
            "containing them). Runs differing only in seed are aggregated."
        ),
    )
    parser.add_argument(
        "results",
        nargs="+",
        type=Path,
        metavar="RESULTS",
        help="run directories or folders of runs",
    )
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="the paper's ablation rows: scratch, finetune, mtl, mtl_ht (those present)",
    )
    parser.add_argument(
        "--paper",
        action="store_true",
        help="show the paper's number and ours - paper beside each cell",
    )
    parser.add_argument(
        "--paired",
        metavar="METHOD",
        help="also a table of paired per-episode differences against METHOD "
        "(with --format csv, only this table)",
    )
    parser.add_argument(
        "--format", choices=FORMATS, default="rich", help="output format (default: rich)"
    )
    parser.add_argument(
        "--output", type=Path, metavar="FILE", help="write to FILE instead of stdout"
    )
    parser.add_argument(
        "--plots",
        type=Path,
        metavar="DIR",
        help="also write validation-curve and accuracy-vs-shot plots to DIR",
    )
    parser.set_defaults(func=run_report)
    return parser


def run_report(args: argparse.Namespace) -> int:
    """Run ``fsbench report``; returns the exit code. Bad input raises :class:`ReportError`."""
    df = load_runs(args.results)
    views = [accuracy_table(df, ablation=args.ablation, paper=args.paper)]
    if args.paired:
        paired = paired_view(paired_table(df, args.paired))
        views = [paired] if args.format == "csv" else views + [paired]

    if args.format == "rich" and args.output is None:
        from rich.console import Console

        console = Console(width=None if sys.stdout.isatty() else 200)
        for view in views:
            console.print(to_rich(view))
    else:
        text = "\n".join(render(view, args.format) for view in views)
        if args.output is None:
            sys.stdout.write(text)
        else:
            atomic_write_text(args.output, text)
            print(f"wrote {args.output}", file=sys.stderr)

    if args.plots is not None:
        from fsbench.plots import plot_accuracy_vs_shot, plot_val_curves

        written = plot_val_curves(df, args.plots) + plot_accuracy_vs_shot(df, args.plots)
        for path in written:
            print(f"wrote {path}", file=sys.stderr)
        if not any("val_curves" in p.name for p in written):
            print("no validation history in these runs; no validation-curve plot", file=sys.stderr)
    return 0

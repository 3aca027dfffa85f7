"""The run-directory format, in one place: its file names, its reader and its validation.

A run directory (written by :mod:`fsbench.runner` through :mod:`fsbench.atomic`) holds:

* ``config.json``: the resolved configuration, package versions, device, git commit;
* ``summary.json``: the fields of :data:`REQUIRED_FIELDS` (and optionally
  :data:`OPTIONAL_FIELDS`), written last, so its presence marks a finished run;
* ``episodes.jsonl``: one ``{"index", "accuracy"}`` line per test episode (a fraction);
* ``history.jsonl`` (optional): the validation curve, ``{"phase", "step", "val_accuracy"}``;
* ``checkpoint.pt`` while a run is unfinished (see :mod:`fsbench.checkpoints`).

:func:`load_runs` reads any mix of run directories and folders that contain run directories
into one pandas DataFrame, one row per run, and raises :class:`ResultsError` naming the file
at fault.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fsbench.errors import FsbenchError

SUMMARY = "summary.json"
CONFIG = "config.json"
EPISODES = "episodes.jsonl"
HISTORY = "history.jsonl"
CHECKPOINT = "checkpoint.pt"

EVAL_SPLITS = ("test", "val")

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
    "paper_backbone": "",  # the method's paper-preset backbone (report --paper checks it)
    "config_fingerprint": "",  # fsbench.fingerprint: runs equal on it differ at most in seed
}



class ResultsError(FsbenchError):
    """Unreadable or invalid results, or an impossible report request; the message is one line."""


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file (blank lines skipped); errors name file and line."""
    return _read_jsonl(Path(path))


def find_run_dirs(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Run directories named by ``paths``: each is a run directory or a root searched recursively."""
    found: dict[Path, None] = {}
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise ResultsError(f"{path}: no such file or directory")
        if path.is_file():
            if path.name == SUMMARY:
                found[path.parent.resolve()] = None
                continue
            raise ResultsError(f"{path}: expected a run directory or a folder of runs, got a file")
        if (path / SUMMARY).is_file():
            found[path.resolve()] = None
            continue
        summaries = sorted(path.rglob(SUMMARY))
        if not summaries:
            raise ResultsError(f"{path}: no runs found (no {SUMMARY} in it or below it)")
        for summary in summaries:
            found[summary.parent.resolve()] = None
    return list(found)


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read ({exc.strerror or exc})") from None
    records = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ResultsError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise ResultsError(f"{path}:{lineno}: expected a JSON object")
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
    raise ResultsError(f"{path}: field {name!r} must be {expected}, got {value!r}")


def _load_summary(path: Path) -> dict[str, Any]:
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ResultsError(f"{path}: expected a JSON object")
    missing = [name for name in REQUIRED_FIELDS if name not in data]
    if missing:
        raise ResultsError(f"{path}: missing field(s) {', '.join(missing)}")
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
    # The test episodes' seed. Runs written before --episode-seed drew them with the training seed.
    episode_seed = data.get("episode_seed", summary["seed"])
    summary["episode_seed"] = _check_type(path, "episode_seed", episode_seed, int)
    if summary["eval_split"] not in EVAL_SPLITS:
        raise ResultsError(
            f"{path}: eval_split must be one of {', '.join(EVAL_SPLITS)}, "
            f"got {summary['eval_split']!r}"
        )
    if summary["episodes"] < 1:
        raise ResultsError(f"{path}: episodes must be at least 1, got {summary['episodes']}")
    return summary


def _load_episodes(path: Path, expected: int) -> np.ndarray:
    if not path.is_file():
        raise ResultsError(f"{path}: missing (every run needs its per-episode accuracies)")
    acc = np.full(expected, np.nan)
    records = _read_jsonl(path)
    for lineno, record in enumerate(records, start=1):
        index, value = record.get("index"), record.get("accuracy")
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < expected:
            raise ResultsError(
                f"{path}: record {lineno}: index must be an integer in 0..{expected - 1}, "
                f"got {index!r}"
            )
        if (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not 0.0 <= value <= 1.0
        ):
            raise ResultsError(
                f"{path}: record {lineno}: accuracy must be a fraction in [0, 1], got {value!r}"
            )
        if not np.isnan(acc[index]):
            raise ResultsError(f"{path}: episode index {index} appears twice")
        acc[index] = float(value)
    if len(records) != expected:
        raise ResultsError(
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
                raise ResultsError(f"{path}: record {lineno}: missing field {name!r}")
    return history


def load_run(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """One run as a dict: its summary fields, ``run_dir``, ``episode_acc`` and ``history``."""
    run_dir = Path(run_dir)
    summary = _load_summary(run_dir / SUMMARY)
    summary["run_dir"] = str(run_dir)
    summary["episode_acc"] = _load_episodes(run_dir / EPISODES, summary["episodes"])
    summary["history"] = _load_history(run_dir / HISTORY)
    return summary


def load_runs(paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str]) -> pd.DataFrame:
    """Load runs into a DataFrame, one row per run.

    Columns: every summary field (optional ones filled with defaults), ``run_dir``,
    ``episode_acc`` (numpy array of per-episode accuracies as fractions, indexed by episode
    index) and ``history`` (list of dicts, or None when the run has no ``history.jsonl``).
    Raises :class:`ResultsError` naming the file at fault.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    run_dirs = find_run_dirs(paths)
    if not run_dirs:
        raise ResultsError("no results given")
    records = [load_run(run_dir) for run_dir in sorted(run_dirs)]
    columns = list(REQUIRED_FIELDS) + ["episode_seed"] + list(OPTIONAL_FIELDS)
    extra = sorted(
        {key for r in records for key in r} - set(columns) - {"run_dir", "episode_acc", "history"}
    )
    df = pd.DataFrame.from_records(
        records, columns=columns + extra + ["run_dir", "episode_acc", "history"]
    )
    return df.reset_index(drop=True)

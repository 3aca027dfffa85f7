"""The run-directory format, in one place: its file names, its reader and its validation.

A run directory (written by :mod:`fsbench.runner` through :mod:`fsbench.atomic`) holds:

* ``config.json``: the resolved configuration, package versions, device, git commit;
* ``summary.json``: the fields of :data:`REQUIRED_FIELDS` (and optionally
  :data:`OPTIONAL_FIELDS`), written last, so its presence marks a finished run;
* ``episodes.jsonl``: one ``{"index", "accuracy"}`` line per test episode (a fraction);
* ``history.jsonl`` (optional): the validation curve, ``{"phase", "step", "val_accuracy"}``;
* ``checkpoint.pt`` while a run is unfinished (see :mod:`fsbench.checkpoints`);
* ``.lock``, the lock of the process that writes the run.

:func:`load_runs` reads any mix of run directories and folders that contain run directories
into one pandas DataFrame, one row per run, and raises :class:`ResultsError` naming the file
at fault. Every reader of results (``report``, ``compare``, a sweep deciding what is done, a
finished run shown again) goes through :func:`load_run`, which trusts nothing it reads:

* JSON is parsed strictly (:mod:`fsbench.strictjson`: no NaN/Infinity, 64-bit integers, bounded
  nesting) and each file's size is bounded before it is read (:data:`MAX_SUMMARY_BYTES`,
  :data:`MAX_EPISODE_LINE_BYTES` per episode, :data:`MAX_HISTORY_BYTES`);
* the summary's values are range-checked before anything is sized by them: episodes in
  2..:data:`MAX_EPISODES`, accuracy in [0, 100], ci95 finite and >= 0, strings of at most
  :data:`MAX_TEXT` characters, ``ci_formula`` one of :data:`fsbench.stats.CI_FORMULAS` (missing:
  the legacy formula);
* the summary's accuracy and ci95 are recomputed from ``episodes.jsonl`` (with the summary's
  ``ci_formula``) and must match within :data:`TOLERANCE` points: an edited summary is an error.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fsbench import strictjson
from fsbench.errors import FsbenchError
from fsbench.stats import CI_FORMULAS, LEGACY_CI_FORMULA, ci95_for_formula

SUMMARY = "summary.json"
CONFIG = "config.json"
EPISODES = "episodes.jsonl"
HISTORY = "history.jsonl"
CHECKPOINT = "checkpoint.pt"
LOCK = ".lock"  # held by the process writing the run
DAMAGED = ".damaged-"  # in the name of a folder a damaged run's files were moved to

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



#: Bounds checked before anything is allocated: a run directory from elsewhere is untrusted input.
MAX_EPISODES = 1_000_000
MAX_SUMMARY_BYTES = 1 << 20  # summary.json (fsbench writes about 2 KB)
MAX_EPISODE_LINE_BYTES = 128  # '{"index": 999999, "accuracy": 0.7333333333333333}' is 50
MAX_HISTORY_BYTES = 64 << 20
MAX_HISTORY_RECORDS = 1_000_000
MAX_TEXT = 1000  # characters of a summary string (method, dataset, backbone, ...)
MAX_SETTING = 1_000_000  # way, shot, query
#: ``summary.json``'s accuracy and ci95 must equal their recomputation from ``episodes.jsonl``
#: within this many points: float rounding, not an edit.
TOLERANCE = 1e-6


class ResultsError(FsbenchError):
    """Unreadable or invalid results, or an impossible report request; the message is one line."""


def read_jsonl(path: Path, max_records: int = MAX_HISTORY_RECORDS) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file (blank lines skipped), read strictly
    (:mod:`fsbench.strictjson`); errors name file and line."""
    return _read_jsonl(Path(path), MAX_HISTORY_BYTES, max_records)


def find_run_dirs(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Run directories named by ``paths``: each is a run directory or a root searched recursively.

    A search skips folders a sweep or run set aside as damaged (``NAME.damaged-*``, see
    :func:`set_aside`); named explicitly, such a folder is read (and its damage reported).
    """
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
        summaries = [s for s in sorted(path.rglob(SUMMARY))
                     if not any(DAMAGED in part for part in s.relative_to(path).parts)]
        if not summaries:
            raise ResultsError(f"{path}: no runs found (no {SUMMARY} in it or below it)")
        for summary in summaries:
            found[summary.parent.resolve()] = None
    return list(found)


def _read_json(path: Path, max_bytes: int) -> Any:
    try:
        return strictjson.read_json(path, max_bytes)
    except strictjson.JSONError as exc:
        raise ResultsError(str(exc)) from None


def _read_jsonl(path: Path, max_bytes: int, max_records: int) -> list[dict[str, Any]]:
    try:
        return strictjson.read_jsonl(path, max_bytes, max_records)
    except strictjson.JSONError as exc:
        raise ResultsError(str(exc)) from None


def _check_type(path: Path, name: str, value: Any, kind: type) -> Any:
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return float(value) if ok else _type_error(path, name, value, "a finite number")
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return value if ok else _type_error(path, name, value, "an integer")
    if kind is str:
        if not isinstance(value, str):
            return _type_error(path, name, value, "a string")
        if len(value) > MAX_TEXT:
            raise ResultsError(f"{path}: field {name!r} is {len(value):,} characters long; "
                               f"at most {MAX_TEXT} are valid")
        return value
    raise AssertionError(kind)


def _type_error(path: Path, name: str, value: Any, expected: str) -> Any:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    raise ResultsError(f"{path}: field {name!r} must be {expected}, got {shown}")


def _check_range(path: Path, name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ResultsError(f"{path}: field {name!r} must be in [{low:g}, {high:g}], got {value:g}")


def _load_summary(path: Path) -> dict[str, Any]:
    data = _read_json(path, MAX_SUMMARY_BYTES)
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
    _check_values(path, summary)
    return summary


def _check_values(path: Path, summary: dict[str, Any]) -> None:
    """Ranges of a summary's fields, checked before anything is sized by them."""
    if summary["eval_split"] not in EVAL_SPLITS:
        raise ResultsError(
            f"{path}: eval_split must be one of {', '.join(EVAL_SPLITS)}, "
            f"got {summary['eval_split']!r}"
        )
    _check_range(path, "episodes", summary["episodes"], 2, MAX_EPISODES)
    for name in ("way", "shot", "query"):
        _check_range(path, name, summary[name], 1, MAX_SETTING)
    for name in ("seed", "episode_seed"):
        _check_range(path, name, summary[name], 0, 2**63 - 1)
    _check_range(path, "accuracy", summary["accuracy"], 0.0, 100.0)
    _check_range(path, "ci95", summary["ci95"], 0.0, math.inf)
    formula = summary["ci_formula"] or LEGACY_CI_FORMULA  # runs older than the field: legacy
    if formula not in CI_FORMULAS:
        raise ResultsError(f"{path}: unknown ci_formula {formula!r}; valid: {', '.join(CI_FORMULAS)}")


def _load_episodes(path: Path, expected: int) -> np.ndarray:
    if not path.is_file():
        raise ResultsError(f"{path}: missing (every run needs its per-episode accuracies)")
    records = _read_jsonl(path, expected * MAX_EPISODE_LINE_BYTES, expected)
    if len(records) != expected:
        raise ResultsError(
            f"{path}: {len(records)} episodes, but summary.json says episodes={expected}"
        )
    acc = np.full(expected, np.nan)
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
    return acc


def _check_consistent(path: Path, summary: dict[str, Any], acc: np.ndarray) -> None:
    """The summary's accuracy and ci95 are what its episodes give, by its recorded CI formula."""
    percent = acc * 100.0
    formula = summary["ci_formula"] or LEGACY_CI_FORMULA
    for name, value in (("accuracy", float(percent.mean())),
                        ("ci95", ci95_for_formula(percent, formula))):
        if abs(summary[name] - value) > TOLERANCE:
            raise ResultsError(
                f"{path}: {name} {summary[name]:.6g} does not match its {EPISODES} "
                f"({value:.6g}, {formula}); the summary was edited or its episodes were"
            )


def _load_history(path: Path) -> list[dict[str, Any]] | None:
    if not path.exists():
        return None
    history = _read_jsonl(path, MAX_HISTORY_BYTES, MAX_HISTORY_RECORDS)
    for lineno, record in enumerate(history, start=1):
        for name in ("phase", "step", "val_accuracy"):
            if name not in record:
                raise ResultsError(f"{path}: record {lineno}: missing field {name!r}")
        accuracy = record["val_accuracy"]
        if accuracy is not None and (not isinstance(accuracy, (int, float))
                                     or isinstance(accuracy, bool) or not 0 <= accuracy <= 100):
            raise ResultsError(f"{path}: record {lineno}: val_accuracy must be a number in "
                               f"[0, 100] or null, got {accuracy!r}")
    return history


def load_run(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """One run as a dict: its summary fields, ``run_dir``, ``episode_acc`` and ``history``.

    The run is validated (see the module docstring); :class:`ResultsError` names the file at fault.
    """
    run_dir = Path(run_dir)
    summary = _load_summary(run_dir / SUMMARY)
    summary["run_dir"] = str(run_dir)
    summary["episode_acc"] = _load_episodes(run_dir / EPISODES, summary["episodes"])
    _check_consistent(run_dir / SUMMARY, summary, summary["episode_acc"])
    summary["history"] = _load_history(run_dir / HISTORY)
    return summary


def run_damage(run_dir: str | os.PathLike[str]) -> str | None:
    """Why the finished run in ``run_dir`` is not valid (one line), or None when it is."""
    try:
        load_run(run_dir)
    except ResultsError as exc:
        return str(exc)
    return None


def set_aside(run_dir: str | os.PathLike[str]) -> Path:
    """Move a damaged run's files, all but its lock, into a new sibling folder
    ``NAME.damaged-<UTC time>``, which it returns; nothing is deleted. The caller holds the
    run directory's lock: the directory itself stays, empty, for the run that replaces it."""
    run_dir = Path(run_dir)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    for attempt in range(1, 1000):
        suffix = f"-{attempt}" if attempt > 1 else ""
        target = run_dir.with_name(f"{run_dir.name}{DAMAGED}{stamp}{suffix}")
        try:
            target.mkdir()
        except FileExistsError:
            continue
        for item in run_dir.iterdir():
            if item.name != LOCK:
                item.rename(target / item.name)
        return target
    raise ResultsError(f"{run_dir}: cannot set it aside (too many {DAMAGED}{stamp} folders)")


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

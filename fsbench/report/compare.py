"""Regression gate: compare new results against baseline (reference) results.

Runs are matched by :data:`MATCH_KEYS` (method, dataset, eval_split, way, shot, query, hard_tasks,
backbone, preset) and by :func:`gate_variant`: the hard-task settings that differ from their
defaults (mode, cadence, count, fill) and the user's own ``--set`` / ``--config`` overrides. Not
by the whole resolved configuration (``config_fingerprint``): a preset's new default or a new
hyperparameter must still meet its reference, or the gate could never catch what they change.
Within a match, a training seed present on both sides with the same episode seed saw identical
test episodes (a *shared* seed); two runs of one side with the same seed are duplicates (the
newest is kept and the row names the others). One training seed is one sample, so the test
depends on how many seeds stand behind each side:

A matched configuration **regresses** when any of these holds:

(a) One shared seed (``paired``): the per-episode differences ``new - baseline`` (over the
    episodes both runs have) have a 95% CI entirely below 0 **and** the mean drop exceeds
    ``min_drop`` points (default 1.0). Both conditions are needed. Significance alone is too
    sensitive for a gate: a deterministic CPU re-run reproduces every episode exactly (all
    differences 0: passes), but another CPU or torch version can flip a few queries, and a
    handful of one-query flips (1.3 points each on a 5-way 15-query episode) all in the same
    direction is already "significant" while being worth a few hundredths of a point. The
    1-point floor ignores such shifts; a real regression (e.g. 10 points) is both significant
    and far above it. A large but non-significant paired drop is episode noise and passes.
    Differences without spread have no interval: the row reads "not testable" and passes,
    unless every one of two or more (episodes, or seeds) dropped by the same amount above
    ``min_drop`` (e.g. from 100% to exactly 20% on every episode): that fails.
(a') Two or more shared seeds (``seed-paired``): the same rule on the per-seed mean paired
    differences, with a Student-t interval over seeds (k-1 degrees of freedom).
(b) No shared seed, two or more seeds on each side (``seed-unpaired``): the same rule on the
    difference of the mean per-seed accuracies, with a Welch t-interval. With fewer seeds
    (``unpaired``), the mean accuracy (over seeds) may drop by at most ``tolerance`` points
    (default 2.0).
(c) Hard tasks: a ``hard_tasks`` configuration whose baseline drew hard tasks and whose new
    runs drew none (the meta-batch silently off) regresses, whatever its accuracy.
(d) Time: ``train_seconds`` or ``eval_seconds`` of the new run exceeds
    ``time_ratio * max(baseline, time_floor)`` (defaults 3.0 and 1.0 s). The floor keeps
    sub-second timings, which are mostly noise and start-up cost, from failing the gate, while a
    jump from 0.5 s to a minute still fails. ``pretrain_seconds`` is checked the same way, but
    only when the baseline pre-trained for at least ``time_floor`` seconds: a near-zero baseline
    pre-training time means no pre-training or a cached checkpoint, so a new run that
    pre-trains from scratch is not a regression. Times are means over the compared runs.
    Timings only compare on the same machine type; the reference should be re-run on it.

A configuration in the baseline with no run in the new results is a failure (``missing``); one
only in the new results is reported as ``new`` (information). Baseline seeds absent from the new
results are noted but do not fail the gate.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fsbench.config import HardTaskConfig, to_jsonable
from fsbench.fingerprint import flatten, legacy_settings
from fsbench.results import ResultsError, load_runs
from fsbench.stats import PairedResult, paired_difference, seed_paired_difference, welch_difference

from .labels import column_label, dataset_sort_key, format_value, method_sort_key, short_name

#: Runs are matched on these summary fields (and paired on seed when both sides have it).
MATCH_KEYS: tuple[str, ...] = (
    "method",
    "dataset",
    "eval_split",
    "way",
    "shot",
    "query",
    "hard_tasks",
    "backbone",
    "preset",
)

#: The hard-task settings' defaults: a gate row names only those that differ.
_HARD_TASK_DEFAULTS = flatten("hard_tasks", to_jsonable(HardTaskConfig()))


def gate_variant(run: dict[str, Any]) -> str:
    """What tells two gate rows of equal :data:`MATCH_KEYS` apart: hard-task settings that differ
    from their defaults and the user's overrides, e.g. ``ht_mode=replace, hparams.lr=1e-12``
    (empty for neither). Runs of an older fsbench carry their hard-task mode and no overrides."""
    settings = run.get("settings")
    settings = settings if isinstance(settings, dict) else legacy_settings(run)
    hard = [k for k, v in settings.items()
            if k.startswith("hard_tasks.") and k != "hard_tasks.enabled" and v != _HARD_TASK_DEFAULTS.get(k)]
    overrides = run.get("overrides")
    overrides = overrides if isinstance(overrides, dict) else {}
    parts = [f"{short_name(k, hard)}={format_value(settings[k])}" for k in hard]
    parts += [f"{k}={format_value(v)}" for k, v in sorted(overrides.items())]
    return ", ".join(parts)


DEFAULT_TOLERANCE = 2.0  # points; unpaired accuracy drop allowed
DEFAULT_MIN_DROP = 1.0  # points; smallest significant paired drop that fails
DEFAULT_TIME_RATIO = 3.0  # new time may be up to this multiple of the baseline
DEFAULT_TIME_FLOOR = 1.0  # seconds; baseline times below this count as this

TIME_FIELDS: tuple[tuple[str, str], ...] = (
    ("pretrain_seconds", "pretrain"),
    ("train_seconds", "train"),
    ("eval_seconds", "eval"),
)

STATUSES = ("regression", "missing", "ok", "new")


@dataclass
class CompareRow:
    """The outcome for one matched configuration."""

    key: dict[str, Any]
    status: str  # one of STATUSES
    test: str | None = None  # "paired", "seed-paired", "seed-unpaired", "unpaired" or None
    baseline_seeds: list[int] = field(default_factory=list)
    new_seeds: list[int] = field(default_factory=list)
    paired_seeds: list[int] = field(default_factory=list)
    baseline_accuracy: float | None = None
    new_accuracy: float | None = None
    diff: float | None = None  # new - baseline, points
    ci95: float | None = None  # of the paired difference
    n: int | None = None  # paired episodes ("paired") or seeds (the seed-level tests)
    significant: bool | None = None
    testable: bool | None = None  # False: the differences have no spread (no interval)
    baseline_seconds: dict[str, float] = field(default_factory=dict)
    new_seconds: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)  # why it failed
    notes: list[str] = field(default_factory=list)  # information

    @property
    def method(self) -> str:
        return self.key["method"]

    @property
    def failed(self) -> bool:
        return self.status in ("regression", "missing")

    @property
    def setting(self) -> str:
        k = self.key
        text = column_label(k["dataset"], k["way"], k["shot"], k["eval_split"])
        extras = [f"q{k['query']}"]
        if k["backbone"]:
            extras.append(k["backbone"])
        if k["preset"]:
            extras.append(k["preset"])
        if k["hard_tasks"]:
            extras.append("HT")
        if k.get("variant"):
            extras.append(k["variant"])
        return f"{text} [{', '.join(extras)}]"

    @property
    def verdict(self) -> str | None:
        """``significant``, ``not significant`` or ``not testable`` (None: no test was made)."""
        if self.testable is None:
            return None
        if not self.testable:
            return "not testable"
        return "significant" if self.significant else "not significant"

    def describe(self) -> str:
        return f"{self.method} ({self.setting})"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["method"] = self.method
        out["setting"] = self.setting
        out["verdict"] = self.verdict
        return _jsonable(out)


@dataclass
class CompareReport:
    """All rows plus the thresholds used; ``failed`` decides the exit code."""

    rows: list[CompareRow]
    tolerance: float
    min_drop: float
    time_ratio: float
    time_floor: float

    @property
    def failures(self) -> list[CompareRow]:
        return [row for row in self.rows if row.failed]

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    @property
    def regressed_methods(self) -> list[str]:
        """Methods with a regression or missing from the new results."""
        return sorted({row.method for row in self.failures}, key=method_sort_key)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(
            {
                "ok": not self.failed,
                "regressed_methods": self.regressed_methods,
                "regressions": [r.describe() for r in self.rows if r.status == "regression"],
                "missing": [r.describe() for r in self.rows if r.status == "missing"],
                "new": [r.describe() for r in self.rows if r.status == "new"],
                "thresholds": {
                    "tolerance": self.tolerance,
                    "min_drop": self.min_drop,
                    "time_ratio": self.time_ratio,
                    "time_floor": self.time_floor,
                },
                "rows": [row.to_dict() for row in self.rows],
            }
        )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _dedupe(group: pd.DataFrame, side: str, notes: list[str]) -> pd.DataFrame:
    ordered = group.sort_values(["created", "run_dir"])
    duplicate = ordered.duplicated("seed", keep="last")
    if duplicate.any():
        notes.append(f"{side}: {int(duplicate.sum())} duplicate run(s) with the same seed and "
                     f"configuration ignored, newest kept: {', '.join(ordered.loc[duplicate, 'run_id'])}")
    return ordered[~duplicate].sort_values("seed")


def _mean_time(runs: pd.DataFrame, name: str) -> float:
    values = runs[name].to_numpy(float)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else math.nan


def _judge(row: CompareRow, res: PairedResult, where: str, min_drop: float) -> None:
    """A significant drop larger than ``min_drop`` fails; other significant changes are noted.
    Without spread there is no interval: the row is "not testable", and fails only when two or
    more differences all show the same drop above ``min_drop``."""
    row.diff, row.ci95, row.n = res.mean_diff, res.ci95, res.n
    row.significant, row.testable = res.significant, res.testable
    if not res.testable:
        if res.n >= 2 and -res.mean_diff > min_drop:
            row.reasons.append(f"accuracy {res.mean_diff:+.2f} points {where}, the same drop on "
                               "every one (no spread: not testable, and no doubt)")
        else:
            row.notes.append(f"not testable {where}: the differences have no spread")
    elif res.significant and res.mean_diff < 0 and -res.mean_diff > min_drop:
        row.reasons.append(
            f"accuracy {res.mean_diff:+.2f} ± {res.ci95:.2f} points {where} "
            f"(significant, drop > {min_drop:g})"
        )
    elif res.significant and res.mean_diff > min_drop:
        row.notes.append(f"improved by {res.mean_diff:.2f} ± {res.ci95:.2f} points")
    elif res.significant and res.mean_diff < 0:
        row.notes.append(
            f"significant but small drop ({res.mean_diff:+.2f} points <= {min_drop:g})"
        )


def _shared_seed_test(row: CompareRow, base_used: pd.DataFrame, new_used: pd.DataFrame,
                      shared: list[int], min_drop: float) -> None:
    """Rules (a) and (a'): paired over the shared episodes (one seed), or over the seeds."""
    a_parts, b_parts = [], []
    for seed in shared:
        a = base_used.loc[base_used["seed"] == seed, "episode_acc"].iloc[0]
        b = new_used.loc[new_used["seed"] == seed, "episode_acc"].iloc[0]
        n = min(len(a), len(b))
        if len(a) != len(b):
            row.notes.append(
                f"seed {seed}: {len(a)} baseline vs {len(b)} new episodes; compared the first {n}"
            )
        a_parts.append(a[:n] * 100.0)
        b_parts.append(b[:n] * 100.0)
    row.baseline_accuracy = float(np.mean([a.mean() for a in a_parts]))
    row.new_accuracy = float(np.mean([b.mean() for b in b_parts]))
    if len(shared) >= 2:
        # One training seed is one sample: the test is over the per-seed paired differences.
        row.test = "seed-paired"
        res = seed_paired_difference([b.mean() - a.mean()
                                      for a, b in zip(a_parts, b_parts, strict=True)])
        where = f"across {res.n} shared seeds"
    else:
        row.test = "paired"
        res = paired_difference(a_parts[0], b_parts[0])
        where = f"on {res.n} shared episodes"
    _judge(row, res, where, min_drop)


def _compare_one(
    key: dict[str, Any],
    base: pd.DataFrame,
    new: pd.DataFrame,
    *,
    tolerance: float,
    min_drop: float,
    time_ratio: float,
    time_floor: float,
) -> CompareRow:
    row = CompareRow(key=key, status="ok")
    base = _dedupe(base, "baseline", row.notes)
    new = _dedupe(new, "new", row.notes)
    row.baseline_seeds = [int(s) for s in base["seed"]]
    row.new_seeds = [int(s) for s in new["seed"]]
    base_episode_seed = dict(zip(base["seed"], base["episode_seed"], strict=True))
    new_episode_seed = dict(zip(new["seed"], new["episode_seed"], strict=True))
    # A seed pairs up when both sides ran it on the same test episodes.
    shared = sorted(s for s in set(row.baseline_seeds) & set(row.new_seeds)
                    if base_episode_seed[s] == new_episode_seed[s])
    row.paired_seeds = shared

    if shared:
        base_used = base[base["seed"].isin(shared)]
        new_used = new[new["seed"].isin(shared)]
        _shared_seed_test(row, base_used, new_used, shared, min_drop)
    elif len(base) >= 2 and len(new) >= 2:
        row.test = "seed-unpaired"
        base_used, new_used = base, new
        res = welch_difference(base["accuracy"].to_numpy(float), new["accuracy"].to_numpy(float))
        row.baseline_accuracy = float(base["accuracy"].mean())
        row.new_accuracy = float(new["accuracy"].mean())
        row.notes.append("no shared seed: per-seed accuracies compared (Welch t-interval)")
        _judge(row, res, f"between {len(base)} and {len(new)} seeds", min_drop)
    else:
        row.test = "unpaired"
        base_used, new_used = base, new
        row.baseline_accuracy = float(base["accuracy"].mean())
        row.new_accuracy = float(new["accuracy"].mean())
        row.diff = row.new_accuracy - row.baseline_accuracy
        row.notes.append("no shared seed, so no shared episodes: mean accuracies compared")
        if -row.diff > tolerance:
            row.reasons.append(
                f"accuracy {row.diff:+.2f} points (unpaired; tolerance {tolerance:g})"
            )
    missing_seeds = sorted(set(row.baseline_seeds) - set(row.new_seeds))
    if missing_seeds and shared:
        row.notes.append(f"baseline seed(s) {missing_seeds} not in the new results")
    _check_hard_tasks_and_times(row, base_used, new_used, time_ratio, time_floor)
    if row.reasons:
        row.status = "regression"
    return row


def _check_hard_tasks_and_times(row: CompareRow, base_used: pd.DataFrame, new_used: pd.DataFrame,
                                time_ratio: float, time_floor: float) -> None:
    """Rules (c) and (d) of the module docstring, on the runs the accuracy test used."""
    key = row.key
    if "hard_tasks_used" in base_used and "hard_tasks_used" in new_used:
        b_hard = pd.to_numeric(base_used["hard_tasks_used"], errors="coerce").fillna(0)
        n_hard = pd.to_numeric(new_used["hard_tasks_used"], errors="coerce").fillna(0)
        if bool(key.get("hard_tasks")) and b_hard.mean() > 0 and n_hard.max() == 0:
            row.reasons.append(
                f"no hard task drawn (baseline: {b_hard.mean():.0f} per run): the hard-task "
                "meta-batch is not working"
            )

    for name, label in TIME_FIELDS:
        b_time, n_time = _mean_time(base_used, name), _mean_time(new_used, name)
        if math.isnan(b_time) or math.isnan(n_time):
            continue
        row.baseline_seconds[label], row.new_seconds[label] = b_time, n_time
        if name == "pretrain_seconds" and b_time < time_floor:
            continue
        limit = time_ratio * max(b_time, time_floor)
        if n_time > limit:
            row.reasons.append(
                f"{label} time {b_time:.1f}s -> {n_time:.1f}s (> {time_ratio:g}x, limit {limit:.1f}s)"
            )


def _groups(df: pd.DataFrame) -> dict[tuple, pd.DataFrame]:
    """Runs by :data:`MATCH_KEYS` and :func:`gate_variant`."""
    df = df.assign(variant=[gate_variant(r) for r in df.to_dict("records")])
    return {tuple(k): g for k, g in df.groupby([*MATCH_KEYS, "variant"], sort=False, dropna=False)}


def compare_runs(
    baseline_paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
    new_paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
    tolerance: float = DEFAULT_TOLERANCE,
    time_ratio: float = DEFAULT_TIME_RATIO,
    *,
    min_drop: float = DEFAULT_MIN_DROP,
    time_floor: float = DEFAULT_TIME_FLOOR,
) -> CompareReport:
    """Compare new results with baseline results (run directories or folders of runs).

    See the module docstring for the rules and why the defaults are what they are.
    """
    for name, value, lowest in (
        ("tolerance", tolerance, 0.0),
        ("min_drop", min_drop, 0.0),
        ("time_ratio", time_ratio, 1.0),
        ("time_floor", time_floor, 0.0),
    ):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= lowest):
            raise ResultsError(f"{name} must be a number >= {lowest:g}, got {value!r}")
    base_groups, new_groups = _groups(load_runs(baseline_paths)), _groups(load_runs(new_paths))
    rows: list[CompareRow] = []
    for key in list(base_groups) + [k for k in new_groups if k not in base_groups]:
        key_dict = _jsonable(dict(zip([*MATCH_KEYS, "variant"], key, strict=True)))
        if key not in new_groups:
            b = base_groups[key]
            rows.append(CompareRow(
                key=key_dict, status="missing", baseline_seeds=sorted(int(s) for s in set(b["seed"])),
                baseline_accuracy=float(b["accuracy"].mean()),
                reasons=["no run with this configuration in the new results"]))
        elif key not in base_groups:
            n = new_groups[key]
            rows.append(CompareRow(
                key=key_dict, status="new", new_seeds=sorted(int(s) for s in set(n["seed"])),
                new_accuracy=float(n["accuracy"].mean()), notes=["not in the baseline"]))
        else:
            rows.append(_compare_one(key_dict, base_groups[key], new_groups[key], tolerance=tolerance,
                                     min_drop=min_drop, time_ratio=time_ratio, time_floor=time_floor))
    rows.sort(
        key=lambda r: (
            STATUSES.index(r.status),
            dataset_sort_key(r.key["dataset"]),
            r.key["eval_split"],
            r.key["way"],
            r.key["shot"],
            method_sort_key(r.method),
            r.setting,
        )
    )
    return CompareReport(
        rows=rows,
        tolerance=float(tolerance),
        min_drop=float(min_drop),
        time_ratio=float(time_ratio),
        time_floor=float(time_floor),
    )

"""Statistics over runs: one cell per configuration (training seeds aggregated), paired differences.

One training seed is one sample. A cell aggregates the runs of one configuration that differ
only in their training ``seed``:

* ``accuracy``: the mean of the per-seed accuracies;
* ``ci95``: the 95% CI over test episodes (:data:`fsbench.stats.CI_FORMULA`): the run's own with
  one seed; with several seeds that share the test episodes (same ``episode_seed``), over the
  per-episode accuracies averaged across seeds; otherwise over all episodes pooled;
* ``seed_ci95``: the 95% CI between seeds (:data:`fsbench.stats.SEED_CI_FORMULA`, Student t over
  the per-seed accuracies, k-1 degrees of freedom); NaN with one seed.

Two runs with the same configuration *and* seed are duplicates: the newest (``created``) is kept
and counted in ``duplicates_dropped``.

Paired differences (:func:`paired_table`): runs equal on :data:`EPISODE_KEYS` saw identical test
episodes, index by index. A method's run pairs with the reference method's run of the same
training seed; their per-episode differences give a mean and CI per seed. Across seeds
(:func:`seed_paired_table`), the per-seed mean differences give a t-interval, one per setting.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fsbench.results import ResultsError
from fsbench.stats import mean_ci95, paired_difference, seed_ci95, seed_paired_difference

from .labels import dataset_sort_key, method_sort_key

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
EPISODE_KEYS: tuple[str, ...] = ("dataset", "eval_split", "way", "shot", "query", "episode_seed")

#: A paired row's setting: what one seed-level paired difference is computed over.
SETTING_KEYS: tuple[str, ...] = ("method", "backbone", "preset", "reference", *EPISODE_KEYS)

def _episode_ci(kept: pd.DataFrame) -> tuple[float, str]:
    """The per-episode CI of a cell and how it was computed (see the module docstring)."""
    if len(kept) == 1:
        return float(kept["ci95"].iloc[0]), "run"
    lengths = {len(a) for a in kept["episode_acc"]}
    if kept["episode_seed"].nunique() == 1 and len(lengths) == 1:
        per_episode = np.mean(np.stack(list(kept["episode_acc"])), axis=0) * 100.0
        return mean_ci95(per_episode)[1], "seed-averaged"
    return mean_ci95(np.concatenate(list(kept["episode_acc"])) * 100.0)[1], "pooled"


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (runs differing only in training seed merged).

    Columns: :data:`CONFIG_KEYS`, ``accuracy``, ``ci95`` and ``seed_ci95`` (%), ``n_seeds``,
    ``seeds``, ``episode_seeds``, ``n_episodes`` (all seeds), ``ci_source`` ("run",
    "seed-averaged" or "pooled"), ``run_ids``, ``duplicates_dropped`` and ``ci_formulas``.
    """
    columns = list(CONFIG_KEYS) + [
        "accuracy",
        "ci95",
        "seed_ci95",
        "n_seeds",
        "seeds",
        "episode_seeds",
        "n_episodes",
        "ci_source",
        "run_ids",
        "duplicates_dropped",
        "ci_formulas",
        "paper_backbone",
    ]
    rows = []
    for key, group in df.groupby(list(CONFIG_KEYS), sort=False, dropna=False):
        kept = group.sort_values(["created", "run_dir"]).drop_duplicates("seed", keep="last")
        kept = kept.sort_values("seed")
        ci, source = _episode_ci(kept)
        rows.append(
            {
                **dict(zip(CONFIG_KEYS, key, strict=True)),
                "accuracy": float(kept["accuracy"].mean()),
                "ci95": ci,
                "seed_ci95": seed_ci95(kept["accuracy"].to_numpy(float))[1],
                "n_seeds": len(kept),
                "seeds": tuple(int(s) for s in kept["seed"]),
                "episode_seeds": tuple(sorted({int(s) for s in kept["episode_seed"]})),
                "n_episodes": int(sum(len(a) for a in kept["episode_acc"])),
                "ci_source": source,
                "run_ids": tuple(kept["run_id"]),
                "duplicates_dropped": len(group) - len(kept),
                "ci_formulas": tuple(sorted(set(kept["ci_formula"]))),
                "paper_backbone": str(kept["paper_backbone"].iloc[-1]),
            }
        )
    return pd.DataFrame(rows, columns=columns)


def paired_table(df: pd.DataFrame, reference_method: str) -> pd.DataFrame:
    """Paired per-episode differences of every run against the reference method's run, per seed.

    Two runs pair up when they share episodes (equal on :data:`EPISODE_KEYS`) and have the same
    training ``seed``. For each pair the per-episode differences ``other - reference`` (in
    points) give the mean and its 95% CI; ``significant`` marks an interval that excludes 0.
    When the runs have different episode counts, the common prefix of episodes is compared
    (``n``). Duplicates (same configuration and seed) keep the newest run.
    """
    if df.empty:
        raise ResultsError("no runs to report")
    methods = sorted(set(df["method"]))
    if reference_method not in methods:
        raise ResultsError(
            f"--paired {reference_method!r}: no runs of that method; methods present: "
            f"{', '.join(methods)}"
        )
    df = df.sort_values(["created", "run_dir"]).drop_duplicates(
        [*CONFIG_KEYS, "episode_seed", "seed"], keep="last")
    rows = []
    for key, group in df.groupby(list(EPISODE_KEYS), sort=False):
        refs = group[group["method"] == reference_method]
        others = group[group["method"] != reference_method]
        for ref in refs.itertuples():
            for other in others[others["seed"] == ref.seed].itertuples():
                n = min(len(ref.episode_acc), len(other.episode_acc))
                res = paired_difference(ref.episode_acc[:n] * 100.0, other.episode_acc[:n] * 100.0)
                rows.append(
                    {
                        "method": other.method,
                        "run_id": other.run_id,
                        "reference": reference_method,
                        "reference_run_id": ref.run_id,
                        **dict(zip(EPISODE_KEYS, key, strict=True)),
                        "seed": int(ref.seed),
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
        raise ResultsError(
            f"--paired {reference_method!r}: no other run shares episodes with it (same dataset, "
            "eval_split, way, shot, query, episode seed and training seed)"
        )
    out = pd.DataFrame(rows)
    out = out.assign(
        _d=[dataset_sort_key(d) for d in out["dataset"]],
        _m=[method_sort_key(m) for m in out["method"]],
    )
    out = out.sort_values(
        ["_d", "eval_split", "way", "shot", "query", "episode_seed", "_m", "seed", "run_id"])
    return out.drop(columns=["_d", "_m"]).reset_index(drop=True)


def seed_paired_table(paired: pd.DataFrame) -> pd.DataFrame:
    """Across training seeds: one row per setting of :func:`paired_table`'s rows.

    The per-seed mean differences give the mean and a Student-t 95% CI with k-1 degrees of
    freedom (:func:`fsbench.stats.seed_paired_difference`); with one seed the CI is NaN and
    nothing is significant. Columns: :data:`SETTING_KEYS`, ``n_seeds``, ``seeds``,
    ``accuracy`` and ``reference_accuracy`` (means over seeds), ``mean_diff``, ``ci95``,
    ``low``, ``high``, ``significant``.
    """
    rows = []
    for key, group in paired.groupby(list(SETTING_KEYS), sort=False, dropna=False):
        res = seed_paired_difference(group["mean_diff"].to_numpy(float))
        rows.append({
            **dict(zip(SETTING_KEYS, key, strict=True)),
            "n_seeds": res.n,
            "seeds": tuple(int(s) for s in group["seed"]),
            "accuracy": float(group["accuracy"].mean()),
            "reference_accuracy": float(group["reference_accuracy"].mean()),
            "mean_diff": res.mean_diff,
            "ci95": res.ci95,
            "low": res.low,
            "high": res.high,
            "significant": res.significant,
        })
    return pd.DataFrame(rows)

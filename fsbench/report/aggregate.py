"""Statistics over runs: one cell per configuration (seeds aggregated), paired differences.

Aggregation over seeds
    Runs whose configuration differs only in ``seed`` form one table cell. Its accuracy is the
    mean of the per-seed accuracies. Its CI is the run's own CI when there is one seed; with
    several seeds, all episodes of all seeds are pooled and the CI is computed over the pool
    (``1.96*std(ddof=0)/sqrt(total episodes)``). The interval describes uncertainty over tasks,
    not seed-to-seed training variance (which the seed count in the cell flags). Two runs with
    the same configuration *and* seed are duplicates: the newest (``created``) is kept and
    counted in ``duplicates_dropped``.

Paired differences
    Runs equal on :data:`EPISODE_KEYS` saw identical test episodes, index by index, so their
    per-episode differences give a paired mean and CI (:func:`fsbench.stats.paired_difference`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fsbench.results import ResultsError
from fsbench.stats import mean_ci95, paired_difference

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
EPISODE_KEYS: tuple[str, ...] = ("dataset", "eval_split", "way", "shot", "query", "seed")

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


def paired_table(df: pd.DataFrame, reference_method: str) -> pd.DataFrame:
    """Paired per-episode differences of every run against the reference method's run(s).

    Two runs pair up when they share episodes: same dataset, eval_split, way, shot, query and
    seed. For each pair the per-episode differences ``other - reference`` (in points) give the
    mean and its 95% CI; ``significant`` marks an interval that excludes 0. When the runs have
    different episode counts, the common prefix of episodes is compared (``n``).
    """
    if df.empty:
        raise ResultsError("no runs to report")
    methods = sorted(set(df["method"]))
    if reference_method not in methods:
        raise ResultsError(
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
        raise ResultsError(
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

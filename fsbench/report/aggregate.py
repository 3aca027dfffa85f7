"""Statistics over runs: one cell per configuration (training seeds aggregated), paired differences.

One training seed is one sample. A cell is the runs whose whole resolved configuration is equal
except the training ``seed`` (:mod:`fsbench.report.cells`: the recorded ``config_fingerprint``):

* ``accuracy``: the mean of the per-seed accuracies;
* ``ci95``: the 95% CI over test episodes (:data:`fsbench.stats.CI_FORMULA`): the run's own with
  one seed; with several seeds that share the test episodes (same ``episode_seed``), over the
  per-episode accuracies averaged across seeds; otherwise (runs of an older fsbench that drew
  their test episodes with the training seed) over all episodes pooled;
* ``seed_ci95``: the 95% CI between seeds (:data:`fsbench.stats.SEED_CI_FORMULA`, Student t over
  the per-seed accuracies, k-1 degrees of freedom); NaN with one seed.

Only true duplicates, two runs of one cell with the same seed, are dropped (the newest kept);
``dropped_run_ids`` names them.

Paired differences (:func:`paired_table`): a run is paired with exactly one run of each cell of
the reference method, the one of the same training seed on the same test episodes (equal on
:data:`~fsbench.report.cells.PROTOCOL_KEYS`: dataset, split, way, shot, query, episodes and
episode seed, and the same episode bank). When the reference method has several cells there
(``protonet`` and ``protonet (lr=1e-12)``), each is a *reference variant* and every other cell gets
one row per variant, labelled with it; the reference method's own variants are compared with
each other once (the later label against the earlier). Across seeds (:func:`seed_paired_table`),
one row per (cell, reference variant): each seed counted once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fsbench.results import ResultsError
from fsbench.stats import mean_ci95, paired_difference, seed_ci95, seed_paired_difference

from .cells import PROTOCOL_KEYS, cell_runs, same_episode_bank
from .labels import dataset_sort_key, method_sort_key, row_labels

#: Settings every run of a cell shares, kept as columns of :func:`aggregate`'s rows.
CONFIG_KEYS: tuple[str, ...] = (
    "method", "dataset", "backbone", "way", "shot", "query", "episodes", "preset", "eval_split",
    "hard_tasks",
)


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
    """One row per cell (runs differing only in training seed merged).

    Columns: :data:`CONFIG_KEYS`, ``fingerprint``, ``settings``, ``recorded``, ``label`` (see
    :func:`~fsbench.report.labels.row_labels`), ``accuracy``, ``ci95`` and ``seed_ci95`` (%),
    ``n_seeds``, ``seeds``, ``episode_seeds``, ``n_episodes`` (all seeds), ``ci_source`` ("run",
    "seed-averaged" or "pooled"), ``run_ids``, ``duplicates_dropped``, ``dropped_run_ids``,
    ``ci_formulas`` and ``paper_backbone``.
    """
    runs, dropped = cell_runs(df)
    rows = []
    for fp, group in runs.groupby("fingerprint", sort=False):
        kept = group.sort_values("seed")
        ci, source = _episode_ci(kept)
        last = kept.iloc[-1]
        rows.append({
            **{k: last[k] for k in CONFIG_KEYS},
            "fingerprint": fp,
            "settings": last["settings"],
            "recorded": bool(last["recorded"]),
            "accuracy": float(kept["accuracy"].mean()),
            "ci95": ci,
            "seed_ci95": seed_ci95(kept["accuracy"].to_numpy(float))[1],
            "n_seeds": len(kept),
            "seeds": tuple(int(s) for s in kept["seed"]),
            "episode_seeds": tuple(sorted({int(s) for s in kept["episode_seed"]})),
            "n_episodes": int(sum(len(a) for a in kept["episode_acc"])),
            "ci_source": source,
            "run_ids": tuple(kept["run_id"]),
            "duplicates_dropped": len(dropped.get(fp, [])),
            "dropped_run_ids": tuple(dropped.get(fp, [])),
            "ci_formulas": tuple(sorted(set(kept["ci_formula"]))),
            "paper_backbone": str(last["paper_backbone"]),
        })
    agg = pd.DataFrame(rows)
    return agg.assign(label=row_labels(agg)) if len(agg) else agg


def paired_table(df: pd.DataFrame, reference_method: str) -> pd.DataFrame:
    """Paired per-episode differences of every cell's runs against each reference variant's run
    of the same seed, on the same test episodes (see the module docstring).

    For each pair the per-episode differences ``other - reference`` (in points) give the mean
    and its 95% CI; ``verdict`` is "significant" (the interval excludes 0), "not significant" or
    "not testable" (the differences have no spread). Duplicates keep the newest run.
    """
    if df.empty:
        raise ResultsError("no runs to report")
    methods = sorted(set(df["method"]))
    if reference_method not in methods:
        raise ResultsError(
            f"--paired {reference_method!r}: no runs of that method; methods present: "
            f"{', '.join(methods)}"
        )
    agg = aggregate(df)
    labels = dict(zip(agg["fingerprint"], agg["label"], strict=True))
    runs, _ = cell_runs(df)
    rows: list[dict[str, Any]] = []
    for _, group in runs.groupby(list(PROTOCOL_KEYS), sort=False):
        cells = dict(tuple(group.groupby("fingerprint", sort=False)))
        refs = [fp for fp, g in cells.items() if g["method"].iloc[0] == reference_method]
        for ref_fp in refs:
            for fp, cell in cells.items():
                if fp == ref_fp or (fp in refs and labels[fp] < labels[ref_fp]):
                    continue  # itself, or a pair of reference variants already taken
                rows += _pairs(cell, cells[ref_fp], labels[fp], labels[ref_fp])
    if not rows:
        raise ResultsError(
            f"--paired {reference_method!r}: no other run shares episodes with it (same dataset, "
            "eval_split, way, shot, query, episodes, episode seed and training seed)"
        )
    out = pd.DataFrame(rows)
    out = out.assign(_d=[dataset_sort_key(d) for d in out["dataset"]],
                     _m=[method_sort_key(m) for m in out["method"]])
    out = out.sort_values([*("_d", "eval_split", "way", "shot", "query", "episodes", "episode_seed"),
                           "reference_label", "_m", "label", "seed"])
    return out.drop(columns=["_d", "_m"]).reset_index(drop=True)


def _pairs(cell: pd.DataFrame, ref: pd.DataFrame, label: str, ref_label: str) -> list[dict[str, Any]]:
    """One row per training seed that both cells ran (on the same episode bank)."""
    by_seed = {int(r.seed): r for r in ref.itertuples()}
    rows = []
    for run in cell.sort_values("seed").itertuples():
        partner = by_seed.get(int(run.seed))
        if partner is None or not same_episode_bank(getattr(run, "episode_bank", None),
                                                    getattr(partner, "episode_bank", None)):
            continue
        res = paired_difference(partner.episode_acc * 100.0, run.episode_acc * 100.0)
        rows.append({
            "method": run.method, "label": label, "fingerprint": run.fingerprint,
            "run_id": run.run_id, "reference": partner.method, "reference_label": ref_label,
            "reference_fingerprint": partner.fingerprint, "reference_run_id": partner.run_id,
            **{k: getattr(run, k) for k in PROTOCOL_KEYS},
            "seed": int(run.seed), "backbone": run.backbone, "preset": run.preset, "n": res.n,
            "accuracy": float(np.mean(run.episode_acc) * 100.0),
            "reference_accuracy": float(np.mean(partner.episode_acc) * 100.0),
            "mean_diff": res.mean_diff, "ci95": res.ci95, "low": res.low, "high": res.high,
            "significant": res.significant, "testable": res.testable, "verdict": res.verdict,
        })
    return rows


#: What one seed-level paired row is computed over: a cell against a reference variant.
SETTING_KEYS: tuple[str, ...] = (
    "method", "label", "fingerprint", "reference", "reference_label", "reference_fingerprint",
    *PROTOCOL_KEYS,
)


def seed_paired_table(paired: pd.DataFrame) -> pd.DataFrame:
    """Across training seeds: one row per (cell, reference variant) of :func:`paired_table`'s rows.

    The per-seed mean differences (each seed once) give the mean and a Student-t 95% CI with
    k-1 degrees of freedom (:func:`fsbench.stats.seed_paired_difference`); with one seed the CI
    is NaN and the verdict "not testable". Columns: :data:`SETTING_KEYS`, ``n_seeds``, ``seeds``,
    ``accuracy`` and ``reference_accuracy`` (means over seeds), ``mean_diff``, ``ci95``, ``low``,
    ``high``, ``significant``, ``testable``, ``verdict``.
    """
    rows = []
    for key, group in paired.groupby(list(SETTING_KEYS), sort=False, dropna=False):
        if group["seed"].duplicated().any():
            raise ResultsError(f"{key[1]}: a training seed paired twice with {key[4]}")
        res = seed_paired_difference(group["mean_diff"].to_numpy(float))
        rows.append({
            **dict(zip(SETTING_KEYS, key, strict=True)),
            "n_seeds": res.n,
            "seeds": tuple(int(s) for s in group["seed"]),
            "accuracy": float(group["accuracy"].mean()),
            "reference_accuracy": float(group["reference_accuracy"].mean()),
            "mean_diff": res.mean_diff, "ci95": res.ci95, "low": res.low, "high": res.high,
            "significant": res.significant, "testable": res.testable, "verdict": res.verdict,
        })
    return pd.DataFrame(rows)

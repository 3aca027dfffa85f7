"""Labels and orders for report tables: row labels, column labels, paper order, cell text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from fsbench.paper import PAPER_ORDER, method_label
from fsbench.results import EVAL_SPLITS

#: Configuration keys that go into a row label when one method has runs differing in them.
VARIANT_KEYS: tuple[str, ...] = ("backbone", "preset", "query", "episodes", "hard_tasks")

DATASET_ORDER: tuple[str, ...] = ("miniimagenet", "fc100", "synthetic")

def dataset_sort_key(dataset: str) -> tuple[int, str]:
    rank = DATASET_ORDER.index(dataset) if dataset in DATASET_ORDER else len(DATASET_ORDER)
    return rank, dataset


def method_sort_key(method: str, order: Sequence[str] = PAPER_ORDER) -> tuple[int, str]:
    return (order.index(method) if method in order else len(order)), method


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


def column_sort_key(key: tuple[str, int, int, str]) -> tuple[Any, ...]:
    dataset, way, shot, split = key
    return dataset_sort_key(dataset), EVAL_SPLITS.index(split), way, shot


def format_acc(accuracy: float, ci95: float, n_seeds: int = 1, seed_ci95: float | None = None) -> str:
    """``61.2 ± 0.8`` (one seed: the CI over episodes), or with several training seeds the CI
    between seeds beside it: ``61.2 ± 0.8 (seeds ± 1.5, n=3)``."""
    text = f"{accuracy:.1f} ± {ci95:.1f}"
    if n_seeds > 1:
        between = "" if seed_ci95 is None or seed_ci95 != seed_ci95 else f"± {seed_ci95:.1f}, "
        text += f" (seeds {between}n={n_seeds})"
    return text

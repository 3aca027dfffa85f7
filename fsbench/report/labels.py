"""Labels and orders for report tables: row labels, column labels, paper order, cell text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from fsbench.paper import PAPER_ORDER, method_label
from fsbench.results import EVAL_SPLITS

DATASET_ORDER: tuple[str, ...] = ("miniimagenet", "fc100", "synthetic")


def dataset_sort_key(dataset: str) -> tuple[int, str]:
    rank = DATASET_ORDER.index(dataset) if dataset in DATASET_ORDER else len(DATASET_ORDER)
    return rank, dataset


def method_sort_key(method: str, order: Sequence[str] = PAPER_ORDER) -> tuple[int, str]:
    return (order.index(method) if method in order else len(order)), method


#: The settings that make a table's columns; a row label names the others that differ.
COLUMN_KEYS: tuple[str, ...] = ("dataset", "way", "shot", "eval_split")


def row_labels(agg: pd.DataFrame, *, paper_names: bool = False) -> list[str]:
    """A label per aggregated cell: the method, plus the settings that tell it apart from the
    method's other cells (``protonet (lr=1e-12)``, ``mtl (hard_tasks=on)``,
    ``protonet (episode_seed=1)``).

    A setting is named when two cells of the method in one column (dataset, way, shot, split)
    differ in it; it is then named in every cell of the method that has it, so rows line up
    across columns. Cells of runs that recorded no settings (an older fsbench) are compared on
    what their summaries carry and, beside recorded ones, marked ``settings not recorded``.
    """
    labels = pd.Series("", index=agg.index, dtype=object)
    for method, cells in agg.groupby("method", sort=False):
        keys = distinguishing_keys(cells)
        mixed = bool(cells["recorded"].any() and not cells["recorded"].all())
        base = method_label(method) if paper_names else str(method)
        for index, cell in cells.iterrows():
            parts = [f"{short_name(k, keys)}={format_value(cell['settings'][k])}"
                     for k in keys if k in cell["settings"]]
            if mixed and not cell["recorded"]:
                parts.append("settings not recorded")
            labels[index] = base + (f" ({', '.join(parts)})" if parts else "")
    # Never two cells under one label in one column (only unrecorded cells can get there: one of
    # them lacks a setting the other has); the fingerprint tells them apart.
    columns = [tuple(r) for r in agg[list(COLUMN_KEYS)].itertuples(index=False)]
    clash = pd.Series(list(zip(labels, columns, strict=True)), index=agg.index).duplicated(keep=False)
    labels[clash] = [f"{lab} [{fp[:8]}]" for lab, fp in zip(labels[clash], agg["fingerprint"][clash], strict=True)]
    return labels.tolist()


def distinguishing_keys(cells: pd.DataFrame) -> list[str]:
    """The settings in which two of ``cells`` (one method's) that share a column differ, in the
    settings' own order: those both have with different values. A setting only one of them has
    is named only when that is all that tells two recorded cells apart (hard-task settings exist
    only while hard tasks are on: ``hard_tasks=on`` says enough); a recorded and an unrecorded
    cell are compared on the settings both have."""
    order = {k: i for i, k in enumerate(dict.fromkeys(k for s in cells["settings"] for k in s))}
    found: set[str] = set()
    for _, column in cells.groupby(list(COLUMN_KEYS), sort=False):
        members = list(zip(column["settings"], column["recorded"], strict=True))
        for i, (a, rec_a) in enumerate(members):
            for b, rec_b in members[i + 1:]:
                differ = {k for k in a.keys() & b.keys() if a[k] != b[k]}
                found |= differ or (a.keys() ^ b.keys() if rec_a and rec_b else set())
    return sorted(found - set(COLUMN_KEYS), key=order.__getitem__)


def short_name(key: str, keys: Sequence[str]) -> str:
    """``hparams.lr`` -> ``lr`` (the full key when another named key ends the same way);
    ``hard_tasks.enabled`` -> ``hard_tasks``, ``hard_tasks.mode`` -> ``ht_mode``."""
    if key == "hard_tasks.enabled":
        return "hard_tasks"
    if key.startswith("hard_tasks."):
        return "ht_" + key.split(".", 1)[1]
    last = key.rsplit(".", 1)[-1]
    return last if sum(k.rsplit(".", 1)[-1] == last for k in keys) == 1 else key


def format_value(value: Any) -> str:
    """A setting's value in a label: on/off, ``1e-12``, ``none``, lists comma-separated."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(format_value(v) for v in value)
    return str(value)


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

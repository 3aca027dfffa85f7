"""Figures from loaded runs (a :func:`fsbench.results.load_runs` DataFrame).

* :func:`plot_val_curves`: validation accuracy over training steps, one line per run (shaded
  ± its 95% CI), like the MTL paper's validation-curve figure; one panel per
  (dataset, way, shot, split) setting and training phase (pre-training, meta-training).
* :func:`plot_accuracy_vs_shot`: test accuracy ± 95% CI against the number of shots, one line per
  method, one panel per dataset (validation-split runs get their own, labelled panels).

Both write PNG and SVG atomically (:mod:`fsbench.atomic`) and return the paths. They
draw on :class:`matplotlib.figure.Figure` objects directly: no pyplot, no global backend
switch, no display needed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd
from matplotlib.figure import Figure

from fsbench.atomic import atomic_write
from fsbench.results import EVAL_SPLITS

from .aggregate import aggregate
from .labels import column_label, dataset_sort_key, method_sort_key, row_labels

PHASES = ("pretrain", "meta_train")
PHASE_LABELS = {"pretrain": "pre-training", "meta_train": "meta-training"}
FORMATS = ("png", "svg")
DPI = 120
LINESTYLES = ("-", "--", ":", "-.")


def _save(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    paths = []
    for fmt in FORMATS:
        path = out_dir / f"{stem}.{fmt}"
        # No timestamp and fixed element ids in the SVG: unchanged plots are byte-identical.
        metadata: dict[str, Any] = {"Date": None} if fmt == "svg" else {}
        with matplotlib.rc_context({"svg.hashsalt": "fsbench"}):
            atomic_write(path, lambda fh, fmt=fmt, metadata=metadata: fig.savefig(
                fh, format=fmt, dpi=DPI, metadata=metadata))
        paths.append(path)
    return paths


def _method_colors(methods: list[str]) -> dict[str, str]:
    ordered = sorted(set(methods), key=method_sort_key)
    return {m: f"C{i % 10}" for i, m in enumerate(ordered)}


def plot_val_curves(
    df: pd.DataFrame, out_dir: str | os.PathLike[str], stem: str = "val_curves"
) -> list[Path]:
    """Validation accuracy vs training step per run; returns the PNG and SVG paths.

    Returns ``[]`` when no run has a validation history.
    """
    runs = df[[bool(h) for h in df["history"]]] if len(df) else df
    if runs.empty:
        return []
    settings = sorted(
        {(r.dataset, r.way, r.shot, r.eval_split) for r in runs.itertuples()},
        key=lambda k: (dataset_sort_key(k[0]), EVAL_SPLITS.index(k[3]), k[1], k[2]),
    )
    present = {rec.get("phase") for h in runs["history"] for rec in h}
    phases = [p for p in PHASES if p in present] + sorted(p for p in present - set(PHASES) if p)
    colors = _method_colors(list(runs["method"]))

    fig = Figure(figsize=(max(6.0, 4.8 * len(settings)), 3.6 * len(phases)), layout="constrained")
    axes = fig.subplots(len(phases), len(settings), squeeze=False)
    for j, setting in enumerate(settings):
        in_panel = runs[
            [(r.dataset, r.way, r.shot, r.eval_split) == setting for r in runs.itertuples()]
        ]
        label_counts = in_panel["method"].value_counts()
        seed_counts = in_panel.groupby(["method", "seed"]).size()
        style_index = {
            run.run_dir: k
            for _, group in in_panel.groupby("method")
            for k, run in enumerate(group.itertuples())
        }
        for i, phase in enumerate(phases):
            ax = axes[i][j]
            drawn = 0
            for run in in_panel.itertuples():
                points = sorted(
                    (rec for rec in run.history if rec.get("phase") == phase),
                    key=lambda rec: rec["step"],
                )
                if not points:
                    continue
                steps = [p["step"] for p in points]
                acc = [float(p["val_accuracy"]) for p in points]
                label = run.method
                if seed_counts[(run.method, run.seed)] > 1:
                    label = f"{run.method} ({run.run_id})"
                elif label_counts[run.method] > 1:
                    label = f"{run.method} (seed {run.seed})"
                color = colors[run.method]
                ax.plot(
                    steps,
                    acc,
                    label=label,
                    color=color,
                    linestyle=LINESTYLES[style_index[run.run_dir] % len(LINESTYLES)],
                    marker="o" if len(steps) < 30 else None,
                    ms=3,
                )
                ci = [p.get("val_ci95") for p in points]
                if all(isinstance(c, (int, float)) for c in ci):
                    low = [a - c for a, c in zip(acc, ci, strict=True)]
                    high = [a + c for a, c in zip(acc, ci, strict=True)]
                    ax.fill_between(steps, low, high, color=color, alpha=0.15, linewidth=0)
                drawn += 1
            ax.set_title(f"{column_label(*setting)}: {PHASE_LABELS.get(phase, phase)}", fontsize=10)
            ax.set_xlabel("pre-training step" if phase == "pretrain" else "meta-training iteration")
            ax.set_ylabel("val accuracy (%)")
            ax.grid(True, alpha=0.3)
            if drawn:
                ax.legend(fontsize=7, loc="lower right")
            else:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle("Validation accuracy (± 95% CI over val episodes)")
    return _save(fig, Path(out_dir), stem)


def plot_accuracy_vs_shot(
    df: pd.DataFrame, out_dir: str | os.PathLike[str], stem: str = "accuracy_vs_shot"
) -> list[Path]:
    """Accuracy ± 95% CI vs shot, one line per method, one panel per dataset/way/split.

    Seeds are aggregated as in the report tables. Returns ``[]`` for an empty DataFrame.
    """
    if df.empty:
        return []
    agg = aggregate(df)
    agg = agg.assign(label=row_labels(agg))
    panels = sorted(
        {(r.dataset, r.way, r.eval_split) for r in agg.itertuples()},
        key=lambda k: (dataset_sort_key(k[0]), EVAL_SPLITS.index(k[2]), k[1]),
    )
    colors = _method_colors(list(agg["method"]))
    fig = Figure(figsize=(max(6.0, 4.8 * len(panels)), 3.8), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (dataset, way, split) in zip(axes, panels, strict=True):
        sub = agg[(agg["dataset"] == dataset) & (agg["way"] == way) & (agg["eval_split"] == split)]
        labels = sorted(
            set(sub["label"]), key=lambda lab: (method_sort_key(lab.split(" ")[0]), lab)
        )
        seen: dict[str, int] = {}
        for label in labels:
            line = sub[sub["label"] == label].sort_values("shot")
            method = line["method"].iloc[0]
            k = seen.setdefault(method, 0)
            seen[method] += 1
            ax.errorbar(
                line["shot"],
                line["accuracy"],
                yerr=line["ci95"],
                label=label,
                color=colors[method],
                linestyle=LINESTYLES[k % len(LINESTYLES)],
                marker="o",
                capsize=3,
            )
        ax.set_xticks(sorted(set(sub["shot"])))
        title = f"{dataset}, {way}-way" + (" (VALIDATION split)" if split == "val" else "")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("shots per class")
        ax.set_ylabel(f"{split} accuracy (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("Accuracy vs shots (mean ± 95% CI)")
    return _save(fig, Path(out_dir), stem)

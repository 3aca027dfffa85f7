"""Fabricate run directories in the runner's format, for tests of anything that reads results.

    from runfactory import make_run
    run_dir = make_run(tmp_path, "mtl", [0.6, 0.8, 0.7], dataset="miniimagenet", shot=1)

``accuracies`` are per-episode fractions; ``summary.json``'s accuracy and ci95 are computed from
them (in %) with fsbench's own formula unless overridden.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fsbench.fingerprint import fingerprint
from fsbench.stats import CI_FORMULA, mean_ci95

DEFAULTS: dict[str, Any] = {
    "dataset": "synthetic",
    "backbone": "conv4",
    "way": 5,
    "shot": 1,
    "query": 15,
    "seed": 0,
    "preset": "smoke",
    "eval_split": "test",
    "hard_tasks": False,
    "pretrain_seconds": 0.0,
    "train_seconds": 10.0,
    "eval_seconds": 2.0,
    "device": "cpu",
    "created": "2024-01-01T00:00:00+00:00",
}


def make_run(
    root: str | Path,
    method: str,
    accuracies: list[float],
    *,
    history: list[dict[str, Any]] | None = None,
    **summary_overrides: Any,
) -> Path:
    """Write ``<root>/<run_id>/`` with summary.json, episodes.jsonl, config.json (and history.jsonl
    when ``history`` is given); returns the run directory.

    ``summary_overrides`` replace any summary field (``dataset``, ``shot``, ``seed``, ``accuracy``,
    ``train_seconds``...). The default run_id is unique within ``root``.
    """
    root = Path(root)
    summary: dict[str, Any] = {"method": method, **DEFAULTS}
    summary.update({k: v for k, v in summary_overrides.items() if k != "run_id"})
    mean, ci = mean_ci95([a * 100.0 for a in accuracies]) if accuracies else (0.0, 0.0)
    summary["episodes"] = summary_overrides.get("episodes", len(accuracies))
    summary.setdefault("ci_formula", CI_FORMULA)
    summary["accuracy"] = summary_overrides.get("accuracy", mean)
    summary["ci95"] = summary_overrides.get("ci95", ci)

    run_id = summary_overrides.get("run_id")
    if run_id is None:
        base = f"{method}-{summary['dataset']}-{summary['way']}w{summary['shot']}s-{summary['eval_split']}-seed{summary['seed']}"
        run_id, k = base, 1
        while (root / run_id).exists():
            k += 1
            run_id = f"{base}-{k}"
    summary = {"run_id": run_id, **summary}
    if isinstance(summary.get("settings"), dict):  # a run that recorded its settings
        summary.setdefault("config_fingerprint", fingerprint(summary["settings"]))

    run_dir = root / run_id
    run_dir.mkdir(parents=True, exist_ok=False)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (run_dir / "episodes.jsonl").write_text(
        "".join(
            json.dumps({"index": i, "accuracy": float(a)}) + "\n" for i, a in enumerate(accuracies)
        ),
        encoding="utf-8",
    )
    (run_dir / "config.json").write_text(json.dumps({"method": method}) + "\n", encoding="utf-8")
    if history is not None:
        (run_dir / "history.jsonl").write_text(
            "".join(json.dumps(rec) + "\n" for rec in history), encoding="utf-8"
        )
    return run_dir


def curve(steps: list[int], accs: list[float], phase: str = "meta_train") -> list[dict[str, Any]]:
    """A validation history: one record per (step, accuracy %)."""
    return [
        {"phase": phase, "step": s, "val_accuracy": a, "val_ci95": 1.0, "loss": 1.0 / (1 + s)}
        for s, a in zip(steps, accs, strict=True)
    ]


def recorded_run(root: str | Path, method: str, accuracies: list[float], *, seed: int = 0,
                 overrides: dict[str, Any] | None = None, created: str = DEFAULTS["created"],
                 **settings: Any) -> Path:
    """A run as this fsbench writes it: ``summary.json`` carries ``settings`` (flat, as
    :func:`fsbench.fingerprint.run_settings` makes them), ``config_fingerprint`` and ``overrides``.

    ``settings`` replace defaults (``dataset``, ``shot``, ``episode_seed``, ``hparams.lr``,
    ``hard_tasks.enabled``, ``hard_tasks.mode``...); ``episodes`` defaults to the number of
    accuracies. The summary fields the settings also name are set to match.
    """
    flat: dict[str, Any] = {
        "method": method, "dataset": DEFAULTS["dataset"], "way": 5, "shot": 1, "query": 15,
        "episodes": len(accuracies), "episode_seed": 0, "eval_split": "test", "preset": "smoke",
        "backbone": "conv4", "precision": "fp32", "hparams.lr": 0.001, "episodic.iterations": 30,
        "hard_tasks.enabled": False,
    }
    flat.update(settings)
    summary = {k: flat[k] for k in ("dataset", "way", "shot", "query", "episodes", "episode_seed",
                                    "eval_split", "preset", "backbone", "precision")}
    summary["hard_tasks"] = flat["hard_tasks.enabled"]
    summary["hard_task_mode"] = flat.get("hard_tasks.mode")
    return make_run(root, method, accuracies, seed=seed, settings=flat, overrides=overrides or {},
                    created=created, **summary)

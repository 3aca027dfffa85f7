"""What defines a run's results, as flat data: its settings, their fingerprint, the user's overrides.

A run's results are defined by its whole resolved configuration: method, dataset, protocol (way,
shot, query, episodes, episode seed, split), preset, backbone and its arguments, the method's
hyperparameters and the training schedules after every override, the hard-task settings and the
precision. ``summary.json`` records them (written by :mod:`fsbench.runner`):

* ``settings``: that configuration *without the training seed*, flat: ``"hparams.lr": 0.001``,
  ``"episodic.iterations": 600``, ``"hard_tasks.mode": "replace"``, ``"episode_seed": 0`` ...;
  left out is what does not change results (output, resume, device, cache and data folders);
* ``config_fingerprint``: a hash of ``settings``. Runs with equal fingerprints differ at most in
  their training seed: they are one cell of a report table, one sample per seed;
* ``overrides``: the user's own ``--set`` / ``--config`` values, flat (what the regression gate
  matches on beside the run's options, so that a new default in a preset does not unpair it).

Runs written before these fields existed are described by :func:`legacy_settings`, from the
summary fields they do have (their overrides are unknown).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

#: ``RunConfig`` fields left out of the settings: where results go and what computes them
#: (they do not change results), the training seed (cells pool seeds), and the raw options
#: whose resolved values the settings carry instead (preset, backbone, precision, hard tasks,
#: overrides).
_RUN_LEFT_OUT = frozenset({
    "output", "resume", "device", "cache_dir", "data_root", "seed",
    "preset", "backbone", "precision", "overrides",
    "hard_tasks", "ht_every", "ht_count", "ht_fill", "ht_mode",
})

#: Summary fields that describe a run written before ``settings`` (see :func:`legacy_settings`).
LEGACY_KEYS: tuple[str, ...] = (
    "method", "dataset", "backbone", "way", "shot", "query", "episodes", "episode_seed", "preset",
    "eval_split",
)


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    """``("hparams", {"lr": 0.1, "x": {"y": 1}})`` -> ``{"hparams.lr": 0.1, "hparams.x.y": 1}``;
    a non-dict value (None included) stays one entry; tuples become lists (as in JSON)."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(flatten(f"{prefix}.{key}", inner))
        return out
    return {prefix: list(value) if isinstance(value, tuple) else value}


def run_settings(resolved: Mapping[str, Any], precision: str) -> dict[str, Any]:
    """The settings of a run from the runner's resolved configuration (``Run.resolved``: the
    ``RunConfig`` as JSON under ``run``, then ``preset``, ``backbone``, ``backbone_kwargs``,
    ``hparams``, ``episodic``, ``pretrain``, ``hard_tasks``) and its precision (``fp32``/``bf16``).

    Hard-task settings other than ``enabled`` are left out when hard tasks are off: they then
    change nothing.
    """
    out = {k: v for k, v in resolved["run"].items() if k not in _RUN_LEFT_OUT}
    out.update(preset=resolved["preset"], backbone=resolved["backbone"], precision=precision)
    for section in ("backbone_kwargs", "hparams", "episodic", "pretrain"):
        out.update(flatten(section, resolved[section]))
    hard = resolved["hard_tasks"]
    out.update(flatten("hard_tasks", hard if hard["enabled"] else {"enabled": False}))
    return out


def fingerprint(settings: Mapping[str, Any]) -> str:
    """A 16-hex-digit hash of ``settings`` (key order does not matter)."""
    text = json.dumps(dict(settings), sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def flat_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The user's overrides (``{"hparams": {"lr": 1e-12}}``) flat: ``{"hparams.lr": 1e-12}``."""
    out: dict[str, Any] = {}
    for section, values in overrides.items():
        out.update(flatten(section, values))
    return out


def legacy_settings(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Settings of a run written before ``settings`` existed, from its summary fields: the
    protocol, method, preset and backbone, whether hard tasks were on and their mode, and the
    precision where recorded. Overrides were not recorded, so runs that differed only in them
    cannot be told apart."""
    out = {k: _plain(summary[k]) for k in LEGACY_KEYS if k in summary}
    enabled = bool(summary.get("hard_tasks", False))
    out["hard_tasks.enabled"] = enabled
    mode = summary.get("hard_task_mode")
    if enabled and isinstance(mode, str):
        out["hard_tasks.mode"] = mode
    precision = summary.get("precision")
    if isinstance(precision, str) and precision:
        out["precision"] = "bf16" if "bf16" in precision else "fp32"
    return out


def _plain(value: Any) -> Any:
    """numpy / pandas scalars as Python ones (for JSON and equality)."""
    return value.item() if hasattr(value, "item") else value

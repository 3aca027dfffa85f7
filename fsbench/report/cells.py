"""Which runs form one cell of a report, and which runs are true duplicates.

A *cell* is the runs whose whole resolved configuration is equal except the training seed: equal
``config_fingerprint`` (:mod:`fsbench.fingerprint`). One training seed is one sample of a cell;
two runs of one cell with the same seed are *duplicates*, and only the newest (``created``, then
the run directory) is kept.

Runs written before the fingerprint existed are grouped by the settings their summaries do
carry (:func:`fsbench.fingerprint.legacy_settings`: method, protocol, preset, backbone, hard
tasks and mode, precision); their overrides are unknown. Their ``episode_seed`` counts only where
it tells two runs of one seed apart: runs written before ``--episode-seed`` existed report their
training seed there (each seed drew its own test episodes) and still form one cell.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from fsbench.fingerprint import fingerprint, legacy_settings

#: Runs equal on all of these saw identical test episodes, index by index (same episode bank).
PROTOCOL_KEYS: tuple[str, ...] = (
    "dataset", "eval_split", "way", "shot", "query", "episodes", "episode_seed",
)


def identify(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with ``settings`` (dict), ``fingerprint`` (str) and ``recorded`` (bool: the run
    wrote its settings; False for runs written before) per run."""
    records = df.to_dict("records")
    settings: list[dict[str, Any]] = []
    fingerprints: list[str | None] = []
    for rec in records:
        recorded = rec.get("settings")
        if isinstance(recorded, dict) and rec.get("config_fingerprint"):
            settings.append(recorded)
            fingerprints.append(str(rec["config_fingerprint"]))
        else:
            settings.append(legacy_settings(rec))
            fingerprints.append(None)
    _legacy_episode_seeds(records, settings, fingerprints)
    return df.assign(
        settings=settings,
        fingerprint=[fp or "legacy-" + fingerprint(s) for fp, s in zip(fingerprints, settings, strict=True)],
        recorded=[fp is not None for fp in fingerprints],
    )


def _legacy_episode_seeds(records: list[dict], settings: list[dict], fingerprints: list) -> None:
    """Drop ``episode_seed`` from the legacy settings of a group of runs where no training seed
    appears with two episode seeds (see the module docstring); in place."""
    groups: dict[str, list[int]] = {}
    for i, fp in enumerate(fingerprints):
        if fp is None:
            rest = {k: v for k, v in settings[i].items() if k != "episode_seed"}
            groups.setdefault(fingerprint(rest), []).append(i)
    for members in groups.values():
        seen: dict[Any, set[Any]] = {}
        for i in members:
            seen.setdefault(records[i]["seed"], set()).add(records[i]["episode_seed"])
        if all(len(episode_seeds) == 1 for episode_seeds in seen.values()):
            for i in members:
                settings[i] = {k: v for k, v in settings[i].items() if k != "episode_seed"}


def cell_runs(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """The runs of ``df`` identified (:func:`identify`), true duplicates dropped: per cell and
    training seed the newest run is kept. Returns the kept runs and, per cell fingerprint, the
    run ids dropped."""
    runs = identify(df).sort_values(["created", "run_dir"])
    duplicate = runs.duplicated(["fingerprint", "seed"], keep="last")
    dropped: dict[str, list[str]] = {}
    for rec in runs[duplicate].itertuples():
        dropped.setdefault(rec.fingerprint, []).append(str(rec.run_id))
    return runs[~duplicate], dropped


def same_episode_bank(a: Any, b: Any) -> bool:
    """False only when both runs recorded their test episodes' fingerprint and they differ."""
    return not (isinstance(a, str) and isinstance(b, str) and a != b)


def dropped_note(dropped: dict[str, list[str]], limit: int = 6) -> str | None:
    """One line naming the duplicate runs that were ignored, or None when there are none."""
    ids = [run_id for run_ids in dropped.values() for run_id in run_ids]
    if not ids:
        return None
    shown = ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")
    return (f"{len(ids)} duplicate run(s) (the same configuration and training seed as a newer "
            f"run) ignored, the newest kept: {shown}.")


def legacy_note(n_runs: int) -> str | None:
    """A note when ``n_runs`` runs recorded no settings (written before fsbench recorded them)."""
    if not n_runs:
        return None
    return (f"{n_runs} run(s) recorded no settings (written by an older fsbench): grouped by "
            "their summaries' method, protocol, preset, backbone and hard-task setting; runs of "
            "theirs that differed only in --set overrides cannot be told apart.")

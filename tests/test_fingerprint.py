"""fsbench.fingerprint: what summary.json records to tell configurations apart (issue 23)."""

from __future__ import annotations

import dataclasses
import json

from fsbench.config import RunConfig
from fsbench.fingerprint import fingerprint, flat_overrides, legacy_settings, run_settings
from fsbench.runner import Run, run

SHORT = {"episodic": {"iterations": 2, "val_every": 2, "val_episodes": 2}}


def settings_of(cfg: RunConfig) -> dict:
    r = Run(cfg, show_progress=False)
    return run_settings(r.resolved, r.precision.dtype)


def test_the_settings_are_the_whole_configuration_but_the_seed_and_where_it_runs(tmp_path):
    base = RunConfig(method="mtl_ht", preset="smoke", device="cpu", precision="fp32")
    s = settings_of(base)
    assert s["method"] == "mtl_ht" and s["episode_seed"] == 0 and s["precision"] == "fp32"
    assert s["hparams.ss_lr"] == 3e-3 and s["episodic.iterations"] == 12 and s["pretrain.epochs"] == 3
    assert s["hard_tasks.enabled"] is True and s["hard_tasks.mode"] == "extra"
    assert not {"seed", "output", "device", "cache_dir", "data_root", "resume", "overrides"} & set(s)
    same = [dataclasses.replace(base, seed=3), dataclasses.replace(base, output=tmp_path),
            dataclasses.replace(base, cache_dir=tmp_path), dataclasses.replace(base, backbone="conv4"),
            dataclasses.replace(base, ht_every=1), dataclasses.replace(base, hard_tasks=True)]
    assert {fingerprint(settings_of(c)) for c in same} == {fingerprint(s)}
    other = [dataclasses.replace(base, overrides={"hparams": {"ss_lr": 1e-12}}),
             dataclasses.replace(base, ht_mode="replace"), dataclasses.replace(base, ht_every=2),
             dataclasses.replace(base, ht_fill="random"), dataclasses.replace(base, ht_count=3),
             dataclasses.replace(base, episode_seed=1), dataclasses.replace(base, episodes=100),
             dataclasses.replace(base, backbone="conv4_32"), dataclasses.replace(base, method="mtl")]
    prints = [fingerprint(settings_of(c)) for c in other]
    assert fingerprint(s) not in prints and len(set(prints)) == len(other)


def test_hard_task_settings_change_nothing_while_hard_tasks_are_off():
    base = RunConfig(method="protonet", preset="smoke")
    assert settings_of(dataclasses.replace(base, ht_mode="replace", ht_every=3)) == settings_of(base)
    assert settings_of(base)["hard_tasks.enabled"] is False


def test_a_run_records_settings_fingerprint_and_overrides(tmp_path):
    cfg = RunConfig(method="protonet", preset="smoke", episodes=2, device="cpu", output=tmp_path / "out",
                    cache_dir=tmp_path / "cache", overrides={**SHORT, "hparams": {"lr": 1e-12}})
    summary = json.loads((run(cfg, show_progress=False).run_dir / "summary.json").read_text())
    assert summary["settings"] == settings_of(cfg)
    assert summary["config_fingerprint"] == fingerprint(summary["settings"])
    assert summary["overrides"] == {"episodic.iterations": 2, "episodic.val_every": 2,
                                    "episodic.val_episodes": 2, "hparams.lr": 1e-12}
    assert summary["settings"]["hparams.lr"] == 1e-12


def test_legacy_settings_come_from_the_summary_fields():
    summary = {"method": "mtl_ht", "dataset": "fc100", "backbone": "conv4", "way": 5, "shot": 5,
               "query": 15, "episodes": 600, "episode_seed": 0, "preset": "paper", "eval_split": "test",
               "hard_tasks": True, "hard_task_mode": "replace", "precision": "bf16", "seed": 4}
    s = legacy_settings(summary)
    assert s["hard_tasks.mode"] == "replace" and s["precision"] == "bf16" and "seed" not in s
    assert legacy_settings({**summary, "hard_tasks": False})["hard_tasks.enabled"] is False
    assert "hard_tasks.mode" not in legacy_settings({**summary, "hard_tasks": False})


def test_flat_overrides():
    assert flat_overrides({"hparams": {"lr": 0.1}, "episodic": {"iterations": 5}}) == {
        "hparams.lr": 0.1, "episodic.iterations": 5}
    assert flat_overrides({}) == {}

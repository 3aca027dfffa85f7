"""Shared check for the issue-14 method tests: a smoke run learns, and an interrupted run resumes.

    from smoke_resume import assert_smoke_learns_and_resumes
    assert_smoke_learns_and_resumes("tadam", tmp_path, monkeypatch)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import fsbench.engine.episodic as episodic
from fsbench.config import RunConfig
from fsbench.runner import run

CHANCE_5WAY = 20.0


def assert_training_state_round_trips(make, batch, way: int, tmp_path: Path) -> None:
    """Two steps, a checkpoint through the weights-only loader, then one more step on each:
    the method restored from the checkpoint continues bit for bit."""
    from fsbench.checkpoints import atomic_torch_save, safe_torch_load

    a = make().train()
    for _ in range(2):
        a.meta_train_step(*batch, way)
    atomic_torch_save({"method": a.state_dict(), "training": a.training_state()}, tmp_path / "ck.pt")
    saved = safe_torch_load(tmp_path / "ck.pt")
    b = make().train()
    b.load_state_dict(saved["method"])
    b.load_training_state(saved["training"])
    a.meta_train_step(*batch, way)
    b.meta_train_step(*batch, way)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=k)


class Interrupted(Exception):
    pass


def assert_smoke_learns_and_resumes(method: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    episodes: int = 60, at_least: float = 30.0) -> None:
    """Run ``method``'s smoke preset on the CI suite's data (synthetic_easy, 5-way 1-shot): it must score at least
    ``at_least`` % (chance: 20 %). Then run it again, interrupted at its second validation point
    (the first one's checkpoint is on disk), and resume: the resumed run must reproduce the
    uninterrupted run's per-episode accuracies exactly (on a shortened schedule)."""
    base = RunConfig(method=method, dataset="synthetic_easy", preset="smoke", episodes=episodes,
                     device="cpu", seed=0,
                     cache_dir=tmp_path / "cache", output=tmp_path / "full")
    full = run(base, show_progress=False)
    assert full.summary["accuracy"] >= at_least, (method, full.summary["accuracy"])

    real = episodic.evaluate_episodes
    calls = {"n": 0}

    def evaluate_then_interrupt(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Interrupted
        return real(*args, **kwargs)

    # The resume check runs a shortened schedule (two validation points) to keep the test fast.
    short = {"episodic": {"iterations": 8, "val_every": 4, "val_episodes": 5}}
    reference = run(dataclasses.replace(base, output=tmp_path / "short", overrides=short, episodes=10),
                    show_progress=False)
    part = dataclasses.replace(base, output=tmp_path / "part", overrides=short, episodes=10)
    with monkeypatch.context() as m:
        m.setattr(episodic, "evaluate_episodes", evaluate_then_interrupt)
        with pytest.raises(Exception):  # noqa: B017  (the runner may wrap it naming the plugin)
            run(part, show_progress=False)
    assert calls["n"] == 2, "the smoke preset must validate at least twice"
    [run_dir] = [p for p in (tmp_path / "part").iterdir() if p.is_dir()]
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / "summary.json").exists()
    resumed = run(dataclasses.replace(part, resume=True), show_progress=False)
    assert resumed.run_dir == run_dir
    assert resumed.accuracies.tolist() == reference.accuracies.tolist()
    assert resumed.summary["best_iteration"] == reference.summary["best_iteration"]

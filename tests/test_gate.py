"""The regression gate sees every method: each method, broken in a realistic way, fails
`fsbench compare` against the committed CI reference (reference/ci), and the failure names it.

Each test re-runs one method's CI-suite configuration (smoke preset, synthetic_easy, seed 0) with
one bug injected, on fewer test episodes (the gate compares the episodes both runs have), and
compares it with that method's reference run alone, timings ignored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fsbench.report.compare import compare_runs
from fsbench.runner import run
from fsbench.suite import ci_configs

ROOT = Path(__file__).resolve().parents[1]
#: FSBENCH_CI_REFERENCE points the gate tests at another reference folder (e.g. one generated
#: locally for methods the committed reference does not have yet).
REFERENCE = Path(os.environ.get("FSBENCH_CI_REFERENCE", ROOT / "reference" / "ci"))
EPISODES = 60


def reference_run(method: str) -> Path:
    for summary in sorted(REFERENCE.glob("*/summary.json")):
        if json.loads(summary.read_text())["method"] == method:
            return summary.parent
    raise AssertionError(f"no {method} run in {REFERENCE}")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gate-cache")  # one pre-training for finetune, mtl, mtl_ht


def _shuffle_training_labels(monkeypatch) -> None:
    """Query labels misaligned with their images in every meta-training task."""
    from fsbench.engine import episodic

    real = episodic._step

    def step(method, batch, split, normalize):
        gen = torch.Generator().manual_seed(0)
        perm = torch.randperm(batch.query_idx.shape[1], generator=gen)
        return real(method, type(batch)(batch.support_idx, batch.query_idx[:, perm], batch.classes,
                                        batch.spec), split, normalize)

    monkeypatch.setattr(episodic, "_step", step)


def _flip_prototype_distances(monkeypatch) -> None:
    import fsbench_plugins.protonet as protonet

    real = protonet.nearest_centroid_logits
    monkeypatch.setattr(protonet, "nearest_centroid_logits", lambda *a: -real(*a))


def _never_draw_hard_tasks(monkeypatch) -> None:
    from fsbench.engine.hardtasks import HardTaskMetaBatch

    monkeypatch.setattr(HardTaskMetaBatch, "extra_batches", lambda self, iteration: [])


def _misalign_finetune_support_labels(monkeypatch) -> None:
    """The per-episode head is fitted on support labels that no longer match their images."""
    from fsbench_plugins.baselines.finetune import Finetune

    real = Finetune.fit_heads

    def fit_heads(self, support, support_y, way):
        return real(self, support, support_y.roll(1, dims=1), way)

    monkeypatch.setattr(Finetune, "fit_heads", fit_heads)


def _misalign_simpleshot_support_labels(monkeypatch) -> None:
    """The class centroids are built from support labels that no longer match their images."""
    from fsbench_plugins.simple_baselines.simpleshot import SimpleShot

    real = SimpleShot.classify
    monkeypatch.setattr(SimpleShot, "classify",
                        lambda self, s, sy, q, way: real(self, s, sy.roll(1, dims=1), q, way))


def _flip_meta_baseline_similarity(monkeypatch) -> None:
    import fsbench_plugins.simple_baselines.meta_baseline as meta_baseline

    real = meta_baseline.cosine_logits
    monkeypatch.setattr(meta_baseline, "cosine_logits", lambda *a: -real(*a))


def _none(monkeypatch) -> None:
    pass


#: method -> (what breaks it, run overrides)
BREAKAGES: dict[str, tuple[Callable, dict]] = {
    "protonet": (_flip_prototype_distances, {}),
    "finetune": (_misalign_finetune_support_labels, {}),
    "scratch": (_none, {"hparams": {"inner_lr": 1e-12}}),  # no adaptation to the task
    # Frozen scale-shift parameters are no breakage on synthetic_easy (the frozen pre-trained
    # features and the meta-learned FC already separate its classes): the base learner that
    # never adapts is.
    "mtl": (_none, {"hparams": {"inner_lr": 1e-12}}),
    "mtl_ht": (_never_draw_hard_tasks, {}),
    "maml": (_none, {"hparams": {"inner_lr": 1e-12}}),
    "maml_ht": (_never_draw_hard_tasks, {}),
    "matchingnet": (_shuffle_training_labels, {}),
    "meta_lstm": (_shuffle_training_labels, {}),
    "tadam": (_shuffle_training_labels, {}),
    "simpleshot": (_misalign_simpleshot_support_labels, {}),
    "baselinepp": (_none, {"hparams": {"lr": 1e-12}}),  # the per-episode head never trains
    "rfs": (_none, {"hparams": {"c": 1e-9}}),  # the regression's weights crushed to zero
    "meta_baseline": (_flip_meta_baseline_similarity, {}),
}


@pytest.mark.parametrize("method", sorted(BREAKAGES))
def test_a_broken_method_fails_the_gate_by_name(method, monkeypatch, tmp_path, cache):
    baseline = reference_run(method)
    breakage, overrides = BREAKAGES[method]
    breakage(monkeypatch)
    (cfg,) = [c for c in ci_configs(tmp_path / "new", cache) if c.method == method]
    run(replace(cfg, episodes=EPISODES, overrides=overrides), show_progress=False)
    report = compare_runs(baseline, tmp_path / "new", time_floor=1e9)
    assert report.regressed_methods == [method], [r.reasons + r.notes for r in report.rows]


def test_every_suite_method_has_a_breakage_test():
    methods = {json.loads(p.read_text())["method"] for p in REFERENCE.glob("*/summary.json")}
    assert methods == set(BREAKAGES)


def test_every_reference_method_is_well_above_chance():
    for summary in REFERENCE.glob("*/summary.json"):
        s = json.loads(summary.read_text())
        assert s["accuracy"] >= 100 / s["way"] + 10, (s["method"], s["accuracy"])

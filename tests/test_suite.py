"""The gated suites: which runs they make, and what their committed references show.

The ``real`` suite's reference (``reference/real/``) is checked here without running anything:
every bundled method learns (its accuracy well above chance on real miniImageNet val) and the
paper's main ordering shows where a CPU budget shows it (finetune above scratch, paired).
``tests/test_gate.py`` proves that a broken method fails the gates.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fsbench import cli
from fsbench.plugins import default_registry
from fsbench.report.compare import compare_runs
from fsbench.results import load_runs
from fsbench.stats import paired_difference
from fsbench.suite import (
    REAL_BUDGET,
    REAL_EPISODES,
    REAL_HPARAMS,
    REAL_SHOT,
    REAL_TASKS,
    SUITES,
    ci_configs,
    real_configs,
)

ROOT = Path(__file__).resolve().parents[1]
REAL_REFERENCE = ROOT / "reference" / "real"
CHANCE = 100 / 5


def test_ci_suite_pins_cpu_and_fp32_for_every_smoke_method(tmp_path):
    configs = ci_configs(tmp_path)
    registry = default_registry()
    assert {c.method for c in configs} == {n for n, r in registry.methods.items() if "smoke" in r.presets}
    assert {(c.device, c.precision, c.preset, c.dataset) for c in configs} == {
        ("cpu", "fp32", "smoke", "synthetic_easy")}


def test_real_suite_cuts_every_quick_preset_to_its_budget(tmp_path):
    configs = real_configs(tmp_path, None, tmp_path)
    registry = default_registry()
    assert {c.method for c in configs} == {n for n, r in registry.methods.items() if "quick" in r.presets}
    for cfg in configs:
        preset = registry.methods[cfg.method].presets["quick"]
        assert (cfg.device, cfg.precision, cfg.preset, cfg.eval_split) == ("cpu", "fp32", "quick", "val")
        assert (cfg.shot, cfg.episodes) == (REAL_SHOT, REAL_EPISODES)
        if preset.pretrain is not None:
            assert cfg.overrides["pretrain"] == REAL_BUDGET["pretrain"]
        if preset.episodic is not None:
            episodic = cfg.overrides["episodic"]
            meta_batch = preset.episodic.meta_batch
            tasks = episodic["iterations"] * meta_batch
            budget = REAL_TASKS.get(cfg.method, REAL_BUDGET["episodic"]["tasks"])
            # the most whole meta-batches within the budget, at least one
            assert tasks == max(meta_batch, budget - budget % meta_batch)
            assert episodic["val_every"] == episodic["iterations"]
            assert episodic["val_episodes"] == REAL_BUDGET["episodic"]["val_episodes"]
        assert ("pretrain" in cfg.overrides) == (preset.pretrain is not None)
        # a changed hyperparameter is one the method has (a misspelt name would fail the run)
        assert cfg.overrides.get("hparams") == REAL_HPARAMS.get(cfg.method)
        assert all(hasattr(preset.hparams, key) for key in cfg.overrides.get("hparams", {}))
    assert set(REAL_HPARAMS) <= {c.method for c in configs}
    # One pre-training budget for all: the methods that pre-train the same way share the backbone.
    assert len({json.dumps(c.overrides.get("pretrain"), sort_keys=True) for c in configs}) <= 2


@pytest.mark.parametrize("root", [None, "missing"])
def test_real_suite_without_data_is_a_one_line_error(tmp_path, capsys, root):
    argv = ["run", "--suite", "real", "--output", str(tmp_path / "out")]
    if root:
        argv += ["--data-root", str(tmp_path / root)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fsbench: error: --suite real") and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_every_suite_is_documented_in_run_help(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for name in SUITES:
        assert f"{name}:" in out


# -- the committed reference of the real suite -------------------------------------------------


@pytest.fixture(scope="module")
def real_reference():
    if not REAL_REFERENCE.is_dir():
        pytest.fail(f"{REAL_REFERENCE} is missing: the real-data gate has no reference")
    return load_runs(REAL_REFERENCE).set_index("method")


def test_real_reference_has_every_quick_method(real_reference, tmp_path):
    expected = {c.method for c in real_configs(tmp_path, None, tmp_path)}
    assert set(real_reference.index) == expected
    assert set(real_reference["eval_split"]) == {"val"} and set(real_reference["precision"]) == {"fp32"}


def test_every_method_learns_on_real_data(real_reference):
    """Each method's 95% interval lies well above chance (20% in 5-way)."""
    low = real_reference["accuracy"] - real_reference["ci95"]
    not_learning = sorted(low[low < CHANCE + 5].index)
    assert not not_learning, f"at or near chance on miniImageNet val: {not_learning}"


def test_the_papers_main_ordering_shows_on_real_data(real_reference):
    """Starting from a pre-trained backbone beats training the same learner from scratch."""
    finetune = real_reference.loc["finetune", "episode_acc"]
    scratch = real_reference.loc["scratch", "episode_acc"]
    res = paired_difference(scratch * 100, finetune * 100)
    assert res.significant and res.mean_diff > 0, res


def test_the_real_reference_passes_its_own_gate(real_reference):
    report = compare_runs(REAL_REFERENCE, REAL_REFERENCE)
    assert not report.failed and len(report.rows) == len(real_reference)


# -- the real-data gate catches the regression it was built for ---------------------------------

REAL_DATA = ROOT.parent / "shared" / "data" / "miniimagenet"


@pytest.mark.slow
@pytest.mark.realdata
def test_the_previous_protonet_preset_fails_the_real_gate(tmp_path, monkeypatch):
    """ProtoNets' `quick` preset before the fix (flattened 1,600-d squared distances, the learning
    rate halved every 400 episodes) lost about nine points in 5-shot: run at the real suite's
    budget against the committed reference, it must fail the gate by name."""
    from dataclasses import replace as dc_replace

    import fsbench_plugins.protonet as protonet
    from fsbench.runner import run

    if not REAL_DATA.is_dir():
        pytest.skip(f"no miniImageNet at {REAL_DATA}")
    current = protonet.PRESETS["quick"]
    previous = dc_replace(current, backbone_kwargs={"pool": "flatten"},
                          hparams=protonet.ProtoNetHparams(lr_decay_every=400, pool_below_shot=2))
    monkeypatch.setitem(protonet.PRESETS, "quick", previous)
    (cfg,) = [c for c in real_configs(tmp_path / "new", None, REAL_DATA) if c.method == "protonet"]
    run(cfg, show_progress=False)
    baseline = [p.parent for p in REAL_REFERENCE.glob("*/summary.json")
                if json.loads(p.read_text())["method"] == "protonet"]
    report = compare_runs(baseline, tmp_path / "new")
    assert report.regressed_methods == ["protonet"], [r.reasons + r.notes for r in report.rows]

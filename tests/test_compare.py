"""The regression gate: paired, unpaired and timing checks, missing and new configurations."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from fsbench.cli import add_compare_parser
from fsbench.report.compare import (
    DEFAULT_MIN_DROP,
    DEFAULT_TIME_RATIO,
    DEFAULT_TOLERANCE,
    compare_runs,
)
from fsbench.results import ResultsError as ReportError

try:
    from runfactory import make_run, recorded_run
except ImportError:  # tests/ imported as a package
    from tests.runfactory import make_run, recorded_run


def accs(mean: float, n: int = 50, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    return [round(v * 75) / 75 for v in np.clip(mean + rng.normal(0, 0.12, n), 0, 1)]


@pytest.fixture
def baseline(tmp_path):
    root = tmp_path / "baseline"
    make_run(root, "protonet", accs(0.5, seed=1))
    make_run(root, "mtl", accs(0.6, seed=2))
    return root


def copy_runs(src, dst, change=None):
    """Re-create every run of ``src`` under ``dst`` (same episodes), optionally changed per method."""
    from fsbench.results import load_runs

    for run in load_runs(src).itertuples():
        values = list(run.episode_acc)
        overrides = {
            k: getattr(run, k)
            for k in (
                "dataset",
                "shot",
                "seed",
                "way",
                "query",
                "preset",
                "backbone",
                "train_seconds",
                "eval_seconds",
            )
        }
        if change:
            values, overrides = change(run.method, values, overrides)
        make_run(dst, run.method, values, **overrides)
    return dst


def cli(argv, capsys):
    parser = argparse.ArgumentParser(prog="fsbench")
    add_compare_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["compare", *map(str, argv)])
    code = args.func(args)
    return code, capsys.readouterr().out


def test_defaults():
    assert (DEFAULT_TOLERANCE, DEFAULT_MIN_DROP, DEFAULT_TIME_RATIO) == (2.0, 1.0, 3.0)


def test_identical_runs_pass(baseline, tmp_path, capsys):
    new = copy_runs(baseline, tmp_path / "new")
    report = compare_runs(baseline, new)
    assert not report.failed
    assert {r.status for r in report.rows} == {"ok"}
    assert all(r.test == "paired" and r.diff == 0 and not r.significant for r in report.rows)
    code, out = cli([baseline, new], capsys)
    assert code == 0 and "OK" in out


def test_paired_regression_fails_naming_method(baseline, tmp_path, capsys):
    def worse(method, values, overrides):
        if method == "mtl":  # 10 points lower on most episodes
            values = [max(0.0, v - 0.1) if i % 5 else v for i, v in enumerate(values)]
        return values, overrides

    new = copy_runs(baseline, tmp_path / "new", worse)
    report = compare_runs(baseline, new)
    assert report.failed and report.regressed_methods == ["mtl"]
    row = next(r for r in report.rows if r.method == "mtl")
    assert row.status == "regression" and row.test == "paired" and row.significant
    assert row.diff < -5
    code, out = cli([baseline, new], capsys)
    assert code == 1
    assert "FAIL mtl" in out and "REGRESSION" in out
    assert "FAIL protonet" not in out


def test_a_few_flipped_queries_pass(baseline, tmp_path):
    """Another CPU/torch may flip a handful of queries: significant, but far below min_drop."""

    def flip(method, values, overrides):
        if method == "mtl":
            values = [max(0.0, v - 1 / 75) if i < 8 else v for i, v in enumerate(values)]
        return values, overrides

    report = compare_runs(baseline, copy_runs(baseline, tmp_path / "new", flip))
    row = next(r for r in report.rows if r.method == "mtl")
    assert row.significant and row.diff < 0  # the paired test alone would fail it
    assert row.status == "ok" and not report.failed


def test_unpaired_uses_tolerance(baseline, tmp_path):
    def other_seed(drop):
        def change(method, values, overrides):
            overrides["seed"] = 5
            if method == "mtl":
                values = [max(0.0, v - drop) for v in values]
            return values, overrides

        return change

    ok = compare_runs(baseline, copy_runs(baseline, tmp_path / "a", other_seed(0.01)))
    assert not ok.failed and {r.test for r in ok.rows} == {"unpaired"}
    bad = compare_runs(baseline, copy_runs(baseline, tmp_path / "b", other_seed(0.05)))
    assert bad.regressed_methods == ["mtl"]
    assert not compare_runs(baseline, tmp_path / "b", tolerance=6.0).failed


def test_time_ratio_regression(baseline, tmp_path, capsys):
    def slow(method, values, overrides):
        if method == "protonet":
            overrides["train_seconds"] = overrides["train_seconds"] * 4
        return values, overrides

    new = copy_runs(baseline, tmp_path / "new", slow)
    report = compare_runs(baseline, new)
    assert report.regressed_methods == ["protonet"]
    assert "train time" in next(r for r in report.rows if r.method == "protonet").reasons[0]
    assert not compare_runs(baseline, new, time_ratio=5.0).failed
    code, _ = cli([baseline, new, "--time-ratio", "5"], capsys)
    assert code == 0


def test_sub_second_times_are_noise(tmp_path):
    make_run(tmp_path / "a", "protonet", [0.5, 0.6], eval_seconds=0.1, train_seconds=0.2)
    make_run(tmp_path / "b", "protonet", [0.5, 0.6], eval_seconds=0.9, train_seconds=2.5)  # 9x, 12x
    assert not compare_runs(tmp_path / "a", tmp_path / "b").failed
    make_run(tmp_path / "c", "protonet", [0.5, 0.6], eval_seconds=60.0, train_seconds=0.2)
    assert compare_runs(tmp_path / "a", tmp_path / "c").failed


def test_cached_pretraining_in_baseline_is_not_compared(tmp_path):
    make_run(tmp_path / "a", "mtl", [0.5, 0.6], pretrain_seconds=0.0)
    make_run(tmp_path / "b", "mtl", [0.5, 0.6], pretrain_seconds=300.0)
    assert not compare_runs(tmp_path / "a", tmp_path / "b").failed
    make_run(tmp_path / "c", "mtl", [0.5, 0.6], pretrain_seconds=50.0)
    assert compare_runs(tmp_path / "c", tmp_path / "b").failed


def test_missing_method_fails_and_new_method_is_info(baseline, tmp_path, capsys):
    new = tmp_path / "new"
    copy_runs(baseline, new, lambda m, v, o: (v, {**o, "seed": 0}))
    import shutil

    for run in new.iterdir():
        if run.name.startswith("protonet"):
            shutil.rmtree(run)
    make_run(new, "maml", accs(0.45))
    report = compare_runs(baseline, new)
    statuses = {r.method: r.status for r in report.rows}
    assert statuses == {"protonet": "missing", "mtl": "ok", "maml": "new"}
    assert report.failed and report.regressed_methods == ["protonet"]
    code, out = cli([baseline, new, "--json"], capsys)
    assert code == 1
    data = json.loads(out)
    assert data["ok"] is False
    assert data["regressed_methods"] == ["protonet"]
    assert len(data["missing"]) == 1 and data["missing"][0].startswith("protonet")
    assert data["new"][0].startswith("maml")


def test_json_output_parses_on_success(baseline, tmp_path, capsys):
    new = copy_runs(baseline, tmp_path / "new")
    code, out = cli([baseline, new, "--json"], capsys)
    data = json.loads(out)
    assert code == 0 and data["ok"] is True and data["regressed_methods"] == []
    assert data["thresholds"] == {
        "tolerance": 2.0,
        "min_drop": 1.0,
        "time_ratio": 3.0,
        "time_floor": 1.0,
    }
    row = data["rows"][0]
    assert {"method", "setting", "status", "diff", "ci95", "n", "reasons"} <= set(row)


def test_runs_differing_in_preset_do_not_match(baseline, tmp_path):
    new = copy_runs(baseline, tmp_path / "new", lambda m, v, o: (v, {**o, "preset": "quick"}))
    report = compare_runs(baseline, new)
    assert sorted(r.status for r in report.rows) == ["missing", "missing", "new", "new"]


def test_bad_inputs(baseline, tmp_path):
    with pytest.raises(ReportError, match="no such"):
        compare_runs(baseline, tmp_path / "absent")
    with pytest.raises(ReportError, match="time_ratio"):
        compare_runs(baseline, baseline, time_ratio=0.5)


def test_hard_tasks_never_drawn_fail_the_gate_even_at_equal_accuracy(tmp_path):
    values = accs(0.6, seed=4)
    make_run(tmp_path / "base", "mtl_ht", values, hard_tasks=True, hard_tasks_used=24)
    make_run(tmp_path / "new", "mtl_ht", values, hard_tasks=True, hard_tasks_used=0)
    report = compare_runs(tmp_path / "base", tmp_path / "new")
    assert report.regressed_methods == ["mtl_ht"]
    assert "no hard task drawn" in report.failures[0].reasons[0]
    make_run(tmp_path / "ok", "mtl_ht", values, hard_tasks=True, hard_tasks_used=20)
    assert not compare_runs(tmp_path / "base", tmp_path / "ok").failed


# -- matching and verdicts (issue 23) -----------------------------------------------------------

def test_hard_task_modes_and_overrides_are_separate_rows_not_duplicates(tmp_path):
    ht = {"hard_tasks.enabled": True, "hard_tasks.every": 1, "hard_tasks.mode": "extra"}
    for side in ("baseline", "new"):
        recorded_run(tmp_path / side, "mtl", accs(0.6, seed=1), **ht)
        recorded_run(tmp_path / side, "mtl", accs(0.6, seed=2), **{**ht, "hard_tasks.mode": "replace"})
        recorded_run(tmp_path / side, "mtl", accs(0.6, seed=3), **{**ht, "hard_tasks.every": 2})
        recorded_run(tmp_path / side, "protonet", accs(0.5, seed=4))
        recorded_run(tmp_path / side, "protonet", accs(0.3, seed=5), overrides={"hparams.lr": 1e-12},
                     **{"hparams.lr": 1e-12})
    report = compare_runs(tmp_path / "baseline", tmp_path / "new")
    assert not report.failed and len(report.rows) == 5
    assert all(r.test == "paired" and not any("duplicate" in n for n in r.notes) for r in report.rows)
    settings = sorted(r.setting for r in report.rows)
    assert settings == ["synthetic 1-shot [q15, conv4, smoke, HT, ht_every=2]",
                        "synthetic 1-shot [q15, conv4, smoke, HT, ht_mode=replace]",
                        "synthetic 1-shot [q15, conv4, smoke, HT]",
                        "synthetic 1-shot [q15, conv4, smoke, hparams.lr=1e-12]",
                        "synthetic 1-shot [q15, conv4, smoke]"]


def test_a_reference_of_an_older_fsbench_still_meets_new_runs_whose_defaults_changed(tmp_path):
    """reference/ci was written without settings; a new default (here hparams.lr) is no reason
    to unpair a configuration: the gate must see what it changed."""
    make_run(tmp_path / "baseline", "mtl_ht", accs(0.6, seed=1), hard_tasks=True, hard_task_mode="extra")
    recorded_run(tmp_path / "new", "mtl_ht", accs(0.3, seed=1), **{
        "hard_tasks.enabled": True, "hard_tasks.every": 1, "hard_tasks.count": None,
        "hard_tasks.fill": "confused", "hard_tasks.mode": "extra", "hparams.lr": 0.5})
    [row] = compare_runs(tmp_path / "baseline", tmp_path / "new").rows
    assert row.status == "regression" and row.test == "paired"


def test_identical_reruns_are_not_testable_and_pass(baseline, tmp_path):
    report = compare_runs(baseline, copy_runs(baseline, tmp_path / "new"))
    assert all(r.verdict == "not testable" and r.status == "ok" for r in report.rows)
    assert all(any(n.startswith("not testable") for n in r.notes) for r in report.rows)
    assert report.to_dict()["rows"][0]["verdict"] == "not testable"


def test_the_same_drop_on_every_episode_fails_though_not_testable(tmp_path):
    make_run(tmp_path / "baseline", "protonet", [1.0] * 50)
    make_run(tmp_path / "new", "protonet", [0.2] * 50)  # a method stuck on one class: 20% each
    [row] = compare_runs(tmp_path / "baseline", tmp_path / "new").rows
    assert row.verdict == "not testable" and row.status == "regression"
    assert "the same drop on every one" in row.reasons[0]


def test_duplicates_are_named(tmp_path):
    old = make_run(tmp_path / "baseline", "protonet", accs(0.5, seed=1), created="2024-01-01T00:00:00")
    make_run(tmp_path / "baseline", "protonet", accs(0.5, seed=1), created="2024-02-01T00:00:00")
    make_run(tmp_path / "new", "protonet", accs(0.5, seed=1))
    [row] = compare_runs(tmp_path / "baseline", tmp_path / "new").rows
    assert any(old.name in n and "duplicate" in n for n in row.notes)

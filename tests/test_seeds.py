"""Training seeds apart from test episodes: one bank of episodes, seed-level CIs and tests."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fsbench import cli
from fsbench.report.aggregate import aggregate, paired_table, seed_paired_table
from fsbench.report.compare import compare_runs
from fsbench.report.render import render
from fsbench.report.tables import accuracy_table, seed_paired_view
from fsbench.results import load_runs
from fsbench.stats import seed_ci95, seed_paired_difference, t95, t_quantile, welch_difference

try:
    from runfactory import make_run
except ImportError:  # tests/ imported as a package
    from tests.runfactory import make_run


def accs(mean: float, n: int = 60, seed: int = 0, spread: float = 0.1) -> list[float]:
    rng = np.random.default_rng(seed)
    return [round(v * 75) / 75 for v in np.clip(mean + rng.normal(0, spread, n), 0, 1)]


# -- statistics --------------------------------------------------------------------------------


@pytest.mark.parametrize(("df", "expected"), [(1, 12.7062), (2, 4.3027), (4, 2.7764),
                                              (10, 2.2281), (29, 2.0452), (200, 1.9719)])
def test_t_quantile_matches_the_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)


def test_seed_ci_is_student_t_over_the_per_seed_means():
    mean, ci = seed_ci95([60.0, 62.0, 61.0])
    # std(ddof=1) = 1, k = 3, t(0.975, 2) = 4.3027
    assert mean == 61.0 and ci == pytest.approx(4.3027 / math.sqrt(3), abs=1e-4)
    assert math.isnan(seed_ci95([61.0])[1])  # one seed: no spread to estimate


def test_seed_paired_difference_needs_two_seeds_and_a_consistent_sign():
    assert not seed_paired_difference([5.0]).significant
    assert seed_paired_difference([1.0, 1.2, 0.9]).significant
    assert not seed_paired_difference([1.0, -1.2, 0.9]).significant


def test_welch_difference_against_a_hand_computation():
    res = welch_difference([60.0, 61.0, 62.0], [63.0, 65.0, 67.0])
    # var/n: 1/3 and 4/3; se = sqrt(5/3); df = (5/3)^2 / ((1/3)^2/2 + (4/3)^2/2) = 2.941...
    se = math.sqrt(5 / 3)
    df = (5 / 3) ** 2 / ((1 / 9) / 2 + (16 / 9) / 2)
    assert res.mean_diff == pytest.approx(4.0)
    assert res.ci95 == pytest.approx(t_quantile(0.975, df) * se, rel=1e-6)
    assert not res.significant  # 4.0 < 4.16: three seeds a side cannot tell
    assert welch_difference([60.0, 61.0, 62.0], [70.0, 71.0, 72.0]).significant


# -- runs: one bank of test episodes for every training seed ------------------------------------


def _summaries(root):
    return {(s["seed"], s["episode_seed"]): s for s in
            (json.loads(p.read_text()) for p in root.glob("*/summary.json"))}


def test_training_seeds_share_the_test_episodes(tmp_path, capsys):
    common = ["run", "--method", "protonet", "--preset", "smoke", "--episodes", "20",
              "--output", str(tmp_path), "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    assert cli.main([*common, "--seed", "0,1"]) == 0
    assert cli.main([*common, "--seed", "2", "--episode-seed", "5"]) == 0
    runs = _summaries(tmp_path)
    assert set(runs) == {(0, 0), (1, 0), (2, 5)}
    # Same episode seed: the identical bank of test episodes, whatever the training seed.
    assert runs[(0, 0)]["episode_bank"] == runs[(1, 0)]["episode_bank"]
    assert runs[(2, 5)]["episode_bank"] != runs[(0, 0)]["episode_bank"]
    # The training seeds trained different models.
    assert runs[(0, 0)]["accuracy"] != runs[(1, 0)]["accuracy"]
    names = sorted(p.name for p in tmp_path.glob("protonet_*"))
    assert any("_s0_e0_" in n for n in names) and any("_s2_e5_" in n for n in names)
    config = json.loads(next(tmp_path.glob("*_s1_e0_*/config.json")).read_text())
    assert config["run"]["seed"] == 1 and config["run"]["episode_seed"] == 0


def test_bad_seed_list_is_a_one_line_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["run", "--method", "protonet", "--seed", "0,x"])
    assert info.value.code == 2
    assert "expected integers separated by commas" in capsys.readouterr().err


# -- reports ------------------------------------------------------------------------------------


@pytest.fixture
def three_seeds(tmp_path):
    root = tmp_path / "base"
    for seed, (p, f) in enumerate([(0.50, 0.55), (0.52, 0.58), (0.49, 0.56)]):
        make_run(root, "protonet", accs(p, seed=10 + seed), seed=seed, episode_seed=0)
        make_run(root, "finetune", accs(f, seed=20 + seed), seed=seed, episode_seed=0)
    return root


def test_aggregate_reports_both_intervals(three_seeds):
    df = load_runs(three_seeds)
    agg = aggregate(df).set_index("method")
    proto = df[df.method == "protonet"].sort_values("seed")
    per_seed = proto["accuracy"].to_numpy(float)
    assert agg.loc["protonet", "n_seeds"] == 3
    assert agg.loc["protonet", "accuracy"] == pytest.approx(per_seed.mean())
    assert agg.loc["protonet", "seed_ci95"] == pytest.approx(seed_ci95(per_seed)[1])
    # The seeds share episodes: the episode CI is over the seed-averaged episode accuracies.
    averaged = np.mean(np.stack(list(proto["episode_acc"])), axis=0) * 100
    assert agg.loc["protonet", "ci_source"] == "seed-averaged"
    assert agg.loc["protonet", "ci95"] == pytest.approx(t95(59) * averaged.std(ddof=1) / math.sqrt(60))


def test_table_shows_the_seed_interval_beside_the_episode_interval(three_seeds):
    view = accuracy_table(load_runs(three_seeds))
    cell = view.cells.iloc[0, 0]
    assert "(seeds ± " in cell and "n=3)" in cell
    text = render(view, "markdown")
    assert "between the k seeds" in text and "t(0.975, k-1)" in text


def test_one_seed_says_the_ci_covers_episodes_only(tmp_path):
    make_run(tmp_path, "protonet", accs(0.5))
    view = accuracy_table(load_runs(tmp_path))
    assert "seeds" not in view.cells.iloc[0, 0]
    assert any("covers the test episodes only" in note for note in view.notes)


def test_paired_differences_per_seed_then_across_seeds(three_seeds):
    df = load_runs(three_seeds)
    per_seed = paired_table(df, "protonet")
    assert sorted(per_seed["seed"]) == [0, 1, 2]  # seed s pairs with seed s only
    for row in per_seed.itertuples():
        ref = df[(df.method == "protonet") & (df.seed == row.seed)].iloc[0]
        other = df[(df.method == "finetune") & (df.seed == row.seed)].iloc[0]
        assert row.mean_diff == pytest.approx((other.episode_acc - ref.episode_acc).mean() * 100)
    across = seed_paired_table(per_seed)
    assert len(across) == 1 and across.iloc[0]["n_seeds"] == 3
    expected = seed_paired_difference(per_seed["mean_diff"].to_numpy())
    assert across.iloc[0]["ci95"] == pytest.approx(expected.ci95)
    assert across.iloc[0]["significant"]  # +5..+6 points on every seed
    assert "across training seeds" in render(seed_paired_view(across), "markdown")


def test_cli_report_prints_the_seed_level_paired_table(three_seeds, capsys):
    assert cli.main(["report", str(three_seeds), "--paired", "protonet", "--format",
                     "markdown"]) == 0
    out = capsys.readouterr().out
    assert "Paired comparison against protonet, across training seeds" in out


# -- the gate -----------------------------------------------------------------------------------


def test_compare_tests_across_seeds_when_both_sides_have_several(three_seeds, tmp_path):
    new = tmp_path / "new"
    for seed in range(3):  # finetune loses 7-9 points on every seed, same episodes
        make_run(new, "protonet", accs([0.50, 0.52, 0.49][seed], seed=10 + seed), seed=seed,
                 episode_seed=0)
        make_run(new, "finetune", accs([0.47, 0.51, 0.47][seed], seed=20 + seed), seed=seed,
                 episode_seed=0)
    report = compare_runs(three_seeds, new)
    rows = {r.method: r for r in report.rows}
    assert rows["finetune"].test == "seed-paired" and rows["finetune"].n == 3
    assert report.regressed_methods == ["finetune"]
    assert rows["protonet"].status == "ok"


def test_compare_pairs_a_seed_only_on_the_same_episodes(three_seeds, tmp_path):
    new = tmp_path / "new"
    for seed in range(3):  # legacy runs: the episodes were drawn with the training seed
        make_run(new, "protonet", accs([0.50, 0.52, 0.49][seed], seed=10 + seed), seed=seed)
    row = next(r for r in compare_runs(three_seeds, new).rows if r.method == "protonet")
    assert row.paired_seeds == [0] and row.test == "paired"


def test_compare_without_shared_seeds_uses_welch_between_seed_sets(three_seeds, tmp_path):
    new = tmp_path / "new"
    for seed in (7, 8, 9):
        make_run(new, "protonet", accs(0.50, seed=seed), seed=seed)
        make_run(new, "finetune", accs(0.40, seed=seed + 50), seed=seed)
    rows = {r.method: r for r in compare_runs(three_seeds, new).rows}
    assert rows["finetune"].test == "seed-unpaired" and rows["finetune"].status == "regression"
    assert rows["protonet"].status == "ok"

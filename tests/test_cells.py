"""Report cells and pairing (issue 23): a cell is a whole configuration except the training seed,
labels tell cells apart, and each run is paired with exactly one run of each reference variant."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fsbench.report.aggregate import aggregate, paired_table, seed_paired_table
from fsbench.report.render import render
from fsbench.report.tables import accuracy_table, paired_view, seed_paired_view
from fsbench.results import load_runs
from fsbench.stats import seed_paired_difference

try:
    from runfactory import make_run, recorded_run
except ImportError:  # tests/ imported as a package
    from tests.runfactory import make_run, recorded_run


def accs(mean: float, n: int = 40, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    return [round(v * 75) / 75 for v in np.clip(mean + rng.normal(0, 0.1, n), 0, 1)]


def by_label(agg: pd.DataFrame) -> dict[str, pd.Series]:
    return {row["label"]: row for _, row in agg.iterrows()}


# -- cells ---------------------------------------------------------------------------------------


def test_an_override_makes_its_own_cell_with_a_label_that_names_it(tmp_path):
    """The issue's reproduction: protonet with and without --set hparams.lr=1e-12, one seed."""
    recorded_run(tmp_path, "protonet", accs(0.26, seed=1))
    recorded_run(tmp_path, "protonet", accs(0.21, seed=2), **{"hparams.lr": 1e-12})
    agg = aggregate(load_runs(tmp_path))
    assert sorted(agg["label"]) == ["protonet (lr=0.001)", "protonet (lr=1e-12)"]
    assert agg["n_seeds"].tolist() == [1, 1] and agg["duplicates_dropped"].sum() == 0
    view = accuracy_table(load_runs(tmp_path))
    assert list(view.cells.index) == ["protonet (lr=0.001)", "protonet (lr=1e-12)"]
    assert not any("duplicate" in note for note in view.notes)


def test_only_true_duplicates_are_dropped_and_the_note_names_them(tmp_path):
    old = recorded_run(tmp_path, "mtl", accs(0.5), created="2024-01-01T00:00:00")
    recorded_run(tmp_path, "mtl", accs(0.6), created="2024-02-01T00:00:00")
    recorded_run(tmp_path, "mtl", accs(0.6), seed=1)
    agg = aggregate(load_runs(tmp_path))
    [cell] = agg.itertuples()
    assert cell.n_seeds == 2 and cell.seeds == (0, 1) and cell.dropped_run_ids == (old.name,)
    note = next(n for n in accuracy_table(load_runs(tmp_path)).notes if "duplicate" in n)
    assert old.name in note and note.startswith("1 duplicate run(s)")


@pytest.mark.parametrize("recorded", [True, False])
def test_runs_that_share_a_seed_but_not_the_episode_seed_are_both_kept(tmp_path, recorded):
    """Recorded settings carry the episode seed; summaries of an older fsbench do too."""
    make = recorded_run if recorded else make_run
    make(tmp_path, "protonet", accs(0.5, seed=1), episode_seed=0)
    make(tmp_path, "protonet", accs(0.5, seed=2), episode_seed=1)
    agg = aggregate(load_runs(tmp_path))
    assert sorted(agg["label"]) == ["protonet (episode_seed=0)", "protonet (episode_seed=1)"]
    assert agg["duplicates_dropped"].sum() == 0 and agg["n_seeds"].tolist() == [1, 1]


def test_hard_task_mode_cadence_and_precision_separate_cells(tmp_path):
    recorded_run(tmp_path, "mtl", accs(0.5))
    ht = {"hard_tasks.enabled": True, "hard_tasks.every": 1, "hard_tasks.mode": "extra"}
    recorded_run(tmp_path, "mtl", accs(0.5), **ht)
    recorded_run(tmp_path, "mtl", accs(0.5), **{**ht, "hard_tasks.mode": "replace"})
    recorded_run(tmp_path, "mtl", accs(0.5), **{**ht, "hard_tasks.every": 3})
    recorded_run(tmp_path, "mtl", accs(0.5), precision="bf16")
    labels = sorted(aggregate(load_runs(tmp_path))["label"])
    assert labels == [
        "mtl (precision=bf16, hard_tasks=off)",
        "mtl (precision=fp32, hard_tasks=off)",
        "mtl (precision=fp32, hard_tasks=on, ht_every=1, ht_mode=extra)",
        "mtl (precision=fp32, hard_tasks=on, ht_every=1, ht_mode=replace)",
        "mtl (precision=fp32, hard_tasks=on, ht_every=3, ht_mode=extra)",
    ]


def test_a_setting_varying_only_across_columns_is_not_in_the_label(tmp_path):
    """ProtoNets' paper preset trains 30-way for 1-shot and 20-way for 5-shot: one row."""
    recorded_run(tmp_path, "protonet", accs(0.5), shot=1, **{"episodic.train_way": 30})
    recorded_run(tmp_path, "protonet", accs(0.6), shot=5, **{"episodic.train_way": 20})
    recorded_run(tmp_path, "protonet", accs(0.4), shot=1, **{"episodic.train_way": 30, "hparams.lr": 0.1})
    agg = aggregate(load_runs(tmp_path))
    assert sorted(agg["label"]) == ["protonet (lr=0.001)", "protonet (lr=0.001)", "protonet (lr=0.1)"]
    view = accuracy_table(load_runs(tmp_path))
    assert list(view.cells.index) == ["protonet (lr=0.001)", "protonet (lr=0.1)"]
    assert view.cells.loc["protonet (lr=0.1)", "synthetic 5-shot"] == ""


def test_labels_use_full_keys_when_short_names_clash_and_mark_unrecorded_runs(tmp_path):
    recorded_run(tmp_path, "mtl", accs(0.5), **{"hparams.lr": 0.1, "pretrain.lr": 0.1})
    recorded_run(tmp_path, "mtl", accs(0.5), **{"hparams.lr": 0.2, "pretrain.lr": 0.3})
    make_run(tmp_path, "mtl", accs(0.5))  # an older fsbench: no settings recorded
    labels = sorted(aggregate(load_runs(tmp_path))["label"])
    assert labels == ["mtl (hparams.lr=0.1, pretrain.lr=0.1)", "mtl (hparams.lr=0.2, pretrain.lr=0.3)",
                      "mtl (settings not recorded)"]
    assert any("recorded no settings" in n for n in accuracy_table(load_runs(tmp_path)).notes)


# -- pairing -------------------------------------------------------------------------------------


def _two_seed_folder(tmp_path):
    """protonet seeds 0, 1; mtl seeds 0, 1 without and with hard tasks (the issue's reproduction)."""
    ht = {"hard_tasks.enabled": True, "hard_tasks.mode": "extra"}
    for seed in (0, 1):
        recorded_run(tmp_path, "protonet", accs(0.45, seed=10 + seed), seed=seed)
        recorded_run(tmp_path, "mtl", accs(0.47, seed=20 + seed), seed=seed)
        recorded_run(tmp_path, "mtl", accs(0.50, seed=30 + seed), seed=seed, **ht)
    return load_runs(tmp_path)


def test_hard_tasks_on_and_off_give_two_seed_level_rows_of_two_seeds(tmp_path):
    df = _two_seed_folder(tmp_path)
    per_seed = paired_table(df, "protonet")
    assert len(per_seed) == 4 and per_seed.groupby("label")["seed"].apply(tuple).to_dict() == {
        "mtl (hard_tasks=off)": (0, 1), "mtl (hard_tasks=on)": (0, 1)}
    across = seed_paired_table(per_seed).set_index("label")
    assert across["n_seeds"].tolist() == [2, 2] and across["seeds"].tolist() == [(0, 1), (0, 1)]
    for label, row in across.iterrows():
        diffs = per_seed.loc[per_seed["label"] == label, "mean_diff"].to_numpy()
        expected = seed_paired_difference(diffs)
        assert row["mean_diff"] == pytest.approx(expected.mean_diff)
        assert row["ci95"] == pytest.approx(expected.ci95)  # t with 1 degree of freedom, not 3
    md = render(seed_paired_view(seed_paired_table(per_seed)), "markdown")
    assert "0,0,1,1" not in md and "mtl (hard_tasks=on)" in md


def test_reference_runs_at_600_and_1000_episodes_are_not_mixed(tmp_path):
    for seed in (0, 1):
        long = accs(0.45, n=1000, seed=10 + seed)
        recorded_run(tmp_path, "protonet", long[:600], seed=seed)
        recorded_run(tmp_path, "protonet", long, seed=seed)
        recorded_run(tmp_path, "mtl", accs(0.47, n=600, seed=20 + seed), seed=seed)
    per_seed = paired_table(load_runs(tmp_path), "protonet")
    assert per_seed["seed"].tolist() == [0, 1]  # each mtl run paired once: with the 600-episode run
    assert set(per_seed["episodes"]) == {600} and set(per_seed["n"]) == {600}
    assert seed_paired_table(per_seed)["n_seeds"].tolist() == [2]


def test_one_row_per_reference_variant_and_variants_against_each_other_once(tmp_path):
    base = accs(0.45, seed=1)
    recorded_run(tmp_path, "protonet", base)
    recorded_run(tmp_path, "protonet", [min(1.0, a + 0.1) for a in base], **{"hparams.lr": 0.01})
    recorded_run(tmp_path, "mtl", accs(0.5, seed=2))
    per_seed = paired_table(load_runs(tmp_path), "protonet")
    pairs = sorted(zip(per_seed["label"], per_seed["reference_label"], strict=True))
    assert pairs == [("mtl", "protonet (lr=0.001)"), ("mtl", "protonet (lr=0.01)"),
                     ("protonet (lr=0.01)", "protonet (lr=0.001)")]
    view = paired_view(per_seed)
    assert "reference" in view.cells.columns


def test_a_difference_without_spread_reads_not_testable(tmp_path):
    same = accs(0.5, seed=3)
    recorded_run(tmp_path, "protonet", same)
    recorded_run(tmp_path, "mtl", same)  # equal on every episode
    recorded_run(tmp_path, "maml", [min(1.0, a + 0.2) for a in accs(0.5, seed=4)])
    per_seed = paired_table(load_runs(tmp_path), "protonet").set_index("method")
    assert per_seed.loc["mtl", "verdict"] == "not testable" and not per_seed.loc["mtl", "significant"]
    assert per_seed.loc["maml", "verdict"] == "significant"
    view = paired_view(per_seed.reset_index())
    assert view.cells.loc["mtl", "significant"] == "not testable"
    assert view.cells.loc["maml", "significant"] == "yes"
    assert any(note.startswith("not testable") for note in view.notes)


def test_hard_task_settings_are_named_only_where_they_tell_cells_apart(tmp_path):
    """Hard-task settings exist only while hard tasks are on: off vs on says enough."""
    ht = {"hard_tasks.enabled": True, "hard_tasks.every": 1, "hard_tasks.count": None,
          "hard_tasks.fill": "confused", "hard_tasks.mode": "extra"}
    recorded_run(tmp_path / "a", "mtl", accs(0.5))
    recorded_run(tmp_path / "a", "mtl", accs(0.5), **ht)
    assert sorted(aggregate(load_runs(tmp_path / "a"))["label"]) == ["mtl (hard_tasks=off)", "mtl (hard_tasks=on)"]
    recorded_run(tmp_path / "a", "mtl", accs(0.5), **{**ht, "hard_tasks.mode": "replace"})
    assert sorted(aggregate(load_runs(tmp_path / "a"))["label"]) == [
        "mtl (hard_tasks=off)", "mtl (hard_tasks=on, ht_mode=extra)", "mtl (hard_tasks=on, ht_mode=replace)"]
    recorded_run(tmp_path / "b", "mtl", accs(0.5))  # a setting only one recorded cell has: named
    recorded_run(tmp_path / "b", "mtl", accs(0.5), **{"hparams.new_option": 2})
    assert sorted(aggregate(load_runs(tmp_path / "b"))["label"]) == ["mtl", "mtl (new_option=2)"]

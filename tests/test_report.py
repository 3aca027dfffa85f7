"""Loading run directories and rendering the report tables in every format."""

from __future__ import annotations

import argparse
import io
import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from fsbench.cli import add_report_parser
from fsbench.report.aggregate import aggregate, paired_table
from fsbench.report.render import render
from fsbench.report.tables import accuracy_table, paired_view
from fsbench.results import ResultsError as ReportError
from fsbench.results import load_runs
from fsbench.stats import mean_ci95

try:
    from runfactory import curve, make_run
except ImportError:  # tests/ imported as a package
    from tests.runfactory import curve, make_run


def accs(mean: float, n: int = 40, seed: int = 0, spread: float = 0.1) -> list[float]:
    """Per-episode accuracies (fractions) around ``mean``, rounded to 1/75 like a 5x15 query set."""
    rng = np.random.default_rng(seed)
    values = np.clip(mean + rng.normal(0, spread, n), 0, 1)
    return [round(v * 75) / 75 for v in values]


@pytest.fixture
def results(tmp_path):
    """Two methods on two (dataset, shot) columns; mtl best everywhere."""
    root = tmp_path / "results"
    for method, base in (("protonet", 0.45), ("mtl", 0.60)):
        make_run(root, method, accs(base, seed=1), dataset="miniimagenet", shot=1)
        make_run(root, method, accs(base + 0.15, seed=2), dataset="miniimagenet", shot=5)
    return root


def parse(argv):
    parser = argparse.ArgumentParser(prog="fsbench")
    add_report_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["report", *argv])


# -- loading -------------------------------------------------------------------------------------


def test_load_runs_one_row_per_run(results):
    df = load_runs([results])
    assert len(df) == 4
    assert {"run_id", "method", "dataset", "accuracy", "ci95", "episode_acc", "history"} <= set(
        df.columns
    )
    row = df.iloc[0]
    assert isinstance(row["episode_acc"], np.ndarray) and row["episode_acc"].shape == (40,)
    assert row["history"] is None
    assert row["accuracy"] == pytest.approx(row["episode_acc"].mean() * 100)


def test_load_runs_accepts_run_dir_and_dedupes(tmp_path):
    run = make_run(tmp_path, "mtl", [0.5, 0.7], history=curve([0, 10], [40.0, 50.0]))
    df = load_runs([run, tmp_path])
    assert len(df) == 1
    assert df.iloc[0]["history"][1]["val_accuracy"] == 50.0


def test_episodes_are_indexed_by_index(tmp_path):
    run = make_run(tmp_path, "mtl", [0.1, 0.2, 0.3])
    lines = (run / "episodes.jsonl").read_text().splitlines()
    (run / "episodes.jsonl").write_text("\n".join(reversed(lines)) + "\n")
    np.testing.assert_allclose(load_runs(tmp_path).iloc[0]["episode_acc"], [0.1, 0.2, 0.3])


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "summary.json").write_text("{not json"), "invalid JSON"),
        (lambda d: (d / "episodes.jsonl").unlink(), "missing"),
        (
            lambda d: (d / "episodes.jsonl").write_text('{"index": 0, "accuracy": 0.5}\n'),
            "episodes=2",
        ),
        (
            lambda d: (d / "episodes.jsonl").write_text(
                '{"index": 0, "accuracy": 50}\n{"index": 1, "accuracy": 0.5}\n'
            ),
            "fraction",
        ),
        (
            lambda d: (d / "episodes.jsonl").write_text(
                '{"index": 0, "accuracy": 0.5}\n{"index": 0, "accuracy": 0.5}\n'
            ),
            "twice",
        ),
        (lambda d: (d / "history.jsonl").write_text('{"step": 1}\n'), "phase"),
    ],
)
def test_bad_run_dirs_give_one_line_errors(tmp_path, damage, message):
    run = make_run(tmp_path, "mtl", [0.5, 0.6])
    damage(run)
    with pytest.raises(ReportError, match=message) as info:
        load_runs(tmp_path)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_summary_field_and_bad_paths(tmp_path):
    run = make_run(tmp_path, "mtl", [0.5, 0.6])
    summary = json.loads((run / "summary.json").read_text())
    del summary["shot"]
    (run / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ReportError, match="shot"):
        load_runs(tmp_path)
    with pytest.raises(ReportError, match="no such"):
        load_runs(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="no runs found"):
        load_runs(tmp_path / "empty")


def test_wrong_type_in_summary(tmp_path):
    make_run(tmp_path, "mtl", [0.5, 0.6], shot="one")
    with pytest.raises(ReportError, match="'shot' must be an integer"):
        load_runs(tmp_path)


# -- accuracy table ------------------------------------------------------------------------------


def test_accuracy_table_layout_and_best(results):
    view = accuracy_table(load_runs(results))
    assert list(view.cells.columns) == ["miniimagenet 1-shot", "miniimagenet 5-shot"]
    assert list(view.cells.index) == ["protonet", "mtl"]  # the paper's row order
    assert view.marked.loc["mtl"].all() and not view.marked.loc["protonet"].any()
    cell = view.cells.at["mtl", "miniimagenet 1-shot"]
    df = load_runs(results)
    run = df[(df.method == "mtl") & (df.shot == 1)].iloc[0]
    assert cell == f"{run.accuracy:.1f} ± {run.ci95:.1f}"


def test_markdown_marks_best(results):
    text = render(accuracy_table(load_runs(results)), "markdown")
    mtl_line = next(line for line in text.splitlines() if line.startswith("| mtl"))
    proto_line = next(line for line in text.splitlines() if line.startswith("| protonet"))
    assert mtl_line.count("**") == 4 and "**" not in proto_line
    align = next(line for line in text.splitlines() if line.startswith("|:-"))
    assert re.fullmatch(r"\|:-+\|-+:\|-+:\|", align), align


def test_latex_booktabs(results):
    text = render(accuracy_table(load_runs(results)), "latex")
    for token in (
        "\\toprule",
        "\\midrule",
        "\\bottomrule",
        "\\textbf{",
        "$\\pm$",
        "\\begin{tabular}{lrr}",
    ):
        assert token in text
    assert "±" not in text


def test_csv_parses_back(results):
    text = render(accuracy_table(load_runs(results)), "csv")
    parsed = pd.read_csv(io.StringIO(text), index_col=0)
    assert list(parsed.index) == ["protonet", "mtl"]
    assert list(parsed.columns) == ["miniimagenet 1-shot", "miniimagenet 5-shot"]
    assert parsed.loc["mtl"].str.endswith("*").all()
    assert not parsed.loc["protonet"].str.endswith("*").any()


def test_html_and_rich(results):
    view = accuracy_table(load_runs(results))
    page = render(view, "html")
    assert page.count('fsbench-marked" >') == 2 and "<caption>" in page and "&plusmn;" not in page
    assert ".fsbench-marked {\n  font-weight: bold;" in page
    text = render(view, "rich")
    assert "miniimagenet 1-shot" in text and "mtl" in text and "±" in text


def test_ablation_order_and_names(tmp_path):
    for method, base in (
        ("mtl_ht", 0.62),
        ("protonet", 0.5),
        ("scratch", 0.45),
        ("mtl", 0.6),
        ("finetune", 0.55),
    ):
        make_run(tmp_path, method, accs(base), dataset="miniimagenet", shot=1)
    view = accuracy_table(load_runs(tmp_path), ablation=True)
    assert list(view.cells.index) == [
        "Train from scratch",
        "Finetune on pre-trained model",
        "MTL",
        "MTL + HT",
    ]
    assert view.title.startswith("Ablation")


def test_ablation_keeps_only_present_rows_and_errors_when_none(tmp_path):
    make_run(tmp_path / "a", "mtl_ht", accs(0.6))
    make_run(tmp_path / "a", "scratch", accs(0.4))
    assert list(accuracy_table(load_runs(tmp_path / "a"), ablation=True).cells.index) == [
        "Train from scratch",
        "MTL + HT",
    ]
    make_run(tmp_path / "b", "maml", accs(0.4))
    with pytest.raises(ReportError, match="ablation"):
        accuracy_table(load_runs(tmp_path / "b"), ablation=True)


PAPER_RUN = {"dataset": "miniimagenet", "shot": 1, "preset": "paper", "backbone": "resnet12_mtl",
             "paper_backbone": "resnet12_mtl"}


def test_paper_column_and_difference_on_the_papers_protocol(tmp_path):
    make_run(tmp_path, "mtl_ht", [0.6, 0.64] * 300, **PAPER_RUN)  # 62.0
    make_run(tmp_path, "mtl", [0.5, 0.6] * 300, **PAPER_RUN)  # 55.0
    view = accuracy_table(load_runs(tmp_path), paper=True)
    assert view.cells.at["mtl_ht", "miniimagenet 1-shot paper"] == "61.2"
    assert view.cells.at["mtl_ht", "miniimagenet 1-shot Δ"] == "+0.8"
    assert view.cells.at["mtl", "miniimagenet 1-shot paper"] == "60.2"
    assert view.cells.at["mtl", "miniimagenet 1-shot Δ"] == "-5.2"
    assert any("CVPR 2019" in note for note in view.notes)
    assert "$\\Delta$" in render(view, "latex")


def test_paper_table_shows_every_row_and_setting_the_paper_reports(tmp_path):
    make_run(tmp_path, "mtl", [0.5, 0.6] * 300, **PAPER_RUN)
    view = accuracy_table(load_runs(tmp_path), paper=True)
    from fsbench.paper import COMPARISON_ORDER, PAPER_COLUMNS

    assert list(view.cells.index) == list(COMPARISON_ORDER)  # the paper's rows, then those beyond
    for dataset, shot in PAPER_COLUMNS:
        assert f"{dataset} {shot}-shot" in view.cells.columns
    # Not run: no number of ours (rendered "–"), the paper's beside it, no difference.
    assert view.cells.at["tadam", "fc100 10-shot"] == ""
    assert view.cells.at["tadam", "fc100 10-shot paper"] == "61.6"
    assert view.cells.at["tadam", "fc100 10-shot Δ"] == ""
    assert view.cells.at["protonet", "fc100 1-shot paper"] == ""  # the paper reports none
    row = next(line for line in render(view, "markdown").splitlines() if line.startswith("| tadam"))
    assert "–" in row and "58.5" in row


@pytest.mark.parametrize(("change", "why"), [
    ({"preset": "quick"}, "preset quick, not paper"),
    ({"backbone": "conv4"}, "backbone conv4, not resnet12_mtl"),
    ({"eval_split": "val"}, "val split, not test"),
    ({"query": 5}, "5 queries, not 15"),
])
def test_no_paper_difference_off_the_papers_protocol(tmp_path, change, why):
    make_run(tmp_path, "mtl", [0.5, 0.6] * 300, **{**PAPER_RUN, **change})
    view = accuracy_table(load_runs(tmp_path), paper=True)
    row = view.cells.loc["mtl"]
    [ours] = [c for c in view.cells.columns if row[c] and not c.endswith(("paper", "Δ"))]
    assert row[f"{ours} Δ"] == "— [1]"
    assert row[f"{ours} paper"] == "60.2"
    assert any(note.startswith("— [1]: not the paper's protocol") and why in note
               for note in view.notes), view.notes


def test_no_paper_numbers_beside_synthetic_data(tmp_path):
    make_run(tmp_path, "mtl", [0.5, 0.6], dataset="synthetic", shot=1)
    view = accuracy_table(load_runs(tmp_path), paper=True)
    assert view.cells.at["mtl", "synthetic 1-shot"].startswith("55.0")
    assert "synthetic 1-shot paper" not in view.cells.columns
    assert not view.cells.loc["mtl", [c for c in view.cells.columns if c.endswith("Δ")]].any()


def test_val_split_is_labelled(tmp_path):
    make_run(tmp_path, "mtl", accs(0.6), dataset="miniimagenet", eval_split="val")
    make_run(tmp_path, "mtl", accs(0.6), dataset="miniimagenet", eval_split="test")
    view = accuracy_table(load_runs(tmp_path))
    assert list(view.cells.columns) == ["miniimagenet 1-shot", "miniimagenet 1-shot (val)"]
    assert any("VALIDATION" in note for note in view.notes)
    assert "VALIDATION" in render(view, "markdown")


def test_seed_aggregation_of_legacy_runs_pools_their_different_episodes(tmp_path):
    # Runs written before --episode-seed: each training seed drew its own test episodes.
    a, b = accs(0.6, seed=1), accs(0.7, seed=2)
    make_run(tmp_path, "mtl", a, seed=0)
    make_run(tmp_path, "mtl", b, seed=1)
    make_run(tmp_path, "protonet", accs(0.5), seed=0)
    df = load_runs(tmp_path)
    agg = aggregate(df)
    row = agg[agg.method == "mtl"].iloc[0]
    assert row.n_seeds == 2 and row.seeds == (0, 1) and row.ci_source == "pooled"
    assert row.accuracy == pytest.approx((np.mean(a) + np.mean(b)) * 50)
    assert row.ci95 == pytest.approx(mean_ci95(np.array(a + b) * 100)[1])
    view = accuracy_table(df)
    cell = view.cells.at["mtl", "synthetic 1-shot"]
    assert cell.endswith(f"(seeds ± {row.seed_ci95:.1f}, n=2)")
    assert row.seed_ci95 == pytest.approx(12.706 * abs(np.mean(a) - np.mean(b)) * 100 / 2, rel=1e-3)
    assert view.cells.at["protonet", "synthetic 1-shot"].count("seeds") == 0
    assert any("pooled" in note for note in view.notes)


def test_single_seed_keeps_run_ci_and_duplicates_are_dropped(tmp_path):
    make_run(tmp_path, "mtl", accs(0.6, spread=0.3), created="2024-01-01T00:00:00")
    newer = make_run(
        tmp_path, "mtl", accs(0.4), created="2024-02-01T00:00:00"
    )  # same seed, newer
    ci95 = json.loads((newer / "summary.json").read_text())["ci95"]
    agg = aggregate(load_runs(tmp_path))
    assert len(agg) == 1 and agg.iloc[0].ci95 == ci95 and agg.iloc[0].n_seeds == 1
    assert agg.iloc[0].duplicates_dropped == 1


def test_variants_get_their_own_rows(tmp_path):
    make_run(tmp_path, "mtl", accs(0.6), preset="smoke")
    make_run(tmp_path, "mtl", accs(0.6), preset="quick")
    view = accuracy_table(load_runs(tmp_path))
    assert sorted(view.cells.index) == ["mtl (preset=quick)", "mtl (preset=smoke)"]


# -- paired --------------------------------------------------------------------------------------


def test_paired_table_marks_significant_difference(tmp_path):
    base = accs(0.5, n=60, seed=3)
    # same episodes, ~10 points higher (by one or two queries' worth: a spread to test)
    better = [min(1.0, a + (0.08 if i % 2 else 0.12)) for i, a in enumerate(base)]
    noisy = [a + (0.02 if i % 2 else -0.02) for i, a in enumerate(base)]  # no real difference
    make_run(tmp_path, "protonet", base)
    make_run(tmp_path, "mtl", better)
    make_run(tmp_path, "maml", noisy)
    make_run(tmp_path, "finetune", base, seed=7)  # other episodes: no partner
    paired = paired_table(load_runs(tmp_path), "protonet")
    assert set(paired.method) == {"mtl", "maml"}
    mtl = paired[paired.method == "mtl"].iloc[0]
    maml = paired[paired.method == "maml"].iloc[0]
    assert mtl.significant and mtl.mean_diff > 5 and mtl.n == 60
    assert not maml.significant
    view = paired_view(paired)
    assert view.marked.loc["mtl"].any() and not view.marked.loc["maml"].any()
    md = render(view, "markdown")
    assert "**+" in next(line for line in md.splitlines() if line.startswith("| mtl"))
    csv = pd.read_csv(io.StringIO(render(view, "csv")), index_col=0)
    assert csv.loc["mtl", "significant"] == "yes"


def test_paired_unknown_reference(results):
    with pytest.raises(ReportError, match="maml"):
        paired_table(load_runs(results), "maml")


# -- CLI -----------------------------------------------------------------------------------------


def test_cli_markdown_to_stdout(results, capsys):
    args = parse([str(results), "--format", "markdown"])
    assert args.func(args) == 0
    assert "**" in capsys.readouterr().out


def test_cli_rich_to_stdout(results, capsys):
    args = parse([str(results), "--paired", "protonet"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "mtl" in out and "Paired comparison against protonet" in out


def test_cli_output_file_and_plots(tmp_path):
    root = tmp_path / "r"
    make_run(root, "mtl", accs(0.6), history=curve([0, 5, 10], [40.0, 50.0, 55.0]))
    make_run(root, "protonet", accs(0.5), history=curve([0, 5, 10], [35.0, 45.0, 48.0]))
    out = tmp_path / "table.tex"
    args = parse(
        [str(root), "--format", "latex", "--output", str(out), "--plots", str(tmp_path / "plots")]
    )
    assert args.func(args) == 0
    assert "\\toprule" in out.read_text()
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {
        "val_curves.png",
        "val_curves.svg",
        "accuracy_vs_shot.png",
        "accuracy_vs_shot.svg",
    }


def test_cli_csv_with_paired_writes_only_paired(results, capsys):
    args = parse([str(results), "--format", "csv", "--paired", "protonet"])
    args.func(args)
    parsed = pd.read_csv(io.StringIO(capsys.readouterr().out), index_col=0)
    assert "significant" in parsed.columns


def test_cli_bad_input_raises_report_error(tmp_path):
    args = parse([str(tmp_path / "missing")])
    with pytest.raises(ReportError):
        args.func(args)


def test_nan_times_are_allowed(tmp_path):
    make_run(tmp_path, "mtl", [0.5, 0.6], train_seconds=None)
    assert math.isnan(load_runs(tmp_path).iloc[0]["train_seconds"])

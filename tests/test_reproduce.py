"""reproduce/: one `fsbench sweep` grid per table of the MTL paper (issue 23). Each is planned
(--dry-run) on tiny generated datasets in the real formats, and its runs follow the paper's
protocol, so that `fsbench report --paper` gives ours - paper in every cell it fills."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from datagen import write_cifar100_python, write_miniimagenet_folders

from fsbench import cli
from fsbench.paper import PAPER_COLUMNS, PAPER_ORDER, paper_accuracy
from fsbench.plugins import default_registry
from fsbench.report.tables import accuracy_table
from fsbench.results import load_runs
from fsbench.runner import Run
from fsbench.sweep.cli import configs_from_args

try:
    from runfactory import make_run
except ImportError:  # tests/ imported as a package
    from tests.runfactory import make_run

ROOT = Path(__file__).resolve().parents[1]
GRIDS = {p.stem: p for p in sorted((ROOT / "reproduce").glob("*.toml"))}

#: Runs and pre-trainings each grid plans: methods x shots x 3 seeds; finetune, mtl and mtl_ht
#: of one dataset and seed share one pre-training.
PLANS = {
    "miniimagenet": (10 * 2 * 3, 3),
    "fc100": (7 * 3 * 3, 3),
    "ablation": (4 * (2 + 3) * 3, 6),
    "hard-tasks": ((2 + 2 * 2) * (2 + 3) * 3, 6),  # mtl, maml; mtl_ht and maml_ht in two modes
}


@pytest.fixture(scope="module")
def data_roots(tmp_path_factory) -> dict[str, Path]:
    """miniImageNet folders (30 train classes: ProtoNets trains 30-way in 1-shot) and CIFAR-100
    pickles with 25 images per class (FC100 10-shot + 15 queries), both tiny."""
    base = tmp_path_factory.mktemp("data")
    write_miniimagenet_folders(base / "mini", {"train": 30, "val": 5, "test": 5}, per_class=20)
    cifar = write_cifar100_python(base, per_class_train=24, per_class_test=1)
    return {"miniimagenet": base / "mini", "fc100": cifar}


def _roots_option(grid: Path, roots: dict[str, Path]) -> str:
    datasets = [d for d in ("miniimagenet", "fc100") if f'dataset = "{d}"' in grid.read_text()]
    return ",".join(str(roots[d]) for d in datasets)


def _args(grid: Path, roots: dict[str, Path], tmp_path: Path, *extra: str) -> list[str]:
    return ["sweep", str(grid), "--data-root", _roots_option(grid, roots), "--output", str(tmp_path / "out"),
            "--cache-dir", str(tmp_path / "cache"), *extra]


def test_one_grid_per_table_and_no_other_copy():
    assert set(GRIDS) == set(PLANS)
    assert not (ROOT / "docs" / "ablation-grid.toml").exists()


@pytest.mark.parametrize("name", sorted(PLANS))
def test_every_grid_plans_on_tiny_data(name, data_roots, tmp_path, capsys):
    assert cli.main(_args(GRIDS[name], data_roots, tmp_path, "--dry-run")) == 0
    out = capsys.readouterr().out
    runs, pretrains = PLANS[name]
    assert re.search(rf"plan: {runs} run\(s\) \(0 done, {runs} to run\), {pretrains} pre-training\(s\)", out), out


@pytest.mark.parametrize("name", sorted(PLANS))
def test_every_run_follows_the_papers_protocol(name, data_roots, tmp_path):
    configs = configs_from_args(cli.build_parser().parse_args(_args(GRIDS[name], data_roots, tmp_path)))
    for cfg in configs:
        assert (cfg.preset, cfg.episodes, cfg.query, cfg.way, cfg.eval_split) == ("paper", 600, 15, 5, "test")
        assert cfg.backbone is None and cfg.seed in (0, 1, 2) and cfg.episode_seed == 0
        assert cfg.data_root == data_roots[cfg.dataset]


def test_settings_the_papers_give_per_shot(data_roots, tmp_path):
    configs = configs_from_args(cli.build_parser().parse_args(_args(GRIDS["miniimagenet"], data_roots, tmp_path)))
    overrides = {(c.method, c.shot): c.overrides for c in configs if c.seed == 0}
    assert overrides[("maml", 5)] == {"episodic": {"meta_batch": 2}} and overrides[("maml", 1)] == {}
    assert overrides[("protonet", 5)] == {"episodic": {"train_way": 20}}
    assert overrides[("meta_lstm", 5)] == {"episodic": {"iterations": 50000}}
    assert overrides[("tadam", 1)] == {"episodic": {"meta_batch": 5}} and overrides[("tadam", 5)] == {}
    for method in ("scratch", "mtl", "mtl_ht"):
        assert overrides[(method, 5)] == {"hparams": {"train_steps": 60}}
    configs = configs_from_args(cli.build_parser().parse_args(_args(GRIDS["hard-tasks"], data_roots, tmp_path)))
    modes = {(c.method, c.ht_mode) for c in configs}
    assert modes == {("mtl", None), ("maml", None), ("mtl_ht", "extra"), ("mtl_ht", "replace"),
                     ("maml_ht", "extra"), ("maml_ht", "replace")}


@pytest.mark.parametrize("name", ["miniimagenet", "fc100"])
def test_report_paper_reads_the_grids_output_with_a_difference_in_every_cell(name, data_roots, tmp_path):
    """Runs shaped as the grid's (seed 0) fill the paper's table with ours - paper everywhere the
    paper reports a number: none is footnoted as off the paper's protocol."""
    registry = default_registry()
    configs = configs_from_args(cli.build_parser().parse_args(_args(GRIDS[name], data_roots, tmp_path)))
    for cfg in (c for c in configs if c.seed == 0):
        paper_backbone = registry.get(cfg.method).presets["paper"].backbone
        make_run(tmp_path / "runs", cfg.method, [0.5, 0.6] * 300, dataset=cfg.dataset, shot=cfg.shot,
                 preset="paper", backbone=Run(cfg, show_progress=False).preset.backbone,
                 paper_backbone=paper_backbone)
    view = accuracy_table(load_runs(tmp_path / "runs"), paper=True)
    filled = 0
    for method in PAPER_ORDER:
        for dataset, shot in PAPER_COLUMNS:
            if dataset != name or paper_accuracy(method, dataset, shot, 5) is None:
                continue
            delta = view.cells.at[method, f"{dataset} {shot}-shot Δ"]
            assert re.fullmatch(r"[+-]\d+\.\d", delta), (method, shot, delta)
            filled += 1
    assert filled == {"miniimagenet": 20, "fc100": 21}[name]


def test_the_readme_shows_the_ablation_grid_and_a_command_per_grid():
    readme = (ROOT / "README.md").read_text()
    grid = GRIDS["ablation"]
    body = "\n".join(line for line in grid.read_text().splitlines() if not line.startswith("#")).strip()
    assert body in readme
    for path in GRIDS.values():
        assert f"fsbench sweep reproduce/{path.name}" in readme


def test_data_roots_pair_with_the_grids_datasets_in_order(tmp_path, capsys):
    args = ["sweep", str(GRIDS["ablation"]), "--data-root", "a,b,c", "--dry-run"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "3 data roots for the grid's 2 dataset(s) (miniimagenet, fc100)" in err

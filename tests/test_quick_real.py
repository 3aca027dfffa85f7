"""The per-release real-data sweep (benchmarks/quick_real.toml) and the README table made from it."""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from pathlib import Path

import numpy as np

from fsbench.plugins import default_registry

try:
    from runfactory import make_run
except ImportError:  # tests/ imported as a package
    from tests.runfactory import make_run

ROOT = Path(__file__).resolve().parents[1]


def _table_module():
    spec = importlib.util.spec_from_file_location("quick_real_table", ROOT / "benchmarks" / "quick_real_table.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_sweep_covers_every_method_with_a_quick_preset():
    grid = tomllib.loads((ROOT / "benchmarks" / "quick_real.toml").read_text())
    quick = {n for n, r in default_registry().methods.items() if "quick" in r.presets}
    assert set(grid["method"]) == quick
    assert (grid["preset"], grid["eval_split"], grid["episodes"], grid["shot"]) == ("quick", "val", 600, [1, 5])


def test_the_readme_holds_the_generated_block():
    readme = (ROOT / "README.md").read_text()
    module = _table_module()
    assert readme.count(module.BEGIN) == 1 and readme.count(module.END) == 1


def test_table_pairs_each_method_with_finetune_on_the_same_episodes(tmp_path):
    rng = np.random.default_rng(0)
    base = np.clip(0.5 + rng.normal(0, 0.1, 50), 0, 1)
    common = {"dataset": "miniimagenet", "eval_split": "val", "episode_bank": "bank"}
    make_run(tmp_path, "finetune", list(base), shot=1, created="2026-12-01T00:00:00", **common)
    make_run(tmp_path, "mtl", list(np.clip(base + rng.choice([0.0, 0.2], 50), 0, 1)), shot=1,
             created="2026-12-02T00:00:00", **common)
    make_run(tmp_path, "protonet", list(base), shot=5, created="2026-12-01T00:00:00", **common)
    text = _table_module().table(tmp_path)
    mtl = next(line for line in text.splitlines() if line.startswith("| mtl "))
    assert "**+" in mtl  # a significant paired gain over finetune, marked
    protonet = next(line for line in text.splitlines() if line.startswith("| protonet "))
    assert protonet.split("|")[2].strip() == "not run"  # no 1-shot run
    assert "Generated 2026-12-02" in text


def test_table_lists_the_methods_the_sweep_did_not_run(tmp_path):
    common = {"dataset": "miniimagenet", "eval_split": "val", "episode_bank": "bank"}
    make_run(tmp_path, "finetune", [0.5, 0.6, 0.4], shot=1, created="2026-12-01T00:00:00", **common)
    text = _table_module().table(tmp_path, expected=["finetune", "maml"], shots=[1, 5])
    maml = next(line for line in text.splitlines() if line.startswith("| maml "))
    assert [c.strip() for c in maml.split("|")[2:-1:3]] == ["not run", "not run"]
    assert "Not run in this sweep" in text and "maml 1-shot" in text and "finetune 5-shot" in text


def test_replace_block_rewrites_only_the_block(tmp_path):
    module = _table_module()
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{module.BEGIN}\nold\n{module.END}\nafter\n")
    module.replace_block(readme, "new\n")
    assert readme.read_text() == f"before\n{module.BEGIN}\nnew\n{module.END}\nafter\n"


def test_table_names_the_shared_pretraining_that_no_run_timed(tmp_path):
    common = {"dataset": "miniimagenet", "eval_split": "val", "episode_bank": "bank", "shot": 1}
    pre = [{"phase": "pretrain", "step": k, "val_accuracy": 30.0, "seconds": 100.0 * k} for k in (1, 2)]
    linear = {"pretrain.head": "linear"}
    make_run(tmp_path, "finetune", [0.5, 0.6], history=pre, settings=linear, **common)
    make_run(tmp_path, "mtl", [0.5, 0.6], history=pre, settings=linear, **common)
    make_run(tmp_path, "baselinepp", [0.5, 0.6], settings={"pretrain.head": "cosine"},
             history=[{**h, "seconds": 1000.0 + h["seconds"]} for h in pre], **common)
    # a run that pre-trained itself has the time in its own cell, so it is not listed again
    make_run(tmp_path, "rfs", [0.5, 0.6], history=pre, settings=linear, pretrain_seconds=200.0, **common)
    make_run(tmp_path, "protonet", [0.5, 0.6], **common)  # no pre-training at all
    text = _table_module().table(tmp_path)
    line = next(line for line in text.splitlines() if line.startswith("Pre-trained once"))
    assert "cosine head, 2 epochs, 1,200 s (baselinepp)" in line
    assert "linear head, 2 epochs, 200 s (finetune, mtl)" in line
    assert "rfs" not in line and "protonet" not in line

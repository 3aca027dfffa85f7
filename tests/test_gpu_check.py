"""The prepared GPU check (benchmarks/gpu_subset.py, benchmarks/gpu_check.py), rehearsed on the CPU.

A GPU session has minutes of device time: these tests make sure the script it runs works before
a GPU is spent on it, and that the subset it carries respects the size cap.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from datagen import write_miniimagenet_folders

from fsbench.precision import resolve_precision

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def _run(script: str, *args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH / script), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_subset_copies_first_images_per_class_and_respects_the_cap(tmp_path):
    src = tmp_path / "mini"
    wnids = write_miniimagenet_folders(src, {"train": 3, "val": 2, "test": 1}, per_class=8, size=20)
    dst = tmp_path / "subset"
    proc = _run("gpu_subset.py", src, dst, "--train-per-class", 5, "--val-per-class", 3)
    assert proc.returncode == 0, proc.stderr
    for split, n in (("train", 5), ("val", 3)):
        for wnid in wnids[split]:
            want = sorted(p.name for p in (src / split / wnid).iterdir())[:n]
            assert sorted(p.name for p in (dst / split / wnid).iterdir()) == want
    assert not (dst / "test").exists()

    too_small = _run("gpu_subset.py", src, tmp_path / "big", "--train-per-class", 5, "--val-per-class", 3,
                     "--max-mib", 0.001)
    assert too_small.returncode != 0
    assert "over --max-mib" in too_small.stderr
    assert not (tmp_path / "big").exists() and not (tmp_path / "big.partial").exists()

    too_many = _run("gpu_subset.py", src, tmp_path / "many", "--train-per-class", 9, "--val-per-class", 3)
    assert too_many.returncode != 0 and "fewer than the 9 asked for" in too_many.stderr


def test_gpu_check_dry_run_on_cpu(tmp_path):
    src = tmp_path / "mini"
    write_miniimagenet_folders(src, {"train": 6, "val": 5, "test": 0}, per_class=20, size=32)
    out = tmp_path / "out"
    figures = tmp_path / "collected" / "gpu_check.json"
    proc = _run("gpu_check.py", "--data-root", src, "--out", out, "--json", figures, "--device", "cpu",
                "--dry-run")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(figures.read_text())
    precision = report["precision"]
    # Every convolution of the scale-shift-wrapped ResNet-12 ran once per meta-train step
    # (support and query in one forward), in fp32 on the CPU.
    assert precision["calls"] == precision["convolutions"] > 0
    assert precision["output_dtypes"] == ["torch.float32"] and not precision["bf16"]
    assert precision["channels_last_inputs"] < precision["calls"]  # NCHW on the CPU
    assert any(line.startswith("meta-train") and "episodes/s" in line for line in report["targets"])
    assert set(report["runs"]) == {"mtl_ht", "mtl", "finetune"}
    for run in report["runs"].values():
        # The runs use --precision auto: bf16 on a CPU with native bf16, fp32 elsewhere.
        assert 0 <= run["accuracy"] <= 100 and run["precision"] == resolve_precision("auto", "cpu").label
    # The first run pre-trains; the others reuse its cached backbone and report no pre-training speed.
    assert report["runs"]["mtl_ht"]["pretrain_images_per_s"] > 0
    assert report["runs"]["mtl"]["pretrain_images_per_s"] is None
    assert report["runs"]["mtl_ht"]["hard_tasks_used"] > 0
    assert report["runs"]["mtl_ht"]["meta_train_episodes"] == 2 * 2 + report["runs"]["mtl_ht"]["hard_tasks_used"]
    assert report["runs"]["mtl"]["meta_train_episodes_per_s"] > 0
    assert report["runs"]["finetune"]["meta_train_episodes"] == 0
    assert "paired" in proc.stdout.lower()

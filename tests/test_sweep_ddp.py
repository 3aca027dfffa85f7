"""Multi-process pre-training: `torchrun --nproc-per-node 2 fsbench pretrain` with gloo on the CPU.

Two ranks each train on their shard of every batch under DistributedDataParallel; rank 0 writes
the cache entry; a normal single-process run then reuses it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fsbench.checkpoints import safe_torch_load
from fsbench.config import RunConfig

PRETRAIN = {"epochs": 4, "images_per_epoch": 1024}


def test_ddp_pretraining_with_gloo_trains_and_loads_into_a_normal_run(tmp_path):
    pytest.importorskip("torch.distributed")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "fsbench", "pretrain", "--method", "finetune", "--preset", "smoke",
           "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), "--quiet",
           *(f"--set=pretrain.{k}={v}" for k, v in PRETRAIN.items())]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = tmp_path / "cache" / "pretrained"
    weights = sorted(folder.glob("*.pt"))
    assert len(weights) == 1 and not list(folder.glob("*.ckpt.pt"))  # rank 0 wrote one entry
    meta = json.loads(weights[0].with_suffix(".json").read_text())
    losses = [h["loss"] for h in meta["history"]]
    assert losses[-1] < losses[0]
    assert meta["best_accuracy"] > 26.0  # 5-way val probe: chance is 20%
    assert "state" in safe_torch_load(weights[0])  # a plain checkpoint (weights_only)

    from fsbench.runner import run

    result = run(RunConfig(method="finetune", preset="smoke", episodes=20, device="cpu",
                           output=tmp_path / "out", cache_dir=tmp_path / "cache",
                           overrides={"pretrain": PRETRAIN}), show_progress=False)
    assert result.summary["pretrain_seconds"] == 0.0  # reused the DDP-trained backbone
    assert len(result.accuracies) == 20

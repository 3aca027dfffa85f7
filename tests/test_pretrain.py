"""Pre-training (fsbench.engine.pretrain) and its batched augmentation (fsbench.engine.augment)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

import fsbench.engine.pretrain as pretrain
import fsbench.engine.pretrain_loop as pretrain_loop
from fsbench.config import PretrainConfig
from fsbench.data import load_dataset
from fsbench.engine.augment import CropFlip, random_resized_crop_flip
from fsbench.engine.pretrain import PretrainSpec, ensure_pretrained
from fsbench.episodes import EpisodeSpec
from fsbench.errors import DivergenceError
from fsbench.precision import resolve_precision

CPU = torch.device("cpu")
SPEC = EpisodeSpec(5, 1, 15)
BACKBONE, KWARGS = "conv4", {"width": 8}
# Five short epochs: enough for a kill in the middle to leave work to resume.
CFG = PretrainConfig(epochs=5, batch_size=32, lr=0.05, images_per_epoch=96, val_episodes=8)


@pytest.fixture(scope="module")
def synthetic():
    return load_dataset("synthetic")


PRECISION = resolve_precision("auto", CPU)


def spec_for(dataset, cfg: PretrainConfig = CFG, seed: int = 0, preset: str = "smoke") -> PretrainSpec:
    return PretrainSpec(dataset, BACKBONE, KWARGS, cfg, preset, seed, SPEC.way, PRECISION, CPU)


def pretrain_in(dataset, cache: Path, cfg: PretrainConfig = CFG, seed: int = 0, **kw):
    return ensure_pretrained(spec_for(dataset, cfg, seed), cache, show_progress=False, **kw)


@pytest.fixture(scope="module")
def reference(synthetic, tmp_path_factory):
    """An uninterrupted pre-training: what every resumed one must reproduce exactly."""
    return pretrain_in(synthetic, tmp_path_factory.mktemp("reference"))


def assert_same_result(a, b) -> None:
    assert a.state.keys() == b.state.keys()
    for name in a.state:
        assert torch.equal(a.state[name], b.state[name]), name
    # The per-epoch losses and probe accuracies pin down every epoch, not just the kept one.
    drop = ("seconds", "images_per_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in a.history] == \
        [{k: v for k, v in r.items() if k not in drop} for r in b.history]


# -- augmentation -------------------------------------------------------------------------------

def test_augment_shape_dtype_and_determinism():
    x = torch.rand(6, 3, 20, 24)
    out = random_resized_crop_flip(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    again = random_resized_crop_flip(x, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)
    other = random_resized_crop_flip(x, torch.Generator().manual_seed(2))
    assert not torch.allclose(out, other)
    assert not torch.allclose(out, x)  # it did something


def test_augment_flip_flips_and_full_crop_is_identity():
    x = torch.rand(4, 3, 16, 16)
    full = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0))
    flipped = random_resized_crop_flip(x, torch.Generator().manual_seed(0), CropFlip(**full, flip=1.0))
    torch.testing.assert_close(flipped, x.flip(-1), atol=1e-5, rtol=0)
    same = random_resized_crop_flip(x, torch.Generator().manual_seed(0), CropFlip(**full, flip=0.0))
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)


def test_augment_crops_zoom_in():
    # A crop of a quarter of the area, magnified back to full size: a pure horizontal ramp
    # keeps being a ramp but spans a smaller range of values.
    ramp = torch.linspace(0, 1, 32).expand(1, 3, 32, 32).clone()
    out = random_resized_crop_flip(ramp, torch.Generator().manual_seed(3),
                                   CropFlip(scale=(0.25, 0.25), ratio=(1.0, 1.0), flip=0.0))
    span = out[0, 0, 0, -1] - out[0, 0, 0, 0]
    assert 0.4 < float(span) < 0.6
    assert torch.all(out[..., 1:] >= out[..., :-1] - 1e-6)  # still increasing: not flipped


def test_augment_rejects_uint8():
    with pytest.raises(TypeError, match="float"):
        random_resized_crop_flip(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.Generator())


# -- resume ---------------------------------------------------------------------------------------

KILL_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import torch
    import fsbench.engine.pretrain as pretrain
    import fsbench.engine.pretrain_loop as pretrain_loop
    from fsbench.config import PretrainConfig
    from fsbench.data import load_dataset
    from fsbench.precision import resolve_precision

    cache, threads, pause, cfg = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), json.loads(sys.argv[4])
    torch.set_num_threads(threads)
    real_save = pretrain_loop.atomic_torch_save

    def slow_save(obj, path):  # leave time to be killed once a checkpoint is on disk
        real_save(obj, path)
        if "epoch" in obj:
            time.sleep(pause)

    pretrain_loop.atomic_torch_save = slow_save
    cpu = torch.device("cpu")
    spec = pretrain.PretrainSpec(load_dataset("synthetic"), "conv4", {"width": 8}, PretrainConfig(**cfg),
                                 "smoke", 0, 5, resolve_precision("auto", cpu), cpu)
    pretrain.ensure_pretrained(spec, Path(cache), show_progress=False)
""")


def start_pretrain_process(cache: Path, pause: float) -> subprocess.Popen:
    """``ensure_pretrained(CFG)`` in another process, pausing ``pause`` s after each checkpoint."""
    threads = str(torch.get_num_threads())  # same reduction order as this process
    return subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(cache), threads, str(pause), json.dumps(asdict(CFG))],
        env={**os.environ, "OMP_NUM_THREADS": threads}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"pre-training process ended early: {proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no checkpoint {path} after {timeout} s")
        time.sleep(0.01)


def test_sigkilled_pretraining_resumes_bit_identical(synthetic, reference, tmp_path):
    proc = start_pretrain_process(tmp_path, pause=30.0)
    checkpoint = tmp_path / reference.path.name.replace(".pt", ".ckpt.pt")
    try:
        wait_for(checkpoint, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (tmp_path / reference.path.name).exists(), "killed too late: nothing left to resume"
    saved = pretrain.safe_torch_load(checkpoint)
    assert 1 <= saved["epoch"] < CFG.epochs

    resumed = pretrain_in(synthetic, tmp_path)
    assert not resumed.cached
    assert resumed.path.name == reference.path.name
    assert_same_result(resumed, reference)
    assert not checkpoint.exists()  # the per-epoch checkpoint is gone once the file is final


def test_exception_mid_epoch_then_resume_is_bit_identical(synthetic, reference, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = pretrain_loop.random_resized_crop_flip

    def failing(*args):
        calls["n"] += 1
        if calls["n"] == 8:  # second batch of the third epoch (3 batches per epoch)
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(pretrain_loop, "random_resized_crop_flip", failing)
    with pytest.raises(KeyboardInterrupt):
        pretrain_in(synthetic, tmp_path)
    checkpoint = tmp_path / reference.path.name.replace(".pt", ".ckpt.pt")
    assert pretrain.safe_torch_load(checkpoint)["epoch"] == 2
    monkeypatch.setattr(pretrain_loop, "random_resized_crop_flip", real)

    resumed = pretrain_in(synthetic, tmp_path)
    assert_same_result(resumed, reference)


def test_resume_false_starts_over(synthetic, reference, tmp_path, monkeypatch):
    real = pretrain_loop.random_resized_crop_flip
    calls = {"n": 0}

    def failing(*args):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(pretrain_loop, "random_resized_crop_flip", failing)
    with pytest.raises(KeyboardInterrupt):
        pretrain_in(synthetic, tmp_path)
    calls["n"] = -1000
    result = pretrain_in(synthetic, tmp_path, resume=False)
    assert calls["n"] == -1000 + CFG.epochs * 3  # every epoch trained again
    assert_same_result(result, reference)


# -- cache ----------------------------------------------------------------------------------------

def test_second_call_reuses_the_cache(synthetic, reference, monkeypatch, capsys):
    def no_training(*args, **kwargs):
        raise AssertionError("trained again instead of reusing the cache")

    monkeypatch.setattr(pretrain_loop, "train", no_training)
    again = pretrain_in(synthetic, reference.path.parent)
    assert again.cached and again.seconds == 0.0
    assert again.path == reference.path
    for name, tensor in reference.state.items():
        assert torch.equal(again.state[name], tensor)
    assert "reusing pre-trained backbone" in capsys.readouterr().err.replace("\n", "")
    # The probe is 1-shot whatever the run's shot (a 5-shot run reuses it); another seed or
    # schedule trains again.
    assert spec_for(synthetic).probe == EpisodeSpec(5, 1, 15)
    with pytest.raises(AssertionError, match="trained again"):
        pretrain_in(synthetic, reference.path.parent, seed=1)
    with pytest.raises(AssertionError, match="trained again"):
        pretrain_in(synthetic, reference.path.parent, cfg=replace(CFG, lr=0.01))


def test_waits_for_another_process_then_reuses(synthetic, reference, tmp_path, monkeypatch):
    proc = start_pretrain_process(tmp_path, pause=0.3)  # slowed down, finishes on its own
    try:
        wait_for(tmp_path / reference.path.name.replace(".pt", ".lock"), proc)
        wait_for(tmp_path / reference.path.name.replace(".pt", ".ckpt.pt"), proc)

        def no_training(*args, **kwargs):
            raise AssertionError("trained while another process held the lock")

        monkeypatch.setattr(pretrain_loop, "train", no_training)
        result = pretrain_in(synthetic, tmp_path)  # blocks on the lock until the other is done
    finally:
        proc.wait(timeout=300)
    assert proc.returncode == 0
    assert result.cached
    assert_same_result(result, reference)


def test_seeded_and_leaves_global_rng_alone(synthetic, tmp_path):
    cfg = PretrainConfig(epochs=1, batch_size=32, images_per_epoch=32, val_episodes=2)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = pretrain_in(synthetic, tmp_path / "a", cfg=cfg)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(999)  # the global RNG does not matter
    b = pretrain_in(synthetic, tmp_path / "b", cfg=cfg)
    assert_same_result(a, b)
    c = pretrain_in(synthetic, tmp_path / "c", cfg=cfg, seed=1)
    assert not torch.equal(a.state["stages.0.conv.weight"], c.state["stages.0.conv.weight"])


def test_history_rows_and_headless_state(reference):
    assert [r["step"] for r in reference.history] == list(range(1, CFG.epochs + 1))
    for row in reference.history:
        assert row["phase"] == "pretrain"
        assert row["val_ci95"] > 0  # a probe over several episodes has a spread
        assert row["loss"] > 0
    assert reference.best_accuracy == max(r["val_accuracy"] for r in reference.history)
    assert not any(k.startswith("fc.") for k in reference.state)  # no classifier head
    from fsbench.backbones import create_backbone

    create_backbone(BACKBONE, **KWARGS).load_state_dict(reference.state)  # strict


def test_nonfinite_loss_raises_divergence(synthetic, tmp_path):
    cfg = PretrainConfig(epochs=2, batch_size=32, lr=1e30, images_per_epoch=96, val_episodes=2)
    with pytest.raises(DivergenceError, match="pretrain.lr"):
        pretrain_in(synthetic, tmp_path, cfg=cfg)
    assert not list(tmp_path.glob("*[0-9a-f].pt"))  # nothing cached


def test_bad_schedule_is_a_config_error(synthetic, tmp_path):
    from fsbench.errors import ConfigError

    with pytest.raises(ConfigError, match="schedule"):
        pretrain_in(synthetic, tmp_path, cfg=PretrainConfig(schedule="linear"))


def test_shared_presets_cover_every_preset():
    from fsbench.config import PRESETS
    from fsbench_plugins.mtl_protocol import PRETRAIN_BACKBONES, PRETRAIN_PRESETS

    assert set(PRETRAIN_PRESETS) == set(PRESETS) == set(PRETRAIN_BACKBONES)


def test_paper_and_official_pytorch_schedules():
    from fsbench.engine.pretrain_loop import _lr_factor

    halve = _lr_factor(PretrainConfig(epochs=10, lr=1e-3, schedule="halve", halve_every=5,
                                      lr_min=1e-4), total_steps=100)
    assert [halve(s) for s in (0, 4, 5, 10, 15, 99)] == [1.0, 1.0, 0.5, 0.25, 0.125, 0.1]
    step = _lr_factor(PretrainConfig(epochs=110, schedule="step", step_every=30, step_gamma=0.2),
                      total_steps=1100)  # 10 steps per epoch
    assert step(299) == 1.0 and step(300) == pytest.approx(0.2) and step(900) == pytest.approx(0.008)
    classic = _lr_factor(PretrainConfig(epochs=4, schedule="step"), total_steps=40)
    assert [classic(s) for s in (19, 20, 30)] == [1.0, pytest.approx(0.1), pytest.approx(0.01)]


def test_adam_flip_only_mlp_head_pretraining_runs_and_keys_apart(synthetic, tmp_path):
    cfg = replace(CFG, optimizer="adam", lr=1e-3, schedule="halve", halve_every=4, crop=False,
                  head_hidden=32, epochs=2)
    result = pretrain_in(synthetic, tmp_path, cfg=cfg)
    assert result.best_accuracy > 0 and not any(k.startswith(("fc.", "head")) for k in result.state)
    assert pretrain.cache_key(spec_for(synthetic, cfg)) != pretrain.cache_key(spec_for(synthetic))

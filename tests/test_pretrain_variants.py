"""Pre-training variants (fsbench.engine.pretrain): Baseline++'s cosine head and RFS's born-again
self-distillation generations, each its own cache entry; the keys of everything else unchanged."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import fsbench.engine.pretrain as pretrain
import fsbench.engine.pretrain_loop as pretrain_loop
from fsbench.backbones import create_backbone, feature_dim
from fsbench.checkpoints import atomic_torch_save, safe_torch_load
from fsbench.config import PretrainConfig
from fsbench.data import load_dataset
from fsbench.engine.heads import pretrain_head
from fsbench.engine.pretrain import PretrainSpec, ensure_pretrained
from fsbench.episodes import derive_seed
from fsbench.errors import ConfigError
from fsbench.precision import resolve_precision
from fsbench_plugins.mtl_protocol import PRETRAIN_BACKBONES, PRETRAIN_PRESETS

CPU = torch.device("cpu")
FP32 = resolve_precision("fp32", CPU)
CFG = PretrainConfig(epochs=2, batch_size=32, lr=0.05, images_per_epoch=96, val_episodes=8)


@pytest.fixture(scope="module")
def synthetic():
    return load_dataset("synthetic")


def spec_for(dataset, cfg: PretrainConfig, backbone="conv4", kwargs=None, preset="smoke") -> PretrainSpec:
    kwargs = {"width": 8} if kwargs is None else kwargs
    return PretrainSpec(dataset, backbone, kwargs, cfg, preset, 0, 5, FP32, CPU)


def pretrain_in(dataset, cache, cfg: PretrainConfig):
    return ensure_pretrained(spec_for(dataset, cfg), cache, show_progress=False)


def test_cache_keys_of_the_linear_head_without_distillation_are_unchanged(synthetic):
    # The keys these presets had before the cosine head and distillation existed: every cached
    # backbone (finetune's, MTL's, the shared quick one) stays valid.
    before = {"paper": "266291cdaa", "quick": "ae94582cfc", "smoke": "a94015f153",
              "official_pytorch": "ac6994e1ff"}
    for name, digest in before.items():
        backbone, kwargs = PRETRAIN_BACKBONES[name]
        key = pretrain.cache_key(spec_for(synthetic, PRETRAIN_PRESETS[name], backbone, kwargs, name))
        assert key.endswith(digest), name


def test_cosine_head_learns_its_scale_and_is_its_own_cache_entry(synthetic, tmp_path):
    cosine = replace(CFG, head="cosine")
    result = pretrain_in(synthetic, tmp_path, cosine)
    assert set(result.head) == {"weight", "gain"}
    with torch.random.fork_rng(devices=[]):  # the head as the seeded initialisation built it
        torch.manual_seed(derive_seed("pretrain-init", result.path.stem))
        model = create_backbone("conv4", width=8)
        init = pretrain_head(cosine, feature_dim(model), 64)
    # Each gain starts as the norm of its class's initial weight (weight normalisation) and is
    # trained: the per-class scale is learned.
    torch.testing.assert_close(init.gain, init.weight.norm(dim=1))
    moved = (result.head["gain"] - init.gain.detach()).abs()
    assert (moved > 0).all() and moved.max() > 1e-2
    assert result.best_accuracy > 100 / 5
    linear = pretrain.cache_key(spec_for(synthetic, CFG))
    assert result.path.stem != linear
    assert safe_torch_load(result.path)["head"].keys() == result.head.keys()  # kept for teachers


def test_a_distilled_generation_learns_from_the_previous_one(synthetic, tmp_path, monkeypatch):
    calls = []
    real = pretrain_loop.distillation_loss

    def recording(student, teacher, temperature):
        calls.append((student.shape, teacher.shape, temperature, teacher.requires_grad))
        return real(student, teacher, temperature)

    monkeypatch.setattr(pretrain_loop, "distillation_loss", recording)
    gen1 = pretrain_in(synthetic, tmp_path, replace(CFG, distill_generations=1))
    gen0 = pretrain_in(synthetic, tmp_path, CFG)  # trained on the way, now cached
    assert gen0.cached and not gen1.cached and len(list(tmp_path.glob("*.pt"))) == 2
    assert gen0.path != gen1.path and gen0.head is not None
    steps = CFG.epochs * (CFG.images_per_epoch // CFG.batch_size)
    assert len(calls) == steps  # only generation 1 distils, at every step
    assert all(t == CFG.distill_temperature and not grad for *_, t, grad in calls)
    assert calls[0][0] == calls[0][1] == (CFG.batch_size, 64)  # logits over the 64 train classes
    assert any(not torch.equal(gen1.state[k], gen0.state[k]) for k in gen0.state)  # a new network
    assert gen1.seconds > 0

    trained = []
    real_train = pretrain_loop.train

    def counting(job, *args, **kwargs):
        trained.append(job.teacher.path)
        return real_train(job, *args, **kwargs)

    monkeypatch.setattr(pretrain_loop, "train", counting)
    pretrain_in(synthetic, tmp_path, replace(CFG, distill_generations=2))
    assert trained == [gen1.path]  # generation 2 only, taught by the cached generation 1


def test_a_teacher_cached_without_its_head_is_a_clear_error(synthetic, tmp_path):
    gen0 = pretrain_in(synthetic, tmp_path, CFG)
    saved = safe_torch_load(gen0.path)
    del saved["head"]  # as written before heads were kept
    atomic_torch_save(saved, gen0.path)
    with pytest.raises(ConfigError, match="holds no classifier head.*delete it"):
        pretrain_in(synthetic, tmp_path, replace(CFG, distill_generations=1))


@pytest.mark.parametrize(("change", "match"), [
    ({"head": "mlp"}, "pretrain.head must be one of linear, cosine"),
    ({"head": "cosine", "head_hidden": 16}, "head_hidden must be 0"),
    ({"distill_generations": -1}, "distill_generations"),
    ({"distill_temperature": 0.0}, "distill_temperature"),
])
def test_bad_variant_settings_are_config_errors(synthetic, tmp_path, change, match):
    with pytest.raises(ConfigError, match=match):
        pretrain_in(synthetic, tmp_path, replace(CFG, **change))

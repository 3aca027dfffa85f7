"""The finetune and train-from-scratch baselines (fsbench_plugins.baselines) on the synthetic data."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

import fsbench.engine.pretrain_loop as pretrain_loop
from fsbench.config import RunConfig
from fsbench.errors import ConfigError
from fsbench.method import MethodContext
from fsbench.plugins import default_registry
from fsbench.precision import resolve_precision
from fsbench.runner import run
from fsbench_plugins.baselines import FINETUNE_PRESETS, SCRATCH_PRESETS, Finetune, Scratch
from fsbench_plugins.mtl_protocol import PRETRAIN_PRESETS

CPU = torch.device("cpu")


def make_ctx(preset, pretrained=None, way=5, image_shape=(3, 32, 32)) -> MethodContext:
    return MethodContext(
        preset=preset, backbone=preset.backbone, backbone_kwargs=dict(preset.backbone_kwargs),
        num_train_classes=64, image_shape=image_shape, device=CPU, seed=0, way=way, shot=1,
        precision=resolve_precision("fp32", CPU), pretrained=pretrained,
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def finetune_run(cache, tmp_path_factory):
    """finetune, smoke preset, end to end: pre-training (cached under ``cache``) then 100 episodes."""
    out = tmp_path_factory.mktemp("runs")
    return run(RunConfig(method="finetune", preset="smoke", episodes=100, output=out, cache_dir=cache),
               show_progress=False)


def test_records_and_capabilities():
    methods = default_registry().methods
    finetune, scratch = methods["finetune"], methods["scratch"]
    assert finetune.needs_pretrain and not finetune.episodic
    assert scratch.episodic and not scratch.needs_pretrain
    assert finetune.plugin == scratch.plugin == "baselines"
    for name in ("paper", "quick", "smoke"):
        # Same backbone as the pre-trained one finetune (and MTL) use, so the baselines compare.
        assert FINETUNE_PRESETS[name].backbone == SCRATCH_PRESETS[name].backbone
        assert FINETUNE_PRESETS[name].pretrain == PRETRAIN_PRESETS[name]


def test_finetune_end_to_end_above_chance(finetune_run):
    s = finetune_run.summary
    assert s["pretrain_seconds"] > 0 and s["train_seconds"] == 0
    # 5-way: chance is 20%; the lower end of the 95% CI must clear it by a margin.
    assert s["accuracy"] - s["ci95"] > 22.0, s
    history = (finetune_run.run_dir / "history.jsonl").read_text()
    assert '"phase": "pretrain"' in history


def test_second_method_reuses_the_pretrained_backbone(finetune_run, cache, tmp_path, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("pre-trained again instead of reusing the cache")

    monkeypatch.setattr(pretrain_loop, "train", no_training)
    again = run(RunConfig(method="finetune", preset="smoke", episodes=100, output=tmp_path, cache_dir=cache),
                show_progress=False)
    assert again.summary["pretrain_seconds"] == 0.0
    assert torch.equal(again.accuracies, finetune_run.accuracies)  # same weights, same episodes
    # MTL shares the preset constants, hence the cache entry.
    from fsbench_plugins.mtl import PRESETS as MTL_PRESETS

    mtl = MTL_PRESETS["smoke"]
    ft = FINETUNE_PRESETS["smoke"]
    assert (mtl.backbone, mtl.backbone_kwargs, mtl.pretrain) == (ft.backbone, ft.backbone_kwargs, ft.pretrain)


def test_pretrain_command_reuses_and_prints_the_path(finetune_run, cache, capsys):
    from fsbench import cli

    code = cli.main(["pretrain", "--method", "finetune", "--preset", "smoke", "--cache-dir",
                     str(cache), "--quiet"])
    assert code == 0
    captured = capsys.readouterr()
    path = Path(captured.out.strip().splitlines()[-1])
    assert path.exists() and path.parent == cache / "pretrained"
    assert "reusing pre-trained backbone" in captured.err.replace("\n", "")
    code = cli.main(["pretrain", "--method", "scratch", "--preset", "smoke", "--cache-dir",
                     str(cache), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "needs no pre-trained backbone" in err and len(err.strip().splitlines()) == 1


def test_finetune_batched_heads_equal_one_episode_at_a_time():
    torch.manual_seed(0)
    method = Finetune(make_ctx(FINETUNE_PRESETS["smoke"], pretrained=_random_backbone_state()))
    t, way, shot, query, dim = 7, 5, 2, 6, 16
    support = torch.randn(t, way * shot, dim)
    query_f = torch.randn(t, way * query, dim)
    support_y = torch.arange(way).repeat_interleave(shot).expand(t, -1)
    batched = method.classify(support, support_y, query_f, way)
    single = torch.cat([method.classify(support[i : i + 1], support_y[i : i + 1], query_f[i : i + 1], way)
                        for i in range(t)])
    assert batched.shape == (t, way * query, way)
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)
    # Changing one episode's support changes that episode's predictions only.
    support[3] = torch.randn(way * shot, dim)
    changed = method.classify(support, support_y, query_f, way)
    assert not torch.allclose(changed[3], batched[3])
    torch.testing.assert_close(changed[:3], batched[:3])
    torch.testing.assert_close(changed[4:], batched[4:])


def test_finetune_head_fits_its_support_set():
    method = Finetune(make_ctx(FINETUNE_PRESETS["smoke"], pretrained=_random_backbone_state()))
    torch.manual_seed(1)
    support = torch.randn(4, 5, 32)
    support_y = torch.arange(5).expand(4, -1)
    logits = method.classify(support, support_y, support, 5)
    assert torch.equal(logits.argmax(-1), support_y)  # 100 steps fit a 1-shot support set


def test_finetune_needs_pretrained_weights_that_fit():
    with pytest.raises(ConfigError, match="needs a pre-trained backbone"):
        Finetune(make_ctx(FINETUNE_PRESETS["smoke"], pretrained=None))
    bad = {"stages.0.conv.weight": torch.zeros(1)}
    with pytest.raises(ConfigError, match="do not fit"):
        Finetune(make_ctx(FINETUNE_PRESETS["smoke"], pretrained=bad))


def test_finetune_rejects_bad_hparams():
    preset = FINETUNE_PRESETS["smoke"]
    bad = replace(preset, hparams=replace(preset.hparams, lr=0.0))
    with pytest.raises(ConfigError, match="hparams.lr"):
        Finetune(make_ctx(bad, pretrained=_random_backbone_state()))


def test_scratch_step_updates_every_backbone_weight():
    torch.manual_seed(0)
    method = Scratch(make_ctx(SCRATCH_PRESETS["smoke"]))
    before = {k: v.detach().clone() for k, v in method.named_parameters()}
    t, way, shot, query = 2, 5, 1, 3
    support = torch.randn(t, way * shot, 3, 32, 32)
    queries = torch.randn(t, way * query, 3, 32, 32)
    sy = torch.arange(way).repeat_interleave(shot).expand(t, -1)
    qy = torch.arange(way).repeat_interleave(query).expand(t, -1)
    out = method.meta_train_step(support, sy, queries, qy, way)
    assert out.query_logits.shape == (t, way * query, way) and torch.isfinite(out.loss)
    for name, param in method.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, f"no meta-gradient for {name}"
        assert not torch.equal(param.detach(), before[name]), f"{name} was not updated"
    assert any(name.startswith("backbone.") for name in before)


def test_scratch_second_order_reaches_the_support_features():
    torch.manual_seed(0)
    method = Scratch(make_ctx(SCRATCH_PRESETS["smoke"]))
    support = torch.randn(1, 5, 8, requires_grad=True)
    query = torch.randn(1, 10, 8)
    from fsbench.learners.linear import fit_linear_heads, linear_logits

    hp = method.hp
    w, b = fit_linear_heads(support, torch.arange(5)[None], 5, hp.train_steps, hp.inner_lr,
                            weight=torch.zeros(5, 8), bias=torch.zeros(5), first_order=hp.first_order)
    linear_logits(query, w, b).sum().backward()
    assert support.grad is not None and support.grad.abs().sum() > 0


def test_scratch_batched_classify_equals_single():
    torch.manual_seed(0)
    method = Scratch(make_ctx(SCRATCH_PRESETS["smoke"]))
    dim = method.fc_weight.shape[1]
    support, query = torch.randn(5, 5, dim), torch.randn(5, 15, dim)
    sy = torch.arange(5).expand(5, -1)
    batched = method.classify(support, sy, query, 5)
    single = torch.cat([method.classify(support[i : i + 1], sy[i : i + 1], query[i : i + 1], 5) for i in range(5)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="5-way"):
        method.classify(support[:, :3], sy[:, :3], query, 3)


def test_scratch_end_to_end_with_hard_tasks(tmp_path):
    result = run(RunConfig(method="scratch", preset="smoke", episodes=20, hard_tasks=True,
                           output=tmp_path, cache_dir=tmp_path / "cache"), show_progress=False)
    s = result.summary
    assert s["pretrain_seconds"] == 0 and s["train_seconds"] > 0
    assert s["hard_tasks"] and s["hard_tasks_used"] > 0
    assert len(result.accuracies) == 20  # the summary is the mean of the episodes it wrote
    assert s["accuracy"] == pytest.approx(float(result.accuracies.mean()) * 100)
    assert not (tmp_path / "cache" / "pretrained").exists()  # never pre-trains


def _random_backbone_state() -> dict[str, torch.Tensor]:
    from fsbench.backbones import create_backbone

    preset = FINETUNE_PRESETS["smoke"]
    return create_backbone(preset.backbone, **preset.backbone_kwargs).state_dict()

"""MAML (plugins/maml): meta-gradients against a plain autograd reference, vmap == loop, the
vmap fallback, batch-statistics BatchNorm, order independence at test, and end-to-end runs."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from timm.models import register_model
from torch import nn

from fsbench.config import EpisodicConfig, MethodPreset, RunConfig
from fsbench.data.base import Normalizer, Split
from fsbench.engine.evaluate import evaluate_episodes
from fsbench.episodes import EpisodeSampler, EpisodeSpec
from fsbench.errors import ConfigError
from fsbench.method import MethodContext
from fsbench.precision import resolve_precision
from fsbench.runner import run
from fsbench_plugins.maml import MAML, PRESETS, MAMLHparams, PrimitiveNorms, build_learner

WAY, SHOT, QUERY, SIZE = 3, 2, 3, 16


def make_maml(
    hp: MAMLHparams | None = None,
    backbone: str = "conv4",
    backbone_kwargs: dict | None = None,
    image_size: int = SIZE,
    dtype: torch.dtype = torch.float32,
    way: int = WAY,
) -> MAML:
    """A MAML on a tiny Conv-4 (width 4; a 16x16 input pools to 1x1)."""
    kwargs = {"width": 4} if backbone_kwargs is None else backbone_kwargs
    hp = hp or MAMLHparams(inner_steps=2, test_inner_steps=3, inner_lr=0.1)
    preset = MethodPreset(backbone=backbone, backbone_kwargs=kwargs, hparams=hp,
                          episodic=EpisodicConfig(meta_batch=3))
    ctx = MethodContext(preset=preset, backbone=backbone, backbone_kwargs=kwargs,
                        num_train_classes=8, image_shape=(3, image_size, image_size),
                        device=torch.device("cpu"), seed=0, way=way, shot=SHOT,
                        precision=resolve_precision("fp32", "cpu"))
    torch.manual_seed(0)
    return MAML(ctx).to(dtype)


def make_tasks(tasks: int = 3, dtype: torch.dtype = torch.float32, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    support = torch.randn(tasks, WAY * SHOT, 3, SIZE, SIZE, generator=g, dtype=dtype)
    query = torch.randn(tasks, WAY * QUERY, 3, SIZE, SIZE, generator=g, dtype=dtype)
    support_y = torch.arange(WAY).repeat_interleave(SHOT).repeat(tasks, 1)
    query_y = torch.arange(WAY).repeat_interleave(QUERY).repeat(tasks, 1)
    return support, support_y, query, query_y


# -- an independent reference: Conv-4 written out with torch.nn.functional, plain autograd --------

def conv4_reference(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """fsbench's Conv-4 (avg pool) by hand; BatchNorm on the batch's own statistics."""
    for i in range(4):
        x = F.conv2d(x, p[f"stages.{i}.conv.weight"], padding=1)
        x = F.batch_norm(x, None, None, p[f"stages.{i}.bn.weight"], p[f"stages.{i}.bn.bias"],
                         training=True)
        x = F.max_pool2d(F.relu(x), 2)
    return F.linear(x.mean((2, 3)), p["fc.weight"], p["fc.bias"])


def reference_meta_gradient(params, data, steps, lr, first_order):
    """Mean query loss over tasks after ``steps`` SGD steps per task, and its gradient."""
    support, support_y, query, query_y = data
    names = list(params)
    losses = []
    for t in range(support.shape[0]):
        fast = dict(params)
        for _ in range(steps):
            loss = F.cross_entropy(conv4_reference(fast, support[t]), support_y[t])
            grads = torch.autograd.grad(loss, [fast[n] for n in names], create_graph=not first_order)
            fast = {n: fast[n] - lr * g for n, g in zip(names, grads, strict=True)}
        losses.append(F.cross_entropy(conv4_reference(fast, query[t]), query_y[t]))
    loss = torch.stack(losses).mean()
    return loss, torch.autograd.grad(loss, [params[n] for n in names])


@pytest.mark.parametrize("first_order", [False, True], ids=["second_order", "first_order"])
@pytest.mark.parametrize("batched", [True, False], ids=["vmap", "loop"])
def test_meta_gradient_matches_plain_autograd(first_order, batched):
    hp = MAMLHparams(inner_steps=2, inner_lr=0.1, first_order=first_order)
    maml = make_maml(hp, dtype=torch.float64)
    data = make_tasks(tasks=2, dtype=torch.float64)
    params = dict(maml.model.named_parameters())
    loss, _ = maml.meta_loss(*data, batched=batched)
    grads = torch.autograd.grad(loss, list(params.values()))
    ref_loss, ref_grads = reference_meta_gradient(params, data, 2, 0.1, first_order)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-10, atol=1e-12)
    for name, g, r in zip(params, grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-8, atol=1e-11, msg=name)


def test_second_and_first_order_differ():
    """The second-order terms are really there (else the two tests above could not tell)."""
    data = make_tasks(tasks=2, dtype=torch.float64)
    grads = []
    for fo in (False, True):
        maml = make_maml(MAMLHparams(inner_steps=2, inner_lr=0.1, first_order=fo), dtype=torch.float64)
        loss, _ = maml.meta_loss(*data)
        grads.append(torch.autograd.grad(loss, list(maml.model.parameters())))
    assert max((a - b).abs().max() for a, b in zip(*grads, strict=True)) > 1e-4


def test_vmap_and_loop_agree_on_a_resnet():
    """Same meta-gradient and logits from both paths, on another backbone (ResNet-12 blocks:
    residual, BN, 3 convs each), in float32 as in training, and the same adapted test logits."""
    maml = make_maml(MAMLHparams(inner_steps=1, test_inner_steps=2, inner_lr=0.05),
                     backbone="resnet12_tiny", backbone_kwargs={"widths": (4, 8)})
    support, support_y, query, query_y = make_tasks(tasks=2)
    params = list(maml.model.parameters())
    out = {}
    for batched in (True, False):
        loss, logits = maml.meta_loss(support, support_y, query, query_y, batched=batched)
        out[batched] = (logits, torch.autograd.grad(loss, params))
    torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-4, atol=1e-5)
    for g, r in zip(out[True][1], out[False][1], strict=True):
        torch.testing.assert_close(g, r, rtol=1e-3, atol=1e-5)
    maml.hp = replace(maml.hp, batched=True)
    batched = maml.adapt_and_predict(support, support_y, query, WAY)
    maml.hp = replace(maml.hp, batched=False)
    looped = maml.adapt_and_predict(support, support_y, query, WAY)
    torch.testing.assert_close(batched, looped, rtol=1e-4, atol=1e-5)


# -- vmap fallback -------------------------------------------------------------------------------

class _ItemNet(nn.Module):
    """Data-dependent Python control flow (``.item()``): fine in a loop, impossible under vmap."""

    def __init__(self, num_classes: int = 0, **kwargs) -> None:
        super().__init__()
        del kwargs
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        if x.mean().item() > 1e6:  # never true; vmap cannot evaluate it
            x = x * 0
        return self.fc(x.mean((2, 3)))


@register_model
def maml_test_item_net(pretrained: bool = False, **kwargs) -> _ItemNet:
    return _ItemNet(**kwargs)


def test_vmap_failure_falls_back_to_the_loop_once():
    maml = make_maml(backbone="maml_test_item_net", backbone_kwargs={})
    data = make_tasks(tasks=2)
    before = [p.detach().clone() for p in maml.model.parameters()]
    with pytest.warns(RuntimeWarning, match="vmap failed on backbone 'maml_test_item_net'"):
        out = maml.meta_train_step(*data, WAY)
    assert not maml.uses_vmap and "item" in maml.vmap_failure
    assert out.query_logits.shape == (2, WAY * QUERY, WAY) and torch.isfinite(out.loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, maml.model.parameters(), strict=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once: later steps and tests go straight to the loop
        maml.meta_train_step(*data, WAY)
        logits = maml.adapt_and_predict(*data[:3], WAY)
    assert logits.shape == (2, WAY * QUERY, WAY)


def test_batched_false_never_tries_vmap():
    maml = make_maml(MAMLHparams(batched=False, inner_steps=1), backbone="maml_test_item_net",
                     backbone_kwargs={})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        maml.meta_train_step(*make_tasks(tasks=2), WAY)
    assert maml.vmap_failure is None and not maml.uses_vmap


# -- BatchNorm: batch statistics at train and at test -------------------------------------------

def test_batchnorm_uses_batch_statistics_in_train_and_eval():
    """What is asserted: (1) the learner holds no running statistics (no BN buffers, nothing in
    the state dict, every BN has track_running_stats=False); (2) adapted query logits equal the
    hand-written reference that normalises with the batch's own statistics, in eval mode as in
    train mode; (3) a query's logits depend on the other queries of its episode (they share the
    batch statistics) but not on other episodes; (4) meta-training leaves no buffers behind."""
    maml = make_maml(dtype=torch.float64)
    bns = [m for m in maml.model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 4 and all(not m.track_running_stats for m in bns)
    assert list(maml.model.buffers()) == []
    assert not any("running" in k or "num_batches" in k for k in maml.state_dict())

    support, support_y, query, query_y = make_tasks(tasks=2, dtype=torch.float64)
    params = {k: v.detach() for k, v in maml.model.named_parameters()}
    torch.testing.assert_close(  # no adaptation step: the plain forward of the initialisation
        maml.model.eval()(query[0]), conv4_reference(params, query[0]), rtol=1e-10, atol=1e-12)
    maml.eval()
    eval_logits = maml.adapt_and_predict(support, support_y, query, WAY)
    maml.train()
    train_logits = maml.adapt_and_predict(support, support_y, query, WAY)
    torch.testing.assert_close(eval_logits, train_logits, rtol=0, atol=0)

    changed = query.clone()
    changed[0, 1:] = changed[0, 1:] * 3 + 1  # every query of episode 0 but the first
    logits = maml.adapt_and_predict(support, support_y, changed, WAY)
    assert (logits[0, 0] - eval_logits[0, 0]).abs().max() > 1e-3  # query statistics moved
    torch.testing.assert_close(logits[1], eval_logits[1], rtol=0, atol=0)  # episodes independent

    maml.meta_train_step(support, support_y, query, query_y, WAY)
    assert list(maml.model.buffers()) == []


def test_primitive_norms_match_pytorch():
    x = torch.randn(6, 4, 5, 5, dtype=torch.float64)
    w, b = torch.rand(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    expected = [
        F.batch_norm(x, None, None, w, b, training=True),
        F.instance_norm(x, weight=w, bias=b),
        F.layer_norm(x, (5, 5)),
    ]
    running = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    eval_bn = F.batch_norm(x, *running, w, b, training=False)  # running stats: left to PyTorch
    with PrimitiveNorms():
        got = [
            F.batch_norm(x, None, None, w, b, training=True),
            F.instance_norm(x, weight=w, bias=b),
            F.layer_norm(x, (5, 5)),
        ]
        torch.testing.assert_close(F.batch_norm(x, *running, w, b, training=False), eval_bn)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


# -- evaluation: no state carried between episodes -----------------------------------------------

def tiny_split(classes: int = 5, per_class: int = 8) -> Split:
    g = torch.Generator().manual_seed(3)
    base = torch.randint(0, 256, (classes, 1, 3, SIZE, SIZE), generator=g)
    noise = torch.randint(-40, 41, (classes, per_class, 3, SIZE, SIZE), generator=g)
    images = (base + noise).clamp(0, 255).to(torch.uint8).flatten(0, 1)
    labels = torch.arange(classes).repeat_interleave(per_class)
    return Split("val", images, labels, tuple(f"c{i}" for i in range(classes)))


def test_evaluation_is_independent_of_episode_order_and_grouping():
    maml = make_maml()
    split = tiny_split()
    sampler = EpisodeSampler(split, EpisodeSpec(WAY, SHOT, QUERY), 0, "tiny", "eval")
    episodes = sampler.batch(range(7))
    normalize = Normalizer((127.0,) * 3, (64.0,) * 3, torch.device("cpu"))
    state = {k: v.clone() for k, v in maml.state_dict().items()}

    reference = evaluate_episodes(maml, split, episodes, normalize, batch=7)
    order = torch.tensor([4, 0, 6, 2, 5, 1, 3])
    for batch in (1, 3):
        permuted = evaluate_episodes(maml, split, episodes.select(order), normalize, batch=batch)
        torch.testing.assert_close(permuted, reference[order], rtol=0, atol=0)
    maml.hp = replace(maml.hp, batched=False)
    torch.testing.assert_close(evaluate_episodes(maml, split, episodes, normalize, 2), reference)
    assert reference.unique().numel() > 1  # episodes differ, so a mix-up would show
    for k, v in maml.state_dict().items():
        assert torch.equal(v, state[k]), f"evaluation changed {k}"


# -- presets, hparams, end-to-end runs ----------------------------------------------------------

def test_paper_learner_is_conv4_32_with_flattened_5x5_map():
    preset = PRESETS["paper"]
    assert (preset.backbone, preset.episodic.meta_batch, preset.episodic.iterations) == ("conv4_32", 4, 60_000)
    hp = preset.hparams
    assert (hp.inner_lr, hp.inner_steps, hp.test_inner_steps, hp.meta_lr, hp.first_order) == (
        0.01, 5, 10, 1e-3, False)
    ctx = MethodContext(preset=preset, backbone=preset.backbone,
                        backbone_kwargs=dict(preset.backbone_kwargs), num_train_classes=64,
                        image_shape=(3, 84, 84), device=torch.device("cpu"), seed=0, way=5, shot=1,
                        precision=resolve_precision("fp32", "cpu"))
    model = build_learner(ctx)
    assert model.num_features == 32 * 5 * 5 and model.fc.out_features == 5
    assert model(torch.randn(2, 3, 84, 84)).shape == (2, 5)


@pytest.mark.parametrize("bad", [{"inner_steps": 0}, {"test_inner_steps": 0}, {"inner_lr": 0.0},
                                 {"meta_lr": -1.0}, {"clip_value": 0.0}])
def test_bad_hparams_are_rejected(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        make_maml(MAMLHparams(**bad))


def test_way_mismatch_is_reported():
    maml = make_maml()
    with pytest.raises(ValueError, match="3-way"):
        maml.adapt_and_predict(*make_tasks(tasks=1)[:3], way=5)


@pytest.mark.parametrize("method", ["maml", "maml_ht"])
def test_smoke_run_end_to_end(tmp_path: Path, method: str):
    result = run(RunConfig(method=method, preset="smoke", episodes=10, output=tmp_path / "out",
                           cache_dir=tmp_path / "cache"), show_progress=False)
    s = result.summary
    assert s["method"] == method and s["episodes"] == 10 and len(result.accuracies) == 10
    assert s["accuracy"] == pytest.approx(float(result.accuracies.mean()) * 100)
    assert s["best_iteration"] > 0
    if method == "maml_ht":
        assert s["hard_tasks"] and s["hard_tasks_used"] > 0
    else:
        assert not s["hard_tasks"] and s["hard_tasks_used"] == 0


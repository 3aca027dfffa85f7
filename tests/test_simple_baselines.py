"""SimpleShot, Baseline++, RFS and Meta-Baseline (fsbench_plugins.simple_baselines): what makes
each method itself, on tiny tensors, and each end to end on the synthetic data."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fsbench.backbones import create_backbone
from fsbench.config import RunConfig
from fsbench.data.base import Normalizer, Split
from fsbench.errors import ConfigError
from fsbench.learners.cosine import cosine_head_logits
from fsbench.learners.prototypes import nearest_centroid_logits
from fsbench.method import MethodContext
from fsbench.paper import BEYOND_PAPER, paper_accuracy
from fsbench.plugins import default_registry
from fsbench.precision import resolve_precision
from fsbench.runner import run
from fsbench_plugins.mtl_protocol import PRETRAIN_BACKBONES, PRETRAIN_PRESETS
from fsbench_plugins.simple_baselines import (
    BASELINEPP_PRESETS,
    META_BASELINE_PRESETS,
    RFS,
    RFS_PRESETS,
    SIMPLESHOT_PRESETS,
    BaselinePP,
    MetaBaseline,
    SimpleShot,
)
from fsbench_plugins.simple_baselines.logreg import fit_logistic_regression

NAMES = ("simpleshot", "baselinepp", "rfs", "meta_baseline")
PRESETS = {"simpleshot": SIMPLESHOT_PRESETS, "baselinepp": BASELINEPP_PRESETS, "rfs": RFS_PRESETS,
           "meta_baseline": META_BASELINE_PRESETS}


def make(cls, presets, name: str = "smoke", **hparams):
    preset = presets[name]
    if hparams:
        preset = replace(preset, hparams=replace(preset.hparams, **hparams))
    torch.manual_seed(0)  # the same "pre-trained" weights in every method built here
    state = create_backbone(preset.backbone, **preset.backbone_kwargs).state_dict()
    ctx = MethodContext(preset=preset, backbone=preset.backbone,
                        backbone_kwargs=dict(preset.backbone_kwargs), num_train_classes=64,
                        image_shape=(3, 32, 32), device="cpu", seed=0, way=5, shot=1,
                        precision=resolve_precision("fp32", "cpu"), pretrained=state)
    return cls(ctx)


def episodes(t: int = 4, way: int = 5, shot: int = 1, query: int = 3, dim: int = 16, seed: int = 0):
    """Separable tasks: support [T, way*shot, D], labels, queries [T, way*query, D], labels."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(t, way, dim, generator=gen) * 2
    support = centres.repeat_interleave(shot, 1) + 0.3 * torch.randn(t, way * shot, dim, generator=gen)
    query_f = centres.repeat_interleave(query, 1) + 0.3 * torch.randn(t, way * query, dim, generator=gen)
    labels = lambda n: torch.arange(way).repeat_interleave(n).expand(t, -1).contiguous()  # noqa: E731
    return support, labels(shot), query_f, labels(query)


# -- registry, presets, the paper's numbers -----------------------------------------------------

def test_records_capabilities_and_shared_backbones():
    methods = default_registry().methods
    for name in NAMES:
        record = methods[name]
        assert record.plugin == "simple_baselines" and record.needs_pretrain
        assert record.episodic == (name == "meta_baseline")
        assert record.presets["paper"].backbone == BEYOND_PAPER[name].backbone  # Δ on its backbone
        assert paper_accuracy(name, "miniimagenet", 1) == BEYOND_PAPER[name].results[("miniimagenet", 1)]
    for preset in ("quick", "smoke"):  # finetune's and MTL's cached backbone: paired results
        shared = (*PRETRAIN_BACKBONES[preset], PRETRAIN_PRESETS[preset])
        for name in ("simpleshot", "rfs", "meta_baseline"):
            p = PRESETS[name][preset]
            assert (p.backbone, p.backbone_kwargs, p.pretrain) == shared, (name, preset)
        assert BASELINEPP_PRESETS[preset].pretrain.head == "cosine"  # its own pre-training
    assert RFS_PRESETS["paper"].pretrain.distill_generations == 2
    assert RFS_PRESETS["quick"].pretrain.distill_generations == 0


# -- SimpleShot ---------------------------------------------------------------------------------

def _split(name: str, n: int, offset: float, seed: int) -> Split:
    gen = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 3, 32, 32, generator=gen) * 100 + offset).to(torch.uint8)
    return Split(name, images, torch.arange(n) % 4, tuple(f"c{i}" for i in range(4)))


def test_cl2n_centres_on_the_base_classes_mean_never_the_test_episodes():
    method = make(SimpleShot, SIMPLESHOT_PRESETS)
    normalize = Normalizer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), torch.device("cpu"))
    train, test = _split("train", 40, 0, seed=1), _split("test", 40, 150, seed=2)  # unlike images
    with pytest.raises(ConfigError, match="fit_base"):
        method.classify(*episodes()[:3], 5)
    method.fit_base(train, normalize)
    with torch.no_grad():
        train_mean = method.embed(normalize(train.images)).mean(0)
        test_mean = method.embed(normalize(test.images)).mean(0)
    torch.testing.assert_close(method.base_mean, train_mean)
    assert not torch.allclose(method.base_mean, test_mean, atol=1e-3)
    # Predictions are nearest centroids of L2N(x - base mean): the episode's own mean, or the
    # other episodes of the batch, play no part.
    support, sy, query, _ = episodes(dim=method.base_mean.numel())
    support, query = support + train_mean, query + train_mean
    logits = method.classify(support, sy, query, 5)
    expected = nearest_centroid_logits(F.normalize(support - train_mean, dim=-1), sy,
                                       F.normalize(query - train_mean, dim=-1), 5)
    torch.testing.assert_close(logits, expected)
    alone = method.classify(support[:1], sy[:1], query[:1], 5)
    torch.testing.assert_close(alone, logits[:1])
    episode_centred = torch.cat([support, query], 1).mean(1, keepdim=True)
    shifted = method.classify(support - episode_centred + train_mean, sy, query, 5)
    assert not torch.allclose(shifted, logits)  # centring is not recomputed per episode


def test_transforms_and_the_base_subset():
    support = torch.tensor([[[10.0, 0.0], [0.0, 1.0]]])  # class 0 far out, class 1 near
    query = torch.tensor([[[1.0, 0.2]]])  # Euclid: class 1; angle: class 0
    sy = torch.tensor([[0, 1]])
    un = make(SimpleShot, SIMPLESHOT_PRESETS, transform="UN")
    l2n = make(SimpleShot, SIMPLESHOT_PRESETS, transform="L2N")
    assert un.classify(support, sy, query, 2).argmax(-1).item() == 1
    assert l2n.classify(support, sy, query, 2).argmax(-1).item() == 0
    with pytest.raises(ConfigError, match="hparams.transform"):
        make(SimpleShot, SIMPLESHOT_PRESETS, transform="ZCA")
    normalize = Normalizer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), torch.device("cpu"))
    train = _split("train", 40, 0, seed=1)
    means = []
    for _ in range(2):
        subset = make(SimpleShot, SIMPLESHOT_PRESETS, base_images=10)
        subset.fit_base(train, normalize)
        means.append(subset.base_mean.clone())
    torch.testing.assert_close(means[0], means[1])  # a seeded subset
    full = make(SimpleShot, SIMPLESHOT_PRESETS)
    full.fit_base(train, normalize)
    assert not torch.allclose(means[0], full.base_mean)


def test_the_runner_hands_fit_base_the_train_split(monkeypatch, tmp_path):
    seen = []
    real = SimpleShot.fit_base

    def fit_base(self, split, normalize):
        seen.append(split.name)
        real(self, split, normalize)

    monkeypatch.setattr(SimpleShot, "fit_base", fit_base)
    result = run(RunConfig(method="simpleshot", preset="smoke", episodes=20, eval_split="test",
                           output=tmp_path, cache_dir=tmp_path / "cache"), show_progress=False)
    assert seen == ["train"]
    assert result.summary["train_seconds"] > 0  # the base pass is the method's training


# -- Baseline++ ---------------------------------------------------------------------------------

def test_baselinepp_head_learns_its_scale_and_fits_the_support_set():
    method = make(BaselinePP, BASELINEPP_PRESETS)
    support, sy, query, qy = episodes()
    weight, gain = method.fit_heads(support, sy, 5)
    # A gain starts as the norm of its initial weight (weight normalisation), at most 1 for
    # nn.Linear's initialisation (every entry within 1/sqrt(D)): the class-wise scale is learned.
    assert gain.min() > 1.0
    assert not torch.allclose(gain, weight.norm(dim=-1), atol=1e-3)
    logits = cosine_head_logits(support, weight, gain, method.hp.scale)
    assert torch.equal(logits.argmax(-1), sy)
    assert (method.classify(support, sy, query, 5).argmax(-1) == qy).float().mean() > 0.9
    # Each episode's head is its own: changing one task's support leaves the others' heads.
    other = support.clone()
    other[2] = torch.randn_like(other[2])
    weight2, gain2 = method.fit_heads(other, sy, 5)
    torch.testing.assert_close(weight2[[0, 1, 3]], weight[[0, 1, 3]])
    torch.testing.assert_close(gain2[[0, 1, 3]], gain[[0, 1, 3]])
    assert not torch.allclose(weight2[2], weight[2])


def test_baselinepp_learning_rate_zero_learns_nothing():
    method = make(BaselinePP, BASELINEPP_PRESETS, lr=1e-12)
    support, sy, _, _ = episodes()
    weight, gain = method.fit_heads(support, sy, 5)
    torch.testing.assert_close(gain, weight.norm(dim=-1))  # still the initialisation


# -- RFS ----------------------------------------------------------------------------------------

def test_rfs_classifier_sees_only_the_support_set():
    method = make(RFS, RFS_PRESETS)
    support, sy, query, qy = episodes(shot=5)
    weight, bias = method.fit(support, sy, 5)
    logits = method.classify(support, sy, query, 5)
    changed = query.clone()
    changed[:, 1:] = torch.randn_like(changed[:, 1:]) * 10  # every query but the first
    again = method.classify(support, sy, changed, 5)
    torch.testing.assert_close(again[:, 0], logits[:, 0])  # no transduction
    expected = F.normalize(query, dim=-1) @ weight.transpose(1, 2) + bias.unsqueeze(1)
    torch.testing.assert_close(logits, expected)
    assert (logits.argmax(-1) == qy).float().mean() > 0.9
    single = torch.cat([method.classify(support[i : i + 1], sy[i : i + 1], query[i : i + 1], 5)
                        for i in range(len(support))])
    torch.testing.assert_close(single, logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shot", [1, 5])
def test_logistic_regression_reaches_the_l2_regularised_optimum(shot):
    support, sy, _, _ = episodes(t=3, shot=shot, dim=24, seed=shot)
    x = F.normalize(support, dim=-1).double()
    weight, bias = fit_logistic_regression(x, sy, 5, c=1.0, max_iter=50, tol=1e-10)
    for i in range(3):  # the same problem solved in the primal by L-BFGS
        w = torch.zeros(5, 24, dtype=torch.float64, requires_grad=True)
        b = torch.zeros(5, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=2000, tolerance_grad=1e-12, tolerance_change=1e-15,
                                line_search_fn="strong_wolfe")

        def closure(i=i, w=w, b=b, opt=opt):
            opt.zero_grad()
            loss = F.cross_entropy(x[i] @ w.T + b, sy[i], reduction="sum") + 0.5 * w.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        torch.testing.assert_close(weight[i], w.detach(), atol=1e-6, rtol=0)
        torch.testing.assert_close(bias[i] - bias[i].mean(), (b - b.mean()).detach(), atol=1e-6, rtol=0)
    strong, _ = fit_logistic_regression(x, sy, 5, c=1e-6, max_iter=50, tol=1e-10)
    assert strong.abs().max() < 1e-4  # C is the inverse regularisation strength


# -- Meta-Baseline ------------------------------------------------------------------------------

def test_meta_baseline_step_updates_the_backbone_and_the_scale():
    torch.manual_seed(0)
    method = make(MetaBaseline, META_BASELINE_PRESETS)
    method.train()
    before = {k: v.detach().clone() for k, v in method.named_parameters()}
    assert before["tau"].item() == 10.0
    support, query = torch.randn(2, 5, 3, 32, 32), torch.randn(2, 15, 3, 32, 32)
    sy = torch.arange(5).expand(2, -1)
    qy = torch.arange(5).repeat_interleave(3).expand(2, -1)
    out = method.meta_train_step(support, sy, query, qy, 5)
    assert out.query_logits.shape == (2, 15, 5) and torch.isfinite(out.loss)
    assert method.tau.item() != 10.0
    moved = [k for k, v in method.named_parameters() if not torch.equal(v.detach(), before[k])]
    assert set(moved) == set(before)  # every backbone weight and tau
    support_f, sy_f, query_f, _ = episodes()
    protos = torch.stack([torch.stack([s[y == c].mean(0) for c in range(5)])
                          for s, y in zip(support_f, sy_f, strict=True)])
    expected = method.tau * F.normalize(query_f, dim=-1) @ F.normalize(protos, dim=-1).transpose(1, 2)
    torch.testing.assert_close(method.classify(support_f, sy_f, query_f, 5), expected)


# -- end to end ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("simple-baselines-cache")


@pytest.mark.parametrize("name", NAMES)
def test_end_to_end_on_synthetic_easy_learns(name, cache, tmp_path):
    result = run(RunConfig(method=name, dataset="synthetic_easy", preset="smoke", episodes=100,
                           seed=0, device="cpu", output=tmp_path, cache_dir=cache), show_progress=False)
    s = result.summary
    assert s["accuracy"] - s["ci95"] > 35.0, s  # 5-way: chance is 20%


def test_meta_baseline_with_hard_tasks(cache, tmp_path):
    result = run(RunConfig(method="meta_baseline", dataset="synthetic_easy", preset="smoke",
                           episodes=20, hard_tasks=True, output=tmp_path, cache_dir=cache),
                 show_progress=False)
    s = result.summary
    assert s["hard_tasks"] and s["hard_tasks_used"] > 0 and s["train_seconds"] > 0

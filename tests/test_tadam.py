"""TADAM (plugins/tadam): FiLM identity at gamma0 = beta0 = 0, TEN, metric scale, auxiliary task,
smoke learning, resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from datagen import random_tasks
from smoke_resume import assert_smoke_learns_and_resumes

from fsbench.checkpoints import atomic_torch_save, safe_torch_load
from fsbench.config import EpisodicConfig, MethodPreset
from fsbench.errors import ConfigError
from fsbench.learners.prototypes import nearest_centroid_logits
from fsbench.method import MethodContext
from fsbench.precision import resolve_precision
from fsbench_plugins.tadam import TADAM, TADAMHparams, film_layers

WAY, CLASSES = 5, 12


def make(hp: TADAMHparams | None = None, backbone: str = "conv4", kwargs: dict | None = None) -> TADAM:
    torch.manual_seed(0)
    kwargs = {"width": 8} if kwargs is None else kwargs
    hp = hp or TADAMHparams(optimizer="adam", lr=1e-2, weight_decay=0.0, lr_decay_every=0)
    preset = MethodPreset(backbone=backbone, backbone_kwargs=kwargs, hparams=hp, episodic=EpisodicConfig())
    ctx = MethodContext(preset=preset, backbone=backbone, backbone_kwargs=kwargs, num_train_classes=CLASSES,
                        image_shape=(3, 16, 16), device=torch.device("cpu"), seed=0, way=WAY, shot=1,
                        precision=resolve_precision("fp32", "cpu"))
    return TADAM(ctx)


def tasks(t: int = 2, shot: int = 1, query: int = 2, size: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    support, sy, query_x, qy = random_tasks(WAY, t, shot, query, size, generator=g)
    classes = torch.stack([torch.randperm(CLASSES, generator=g)[:WAY] for _ in range(t)])
    return support, sy, query_x, qy, classes


def plain_logits(method: TADAM, support, sy, query) -> torch.Tensor:
    """-alpha * ||q - c|| to the prototypes of the unconditioned backbone (the paper metric)."""
    t, s, q = support.shape[0], support.shape[1], query.shape[1]
    sf = method.features(support.flatten(0, 1)).view(t, s, -1)
    qf = method.features(query.flatten(0, 1)).view(t, q, -1)
    return -method.alpha * (-nearest_centroid_logits(sf, sy, qf, WAY)).sqrt()


@pytest.mark.parametrize("backbone,kwargs,layers", [("conv4", {"width": 8}, 4), ("resnet12_tiny", {}, 12)])
def test_film_is_the_identity_at_zero_post_multipliers(backbone, kwargs, layers):
    method = make(backbone=backbone, kwargs=kwargs).eval()
    assert len(film_layers(method.backbone)) == layers  # post-BN of every main-path conv, no shortcut
    support, sy, query, _, _ = tasks()
    with torch.no_grad():
        for net in [*method.ten.gamma_nets, *method.ten.beta_nets]:  # a TEN that outputs something
            for p in net.parameters():
                p.normal_(0, 0.5)
        assert float(method.ten.gamma0.abs().sum() + method.ten.beta0.abs().sum()) == 0
        conditioned = method.episode_logits(support, sy, query, WAY)
        torch.testing.assert_close(conditioned, plain_logits(method, support, sy, query), rtol=1e-5, atol=1e-5)
        method.ten.gamma0.fill_(0.5)
        method.ten.beta0.fill_(0.5)
        moved = method.episode_logits(support, sy, query, WAY)
    assert not torch.allclose(moved, conditioned, atol=1e-3)


def test_film_is_per_task_from_the_mean_prototype():
    method = make().eval()
    with torch.no_grad():
        method.ten.gamma0.fill_(1.0)
        method.ten.beta0.fill_(1.0)
        for net in [*method.ten.gamma_nets, *method.ten.beta_nets]:
            for p in net.parameters():
                p.normal_(0, 0.5)
        support, sy, query, _, _ = tasks(t=3)
        together = method.episode_logits(support, sy, query, WAY)
        apart = torch.cat([method.episode_logits(support[i:i + 1], sy[i:i + 1], query[i:i + 1], WAY)
                           for i in range(3)])
    # each task is conditioned on its own support set, whatever else shares the batch
    torch.testing.assert_close(together, apart, rtol=1e-4, atol=1e-4)


def test_the_metric_scale_multiplies_the_logits_fixed_or_learned():
    method = make().eval()
    support, sy, query, _, _ = tasks()
    with torch.no_grad():
        base = method.episode_logits(support, sy, query, WAY) / method.alpha
        method.alpha.fill_(3.0)
        torch.testing.assert_close(method.episode_logits(support, sy, query, WAY), 3 * base)
    assert float(make().alpha) == 7.5  # the paper preset: fixed at the official 5-shot value
    assert not any(p is method.alpha for p in method.parameters())
    learned = make(TADAMHparams(optimizer="adam", lr=1e-2, weight_decay=0.0, learn_alpha=True))
    assert any(p is learned.alpha for p in learned.optimizer.param_groups[1]["params"])


def test_the_metric_is_the_euclidean_norm_or_its_square():
    norm = make().eval()
    square = make(TADAMHparams(optimizer="adam", lr=1e-2, weight_decay=0.0, metric="sq_euclidean")).eval()
    support, sy, query, _, _ = tasks()
    with torch.no_grad():
        a = norm.episode_logits(support, sy, query, WAY) / 7.5
        b = square.episode_logits(support, sy, query, WAY) / 7.5
    torch.testing.assert_close(-(a ** 2), b, rtol=1e-4, atol=1e-4)


def test_ten_has_three_residual_layers_as_wide_as_each_conditioned_layer():
    method = make()
    channels = [m.num_features for _, m in film_layers(method.backbone)]
    for net, c in zip(method.ten.gamma_nets, channels, strict=True):
        assert [tuple(lin.weight.shape) for lin in net] == [(c, 8), (c, c), (c, c)]  # conv4 width 8: 8-d task
    x = torch.randn(2, 8)
    net = method.ten.gamma_nets[0]
    with torch.no_grad():
        h1 = F.silu(net[0](x))
        h2 = F.silu(net[1](h1) + h1)
        torch.testing.assert_close(method.ten._run(net, x), net[2](h2) + h2)
    method.ten.gamma0.data.fill_(2.0)
    assert float(method.ten.penalty().detach()) == pytest.approx(0.5 * 4.0 * len(channels))  # TF's l2: x^2 / 2


def test_auxiliary_step_is_extra_and_its_head_runs_only_in_training():
    method = make(TADAMHparams(optimizer="adam", lr=1e-2, weight_decay=0.0, lr_decay_every=0, aux_prob=1.0,
                               aux_decay=1.0))
    calls = []
    method.aux_head.register_forward_hook(lambda *a: calls.append(1))
    support, sy, query, qy, classes = tasks()
    head_before = method.aux_head.weight.detach().clone()
    method.train()
    out = method.meta_train_step(support, sy, query, qy, WAY, classes=classes)
    assert calls and method.aux_steps == 1
    assert out.query_logits.shape == (2, WAY * 2, WAY)
    assert not torch.equal(method.aux_head.weight, head_before)  # trained on the global labels
    # the episodic update ran too (an auxiliary step does not replace it): only it moves FiLM
    assert method.outer_updates == 1 and float(method.ten.gamma0.detach().abs().sum()) > 0
    calls.clear()
    method.eval()
    logits = method.adapt_and_predict(support, sy, query, WAY)  # the core calls it without no_grad
    assert not calls and logits.shape == (2, WAY * 2, WAY)
    assert not logits.requires_grad  # nothing is kept for a backward pass at test (memory)


def test_auxiliary_loss_uses_the_global_class_ids():
    method = make()
    support, sy, query, qy, classes = tasks()
    loss = method.aux_loss(support, sy, query, qy, classes)
    feats = method.features(torch.cat([support.flatten(0, 1), query.flatten(0, 1)]))
    labels = torch.cat([classes[torch.arange(2)[:, None], sy].flatten(), classes[torch.arange(2)[:, None], qy].flatten()])
    torch.testing.assert_close(loss, F.cross_entropy(method.aux_head(feats), labels))


def test_the_paper_schedule_decays_at_half_time_then_every_2500_and_the_aux_task_follows():
    method = make(TADAMHparams(lr=0.1, aux_prob=1.0, aux_decay=1.0, lr_milestones=(2, 3)))
    assert [g["l2"] for g in method.optimizer.param_groups] == [5e-4, 0.0]  # weights only
    *batch, classes = tasks()
    lrs = []
    for _ in range(4):
        method.meta_train_step(*batch, WAY, classes=classes)
        lrs.append([g["lr"] for g in method.aux_optimizer.param_groups])  # set before each aux step
    assert [round(x[0], 6) for x in lrs] == [0.1, 0.1, 0.01, 0.001]
    assert method.optimizer.param_groups[0]["lr"] == pytest.approx(0.001)  # two milestones: x0.01 in all
    assert TADAMHparams().aux_probability(1499) == pytest.approx(0.9)  # 0.9 ** (t // 1500 + 1)
    assert TADAMHparams().aux_probability(29_999) == pytest.approx(0.9 ** 20)


def test_every_gradient_tensor_is_clipped_to_clip_norm():
    method = make(TADAMHparams(optimizer="adam", lr=1e-2, weight_decay=0.0, clip_norm=0.5))
    params = [p for g in method.optimizer.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        p.grad = torch.full_like(p, float(i + 1))
    before = [p.grad.clone() for p in params]
    method._decay_and_clip(method.optimizer)
    for p, g in zip(params, before, strict=True):
        assert float(p.grad.norm()) <= 0.5 + 1e-5 or float(g.norm()) <= 0.5
        torch.testing.assert_close(p.grad / p.grad.norm(), g / g.norm())  # direction kept, per tensor


@pytest.mark.parametrize("before", [True, False])
def test_weight_decay_joins_the_gradient_before_the_per_tensor_clip(before):
    """The official code's L2 losses are part of the loss, so slim clips gradient + decay
    (model/tadam.py:892-893, 914-915); ``decay_before_clip=False`` lets SGD add it after."""
    hp = TADAMHparams(lr=0.1, momentum=0.0, weight_decay=1.0, clip_norm=0.5, decay_before_clip=before)
    method = make(hp)
    group = method.optimizer.param_groups[0]  # the conv and FC weights (decayed)
    assert group["l2"] == 1.0 and group["weight_decay"] == (0.0 if before else 1.0)
    w = group["params"][0]
    with torch.no_grad():
        w.fill_(3.0)
    w0 = w.detach().clone()
    for p in (q for g in method.optimizer.param_groups for q in g["params"]):
        p.grad = torch.zeros_like(p)
    method._decay_and_clip(method.optimizer)
    method.optimizer.step()
    step = w0 / w0.norm() * 0.5 if before else w0  # clip(0 + 1.0 * w) vs clip(0) + 1.0 * w
    torch.testing.assert_close(w.detach(), w0 - 0.1 * step)


@pytest.mark.parametrize("separate", [True, False])
def test_supports_and_queries_pass_the_backbone_in_two_forwards(separate):
    """The official code builds the conditioned support and query features in two graph calls
    (model/tadam.py:737-751), so each set has its own batch statistics in training."""
    hp = TADAMHparams(optimizer="adam", lr=1e-2, weight_decay=0.0, separate_query_forward=separate)
    method = make(hp).train()
    sizes = []
    first_bn = film_layers(method.backbone)[0][1]
    first_bn.register_forward_hook(lambda m, inp, out: sizes.append(inp[0].shape[0]))
    support, sy, query, _, _ = tasks(t=2, query=3)
    method.episode_logits(support, sy, query, WAY)
    assert sizes == ([10, 10, 30] if separate else [10, 40])  # plain supports, then the conditioned
    with torch.no_grad():  # at test (running statistics) both give the same logits
        for net in [*method.ten.gamma_nets, *method.ten.beta_nets]:
            for p in net.parameters():
                p.normal_(0, 0.5)
        method.ten.gamma0.fill_(0.3)
        method.ten.beta0.fill_(0.2)
        method.eval()
        other = make(TADAMHparams(optimizer="adam", lr=1e-2, weight_decay=0.0,
                                  separate_query_forward=not separate)).eval()
        other.load_state_dict(method.state_dict())
        torch.testing.assert_close(method.episode_logits(support, sy, query, WAY),
                                   other.episode_logits(support, sy, query, WAY), rtol=1e-5, atol=1e-5)


def test_extra_hard_task_batches_neither_take_nor_advance_the_auxiliary_schedule():
    method = make(TADAMHparams(optimizer="adam", lr=1e-2, weight_decay=0.0, lr_decay_every=0, aux_prob=1.0,
                               aux_decay=1.0)).train()
    *batch, classes = tasks()
    method.meta_train_step(*batch, WAY, classes=classes)
    assert (int(method.updates), method.aux_steps) == (1, 1)
    with method.schedule_held():  # how the core trains an extra (Algorithm 1) hard meta-batch
        method.meta_train_step(*batch, WAY, classes=classes)
    assert (int(method.updates), method.aux_steps, method.outer_updates) == (1, 1, 2)
    method.meta_train_step(*batch, WAY, classes=classes)
    assert (int(method.updates), method.aux_steps) == (2, 2)


def test_auxiliary_probability_decays_and_is_seeded():
    hp = TADAMHparams(aux_prob=0.9, aux_decay=0.5, aux_decay_every=10)
    assert hp.aux_probability(0) == pytest.approx(0.9)
    assert hp.aux_probability(10) == pytest.approx(0.45)
    assert hp.aux_probability(30) < hp.aux_probability(20)
    method = make(hp)
    draws = []
    for n in range(60):
        method.updates.fill_(n)
        draws.append(method.take_aux_step())
    assert sum(draws[:10]) > sum(draws[-20:])  # mostly auxiliary early, rarely late
    again = make(hp)
    for n in range(60):
        again.updates.fill_(n)
        assert again.take_aux_step() == draws[n]


def test_without_class_ids_the_auxiliary_step_is_skipped_with_a_warning():
    method = make(TADAMHparams(optimizer="adam", lr=1e-2, weight_decay=0.0, lr_decay_every=0, aux_prob=1.0,
                               aux_decay=1.0)).train()
    support, sy, query, qy, _ = tasks()
    with pytest.warns(RuntimeWarning, match="auxiliary"):
        method.meta_train_step(support, sy, query, qy, WAY)
    assert method.aux_steps == 0 and int(method.updates) == 1


def test_film_penalty_and_episodic_training_move_gamma0():
    method = make(TADAMHparams(optimizer="adam", lr=1e-2, weight_decay=0.0, lr_decay_every=0, aux_prob=0.0)).train()
    batch = tasks(query=3)[:4]
    losses = [float(method.meta_train_step(*batch, WAY).loss) for _ in range(12)]
    assert losses[-1] < 0.8 * losses[0]
    assert float(method.ten.gamma0.detach().abs().sum()) > 0 and float(method.ten.beta0.detach().abs().sum()) > 0


def test_bad_hparams_are_rejected():
    for bad in (TADAMHparams(optimizer="rmsprop"), TADAMHparams(aux_prob=1.5), TADAMHparams(alpha_init=0.0),
                TADAMHparams(metric="cosine"), TADAMHparams(lr_milestones=(20, 10)), TADAMHparams(lr_decay_every=5),
                TADAMHparams(clip_norm=0.0), TADAMHparams(ten_layers=0)):
        with pytest.raises(ConfigError, match="hparams"):
            make(bad)


def test_training_state_round_trips(tmp_path: Path):
    hp = TADAMHparams(optimizer="sgd", lr=0.05, lr_milestones=(), lr_decay_every=1, lr_decay=0.5, aux_prob=0.5,
                      aux_decay_every=2)
    a = make(hp).train()
    *batch, classes = tasks()
    for _ in range(3):
        a.meta_train_step(*batch, WAY, classes=classes)
    atomic_torch_save({"method": a.state_dict(), "training": a.training_state()}, tmp_path / "ck.pt")
    saved = safe_torch_load(tmp_path / "ck.pt")
    b = make(hp).train()
    b.load_state_dict(saved["method"])
    b.load_training_state(saved["training"])
    assert int(b.updates) == 3 and b.optimizer.param_groups[0]["lr"] == pytest.approx(0.05 / 8)
    for _ in range(2):
        a.meta_train_step(*batch, WAY, classes=classes)
        b.meta_train_step(*batch, WAY, classes=classes)
    assert a.aux_steps > 0 and b.aux_optimizer.state  # the seeded auxiliary draws continue after the restore
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=k)


def test_smoke_preset_learns_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the core passes the class ids
        assert_smoke_learns_and_resumes("tadam", tmp_path, monkeypatch)

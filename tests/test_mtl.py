"""Meta-Transfer Learning (plugins/mtl): SS on a frozen pre-trained backbone, meta-learned FC init."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from datagen import random_tasks
from torch import nn

from fsbench.backbones import create_backbone
from fsbench.checkpoints import atomic_torch_save, safe_torch_load
from fsbench.config import EpisodicConfig, MethodPreset, RunConfig
from fsbench.errors import ConfigError
from fsbench.method import MethodContext
from fsbench.precision import resolve_precision
from fsbench_plugins.mtl import MTL, PRESETS, MTLHparams
from fsbench_plugins.mtl.scaleshift import SSConv2d, scale_shift_parameters

WAY = 5
BACKBONE, KWARGS = "conv4", {"width": 8}


def pretrained_state(name: str = BACKBONE, kwargs: dict | None = None) -> dict[str, torch.Tensor]:
    """A 'pre-trained' backbone: random weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    net = create_backbone(name, **(KWARGS if kwargs is None else kwargs))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1.0, 0.2)
                m.bias.normal_(0.0, 0.2)
    return {k: v.clone() for k, v in net.state_dict().items()}


def make_mtl(hp: MTLHparams | None = None, state=None, name: str = BACKBONE, kwargs=None) -> MTL:
    kwargs = dict(KWARGS if kwargs is None else kwargs)
    preset = MethodPreset(backbone=name, backbone_kwargs=kwargs, hparams=hp or MTLHparams(train_steps=3),
                          episodic=EpisodicConfig())
    ctx = MethodContext(preset=preset, backbone=name, backbone_kwargs=kwargs, num_train_classes=10,
                        image_shape=(3, 16, 16), device=torch.device("cpu"), seed=0, way=WAY, shot=1,
                        precision=resolve_precision("fp32", "cpu"),
                        pretrained=state if state is not None else pretrained_state(name, kwargs))
    return MTL(ctx)


def tasks(t: int = 2, shot: int = 1, query: int = 2, size: int = 16, seed: int = 0):
    return random_tasks(WAY, t, shot, query, size, seed)


# -- the network ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name,kwargs", [("conv4", {"width": 8}), ("resnet12_tiny", {})])
def test_fresh_mtl_computes_the_pretrained_features(name, kwargs):
    state = pretrained_state(name, kwargs)
    reference = create_backbone(name, **kwargs)
    reference.load_state_dict(state)
    reference.eval()
    method = make_mtl(state=state, name=name, kwargs=kwargs).train()  # train mode: BN stays frozen
    modules = list(method.backbone.modules())
    assert any(isinstance(m, SSConv2d) for m in modules)
    assert not any(isinstance(m, nn.Conv2d) for m in modules)  # every convolution is wrapped
    x = torch.randn(6, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(method.embed(x), reference(x), rtol=1e-5, atol=1e-5)
    assert not any(m.training for m in method.backbone.modules() if isinstance(m, nn.BatchNorm2d))


def test_missing_pretrained_weights_is_an_error():
    with pytest.raises(ConfigError, match="pre-trained"):
        make_mtl(state={})
    preset = MethodPreset(backbone=BACKBONE, backbone_kwargs=KWARGS, hparams=MTLHparams())
    ctx = MethodContext(preset, BACKBONE, KWARGS, 10, (3, 16, 16), torch.device("cpu"), 0, WAY, 1,
                        resolve_precision("fp32", "cpu"), None)
    with pytest.raises(ConfigError, match="pre-trained"):
        MTL(ctx)


def test_bad_hparams_are_rejected():
    for bad in (MTLHparams(train_steps=0), MTLHparams(inner_lr=0.0), MTLHparams(fc_init="he"),
                MTLHparams(feature_norm=-1.0)):
        with pytest.raises(ConfigError, match="hparams"):
            make_mtl(bad)


# -- meta-training ------------------------------------------------------------------------------

@pytest.mark.parametrize("first_order", [True, False])
def test_only_ss_and_fc_init_learn(first_order):
    method = make_mtl(MTLHparams(train_steps=3, first_order=first_order)).train()
    before = {k: v.clone() for k, v in method.state_dict().items()}
    trainable = {id(p) for p in method.parameters() if p.requires_grad}
    expected = {id(p) for p in scale_shift_parameters(method.backbone)} | {id(method.fc_weight), id(method.fc_bias)}
    assert trainable == expected
    out = method.meta_train_step(*tasks(), WAY)
    assert out.loss.shape == () and out.query_logits.shape == (2, WAY * 2, WAY)
    for p in method.parameters():
        if id(p) in expected:
            assert p.grad is not None and torch.isfinite(p.grad).all()
            assert p.grad.abs().sum() > 0
        else:
            assert p.grad is None
    after = method.state_dict()
    for key, value in before.items():
        changed = not torch.equal(value, after[key])
        learnable = key.endswith(("ss_scale", "ss_shift")) or key in ("fc_weight", "fc_bias")
        assert changed == learnable, key  # conv weights, BN affine and BN statistics: untouched


def reference_first_order_grads(method: MTL, support, sy, query, qy, steps: int, lr: float):
    """The official code's inner loop, written with autograd: per task, ``steps`` updates whose
    gradients come from ``torch.autograd.grad`` without ``create_graph`` (first order)."""
    t = support.shape[0]
    losses = []
    for i in range(t):
        sf = method.backbone(support[i])
        qf = method.backbone(query[i])
        w, b = method.fc_weight, method.fc_bias
        for _ in range(steps):
            loss = F.cross_entropy(F.linear(sf, w, b), sy[i])
            gw, gb = torch.autograd.grad(loss, [w, b])
            w, b = w - lr * gw, b - lr * gb
        losses.append(F.cross_entropy(F.linear(qf, w, b), qy[i]))
    params = [method.fc_weight, method.fc_bias, *scale_shift_parameters(method.backbone)]
    return torch.autograd.grad(torch.stack(losses).mean(), params)


def test_first_order_step_matches_the_official_autograd_loop():
    torch.manual_seed(0)
    method = make_mtl(MTLHparams(train_steps=4, inner_lr=0.5)).train()
    with torch.no_grad():  # a non-trivial SS state
        for p in scale_shift_parameters(method.backbone):
            p.add_(0.05 * torch.randn_like(p))
    batch = tasks(t=2, query=3)
    expected = reference_first_order_grads(method, *batch, steps=4, lr=0.5)
    method.optimizer.zero_grad()
    method.meta_train_step(*batch, WAY)
    got = [method.fc_weight.grad, method.fc_bias.grad,
           *[p.grad for p in scale_shift_parameters(method.backbone)]]
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)


def test_meta_training_lowers_the_query_loss():
    torch.manual_seed(0)
    method = make_mtl(MTLHparams(train_steps=5, ss_lr=1e-2, fc_lr=1e-2)).train()
    batch = tasks(t=2, query=3)
    losses = [float(method.meta_train_step(*batch, WAY).loss) for _ in range(15)]
    assert losses[-1] < 0.8 * losses[0]


def test_training_state_round_trips(tmp_path: Path):
    hp = MTLHparams(train_steps=2, lr_decay_every=1, lr_decay=0.5)
    a = make_mtl(hp).train()
    batch = tasks()
    for _ in range(2):
        a.meta_train_step(*batch, WAY)
    atomic_torch_save({"method": a.state_dict(), "training": a.training_state()}, tmp_path / "ck.pt")
    saved = safe_torch_load(tmp_path / "ck.pt")
    b = make_mtl(hp).train()
    b.load_state_dict(saved["method"])
    b.load_training_state(saved["training"])
    assert [g["lr"] for g in b.optimizer.param_groups] == pytest.approx([1e-4 / 4, 1e-3 / 4])
    a.meta_train_step(*batch, WAY)
    b.meta_train_step(*batch, WAY)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=k)


# -- test time ----------------------------------------------------------------------------------

def test_classify_on_many_episodes_equals_separate_calls():
    method = make_mtl(MTLHparams(test_steps=30, inner_lr=0.1)).eval()
    g = torch.Generator().manual_seed(3)
    dim = method.fc_weight.shape[1]
    support = torch.rand(6, WAY * 2, dim, generator=g) * 3
    query = torch.rand(6, WAY * 4, dim, generator=g) * 3
    sy = torch.arange(WAY).repeat_interleave(2).expand(6, -1)
    together = method.classify(support, sy, query, WAY)
    apart = torch.cat([method.classify(support[i:i + 1], sy[i:i + 1], query[i:i + 1], WAY) for i in range(6)])
    torch.testing.assert_close(together, apart, rtol=1e-5, atol=1e-5)
    # the inner loop learns: the adapted heads fit their support sets better than the init
    w, b = method.adapt_heads(support, sy, WAY)
    init = F.cross_entropy(F.linear(support, method.fc_weight, method.fc_bias).flatten(0, 1), sy.flatten())
    fitted = F.cross_entropy(torch.baddbmm(b.unsqueeze(1), support, w.transpose(1, 2)).flatten(0, 1), sy.flatten())
    assert fitted < 0.5 * init


def test_a_different_way_is_an_error():
    method = make_mtl()
    with pytest.raises(ConfigError, match="5-way"):
        method.classify(torch.zeros(1, 3, 8), torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3, 8), 3)


def test_feature_norm_rescales_the_features():
    method = make_mtl(MTLHparams(feature_norm=7.0))
    with torch.no_grad():
        f = method.embed(torch.randn(4, 3, 16, 16))
    torch.testing.assert_close(f.norm(dim=-1), torch.full((4,), 7.0))


def test_presets_share_the_pretraining_of_their_name():
    from fsbench_plugins.mtl_protocol import PRETRAIN_BACKBONES, PRETRAIN_PRESETS

    for name, preset in PRESETS.items():
        assert preset.pretrain == PRETRAIN_PRESETS[name]
        assert (preset.backbone, preset.backbone_kwargs) == PRETRAIN_BACKBONES[name]
        assert preset.episodic is not None
        preset.hparams.check()


# -- end to end ---------------------------------------------------------------------------------

def test_mtl_ht_smoke_run_on_synthetic(tmp_path: Path):
    from fsbench.runner import run

    result = run(RunConfig(method="mtl_ht", preset="smoke", episodes=10, device="cpu",
                           output=tmp_path / "out", cache_dir=tmp_path / "cache"), show_progress=False)
    summary = result.summary
    assert summary["method"] == "mtl_ht" and summary["hard_tasks"] is True
    assert summary["hard_tasks_used"] == PRESETS["smoke"].episodic.iterations * PRESETS["smoke"].episodic.meta_batch
    assert len(result.accuracies) == 10
    assert summary["accuracy"] == pytest.approx(float(result.accuracies.mean()) * 100)
    rows = [json.loads(line) for line in (result.run_dir / "history.jsonl").read_text().splitlines()]
    assert {r["phase"] for r in rows} == {"pretrain", "meta_train"}
    assert rows[-1]["hard_tasks"] == summary["hard_tasks_used"]


def test_mtl_on_fc100_end_to_end_through_the_cli(tmp_path: Path):
    from datagen import write_cifar100_python

    from fsbench.cli import main

    write_cifar100_python(tmp_path / "data", per_class_train=8, per_class_test=2)
    out = tmp_path / "out"
    code = main(["run", "--method", "mtl", "--dataset", "fc100", "--data-root", str(tmp_path / "data"),
                 "--preset", "smoke", "--query", "5", "--episodes", "8", "--device", "cpu",
                 "--output", str(out), "--cache-dir", str(tmp_path / "cache"), "--quiet"])
    assert code == 0
    [run_dir] = [p for p in out.iterdir() if p.is_dir()]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["method"], summary["dataset"], summary["episodes"]) == ("mtl", "fc100", 8)
    assert summary["hard_tasks_used"] == 0 and summary["backbone"] == "conv4"
    assert len((run_dir / "episodes.jsonl").read_text().splitlines()) == 8
    pretrained = list((tmp_path / "cache" / "pretrained").glob("fc100_conv4_smoke_*.pt"))
    assert len(pretrained) == 1  # the shared pre-trained backbone, cached for finetune too


def test_before_meta_training_mtl_with_finetunes_base_learner_is_finetune():
    """With a zero FC init and finetune's feature scaling, MTL's test-time base learner is exactly
    finetune's: the only thing MTL adds is what meta-training learns (SS and the FC init)."""
    from fsbench_plugins.baselines import Finetune, FinetuneHparams

    state = pretrained_state()
    ft_hp = FinetuneHparams()
    mtl = make_mtl(MTLHparams(fc_init="zero", feature_norm=ft_hp.feature_norm, test_steps=ft_hp.steps,
                              inner_lr=ft_hp.lr), state=state).eval()
    preset = MethodPreset(backbone=BACKBONE, backbone_kwargs=dict(KWARGS), hparams=ft_hp)
    ctx = MethodContext(preset=preset, backbone=BACKBONE, backbone_kwargs=dict(KWARGS), num_train_classes=10,
                        image_shape=(3, 16, 16), device=torch.device("cpu"), seed=0, way=WAY, shot=1,
                        precision=resolve_precision("fp32", "cpu"), pretrained=state)
    finetune = Finetune(ctx).eval()
    support, sy, query, _ = tasks(t=3, shot=2, query=4, seed=5)
    with torch.no_grad():
        logits = [m.classify(m.embed(support.flatten(0, 1)).view(3, WAY * 2, -1), sy,
                             m.embed(query.flatten(0, 1)).view(3, WAY * 4, -1), WAY)
                  for m in (mtl, finetune)]
    torch.testing.assert_close(logits[0], logits[1], rtol=1e-5, atol=1e-5)
    assert logits[0].std() > 0.1  # the heads did learn something: a real comparison


@pytest.mark.parametrize("preset", ["quick", "smoke"])
def test_cpu_presets_use_finetunes_base_learner(preset):
    """The CPU presets pair MTL with finetune as a clean ablation: same base learner, so the
    paired difference is what meta-training adds (see the test above)."""
    from fsbench_plugins.baselines import FINETUNE_PRESETS

    mtl, ft = PRESETS[preset].hparams, FINETUNE_PRESETS[preset].hparams
    assert (mtl.fc_init, mtl.feature_norm, mtl.inner_lr, mtl.test_steps) == \
        ("zero", ft.feature_norm, ft.lr, ft.steps)
    assert ft.weight_decay == 0
    # The paper preset keeps the paper's base learner (the TF code's Xavier init, raw features),
    # shared with finetune's and scratch's paper presets.
    paper = PRESETS["paper"].hparams
    assert paper.fc_init == "xavier" and paper.feature_norm is None
    assert FINETUNE_PRESETS["paper"].hparams.fc_init == "xavier"


# -- the paper and official-PyTorch presets' options --------------------------------------------

def test_official_pytorch_options_meta_learn_batchnorm_in_train_mode():
    plain = make_mtl(MTLHparams(train_steps=2))
    plain.train()
    assert not any(m.training for m in plain.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    official = make_mtl(MTLHparams(train_steps=2, bn_affine=True, bn_train=True))
    bns = [m for m in official.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    official.train()
    assert bns and all(m.training for m in bns)
    official.eval()
    assert not any(m.training for m in bns)  # pre-trained statistics at val and test
    official.train()
    before = [m.weight.detach().clone() for m in bns]
    official.meta_train_step(*tasks(), WAY)
    assert all(not torch.equal(b, m.weight) for b, m in zip(before, bns, strict=True))
    assert all(torch.equal(m.weight, m2.weight) for m, m2 in zip(
        [m for m in plain.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)],
        [m for m in make_mtl(MTLHparams(train_steps=2)).backbone.modules()
         if isinstance(m, torch.nn.BatchNorm2d)], strict=True))


def test_paper_schedule_halves_every_k_updates_down_to_the_floor():
    mtl = make_mtl(MTLHparams(train_steps=1, ss_lr=1e-3, fc_lr=1e-3, lr_decay_every=2, lr_min=2e-4))
    lrs = []
    for _ in range(8):
        lrs.append([g["lr"] for g in mtl.optimizer.param_groups])
        mtl.meta_train_step(*tasks(), WAY)
    assert [round(lr[0], 6) for lr in lrs] == [1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4, 2e-4, 2e-4]
    assert all(a == b for a, b in lrs)  # both groups follow the same schedule here


def test_xavier_fc_init_is_seeded_and_bounded():
    a, b = make_mtl(MTLHparams(fc_init="xavier")), make_mtl(MTLHparams(fc_init="xavier"))
    assert torch.equal(a.fc_weight, b.fc_weight)
    way, dim = a.fc_weight.shape
    bound = (6 / (way + dim)) ** 0.5
    assert a.fc_weight.abs().max() <= bound and a.fc_weight.std() > bound / 4

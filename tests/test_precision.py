"""The precision policy (fsbench.precision): resolution, the one forward path every method
takes, float32 losses, bit-exact reproduction in bf16, channels_last, and fp32 = the old path."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from torch import nn

import fsbench.precision as precision_mod
from fsbench.backbones import create_backbone
from fsbench.config import EpisodicConfig, MethodPreset, RunConfig
from fsbench.engine.pretrain import PretrainSpec, cache_key
from fsbench.errors import ConfigError
from fsbench.method import MethodContext
from fsbench.precision import Precision, cpu_supports_bf16, resolve_precision
from fsbench.runner import Run, run

CPU = torch.device("cpu")
BF16 = Precision("bf16", "cpu", channels_last=True, requested="bf16")  # emulated where not native
FP32 = Precision("fp32", "cpu", channels_last=False, requested="fp32")
needs_native_bf16 = pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no native bf16")


# -- resolution ------------------------------------------------------------------------------------

def test_auto_is_bf16_channels_last_on_a_cpu_with_native_bf16(monkeypatch):
    monkeypatch.setattr(precision_mod, "cpu_supports_bf16", lambda: True)
    p = resolve_precision("auto", "cpu")
    assert (p.dtype, p.channels_last, p.amp_dtype, p.label) == ("bf16", True, torch.bfloat16, "bf16")
    assert resolve_precision("bf16", "cpu").dtype == "bf16"


def test_auto_is_fp32_contiguous_on_a_cpu_without_it(monkeypatch):
    monkeypatch.setattr(precision_mod, "cpu_supports_bf16", lambda: False)
    p = resolve_precision("auto", "cpu")
    assert (p.dtype, p.channels_last, p.amp_dtype) == ("fp32", False, None)
    with pytest.raises(ConfigError, match="native bf16"):
        resolve_precision("bf16", "cpu")


def test_fp32_is_contiguous_on_the_cpu_whatever_it_supports(monkeypatch):
    for native in (True, False):
        monkeypatch.setattr(precision_mod, "cpu_supports_bf16", lambda native=native: native)
        assert resolve_precision("fp32", "cpu") == Precision("fp32", "cpu", False, "fp32")


def test_auto_on_cuda_is_bf16_channels_last(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    p = resolve_precision("auto", "cuda")
    assert (p.dtype, p.channels_last) == ("bf16", True)
    assert resolve_precision("fp32", "cuda").channels_last  # the CUDA fp32 path kept channels_last


def test_unknown_precision_is_a_config_error():
    with pytest.raises(ConfigError, match="auto, fp32, bf16"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ConfigError, match="--precision"):
        RunConfig(method="protonet", precision="half").validate()


def test_a_method_context_needs_a_resolved_precision():
    """One default: the runner resolves --precision; a context has no fallback of its own."""
    with pytest.raises(TypeError, match="precision"):
        MethodContext(MethodPreset(backbone="conv4", hparams=None), "conv4", {}, 10, (3, 16, 16), CPU, 0, 5, 1)
    prec = resolve_precision("fp32", "cpu")
    ctx = MethodContext(MethodPreset(backbone="conv4", hparams=None), "conv4", {}, 10, (3, 16, 16), CPU, 0, 5, 1,
                        prec)
    assert ctx.precision is prec and not hasattr(ctx, "autocast")  # one door: ctx.precision.autocast()


# -- one forward path, float32 where losses are computed -------------------------------------------

def _conv_probe(model: nn.Module):
    """Records (input is channels_last, output dtype) of every convolution's forward."""
    seen = []

    def hook(module, args, out):
        x = args[0]
        seen.append((x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous(), out.dtype))

    for m in model.modules():
        if isinstance(m, nn.Conv2d) or type(m).__name__ == "SSConv2d":
            m.register_forward_hook(hook)
    return seen


@pytest.mark.parametrize("name", ["conv4", "resnet12_tiny"])
def test_prepare_puts_conv_backbones_in_channels_last(name):
    model = BF16.prepare(create_backbone(name))
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    x = BF16.input(torch.randn(2, 3, 16, 16))
    assert x.is_contiguous(memory_format=torch.channels_last)
    seen = _conv_probe(model)
    out = BF16.forward(model, x)
    assert out.dtype == torch.float32
    assert all(cl and dtype == torch.bfloat16 for cl, dtype in seen)
    plain = FP32.prepare(create_backbone(name))
    assert all(m.weight.is_contiguous() for m in plain.modules() if isinstance(m, nn.Conv2d))


def _ctx(preset: MethodPreset, prec: Precision, pretrained=None) -> MethodContext:
    return MethodContext(preset=preset, backbone=preset.backbone, backbone_kwargs=dict(preset.backbone_kwargs),
                         num_train_classes=10, image_shape=(3, 16, 16), device=CPU, seed=0, way=5, shot=1,
                         pretrained=pretrained, precision=prec)


def _tasks(t=2, query=2):
    g = torch.Generator().manual_seed(0)
    support = torch.randn(t, 5, 3, 16, 16, generator=g)
    query_x = torch.randn(t, 5 * query, 3, 16, 16, generator=g)
    return support, torch.arange(5).expand(t, -1), query_x, torch.arange(5).repeat_interleave(query).expand(t, -1)


def _methods(prec: Precision):
    from fsbench_plugins.baselines import Finetune, FinetuneHparams, Scratch, ScratchHparams
    from fsbench_plugins.maml import MAML, MAMLHparams
    from fsbench_plugins.mtl import MTL, MTLHparams
    from fsbench_plugins.protonet import ProtoNet, ProtoNetHparams

    kw = {"width": 8}
    state = create_backbone("conv4", **kw).state_dict()
    ep = EpisodicConfig()
    return {
        "protonet": ProtoNet(_ctx(MethodPreset("conv4", ProtoNetHparams(), {"width": 8, "pool": "flatten"},
                                               episodic=ep), prec)),
        "mtl": MTL(_ctx(MethodPreset("conv4", MTLHparams(train_steps=2), kw, episodic=ep), prec, state)),
        "scratch": Scratch(_ctx(MethodPreset("conv4", ScratchHparams(train_steps=2, test_steps=2), kw,
                                             episodic=ep), prec)),
        "finetune": Finetune(_ctx(MethodPreset("conv4", FinetuneHparams(steps=2), kw), prec, state)),
        "maml": MAML(_ctx(MethodPreset("conv4", MAMLHparams(inner_steps=1, test_inner_steps=1, batched=False),
                                       kw, episodic=ep), prec)),
    }


def test_every_method_computes_features_in_bf16_channels_last_and_losses_in_fp32():
    for name, method in _methods(BF16).items():
        seen = _conv_probe(method)
        support, sy, query, qy = _tasks()
        if name != "finetune":
            out = method.meta_train_step(support, sy, query, qy, 5)
            assert out.loss.dtype == torch.float32 and out.query_logits.dtype == torch.float32, name
        trained = len(seen)
        method.eval()
        with torch.no_grad():
            if method.frozen_at_test:
                feats = method.embed(support.flatten(0, 1))
                assert feats.dtype == torch.float32, name
        logits = method.adapt_and_predict(support, sy, query, 5)
        assert logits.dtype == torch.float32, name
        assert seen[trained:] and all(cl and dtype == torch.bfloat16 for cl, dtype in seen[trained:]), name
        # MAML's second-order meta-train step runs contiguous on a CPU (fsbench_plugins.maml.method).
        train_layout = name != "maml"
        assert all(cl is train_layout and dtype == torch.bfloat16 for cl, dtype in seen[:trained]), name


@pytest.mark.parametrize("first_order", [False, True])
def test_maml_meta_trains_contiguous_on_a_cpu_in_second_order_only(first_order):
    """Second order: contiguous weights and training images (the double backward through batch
    norm is faster so on a CPU), channels_last test images; first order: channels_last throughout."""
    from fsbench_plugins.maml import MAML, MAMLHparams

    hp = MAMLHparams(inner_steps=1, test_inner_steps=1, batched=False, first_order=first_order)
    maml = MAML(_ctx(MethodPreset("conv4", hp, {"width": 8}, episodic=EpisodicConfig()), BF16))
    weights = [m.weight for m in maml.model.modules() if isinstance(m, nn.Conv2d)]
    assert all(w.is_contiguous() is not first_order for w in weights)
    seen = _conv_probe(maml)
    support, sy, query, qy = _tasks()
    maml.meta_train_step(support, sy, query, qy, 5)
    trained = len(seen)
    maml.adapt_and_predict(support, sy, query, 5)
    assert trained and all(cl is first_order for cl, _ in seen[:trained])
    assert seen[trained:] and all(cl for cl, _ in seen[trained:])


def test_fp32_methods_run_no_autocast_and_keep_nchw():
    for name, method in _methods(FP32).items():
        seen = _conv_probe(method)
        method.eval()
        support, sy, query, _ = _tasks(t=1)
        method.adapt_and_predict(support, sy, query, 5)
        assert seen and all(not cl and dtype == torch.float32 for cl, dtype in seen), name


def test_pretrain_cache_key_depends_on_precision_and_fp32_keeps_its_key():
    from fsbench.config import PretrainConfig
    from fsbench.data import load_dataset

    dataset = load_dataset("synthetic", None, None, False)
    fp32, bf16 = Precision("fp32", "cpu", False, "fp32"), Precision("bf16", "cpu", True, "auto")
    spec = PretrainSpec(dataset, "conv4", {}, PretrainConfig(), "smoke", 0, 5, fp32, CPU)
    assert cache_key(spec) != cache_key(replace(spec, precision=bf16))
    assert "precision" not in str(spec.key)  # fp32 keys are those from before the precision policy
    assert cache_key(replace(spec, precision=replace(fp32, requested="auto"))) == cache_key(spec)


# -- whole runs ------------------------------------------------------------------------------------

#: Correct queries (of 75) in the first 20 test episodes of `protonet --preset smoke` on the
#: synthetic data, seed 0, from the committed CI reference made before --precision existed
#: (reference/ci/protonet_synthetic_conv4_5w1s_smoke_test_s0_f6f6ae20, fp32 on a CPU).
OLD_FP32_PROTONET_SMOKE = [16, 17, 13, 20, 19, 16, 16, 23, 18, 18, 19, 21, 18, 20, 30, 13, 18, 18, 22, 29]


def _smoke(tmp_path, precision: str, out: str):
    cfg = RunConfig(method="protonet", preset="smoke", episodes=20, device="cpu", precision=precision,
                    output=tmp_path / out, cache_dir=tmp_path / "cache")
    return run(cfg, show_progress=False)


def test_fp32_is_exactly_the_old_fp32_path(tmp_path):
    result = _smoke(tmp_path, "fp32", "a")
    assert [round(float(a) * 75) for a in result.accuracies] == OLD_FP32_PROTONET_SMOKE
    assert result.summary["precision"] == "fp32" and result.summary["channels_last"] is False


@needs_native_bf16
def test_a_bf16_run_reproduces_itself_exactly(tmp_path):
    first, second = _smoke(tmp_path, "bf16", "a"), _smoke(tmp_path, "bf16", "b")
    assert torch.equal(first.accuracies, second.accuracies)
    assert first.summary["precision"] == "bf16" and first.summary["channels_last"] is True
    def curve(result):
        rows = (json.loads(line) for line in (result.run_dir / "history.jsonl").read_text().splitlines())
        return [(r["step"], r["loss"], r["val_accuracy"]) for r in rows]

    assert curve(first) == curve(second)  # the same losses and val accuracies, bit for bit
    config = json.loads((first.run_dir / "config.json").read_text())
    assert config["precision"] == "bf16"


@needs_native_bf16
def test_fp32_and_bf16_runs_land_in_different_directories():
    cfg = RunConfig(method="protonet", preset="smoke")
    fp32, bf16 = Run(replace(cfg, precision="fp32")), Run(replace(cfg, precision="bf16"))
    assert fp32.name != bf16.name
    assert Run(replace(cfg, precision="auto")).name == bf16.name  # auto resolves to bf16 here


# -- MAML under bf16: fused batch norm in the per-task loop, graph-free adaptation at test -------

def test_maml_bf16_loop_computes_the_same_meta_gradient_as_the_reference():
    """Under a bf16 policy MAML's per-task loop uses PyTorch's fused batch norm instead of the
    primitives; in float64 (which autocast leaves alone) it must give the fp32 path's function:
    the same loss and second-order meta-gradient as the primitive path, and the same test logits
    from the graph-free test-time adaptation as from torch.func."""
    from fsbench_plugins.maml import MAML, MAMLHparams

    def make(prec):
        hp = MAMLHparams(inner_steps=2, test_inner_steps=3, inner_lr=0.1, batched=False)
        kw = {"width": 4}
        ctx = MethodContext(MethodPreset("conv4", hp, kw, episodic=EpisodicConfig()), "conv4", kw, 8,
                            (3, 16, 16), CPU, 0, 5, 1, prec)
        torch.manual_seed(0)
        return MAML(ctx).double()

    support, sy, query, qy = (t.double() if t.is_floating_point() else t for t in _tasks())
    results = []
    for prec in (FP32, BF16):
        maml = make(prec)
        params = dict(maml.model.named_parameters())
        loss, _ = maml.meta_loss(support, sy, query, qy, batched=False)
        grads = torch.autograd.grad(loss, list(params.values()))
        maml.eval()
        with torch.no_grad():
            logits = maml.adapt_and_predict(support, sy, query, 5)
        results.append((loss, grads, logits))
    (l32, g32, p32), (l16, g16, p16) = results
    torch.testing.assert_close(l16, l32, rtol=1e-10, atol=1e-12)
    for a, b in zip(g16, g32, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-11)
    torch.testing.assert_close(p16, p32, rtol=1e-8, atol=1e-10)

"""fsbench's backbones behave like timm models and create_backbone accepts any timm name."""

from __future__ import annotations

import pytest
import timm
import torch

from fsbench.backbones import (
    FSBENCH_BACKBONES,
    BackboneError,
    create_backbone,
    feature_dim,
)

# Small widths keep the parametrised checks fast; default sizes are checked separately.
SMALL = {
    "conv4": dict(width=8),
    "conv4_32": dict(width=8),
    "resnet12": dict(widths=(4, 8, 8, 16)),
    "resnet12_mtl": dict(widths=(4, 8, 8, 16)),
    "resnet12_tiny": {},
    "resnet25_mtl": dict(widths=(8, 8, 16), blocks=1),
}
DEFAULT_FEATURES = {
    "conv4": 64,
    "conv4_32": 32,
    "resnet12": 640,
    "resnet12_mtl": 512,
    "resnet12_tiny": 128,
    "resnet25_mtl": 640,
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_every_backbone_has_a_test_config():
    assert set(FSBENCH_BACKBONES) == set(SMALL) == set(DEFAULT_FEATURES)


@pytest.mark.parametrize("name", FSBENCH_BACKBONES)
def test_default_feature_size(name):
    model = timm.create_model(name, num_classes=0)
    assert model.num_features == DEFAULT_FEATURES[name]
    assert feature_dim(model) == DEFAULT_FEATURES[name]
    assert model.num_classes == 0


def test_default_resnet12_forward_84():
    model = timm.create_model("resnet12", num_classes=0).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 84, 84))
    assert out.shape == (2, 640)
    assert torch.isfinite(out).all()


def test_official_pytorch_backbone_sees_the_central_80px_crop():
    model = timm.create_model("resnet25_mtl", widths=(8, 8, 16), blocks=2, num_classes=0).eval()
    x = torch.randn(2, 3, 84, 84)
    with torch.no_grad():
        whole, centre = model(x), model(x[..., 2:82, 2:82])
        torch.testing.assert_close(whole, centre)  # the border is never seen
        assert model.forward_features(x).shape[-2:] == (10, 10)  # 80 px -> 10x10, as AvgPool(10)
        assert not torch.allclose(model(x), model(x.roll(1, dims=-1)))
    # three stages of `blocks` basic blocks, two 3x3 convs each, plus the stem: 2 * 3 * 2 + 1
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 13


@pytest.mark.parametrize("name", FSBENCH_BACKBONES)
@pytest.mark.parametrize("size", [84, 32])
def test_features_any_resolution(name, size):
    model = timm.create_model(name, num_classes=0, **SMALL[name]).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        out = model(x)
        fmap = model.forward_features(x)
        pooled = model.forward_head(fmap, pre_logits=True)
    assert out.shape == (2, model.num_features)
    assert fmap.dim() == 4 and fmap.shape[:2] == (2, model.num_features)
    crop = getattr(model, "input_crop", None) or size  # resnet25_mtl sees its 80-px centre
    assert fmap.shape[-1] == min(size, crop) // 2 ** model.num_pools
    assert torch.equal(pooled, out)


@pytest.mark.parametrize("name", FSBENCH_BACKBONES)
def test_classifier_head_and_reset(name):
    model = timm.create_model(name, num_classes=5, **SMALL[name]).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model(x).shape == (2, 5)
        assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (
            2,
            model.num_features,
        )
    assert isinstance(model.get_classifier(), torch.nn.Linear)
    model.reset_classifier(3)
    with torch.no_grad():
        assert model(x).shape == (2, 3)
    model.reset_classifier(0)
    with torch.no_grad():
        assert model(x).shape == (2, model.num_features)
    assert not any(True for _ in model.get_classifier().parameters())


@pytest.mark.parametrize("name", FSBENCH_BACKBONES)
def test_backward_gives_finite_grads_everywhere(name):
    model = timm.create_model(name, num_classes=5, **SMALL[name]).train()
    out = model(torch.randn(2, 3, 32, 32))
    torch.nn.functional.cross_entropy(out, torch.tensor([0, 3])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", FSBENCH_BACKBONES)
def test_all_convs_are_plain_conv2d_with_kaiming_init(name):
    model = timm.create_model(name, **SMALL[name])
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(type(m) is torch.nn.Conv2d for m in convs)
    # kaiming (fan_out) init: std close to sqrt(2 / fan_out), far from PyTorch's default uniform
    big = max(convs, key=lambda m: m.weight.numel())
    fan_out = big.out_channels * big.kernel_size[0] * big.kernel_size[1]
    expected = (2.0 / fan_out) ** 0.5
    assert 0.7 * expected < big.weight.std().item() < 1.3 * expected


def test_registered_in_timm():
    assert {"resnet12", "resnet12_mtl", "resnet12_tiny"} <= set(timm.list_models("resnet12*"))
    assert {"conv4", "conv4_32"} <= set(timm.list_models("conv4*"))
    for name in FSBENCH_BACKBONES:
        assert timm.is_model(name)


def test_conv4_flatten_pool_is_protonet_sized():
    model = timm.create_model("conv4", pool="flatten").eval()
    assert model.num_features == 64 * 5 * 5
    with torch.no_grad():
        assert model(torch.randn(2, 3, 84, 84)).shape == (2, 1600)
        with pytest.raises(ValueError, match="flatten"):
            model(torch.randn(2, 3, 32, 32))
    small = timm.create_model("conv4", pool="flatten", img_size=32, width=8).eval()
    with torch.no_grad():
        assert small(torch.randn(2, 3, 32, 32)).shape == (2, 8 * 2 * 2)


def test_bad_pool_rejected():
    with pytest.raises(ValueError, match="pool"):
        timm.create_model("conv4", pool="max")


def test_features_only():
    model = timm.create_model("resnet12_tiny", features_only=True).eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 32, 32))
    assert [f.shape[1] for f in feats] == [16, 32, 64, 128]
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2]


def test_create_backbone_fsbench_name():
    model = create_backbone("resnet12_tiny")
    assert model.num_classes == 0 and feature_dim(model) == 128
    model = create_backbone("conv4", width=16)
    assert feature_dim(model) == 16


def test_create_backbone_plain_timm_model():
    model = create_backbone("resnet10t").eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, feature_dim(model))
    assert feature_dim(model) == model.num_features == 512


def test_create_backbone_unknown_name():
    with pytest.raises(BackboneError) as info:
        create_backbone("resnet13_nonexistent")
    msg = str(info.value)
    assert "\n" not in msg
    assert "resnet13_nonexistent" in msg
    for name in FSBENCH_BACKBONES:
        assert name in msg
    assert "timm" in msg
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("preset,shot,dim", [("quick", 1, 64), ("quick", 5, 1600), ("paper", 1, 1600)])
def test_protonet_quick_pools_in_one_shot_and_flattens_above(preset, shot, dim):
    from fsbench.method import MethodContext
    from fsbench.precision import resolve_precision
    from fsbench_plugins.protonet import PRESETS, ProtoNet

    p = PRESETS[preset]
    ctx = MethodContext(preset=p, backbone=p.backbone, backbone_kwargs=dict(p.backbone_kwargs),
                        num_train_classes=64, image_shape=(3, 84, 84), device="cpu", seed=0, way=5,
                        shot=shot, precision=resolve_precision("fp32", "cpu"))
    with torch.no_grad():
        assert ProtoNet(ctx).eval().embed(torch.randn(2, 3, 84, 84)).shape == (2, dim)


# -- the 2x2 max-pooling's no-grad CPU path -----------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("size", [(84, 84), (21, 21), (5, 7), (2, 3)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_maxpool2x2_without_grad_is_max_pool2d_bit_for_bit(dtype, size, channels_last):
    from fsbench.backbones.base import MaxPool2x2

    x = torch.randn(3, 4, *size).to(dtype)
    x[0, 0, 0, 0] = float("nan")
    x[1, 1, :2, :2] = float("-inf")
    x[2, 2] = 0.0  # ties
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = MaxPool2x2()(x)
    expected = torch.nn.functional.max_pool2d(x, 2)
    assert out.shape == expected.shape and out.dtype == dtype
    assert torch.equal(out.nan_to_num(), expected.nan_to_num())
    assert torch.equal(out.isnan(), expected.isnan()) and bool(out.isnan().any())


def test_maxpool2x2_with_grad_keeps_max_pool2d_subgradient():
    from fsbench.backbones.base import MaxPool2x2

    x = torch.zeros(1, 1, 4, 4, requires_grad=True)  # all ties: max_pool2d sends each window's grad to its first
    MaxPool2x2()(x).sum().backward()
    y = x.detach().clone().requires_grad_()
    torch.nn.functional.max_pool2d(y, 2).sum().backward()
    assert torch.equal(x.grad, y.grad) and x.grad.sum() == 4


def test_maxpool2x2_rejects_a_map_below_its_window_without_grad_too():
    from fsbench.backbones.base import MaxPool2x2

    with torch.no_grad(), pytest.raises(RuntimeError):
        MaxPool2x2()(torch.randn(1, 1, 1, 1))


@pytest.mark.parametrize("name", ["conv4", "resnet12"])
def test_no_grad_features_equal_grad_mode_features(name):
    """Evaluation (no grad) and training-mode graphs compute the same features, bit for bit."""
    model = create_backbone(name, **SMALL[name]).eval()
    x = torch.randn(2, 3, 84, 84)
    with torch.no_grad():
        fast = model(x)
    assert torch.equal(fast, model(x).detach())

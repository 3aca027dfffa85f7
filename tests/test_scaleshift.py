"""MTL scale-and-shift: exact at initialisation, only SS parameters (and a head) learn."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
import torch.nn as nn
from torch.func import functional_call

import fsbench.backbones  # noqa: F401  (registers the backbones with timm)
from fsbench_plugins.mtl.scaleshift import (
    SSConv2d,
    scale_shift_named_parameters,
    scale_shift_parameters,
    wrap_scale_shift,
)

NAMES = ["conv4", "resnet12_tiny"]


def _random_model(name: str) -> nn.Module:
    """A backbone with non-trivial BatchNorm statistics and affine parameters, in eval mode."""
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1.0, 0.2)
                m.bias.normal_(0, 0.1)
    return model.eval()


def _x(batch: int = 2, size: int = 32) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", NAMES)
def test_fresh_wrap_is_exact(name):
    model = _random_model(name)
    wrapped = wrap_scale_shift(copy.deepcopy(model))
    x = _x()
    with torch.no_grad():
        assert torch.equal(wrapped(x), model(x))
        assert torch.equal(wrapped.forward_features(x), model.forward_features(x))


@pytest.mark.parametrize("name", NAMES)
def test_every_conv_is_wrapped_and_in_place(name):
    model = _random_model(name)
    n_convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    out = wrap_scale_shift(model)
    assert out is model
    assert not any(isinstance(m, nn.Conv2d) for m in model.modules())
    assert sum(isinstance(m, SSConv2d) for m in model.modules()) == n_convs
    assert len(scale_shift_parameters(model)) == 2 * n_convs
    # wrapping twice is a no-op
    before = [id(p) for p in scale_shift_parameters(model)]
    wrap_scale_shift(model)
    assert [id(p) for p in scale_shift_parameters(model)] == before


@pytest.mark.parametrize("name", NAMES)
def test_only_scale_shift_and_head_get_grads(name):
    model = wrap_scale_shift(_random_model(name))
    head = nn.Linear(model.num_features, 5)
    frozen_before = {k: v.clone() for k, v in model.state_dict().items() if "ss_" not in k}

    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in scale_shift_parameters(model)}

    model.train()
    loss = nn.functional.cross_entropy(head(model(_x(4))), torch.tensor([0, 1, 2, 3]))
    loss.backward()

    for pname, p in model.named_parameters():
        if pname.endswith(("ss_scale", "ss_shift")):
            assert p.grad is not None and torch.isfinite(p.grad).all(), pname
            assert p.grad.abs().sum() > 0, pname
        else:
            assert not p.requires_grad and p.grad is None, pname
    for mod in model.modules():
        if isinstance(mod, SSConv2d):
            assert not mod.weight.requires_grad and mod.weight.grad is None
    assert head.weight.grad is not None and head.bias.grad is not None

    # an optimiser step over everything trainable leaves the frozen weights untouched
    opt = torch.optim.SGD(list(model.parameters()) + list(head.parameters()), lr=0.1)
    opt.step()
    after = model.state_dict()
    for k, v in frozen_before.items():
        if "running" in k or "num_batches" in k:
            continue  # BN statistics move in train mode; that is the caller's choice
        assert torch.equal(after[k], v), k


@pytest.mark.parametrize("name", NAMES)
def test_changing_scale_or_shift_changes_output(name):
    model = wrap_scale_shift(_random_model(name))
    x = _x()
    with torch.no_grad():
        ref = model(x)
        first = next(m for m in model.modules() if isinstance(m, SSConv2d))
        first.ss_scale.mul_(1.5)
        scaled = model(x)
        first.ss_scale.div_(1.5)
        first.ss_shift.add_(0.3)
        shifted = model(x)
    assert not torch.allclose(scaled, ref)
    assert not torch.allclose(shifted, ref)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count(name):
    model = _random_model(name)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    expected = sum(c.out_channels * c.in_channels // c.groups + c.out_channels for c in convs)
    conv_weights = sum(c.weight.numel() for c in convs)
    wrap_scale_shift(model)
    n_ss = sum(p.numel() for p in scale_shift_parameters(model))
    assert n_ss == expected
    # 3x3-only nets: scale is exactly 1/9 of the kernel weights, plus one shift per channel
    if name == "conv4":
        n_shift = sum(c.out_channels for c in convs)
        assert 9 * (n_ss - n_shift) == conv_weights
    assert n_ss < conv_weights / 5


def test_ss_conv_shapes_and_state_dict_keys():
    conv = nn.Conv2d(4, 6, kernel_size=3, padding=1, bias=True)
    ss = SSConv2d(conv)
    assert ss.ss_scale.shape == (6, 4, 1, 1) and ss.ss_shift.shape == (6,)
    assert torch.equal(ss.ss_scale, torch.ones(6, 4, 1, 1))
    assert torch.equal(ss.ss_shift, torch.zeros(6))
    assert set(ss.state_dict()) == {"weight", "bias", "ss_scale", "ss_shift"}
    assert {n for n, _ in ss.named_parameters()} == {"ss_scale", "ss_shift"}
    no_bias = SSConv2d(nn.Conv2d(4, 6, 1, bias=False))
    assert set(no_bias.state_dict()) == {"weight", "ss_scale", "ss_shift"}


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(4, 6, 3, padding=1, bias=True),
        nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2, bias=False),
        nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"),
        nn.Conv2d(4, 8, 1, groups=4),
    ],
)
def test_conv_variants_exact_and_effective_params(conv):
    torch.manual_seed(0)
    net = nn.Sequential(conv, nn.ReLU())
    ref = copy.deepcopy(net)
    wrap_scale_shift(net)
    ss = net[0]
    assert ss.ss_scale.shape == (conv.out_channels, conv.in_channels // conv.groups, 1, 1)
    x = torch.randn(2, 4, 9, 9)
    with torch.no_grad():
        assert torch.equal(net(x), ref(x))
        ss.ss_scale.uniform_(0.5, 1.5)
        ss.ss_shift.normal_()
        w = ref[0].weight * ss.ss_scale
        b = (ref[0].bias if ref[0].bias is not None else 0) + ss.ss_shift
        ref[0].weight.copy_(w)
        ref[0].bias = nn.Parameter(b.clone())
        torch.testing.assert_close(net(x), ref(x), atol=1e-6, rtol=1e-5)


def test_wrapping_a_bare_conv_and_shared_convs():
    ss = wrap_scale_shift(nn.Conv2d(3, 4, 3))
    assert isinstance(ss, SSConv2d)
    shared = nn.Conv2d(3, 3, 3, padding=1)
    net = nn.Sequential(shared, nn.ReLU(), shared)
    wrap_scale_shift(net)
    assert net[0] is net[2] and isinstance(net[0], SSConv2d)
    assert len(scale_shift_parameters(net)) == 2


def test_conv_subclass_with_custom_forward_rejected():
    class StdConv(nn.Conv2d):
        def forward(self, x):
            w = self.weight - self.weight.mean(dim=(1, 2, 3), keepdim=True)
            return self._conv_forward(x, w, self.bias)

    with pytest.raises(TypeError, match="StdConv"):
        wrap_scale_shift(nn.Sequential(StdConv(3, 4, 3)))


def test_other_parameters_frozen_including_existing_head():
    model = wrap_scale_shift(timm.create_model("conv4", num_classes=5, width=8))
    assert not model.fc.weight.requires_grad
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert not m.weight.requires_grad and not m.bias.requires_grad


def test_functional_call_with_fast_weights():
    model = wrap_scale_shift(_random_model("conv4"))
    head = nn.Linear(model.num_features, 3)
    named = scale_shift_named_parameters(model)
    assert all(k.endswith(("ss_scale", "ss_shift")) for k in named)
    x, y = _x(3), torch.tensor([0, 1, 2])

    # identical to the module's own forward with the current parameters
    with torch.no_grad():
        assert torch.equal(functional_call(model, dict(named), (x,)), model(x))

    # one MAML-style inner step on the SS parameters, differentiable w.r.t. the originals
    loss = nn.functional.cross_entropy(head(functional_call(model, named, (x,))), y)
    grads = torch.autograd.grad(loss, list(named.values()), create_graph=True)
    fast = {k: p - 0.5 * g for (k, p), g in zip(named.items(), grads, strict=True)}
    out = functional_call(model, fast, (x,))
    with torch.no_grad():
        assert not torch.allclose(out, model(x))
    nn.functional.cross_entropy(head(out), y).backward()
    assert all(p.grad is not None for p in named.values())
    # the module's own parameters were not modified by the functional step
    assert all(torch.equal(named[k], dict(model.named_parameters())[k]) for k in named)

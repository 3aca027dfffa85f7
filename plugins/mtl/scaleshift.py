"""Scaling and shifting (SS) of pre-trained convolutions, from Meta-Transfer Learning.

Paper: `Meta-Transfer Learning for Few-Shot Learning` (Sun et al., CVPR 2019). The pre-trained
feature extractor is frozen; every convolution gets a learnable scale per kernel (``Phi_S1``, one
value per output/input channel pair, broadcast over the kernel's spatial extent) and a learnable
shift per output channel (``Phi_S2``):

    effective weight = weight * ss_scale      ss_scale: [out, in / groups, 1, 1], starts at 1
    effective bias   = bias (or 0) + ss_shift  ss_shift: [out],                    starts at 0

so a freshly wrapped network computes exactly what the pre-trained one did.

Design choices:

* :func:`wrap_scale_shift` works **in place**: each ``nn.Conv2d`` is swapped for an
  :class:`SSConv2d` holding the pre-trained ``weight`` / ``bias`` as **buffers** (they share
  storage with the old parameters, no copy). Buffers stay in ``state_dict`` under the usual keys
  and move with ``.to()``, but are not in ``.parameters()``, so an optimiser over
  ``model.parameters()`` can only touch what is meant to learn.
* Every other parameter of the model (BatchNorm affine parameters, an existing classifier, ...) is
  frozen with ``requires_grad = False``. BatchNorm *running statistics* are left alone: they are
  still updated in ``train()`` mode, so callers that want the pre-trained statistics keep the
  backbone's BatchNorm layers in ``eval()`` mode. Nothing here changes train/eval mode.
* :class:`SSConv2d` keeps ``ss_scale`` / ``ss_shift`` as plain ``nn.Parameter`` and runs
  ``F.conv2d`` in ``forward``, so ``torch.func.functional_call`` can substitute fast weights for
  them (MAML-style inner loops); :func:`scale_shift_named_parameters` gives the names to use.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "SSConv2d",
    "scale_shift_named_parameters",
    "scale_shift_parameters",
    "wrap_scale_shift",
]


def _has_plain_conv_forward(conv: nn.Conv2d) -> bool:
    cls = type(conv)
    return cls.forward is nn.Conv2d.forward and cls._conv_forward is nn.Conv2d._conv_forward


class SSConv2d(nn.Module):
    """A frozen ``nn.Conv2d`` with a learnable per-kernel scale and per-channel shift.

    State dict keys: ``weight`` and ``bias`` (frozen buffers; ``bias`` absent when the original
    convolution had none), ``ss_scale`` and ``ss_shift`` (learnable parameters).
    """

    weight: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"SSConv2d wraps an nn.Conv2d, got {type(conv).__name__}")
        if not _has_plain_conv_forward(conv):
            raise TypeError(
                f"{type(conv).__name__} overrides nn.Conv2d's forward; scale-shift would change "
                "what it computes"
            )
        self.in_channels = conv.in_channels
        self.out_channels = conv.out_channels
        self.kernel_size = conv.kernel_size
        self.stride = conv.stride
        self.padding = conv.padding
        self.dilation = conv.dilation
        self.groups = conv.groups
        self.padding_mode = conv.padding_mode
        self._reversed_padding_repeated_twice = list(conv._reversed_padding_repeated_twice)

        weight = conv.weight.detach()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach())
        factory = dict(device=weight.device, dtype=weight.dtype)
        self.ss_scale = nn.Parameter(torch.ones(weight.shape[0], weight.shape[1], 1, 1, **factory))
        self.ss_shift = nn.Parameter(torch.zeros(weight.shape[0], **factory))

    def effective_weight(self) -> torch.Tensor:
        return self.weight * self.ss_scale

    def effective_bias(self) -> torch.Tensor:
        return self.ss_shift if self.bias is None else self.bias + self.ss_shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.effective_weight()
        bias = self.effective_bias()
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return F.conv2d(x, weight, bias, self.stride, 0, self.dilation, self.groups)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}"
        )
        if self.dilation != (1,) * len(self.dilation):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        if self.bias is None:
            s += ", bias=False"
        return s


def wrap_scale_shift(model: nn.Module) -> nn.Module:
    """Replace every ``nn.Conv2d`` in ``model`` by an :class:`SSConv2d`, in place, and freeze the rest.

    Afterwards the only parameters with ``requires_grad`` are the ``ss_scale`` / ``ss_shift`` of
    the wrapped convolutions. A convolution shared by several parents is wrapped once and the same
    :class:`SSConv2d` is shared. Already wrapped convolutions are kept (wrapping twice is a no-op).

    Returns:
        ``model`` itself, or a new :class:`SSConv2d` when ``model`` is itself an ``nn.Conv2d``.

    Raises:
        TypeError: a ``nn.Conv2d`` subclass overrides ``forward`` (e.g. weight standardisation or
            dynamic "same" padding), which scale-shift cannot reproduce.
    """
    if isinstance(model, nn.Conv2d):
        return wrap_scale_shift(nn.Sequential(model))[0]

    wrapped: dict[int, SSConv2d] = {}
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            if isinstance(child, nn.Conv2d):
                if id(child) not in wrapped:
                    wrapped[id(child)] = SSConv2d(child)
                setattr(parent, name, wrapped[id(child)])

    ss = {id(p) for p in scale_shift_parameters(model)}
    for p in model.parameters():
        p.requires_grad_(id(p) in ss)
    return model


def scale_shift_named_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """``{qualified name: parameter}`` of every SS parameter, e.g. for ``functional_call``."""
    out: dict[str, nn.Parameter] = {}
    for prefix, module in model.named_modules():
        if isinstance(module, SSConv2d):
            dot = f"{prefix}." if prefix else ""
            out[f"{dot}ss_scale"] = module.ss_scale
            out[f"{dot}ss_shift"] = module.ss_shift
    return out


def scale_shift_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The ``ss_scale`` and ``ss_shift`` parameters of every :class:`SSConv2d` in ``model``."""
    return list(scale_shift_named_parameters(model).values())

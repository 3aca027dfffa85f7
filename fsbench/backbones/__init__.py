"""Backbones for few-shot classification, registered in timm's model registry.

Importing this package registers ``conv4``, ``conv4_32``, ``resnet12``, ``resnet12_mtl`` and
``resnet12_tiny`` (and the official MTL PyTorch code's ``resnet25_mtl``) with timm, so ``timm.create_model(name, num_classes=0)`` builds them like any
timm model. :func:`create_backbone` builds a headless feature extractor from those names or from
any other timm model name (``resnet10t``, ``vit_tiny_patch16_224``, ...).
"""

from __future__ import annotations

import re
from typing import Any

import timm
import torch

from fsbench.errors import FsbenchError

from . import conv4 as _conv4  # noqa: F401  (registers conv4, conv4_32)
from . import resnet12 as _resnet12  # noqa: F401  (registers resnet12, resnet12_mtl, resnet12_tiny)
from . import resnet_mtl_pytorch as _resnet_mtl_pytorch  # noqa: F401  (registers resnet25_mtl)
from .base import FewShotBackbone
from .conv4 import Conv4
from .resnet12 import ResNet12

__all__ = [
    "FSBENCH_BACKBONES",
    "BackboneError",
    "Conv4",
    "FewShotBackbone",
    "ResNet12",
    "check_backbone_name",
    "create_backbone",
    "feature_dim",
    "with_image_size",
]

#: The model names this package registers with timm.
FSBENCH_BACKBONES: tuple[str, ...] = (
    "conv4",
    "conv4_32",
    "resnet12",
    "resnet12_mtl",
    "resnet12_tiny",
    "resnet25_mtl",
)


class BackboneError(FsbenchError):
    """An unknown backbone name (the message lists the valid ones)."""


#: An ``hf-hub:`` source: a Hugging Face repository id, ``owner/name``, never a path.
_HF_HUB = re.compile(r"hf-hub:[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_backbone_name(name: object) -> str:
    """``name`` if it names a backbone: a timm model name, or ``hf-hub:owner/name``.

    Anything else is a :class:`BackboneError` listing what is valid: an unknown name, and a
    path in any form (``../x``, ``/tmp/x``, timm's ``local-dir:`` source), which would make timm
    read files outside fsbench's control and fsbench name a run directory after it.
    """
    if isinstance(name, str):
        hub = _HF_HUB.fullmatch(name) is not None and ".." not in name
        if hub or timm.is_model(name):
            return name
    raise BackboneError(
        f"unknown backbone {name!r}; fsbench backbones: {', '.join(FSBENCH_BACKBONES)} "
        "(any timm model name also works, see timm.list_models(), or hf-hub:OWNER/NAME; "
        "paths are not backbones)"
    )


def create_backbone(name: str, **kwargs: Any) -> torch.nn.Module:
    """Build backbone ``name`` without a classifier: ``model(x)`` returns ``[B, num_features]``.

    ``name`` is one of :data:`FSBENCH_BACKBONES` or any timm model name; ``kwargs`` go to
    ``timm.create_model`` (e.g. ``widths=(32, 64, 128, 256)`` for ResNet-12, ``width=32`` for
    Conv-4). ``num_classes`` defaults to 0 and ``pretrained`` to False.

    Raises:
        BackboneError: ``name`` is not a backbone (see :func:`check_backbone_name`).
    """
    check_backbone_name(name)
    kwargs.setdefault("num_classes", 0)
    kwargs.setdefault("pretrained", False)
    return timm.create_model(name, **kwargs)


def feature_dim(model: torch.nn.Module) -> int:
    """Size of the pooled features ``model`` returns without a classifier (``num_features``)."""
    dim = getattr(model, "num_features", None)
    if dim is None:
        raise TypeError(
            f"{type(model).__name__} has no num_features attribute; not a timm-style model"
        )
    return int(dim)


def with_image_size(kwargs: dict[str, Any], image_shape: tuple[int, ...]) -> dict[str, Any]:
    """``kwargs`` with ``img_size`` filled in from the data's ``image_shape`` (C, H, W) when they
    ask fsbench's Conv-4 / ResNet-12 for ``pool="flatten"`` (its feature size depends on it)."""
    kwargs = dict(kwargs)
    if kwargs.get("pool") == "flatten":
        kwargs.setdefault("img_size", tuple(image_shape[-2:]))
    return kwargs

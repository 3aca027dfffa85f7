"""ResNet-12: the four-block residual network standard in few-shot classification.

Paper: `TADAM: Task dependent adaptive metric for improved few-shot learning`
(Oreshkin et al., NeurIPS 2018), also used by `Meta-Learning with Differentiable Convex
Optimization` (MetaOptNet, Lee et al., CVPR 2019, widths 64-160-320-640) and by
`Meta-Transfer Learning for Few-Shot Learning` (MTL, Sun et al., CVPR 2019, widths 64-128-256-512).

Each residual block is ``3 x [conv3x3 -> BatchNorm -> LeakyReLU(0.1)]`` on the main path, with the
last LeakyReLU applied after adding a ``conv1x1 -> BatchNorm`` shortcut, followed by a 2x2
max-pool. Four blocks down-sample 84x84 inputs to 5x5; the map is then globally average pooled, so
the feature size is the last width (640 by default) and any input resolution works.
No DropBlock; ``drop_rate`` is dropout before the (optional) classifier, as in timm.

Variants registered with timm: ``resnet12`` (64-160-320-640), ``resnet12_mtl`` (64-128-256-512),
``resnet12_tiny`` (16-32-64-128, for fast CPU runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from timm.models import generate_default_cfgs, register_model

from .base import FewShotBackbone, MaxPool2x2, build_fewshot, fewshot_cfg

__all__ = ["ResNet12Block", "ResNet12"]

_LEAK = 0.1


class ResNet12Block(nn.Module):
    """Three 3x3 conv-BN-LeakyReLU layers plus a 1x1 conv-BN shortcut, then maxpool 2."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act1 = nn.LeakyReLU(_LEAK)
        self.conv2 = nn.Conv2d(out_chs, out_chs, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.act2 = nn.LeakyReLU(_LEAK)
        self.conv3 = nn.Conv2d(out_chs, out_chs, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs)
        self.downsample = nn.Sequential(
            nn.Conv2d(in_chs, out_chs, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_chs),
        )
        self.act3 = nn.LeakyReLU(_LEAK)
        self.pool = MaxPool2x2()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        x = self.act3(x + shortcut)
        return self.pool(x)


class ResNet12(FewShotBackbone):
    """Four :class:`ResNet12Block`; output ``[B, num_features]`` with ``num_features = widths[-1]``.

    Args:
        num_classes: Size of the linear classifier; 0 (the default) returns pooled features.
        in_chans: Input channels.
        widths: Output channels of the four blocks.
        drop_rate: Dropout before the classifier.
        pool: Only ``"avg"`` (global average pooling) is meaningful here; ``"flatten"`` is
            accepted for parity with Conv-4 and fixes the input to ``img_size``.
        img_size: Input size the ``"flatten"`` pooling is built for; unused with ``"avg"``.
    """

    def __init__(
        self,
        num_classes: int = 0,
        in_chans: int = 3,
        widths: Sequence[int] = (64, 160, 320, 640),
        drop_rate: float = 0.0,
        pool: str = "avg",
        img_size: int | Sequence[int] = 84,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if not widths:
            raise ValueError("widths must name at least one block")
        self.widths = widths
        self.out_chs = widths[-1]
        self.num_pools = len(widths)
        chs = (in_chans,) + widths
        self.stages = nn.Sequential(
            *[ResNet12Block(chs[i], chs[i + 1]) for i in range(len(widths))]
        )
        self.feature_info = [
            dict(num_chs=w, reduction=2 ** (i + 1), module=f"stages.{i}")
            for i, w in enumerate(widths)
        ]
        self._init_head(num_classes, pool, drop_rate, img_size)
        self.init_weights()

    @torch.jit.ignore
    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(
                    m.weight, a=_LEAK, mode="fan_out", nonlinearity="leaky_relu"
                )
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^stages\.0", blocks=r"^stages\.(\d+)")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)


default_cfgs = generate_default_cfgs({
    "resnet12": fewshot_cfg("stages.0.conv1", paper_ids="arXiv:1805.10123"),
    "resnet12_mtl": fewshot_cfg("stages.0.conv1", paper_ids="arXiv:1812.02391"),
    "resnet12_tiny": fewshot_cfg("stages.0.conv1"),
})


def _create_resnet12(variant: str, pretrained: bool = False, **kwargs: Any) -> ResNet12:
    return build_fewshot(ResNet12, variant, pretrained, len(kwargs.get("widths", (0, 0, 0, 0))), **kwargs)


@register_model
def resnet12(pretrained: bool = False, **kwargs: Any) -> ResNet12:
    """ResNet-12, widths 64-160-320-640 (TADAM / MetaOptNet), 640 features."""
    model_args = dict(widths=(64, 160, 320, 640))
    return _create_resnet12("resnet12", pretrained, **dict(model_args, **kwargs))


@register_model
def resnet12_mtl(pretrained: bool = False, **kwargs: Any) -> ResNet12:
    """ResNet-12, widths 64-128-256-512 (the MTL paper's variant), 512 features."""
    model_args = dict(widths=(64, 128, 256, 512))
    return _create_resnet12("resnet12_mtl", pretrained, **dict(model_args, **kwargs))


@register_model
def resnet12_tiny(pretrained: bool = False, **kwargs: Any) -> ResNet12:
    """ResNet-12, widths 16-32-64-128, for quick CPU presets; 128 features."""
    model_args = dict(widths=(16, 32, 64, 128))
    return _create_resnet12("resnet12_tiny", pretrained, **dict(model_args, **kwargs))

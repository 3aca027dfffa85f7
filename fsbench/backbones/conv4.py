"""Conv-4: the four-block convolutional embedding used throughout few-shot learning.

Paper: `Matching Networks for One Shot Learning` (Vinyals et al., NeurIPS 2016), reused by
`Prototypical Networks for Few-shot Learning` (Snell et al., NeurIPS 2017) with 64 filters and by
`Model-Agnostic Meta-Learning` (Finn et al., ICML 2017) with 32 filters on miniImageNet.

Each block is ``conv3x3 (padding 1) -> BatchNorm -> ReLU -> maxpool 2``. Convolutions have no bias
(BatchNorm follows every one of them, so a bias would be redundant).

Pooling choice: by default the final feature map is *globally average pooled*, so the feature size
equals the width (64 / 32) and the network runs at any input resolution (84x84, 32x32, ...).
The original ProtoNets embedding instead *flattens* the 5x5 map it gets at 84x84 (1600 features for
width 64); ``pool="flatten"`` reproduces that, but it is only valid at the ``img_size`` given at
construction time (the feature size depends on it) and raises a ``ValueError`` otherwise.

The head (pooling, optional dropout, optional linear classifier) lives in
:class:`~fsbench.backbones.base.FewShotBackbone`, which every backbone of this package shares, so
that they behave like timm models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from timm.models import generate_default_cfgs, register_model

from .base import FewShotBackbone, MaxPool2x2, build_fewshot, fewshot_cfg, init_conv_bn

__all__ = ["ConvBlock", "Conv4"]


class ConvBlock(nn.Module):
    """conv3x3 (padding 1, no bias) -> BatchNorm -> ReLU -> maxpool 2.

    Computed as conv -> BN -> maxpool -> ReLU: ReLU commutes with max-pooling exactly (the same
    outputs and, since ReLU maps every negative value to 0 and has zero gradient there, the same
    gradients, bit for bit, in fp32 and bf16), and on the pooled map it touches 4x fewer
    elements; on a CPU, where this block is bound by memory traffic rather than by the
    convolution, that makes a training step faster (README, "Precision and CPU speed"). (ResNet-12's
    LeakyReLU keeps its order:
    rounding ``0.1 * x`` can create ties that move a max-pool's subgradient.)
    """

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = nn.ReLU(inplace=True)
        self.pool = MaxPool2x2()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.pool(self.bn(self.conv(x))))


class Conv4(FewShotBackbone):
    """Four :class:`ConvBlock` of constant ``width``; output ``[B, num_features]``.

    Args:
        num_classes: Size of the linear classifier; 0 (the default) returns pooled features.
        in_chans: Input channels.
        width: Filters of every block (64 in ProtoNets, 32 in MAML).
        depth: Number of blocks (4 for Conv-4).
        pool: ``"avg"`` (global average pooling, any resolution, ``num_features == width``) or
            ``"flatten"`` (ProtoNets' original flattening, fixed to ``img_size``).
        img_size: Input size the ``"flatten"`` pooling is built for; unused with ``"avg"``.
        drop_rate: Dropout before the classifier.
    """

    def __init__(
        self,
        num_classes: int = 0,
        in_chans: int = 3,
        width: int = 64,
        depth: int = 4,
        pool: str = "avg",
        img_size: int | Sequence[int] = 84,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.width = width
        self.out_chs = width
        self.num_pools = depth
        chs = [in_chans] + [width] * depth
        self.stages = nn.Sequential(*[ConvBlock(chs[i], chs[i + 1]) for i in range(depth)])
        self.feature_info = [
            dict(num_chs=width, reduction=2 ** (i + 1), module=f"stages.{i}") for i in range(depth)
        ]
        self._init_head(num_classes, pool, drop_rate, img_size)
        self.init_weights()

    @torch.jit.ignore
    def init_weights(self) -> None:
        init_conv_bn(self)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^stages\.0", blocks=r"^stages\.(\d+)")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)


default_cfgs = generate_default_cfgs({
    "conv4": fewshot_cfg("stages.0.conv", paper_ids="arXiv:1703.05175"),
    "conv4_32": fewshot_cfg("stages.0.conv", paper_ids="arXiv:1703.03400"),
})


def _create_conv4(variant: str, pretrained: bool = False, **kwargs: Any) -> Conv4:
    return build_fewshot(Conv4, variant, pretrained, int(kwargs.get("depth", 4)), **kwargs)


@register_model
def conv4(pretrained: bool = False, **kwargs: Any) -> Conv4:
    """Conv-4, 64 filters per block (Matching Networks / ProtoNets)."""
    model_args = dict(width=64)
    return _create_conv4("conv4", pretrained, **dict(model_args, **kwargs))


@register_model
def conv4_32(pretrained: bool = False, **kwargs: Any) -> Conv4:
    """Conv-4, 32 filters per block (the MAML paper's miniImageNet variant)."""
    model_args = dict(width=32)
    return _create_conv4("conv4_32", pretrained, **dict(model_args, **kwargs))

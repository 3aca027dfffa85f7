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

The head (pooling, optional dropout, optional linear classifier) lives in :class:`FewShotBackbone`,
which the ResNet-12 in this package shares, so that both behave like timm models:
``forward_features`` returns the feature map, ``forward_head(x, pre_logits=False)`` pools (and
classifies when ``num_classes > 0``), ``reset_classifier`` swaps the classifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

__all__ = ["FewShotBackbone", "ConvBlock", "Conv4"]

_POOL_TYPES = ("avg", "flatten")


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = tuple(size)[-2:]
    return int(h), int(w)


def init_conv_bn(model: nn.Module) -> None:
    """Kaiming-normal (fan out, ReLU) convolutions, BatchNorm scale 1 and bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class FewShotBackbone(nn.Module):
    """Shared timm-style head for the few-shot backbones of this package.

    Subclasses build their layers, set ``self.out_chs`` (channels of the final feature map) and
    ``self.num_pools`` (number of stride-2 max-pools, each flooring the size), implement
    ``forward_features`` and then call :meth:`_init_head`.
    """

    out_chs: int
    num_pools: int

    def _init_head(
        self,
        num_classes: int,
        pool: str,
        drop_rate: float,
        img_size: int | Sequence[int],
    ) -> None:
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.img_size = _pair(img_size)
        self._set_pool(pool)
        self.fc: nn.Module = self._make_fc(num_classes)

    def _flat_map_size(self) -> tuple[int, int]:
        h, w = self.img_size
        for _ in range(self.num_pools):  # MaxPool2d(2) floors odd sizes
            h, w = h // 2, w // 2
        return h, w

    def _set_pool(self, pool: str) -> None:
        if pool not in _POOL_TYPES:
            raise ValueError(f"pool must be one of {_POOL_TYPES}, got {pool!r}")
        self.pool = pool
        if pool == "flatten":
            h, w = self._flat_map_size()
            if h < 1 or w < 1:
                raise ValueError(
                    f"pool='flatten' needs img_size >= {2**self.num_pools}, got {self.img_size}"
                )
            self.num_features = self.out_chs * h * w
        else:
            self.num_features = self.out_chs
        self.head_hidden_size = self.num_features

    def _make_fc(self, num_classes: int) -> nn.Module:
        if num_classes > 0:
            return nn.Linear(self.num_features, num_classes)
        return nn.Identity()

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False) -> str | nn.Module:
        return "fc" if name_only else self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a fresh one for ``num_classes`` (0: no classifier).

        ``global_pool`` optionally switches the pooling (``"avg"`` or ``"flatten"``).
        """
        if global_pool is not None:
            self._set_pool(global_pool)
        self.num_classes = num_classes
        ref = next(self.parameters(), None)
        fc = self._make_fc(num_classes)
        self.fc = fc if ref is None else fc.to(device=ref.device, dtype=ref.dtype)
        self.fc.train(self.training)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool a feature map ``[B, C, H, W]`` to ``[B, num_features]``, then classify."""
        if self.pool == "flatten":
            expected = self._flat_map_size()
            if tuple(x.shape[-2:]) != expected:
                raise ValueError(
                    f"pool='flatten' was built for img_size={self.img_size} (feature map {expected}), "
                    f"got a feature map of {tuple(x.shape[-2:])}; use pool='avg' for any resolution"
                )
            x = x.flatten(1)
        else:
            x = x.mean(dim=(2, 3))
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        x = self.forward_head(x)
        return x


class ConvBlock(nn.Module):
    """conv3x3 (padding 1, no bias) -> BatchNorm -> ReLU -> maxpool 2.

    Computed as conv -> BN -> maxpool -> ReLU: ReLU commutes with max-pooling exactly (the same
    outputs and, since ReLU maps every negative value to 0 and has zero gradient there, the same
    gradients, bit for bit, in fp32 and bf16), and on the pooled map it touches 4x fewer
    elements. On a CPU, where this block is bound by memory traffic rather than by the
    convolution, that saves ~15% of a training step. (ResNet-12's LeakyReLU keeps its order:
    rounding ``0.1 * x`` can create ties that move a max-pool's subgradient.)
    """

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)

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


def _create_conv4(variant: str, pretrained: bool = False, **kwargs: Any) -> Conv4:
    depth = int(kwargs.get("depth", 4))
    return build_model_with_cfg(
        Conv4,
        variant,
        pretrained,
        feature_cfg=dict(flatten_sequential=True, out_indices=tuple(range(depth))),
        **kwargs,
    )


def _cfg(**kwargs: Any) -> dict[str, Any]:
    # No released weights; num_classes=0 makes a headless feature extractor the default.
    return {
        "url": "",
        "num_classes": 0,
        "input_size": (3, 84, 84),
        "pool_size": (5, 5),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stages.0.conv",
        "classifier": "fc",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        "conv4": _cfg(paper_ids="arXiv:1703.05175"),
        "conv4_32": _cfg(paper_ids="arXiv:1703.03400"),
    }
)


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

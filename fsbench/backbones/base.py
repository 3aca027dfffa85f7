"""What fsbench's few-shot backbones share: a timm-style head (:class:`FewShotBackbone`), their
initialisation, and the one way they are built and described for timm's registry
(:func:`fewshot_cfg`, :func:`build_fewshot`).

:class:`FewShotBackbone` behaves like a timm model: ``forward_features`` returns the feature map,
``forward_head(x, pre_logits=False)`` pools (and classifies when ``num_classes > 0``),
``reset_classifier`` swaps the classifier. Pooling is global average pooling by default (the
feature size equals the final width, any input resolution works) or ``pool="flatten"`` (the
original ProtoNets / MAML embeddings; only valid at the ``img_size`` given at construction).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg

__all__ = ["FewShotBackbone", "MaxPool2x2", "build_fewshot", "fewshot_cfg", "init_conv_bn"]

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


class MaxPool2x2(nn.MaxPool2d):
    """``nn.MaxPool2d(2)`` (2x2 windows, stride 2, odd sizes floored), faster where nothing needs
    its gradient on a CPU.

    Without grad mode (evaluation, embedding, probes) on a CPU the map is pooled as the
    element-wise maximum of its four strided 2x2 sub-grids: the same values bit for bit (a maximum
    is exact, NaN propagates alike) at a fraction of the time PyTorch's CPU pooling kernel takes
    on a contiguous map (x5.8 on Conv-4's first 100 x 64 x 84 x 84 map, fp32, 2 threads;
    ``benchmarks/pool_speed.py``). With grad mode on, and on other devices, it is
    ``nn.MaxPool2d``: its backward is the faster one there, and its subgradient (the first maximum
    of a window) stays the one every run trained with.
    """

    def __init__(self) -> None:
        super().__init__(kernel_size=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or x.device.type != "cpu" or x.dim() != 4 or min(x.shape[-2:]) < 2:
            return super().forward(x)  # (a map under 2x2 gets nn.MaxPool2d's error)
        x = x[..., : x.shape[-2] // 2 * 2, : x.shape[-1] // 2 * 2]
        return torch.maximum(torch.maximum(x[..., 0::2, 0::2], x[..., 1::2, 0::2]),
                             torch.maximum(x[..., 0::2, 1::2], x[..., 1::2, 1::2]))


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


def fewshot_cfg(first_conv: str, input_size: tuple[int, int, int] = (3, 84, 84),
                pool_size: tuple[int, int] = (5, 5), **kwargs: Any) -> dict[str, Any]:
    """The ``default_cfgs`` entry of a few-shot backbone: no released weights, and
    ``num_classes=0`` (a headless feature extractor is the default)."""
    return {
        "url": "",
        "num_classes": 0,
        "input_size": input_size,
        "pool_size": pool_size,
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": first_conv,
        "classifier": "fc",
        **kwargs,
    }


def build_fewshot(cls: type[FewShotBackbone], variant: str, pretrained: bool, stages: int,
                  **kwargs: Any) -> Any:
    """``cls(**kwargs)`` built by timm for ``variant``, with ``stages`` feature stages."""
    return build_model_with_cfg(
        cls, variant, pretrained,
        feature_cfg=dict(flatten_sequential=True, out_indices=tuple(range(stages))), **kwargs,
    )

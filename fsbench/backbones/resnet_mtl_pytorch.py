"""The backbone of the official MTL PyTorch code, for side-by-side comparisons with that code.

Paper: `Meta-Transfer Learning for Few-Shot Learning` (Sun et al., CVPR 2019). The official
PyTorch code (yaoyao-liu/meta-transfer-learning, pytorch/models/resnet_mtl.py) does not use the
paper's ResNet-12: it uses a wider residual network its README calls "ResNet-25":

* a 3x3 stem convolution (with bias) to 80 channels, BatchNorm, ReLU, at full resolution;
* three stages of four basic blocks (two 3x3 conv-BN layers, ReLU after the addition) at 160,
  320 and 640 channels, the first block of each stride 2 with a 1x1 conv-BN shortcut;
* average pooling of the final 10x10 map (80-px inputs) into 640 features.

The official code feeds 80x80 crops (Resize 92, CenterCrop 80 at test). fsbench's images are
84x84, so ``input_crop=80`` takes the central 80x80 crop inside the model. Registered with timm
as ``resnet25_mtl``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from timm.models import generate_default_cfgs, register_model

from .base import FewShotBackbone, build_fewshot, fewshot_cfg, init_conv_bn

__all__ = ["BasicBlock", "ResNetMTLPyTorch"]


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU, conv3x3-BN, plus the (projected) input, then ReLU."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.act = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_chs != out_chs:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False), nn.BatchNorm2d(out_chs)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class ResNetMTLPyTorch(FewShotBackbone):
    """Stem, then ``len(widths)`` stages of ``blocks`` basic blocks; ``widths[-1]`` features.

    Args:
        num_classes: Size of the linear classifier; 0 (the default) returns pooled features.
        in_chans: Input channels.
        widths: Output channels of the stages (the stem has half the first).
        blocks: Basic blocks per stage.
        input_crop: Side of the central crop taken from each input (None: the whole image).
        drop_rate: Dropout before the classifier.
        pool: ``"avg"`` (global average pooling; the official AvgPool2d(10) on 80-px inputs).
        img_size: Unused with ``"avg"``; kept for the timm interface.
    """

    def __init__(
        self,
        num_classes: int = 0,
        in_chans: int = 3,
        widths: Sequence[int] = (160, 320, 640),
        blocks: int = 4,
        input_crop: int | None = 80,
        drop_rate: float = 0.0,
        pool: str = "avg",
        img_size: int | Sequence[int] = 80,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        self.input_crop = input_crop
        self.out_chs = widths[-1]
        self.num_pools = len(widths)
        stem = widths[0] // 2
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, stem, 3, padding=1, bias=True), nn.BatchNorm2d(stem), nn.ReLU(inplace=True)
        )
        stages, chs = [], stem
        for width in widths:
            stages.append(nn.Sequential(*[BasicBlock(chs if i == 0 else width, width, 2 if i == 0 else 1)
                                          for i in range(blocks)]))
            chs = width
        self.stages = nn.Sequential(*stages)
        self.feature_info = [dict(num_chs=w, reduction=2 ** (i + 1), module=f"stages.{i}")
                             for i, w in enumerate(widths)]
        self._init_head(num_classes, pool, drop_rate, img_size)
        init_conv_bn(self)  # the official initialisation

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^stem", blocks=r"^stages\.(\d+)")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        crop = self.input_crop
        if crop is not None and (x.shape[-2] > crop or x.shape[-1] > crop):
            top, left = (x.shape[-2] - crop) // 2, (x.shape[-1] - crop) // 2
            x = x[..., top : top + crop, left : left + crop]
        return self.stages(self.stem(x))


default_cfgs = generate_default_cfgs({
    "resnet25_mtl": fewshot_cfg("stem.0", input_size=(3, 80, 80), pool_size=(10, 10),
                                paper_ids="arXiv:1812.02391"),
})


@register_model
def resnet25_mtl(pretrained: bool = False, **kwargs: Any) -> ResNetMTLPyTorch:
    """The official MTL PyTorch code's "ResNet-25": 80-160-320-640, 80-px central crop, 640 features."""
    return build_fewshot(ResNetMTLPyTorch, "resnet25_mtl", pretrained, 3, **kwargs)

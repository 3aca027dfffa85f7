"""The cosine classifier of Baseline++ (Chen et al., ICLR 2019): in pre-training (the engine's
``pretrain.head = "cosine"``) and per episode (``fsbench_plugins.simple_baselines.baselinepp``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def cosine_head_logits(features: torch.Tensor, weight: torch.Tensor, gain: torch.Tensor,
                       scale: float) -> torch.Tensor:
    """``scale * gain_c * cos(x, weight_c)``: features [..., N, D], weight [..., C, D], gain [..., C].

    The weight-normalised linear layer of Baseline++ (Chen et al., ICLR 2019, Sec. 3.2; official
    code ``backbone.py:22-44``, ``distLinear``): the features and each class's weight vector are
    L2-normalised and each class's cosine is multiplied by its learned norm ``gain`` (weight
    normalisation's ``g``) and a fixed ``scale``. Batched over any leading (task) dimensions.
    """
    cos = F.normalize(features, dim=-1) @ F.normalize(weight, dim=-1).transpose(-1, -2)
    return scale * cos * gain.unsqueeze(-2)


class CosineClassifier(nn.Module):
    """Baseline++'s classifier: :func:`cosine_head_logits` with a learned weight and per-class gain.

    Initialised as the official code's ``WeightNorm(nn.Linear(dim, classes, bias=False))``: the
    weight as ``nn.Linear``'s, each gain as the norm of its class's initial weight.
    """

    def __init__(self, dim: int, classes: int, scale: float) -> None:
        super().__init__()
        weight = nn.Linear(dim, classes, bias=False).weight.detach()
        self.weight = nn.Parameter(weight.clone())
        self.gain = nn.Parameter(weight.norm(dim=1))
        self.scale = scale

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return cosine_head_logits(features, self.weight, self.gain, self.scale)

"""The classifier heads trained on top of the backbone during pre-training (thrown away after, or
kept as a distillation teacher's): a linear layer, an FC-ReLU-FC MLP, or Baseline++'s cosine
classifier (:class:`fsbench.learners.cosine.CosineClassifier`)."""

from __future__ import annotations

from torch import nn

from fsbench.config import PretrainConfig
from fsbench.learners.cosine import CosineClassifier


def pretrain_head(cfg: PretrainConfig, dim: int, classes: int) -> nn.Module:
    """The classifier ``cfg`` names over ``classes`` train classes, on ``dim`` features."""
    if cfg.head == "cosine":
        return CosineClassifier(dim, classes, cfg.cosine_scale)
    if cfg.head_hidden:
        return nn.Sequential(nn.Linear(dim, cfg.head_hidden), nn.ReLU(), nn.Linear(cfg.head_hidden, classes))
    return nn.Linear(dim, classes)

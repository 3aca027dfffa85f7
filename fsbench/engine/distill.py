"""Born-again self-distillation in pre-training (RFS: Tian et al., ECCV 2020, Sec. 3.3).

Generation ``k`` of a pre-training (``PretrainConfig.distill_generations = k``) is a student of
the same architecture trained from a fresh initialisation on

    distill_ce_weight * CE(student, labels)
    + distill_kl_weight * T^2 * KL(softmax(teacher / T) || softmax(student / T))

where the teacher is generation ``k - 1``: the backbone *and* classifier head of the pre-training
with the same settings and one generation fewer, frozen in eval mode. The loss is the official
code's ``DistillKL`` (``WangYueFt/rfs`` ``distill/criterion.py:15-25``: the KL summed over
classes, averaged over the batch, times ``T**2``) weighted as in ``train_distillation.py:435``.
Each generation is its own pre-training cache entry (its settings differ), so generation 2 reuses
a cached generation 1, which reuses the plain pre-training (generation 0) that other methods
share.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fsbench.backbones import create_backbone, feature_dim
from fsbench.config import PretrainConfig
from fsbench.errors import ConfigError
from fsbench.precision import Precision

from .heads import pretrain_head


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, summed over classes, batch mean."""
    log_p = F.log_softmax(student / temperature, dim=-1)
    q = F.softmax(teacher / temperature, dim=-1)
    return F.kl_div(log_p, q, reduction="batchmean") * temperature**2


class Teacher(nn.Module):
    """A finished generation (backbone + classifier head) that gives the next one its soft targets."""

    def __init__(self, backbone: str, backbone_kwargs: dict, cfg: PretrainConfig, classes: int,
                 state: dict[str, torch.Tensor], head: dict[str, torch.Tensor] | None,
                 precision: Precision, device: torch.device, source: str) -> None:
        super().__init__()
        if head is None:
            raise ConfigError(
                f"the cached teacher {source} holds no classifier head (it was written before "
                "fsbench kept heads); delete it so that it is pre-trained again")
        self.backbone = create_backbone(backbone, **backbone_kwargs)
        self.head = pretrain_head(cfg, feature_dim(self.backbone), classes)
        self.backbone.load_state_dict(state)
        self.head.load_state_dict(head)
        self.requires_grad_(False)
        self.eval().to(device)
        precision.prepare(self.backbone)
        self.precision = precision

    def train(self, mode: bool = True) -> Teacher:
        """A teacher stays in eval mode (its BatchNorm statistics are part of what it teaches)."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """float32 logits of the normalised (and augmented) batch the student sees."""
        with self.precision.autocast():
            return self.head(self.backbone(self.precision.input(images))).float()

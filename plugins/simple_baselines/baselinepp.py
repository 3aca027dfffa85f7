"""Baseline++ (Chen, Liu, Kira, Wang, Huang: "A Closer Look at Few-shot Classification", ICLR 2019).

A cosine classifier replaces the linear one twice (Sec. 3.2):

* **in pre-training**: the backbone is trained on all base classes with the cosine head of
  :class:`fsbench.learners.cosine.CosineClassifier` (``pretrain.head = "cosine"``: logits
  ``scale * g_c * cos(x, w_c)``, a learned norm ``g_c`` per class, official code
  ``wyharveychen/CloserLookFewShot`` ``backbone.py:22-44``). Its pre-training therefore differs from
  the other methods' and is its own cache entry;
* **per test episode**: the backbone is frozen and a fresh cosine head (a new weight and gain per
  class) is fitted on the support features with the official code's optimiser
  (``methods/baselinefinetune.py:27-52``): SGD (lr 0.01, momentum 0.9, dampening 0.9, weight
  decay 1e-3), mini-batches of 4 support features in a fresh random order, 100 passes over the
  support set; the queries are then classified by it.

All episodes of an evaluation batch are fitted together: every task has its own head, its own
mini-batch order and its own loss (the sum over tasks of each task's mean loss, so that the
element-wise SGD updates each head exactly as if it were fitted alone). The heads' random
initialisation (``nn.Linear``'s, gains the norms of the initial weights, as weight normalisation
starts) and the mini-batch orders are drawn from a generator seeded by the training seed, so a
run is deterministic.

On the CPU presets' 64-d pooled Conv-4 features the official lr 0.01 fits a 1-shot support set
only in part within its 100 passes (README, "Figures behind design choices"). The ``quick``
preset keeps the official 0.01; the ``smoke`` preset's 16-d features need 0.1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from fsbench.config import MethodPreset, PretrainConfig
from fsbench.episodes import derive_seed
from fsbench.errors import ConfigError
from fsbench.learners.cosine import cosine_head_logits
from fsbench.learners.pretrained import FrozenPretrained
from fsbench.method import MethodContext
from fsbench_plugins.mtl_protocol import PRETRAIN_PRESETS

from .common import shared_preset


@dataclass(frozen=True)
class BaselinePPHparams:
    """The per-episode cosine head: ``epochs`` passes over the support set in mini-batches of
    ``batch_size``, SGD (``lr``, ``momentum``, ``dampening``, ``weight_decay``); ``scale``: the
    head's fixed factor (the learned per-class gains multiply it)."""

    epochs: int = 100
    batch_size: int = 4
    lr: float = 0.01
    momentum: float = 0.9
    dampening: float = 0.9
    weight_decay: float = 1e-3
    scale: float = 2.0

    def check(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("hparams.epochs and hparams.batch_size must be at least 1")
        if not self.lr > 0 or not self.scale > 0:
            raise ConfigError("hparams.lr and hparams.scale must be positive")
        if not 0 <= self.momentum < 1 or not 0 <= self.dampening <= 1 or self.weight_decay < 0:
            raise ConfigError("hparams.momentum must be in [0, 1), dampening in [0, 1], weight_decay >= 0")


class BaselinePP(FrozenPretrained):
    """A frozen backbone pre-trained with a cosine head; a new cosine head per test episode."""

    hp: BaselinePPHparams

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx, "baselinepp")

    def fit_heads(self, support: torch.Tensor, support_y: torch.Tensor,
                  way: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosine heads (weight [T, way, D], gain [T, way]) fitted on support features [T, S, D]."""
        hp = self.hp
        t, s, d = support.shape
        gen = torch.Generator().manual_seed(derive_seed("baselinepp-head", self.ctx.seed))
        init = (torch.rand(t, way, d, generator=gen) * 2 - 1) / math.sqrt(d)  # nn.Linear's init
        gain = init.norm(dim=-1).to(support.device).requires_grad_(True)
        weight = init.to(support.device).requires_grad_(True)
        optimizer = torch.optim.SGD([weight, gain], lr=hp.lr, momentum=hp.momentum,
                                    dampening=hp.dampening, weight_decay=hp.weight_decay)
        support = support.detach().float()
        with torch.enable_grad():
            for _ in range(hp.epochs):
                order = torch.rand(t, s, generator=gen).argsort(dim=1).to(support.device)
                for start in range(0, s, hp.batch_size):
                    idx = order[:, start : start + hp.batch_size]
                    x = support.gather(1, idx.unsqueeze(-1).expand(-1, -1, d))
                    logits = cosine_head_logits(x, weight, gain, hp.scale)
                    # Each task's mean loss, summed over tasks: the heads' gradients stay apart.
                    loss = F.cross_entropy(logits.flatten(0, 1), support_y.gather(1, idx).flatten(),
                                           reduction="sum") / idx.shape[1]
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
        return weight.detach(), gain.detach()

    def classify(self, support, support_y, query, way) -> torch.Tensor:
        weight, gain = self.fit_heads(support, support_y, way)
        return cosine_head_logits(query.float(), weight, gain, self.hp.scale)


_CL = "Chen et al., ICLR 2019"
_CODE = "wyharveychen/CloserLookFewShot "
_FT = f"{_CODE}methods/baselinefinetune.py"

#: Baseline++'s pre-training of its Conv-4 on miniImageNet: Adam at its default lr, batch 16,
#: 400 epochs, the cosine head (train.py:22-24,80-101; methods/baselinetrain.py:17-18).
PAPER_PRETRAIN = PretrainConfig(
    epochs=400, batch_size=16, lr=1e-3, momentum=0.0, weight_decay=0.0, optimizer="adam",
    schedule="step", step_gamma=1.0, val_episodes=600, head="cosine", cosine_scale=2.0,
)

PAPER = MethodPreset(
    backbone="conv4", backbone_kwargs={"pool": "flatten"}, hparams=BaselinePPHparams(),
    pretrain=PAPER_PRETRAIN,
    description="Baseline++ on its Conv-4 (1600-d flattened features), miniImageNet: cosine-head "
                "pre-training, a cosine head fitted per episode",
    sources={
        "backbone": f"{_CL}, Sec. 4.1 (Conv-4); {_CODE}backbone.py:250-264,374-375 (4 conv-BN-ReLU-"
                    "maxpool blocks of 64 filters), 84 px inputs (train.py:66-70)",
        "backbone_kwargs.pool": f"{_CODE}backbone.py:261-264 (Flatten: 1600-d features)",
        "hparams.epochs": f"{_FT}:40 (100 passes over the support set)",
        "hparams.batch_size": f"{_FT}:38 (mini-batches of 4)",
        "hparams.lr": f"{_FT}:33 (SGD lr 0.01)",
        "hparams.momentum": f"{_FT}:33 (momentum 0.9)",
        "hparams.dampening": f"{_FT}:33 (dampening 0.9)",
        "hparams.weight_decay": f"{_FT}:33 (weight decay 0.001)",
        "hparams.scale": f"{_CODE}backbone.py:30-31 (scale factor 2 for up to 200 classes)",
        "pretrain.head": f"{_CL}, Sec. 3.2 (cosine classifier); {_CODE}methods/baselinetrain.py:17-18 "
                         "(distLinear; it has 200 outputs, io_utils.py:28, of which the 64 train "
                         "classes are ever a target; fsbench's head has those 64)",
        "pretrain.cosine_scale": f"{_CODE}backbone.py:30-31 (2; the per-class norms are learned, "
                                 "backbone.py:26-28, WeightNorm)",
        "pretrain.optimizer": f"{_CODE}train.py:22-24,78 (Adam)",
        "pretrain.lr": f"{_CODE}train.py:24 (Adam's default lr, 1e-3)",
        "pretrain.momentum": "unused with Adam",
        "pretrain.weight_decay": f"{_CODE}train.py:24 (none)",
        "pretrain.schedule": f"{_CODE}train.py:22-47: a constant lr (no scheduler); a step schedule "
                             "with step_gamma 1",
        "pretrain.step_every": "0: the step schedule's default milestones, inert with step_gamma 1",
        "pretrain.step_gamma": "1: a constant lr (see pretrain.schedule)",
        "pretrain.halve_every": "unused by the step schedule",
        "pretrain.lr_min": "unused by the step schedule",
        "pretrain.batch_size": f"{_CODE}train.py:100 (16)",
        "pretrain.epochs": f"{_CODE}train.py:86-87 (400 epochs on miniImageNet)",
        "pretrain.images_per_epoch": f"every base image once per epoch ({_CODE}train.py:100-101)",
        "pretrain.augment": "DEVIATION: no colour jitter in fsbench's batched augmentation; the official "
                            f"RandomSizedCrop, ImageJitter, flip ({_CODE}data/datamgr.py:35-37, --train_aug)",
        "pretrain.crop": f"{_CODE}data/datamgr.py:37 (RandomSizedCrop)",
        "pretrain.label_smoothing": f"none ({_CODE}methods/baselinetrain.py:21)",
        "pretrain.val_episodes": f"DEVIATION: the official code validates nothing for Baseline++ on "
                                 f"miniImageNet and keeps the last epoch ({_CODE}train.py:38-43, "
                                 "methods/baselinetrain.py:51-55); fsbench keeps the epoch whose "
                                 "features score best on 600 val episodes",
        "pretrain.head_hidden": f"{_CODE}backbone.py:22-44 (a single cosine layer)",
        "pretrain.distill_generations": f"{_CL}: no distillation",
        **{f"pretrain.distill_{k}": "unused without distillation"
           for k in ("ce_weight", "kl_weight", "temperature")},
    },
)

PRESETS: dict[str, MethodPreset] = {
    "paper": PAPER,
    "quick": shared_preset(
        "quick", PAPER, BaselinePPHparams(),
        "CPU budget: the shared quick schedule with the cosine head (its own pre-training), Conv-4",
        {"backbone": "DEVIATION: the quick Conv-4 (pooled 64-d), for a CPU"},
        pretrain=replace(PRETRAIN_PRESETS["quick"], head="cosine"),
    ),
    "smoke": shared_preset(
        "smoke", PAPER, BaselinePPHparams(lr=0.1),
        "seconds: the smoke schedule with the cosine head and 8 epochs, per-episode lr 0.1",
        {"hparams.lr": "DEVIATION: tests: at lr 0.01 the per-episode head does not fit the smoke "
                       "backbone's 16-d features in 100 passes (27% on synthetic_easy; 0.1: 69%)",
         "pretrain.epochs": "DEVIATION: tests: 8 epochs, the cosine head learns slower than the "
                            "linear one in the smoke schedule's 3"},
        pretrain=replace(PRETRAIN_PRESETS["smoke"], head="cosine", epochs=8),
    ),
}

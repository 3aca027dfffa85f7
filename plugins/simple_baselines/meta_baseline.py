"""Meta-Baseline (Chen, Liu, Xu, Darrell, Wang: "Meta-Baseline: Exploring Simple Meta-Learning for
Few-Shot Learning", ICCV 2021).

Two stages (Sec. 3):

1. **Classifier-Baseline**: many-shot softmax pre-training of the backbone on all base classes,
   the core's pre-training (:mod:`fsbench.engine.pretrain`); the CPU presets share the cached
   backbone of finetune and MTL.
2. **Meta-Baseline**: the *whole* backbone is then meta-trained episodically (the core's loop,
   so ``--hard-tasks`` applies) with a cosine nearest-centroid classifier: the prototypes are the
   means of each class's support features, a query's logits are its cosine similarities to them
   times a learned scale ``tau`` (initialised to 10; official code
   ``yinboc/few-shot-meta-baseline`` ``models/meta_baseline.py:13-47``), and the loss is the query
   cross-entropy. One SGD optimiser (momentum 0.9, weight decay 5e-4) updates the backbone and
   ``tau`` (``train_meta.py:120-122``, ``utils/__init__.py:128-139``).

BatchNorm follows the official code: batch statistics while meta-training (``model.train()``,
``train_meta.py:142-144``), the running statistics at validation and test. At test the backbone
is frozen: the core embeds each test image once and :meth:`MetaBaseline.classify` computes the
cosine logits of a whole batch of episodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fsbench.config import EpisodicConfig, MethodPreset, PretrainConfig
from fsbench.errors import ConfigError
from fsbench.learners.linear import embed_tasks
from fsbench.learners.pretrained import pretrained_backbone
from fsbench.learners.prototypes import cosine_logits, prototypes
from fsbench.method import Method, MethodContext, StepOutput

from .common import shared_preset


@dataclass(frozen=True)
class MetaBaselineHparams:
    """SGD (``lr``, ``momentum``, ``weight_decay``) on the backbone and the scale ``tau``, which
    starts at ``tau_init`` and is learned unless ``learn_tau`` is false."""

    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    tau_init: float = 10.0
    learn_tau: bool = True

    def check(self) -> None:
        if not self.lr > 0 or not self.tau_init > 0:
            raise ConfigError("hparams.lr and hparams.tau_init must be positive")
        if not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ConfigError("hparams.momentum must be in [0, 1) and hparams.weight_decay >= 0")


class MetaBaseline(Method):
    """A pre-trained backbone meta-trained as a cosine nearest-centroid classifier with scale tau."""

    frozen_at_test = True
    hp: MetaBaselineHparams

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        hp = self.hp
        self.backbone = ctx.precision.prepare(pretrained_backbone(ctx, "meta_baseline"))
        self.tau = nn.Parameter(torch.tensor(hp.tau_init), requires_grad=hp.learn_tau)
        self.optimizer = torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=hp.lr,
                                         momentum=hp.momentum, weight_decay=hp.weight_decay)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.ctx.precision.forward(self.backbone, images)  # float32 features

    def classify(self, support, support_y, query, way) -> torch.Tensor:
        return self.tau * cosine_logits(query.float(), prototypes(support.float(), support_y, way))

    def meta_train_step(self, support, support_y, query, query_y, way) -> StepOutput:
        support_f, query_f = embed_tasks(self.embed, support, query)
        logits = self.classify(support_f, support_y, query_f, way)
        loss = F.cross_entropy(logits.flatten(0, 1), query_y.flatten())
        self.outer_step(loss)
        return StepOutput(loss.detach(), logits.detach())


_MB = "Chen et al., ICCV 2021"
_CODE = "yinboc/few-shot-meta-baseline "
_CLS = f"{_CODE}configs/train_classifier_mini.yaml"
_META = f"{_CODE}configs/train_meta_mini.yaml"

#: Classifier-Baseline on miniImageNet (configs/train_classifier_mini.yaml).
PAPER_PRETRAIN = PretrainConfig(
    epochs=100, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="step",
    step_every=90, step_gamma=0.1, val_episodes=600,
)

PAPER = MethodPreset(
    backbone="resnet12_mtl", hparams=MetaBaselineHparams(), pretrain=PAPER_PRETRAIN,
    episodic=EpisodicConfig(iterations=4000, meta_batch=4, train_query=15, val_every=200,
                            val_episodes=800),
    description="Meta-Baseline on miniImageNet: ResNet-12 (64-128-256-512), Classifier-Baseline "
                "pre-training, 4,000 meta-batches of 4 tasks. The official images are 80 px "
                "(datasets/mini_imagenet.py:25); fsbench's are 84",
    sources={
        "backbone": f"{_MB}, Sec. 4.1; {_CODE}README.md:20 (ResNet-12, channels 64-128-256-512, no "
                    "DropBlock); models/resnet12.py",
        "hparams.lr": f"{_META}:21-22 (SGD, lr 0.001)",
        "hparams.momentum": f"{_CODE}utils/__init__.py:132 (momentum 0.9)",
        "hparams.weight_decay": f"{_META}:22 (5e-4, on the backbone and tau alike)",
        "hparams.tau_init": f"{_CODE}models/meta_baseline.py:13-14 (temp=10.)",
        "hparams.learn_tau": f"{_CODE}models/meta_baseline.py:19-20 (temp_learnable=True)",
        "episodic.iterations": f"{_META}:17,20 (20 epochs of 200 batches: 4,000 updates)",
        "episodic.meta_batch": f"{_META}:18 (4 episodes per batch)",
        "episodic.train_query": f"{_META}:16 (15 queries)",
        "episodic.train_way": f"{_META}:14 (5-way)",
        "episodic.val_every": f"{_CODE}train_meta.py:168-198 (validation after each epoch of 200 batches)",
        "episodic.val_episodes": f"{_CODE}train_meta.py:94-97 (200 batches of 4 val episodes); the best "
                                 "is kept as max-va.pth (README.md:111)",
        "episodic.grad_clip": f"none ({_CODE}train_meta.py:159-161)",
        "pretrain.optimizer": f"{_CLS}:18 (sgd)",
        "pretrain.lr": f"{_CLS}:19 (0.1)",
        "pretrain.momentum": f"{_CODE}utils/__init__.py:132 (0.9). DEVIATION: fsbench's SGD is Nesterov",
        "pretrain.weight_decay": f"{_CLS}:19 (5e-4)",
        "pretrain.batch_size": f"{_CLS}:16 (128)",
        "pretrain.epochs": f"{_CLS}:17 (100)",
        "pretrain.schedule": f"{_CLS}:19 (milestones [90]: x0.1 at epoch 90; utils/__init__.py:135-136)",
        "pretrain.step_every": f"{_CLS}:19 (90 epochs; the next decay would come after the last epoch)",
        "pretrain.step_gamma": f"{_CODE}utils/__init__.py:136 (MultiStepLR's default gamma 0.1)",
        "pretrain.halve_every": "unused by the step schedule",
        "pretrain.lr_min": "unused by the step schedule",
        "pretrain.images_per_epoch": "every train image once per epoch",
        "pretrain.augment": f"{_CLS}:2 (augment: resize); {_CODE}datasets/mini_imagenet.py:44-49 "
                            "(RandomResizedCrop, flip)",
        "pretrain.crop": f"{_CODE}datasets/mini_imagenet.py:46 (RandomResizedCrop)",
        "pretrain.label_smoothing": "none (train_classifier.py: cross-entropy)",
        "pretrain.val_episodes": f"DEVIATION: the official Meta-Baseline starts from the last epoch "
                                 f"({_META}:12, epoch-last.pth); fsbench keeps the epoch whose features "
                                 "score best on 600 val episodes",
        "pretrain.head": f"{_CLS}:13-14 (linear-classifier, 64 classes)",
        "pretrain.head_hidden": f"{_CODE}models/classifier.py:27-34 (one nn.Linear)",
        "pretrain.cosine_scale": "unused by the linear head",
        "pretrain.distill_generations": f"{_MB}: no distillation",
        **{f"pretrain.distill_{k}": "unused without distillation"
           for k in ("ce_weight", "kl_weight", "temperature")},
    },
)

_CPU = "DEVIATION: CPU budget"

PRESETS: dict[str, MethodPreset] = {
    "paper": PAPER,
    "quick": shared_preset(
        "quick", PAPER, MetaBaselineHparams(),
        "CPU budget: the shared quick pre-trained Conv-4, 150 meta-batches of 2 tasks",
        {"backbone": "DEVIATION: the shared quick pre-trained Conv-4 (Classifier-Baseline), for a CPU",
         "episodic.iterations": f"{_CPU}: 150 meta-batches", "episodic.meta_batch": f"{_CPU}: 2 tasks",
         "episodic.train_query": f"{_CPU}: 10 queries per class",
         "episodic.val_every": f"{_CPU}: validate 3 times", "episodic.val_episodes": f"{_CPU}: 100"},
        episodic=EpisodicConfig(iterations=150, meta_batch=2, train_query=10, val_every=50,
                                val_episodes=100),
    ),
    "smoke": shared_preset(
        "smoke", PAPER, MetaBaselineHparams(lr=1e-2),
        "seconds: the shared smoke backbone, 12 meta-batches of 2 tasks",
        {"hparams.lr": "DEVIATION: tests, 1e-2 so that a dozen updates move the backbone"},
        episodic=EpisodicConfig(iterations=12, meta_batch=2, train_query=4, val_every=6,
                                val_episodes=10),
    ),
}

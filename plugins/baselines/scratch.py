"""Train from scratch (the MTL paper's "SC" baseline, Sun et al., CVPR 2019, Sec. 5).

MTL without its two ingredients: no pre-training and no scale-and-shift. The backbone starts
from a random initialisation and is meta-trained episodically with the same base learner as
MTL, an FC head trained per task by ``train_steps`` steps of gradient descent
(:func:`fsbench.engine.heads.fit_linear_heads`, lr ``inner_lr``) from a meta-learned
initialisation. The query loss of the adapted heads is back-propagated to *every* backbone
weight and to the FC initialisation, which one Adam optimiser updates.

One meta-train step on ``T`` tasks: one backbone forward over all support and query images
(BatchNorm in training mode, bf16 autocast and channels_last on CUDA), the ``T`` inner loops as
batched matrix products, the mean query cross-entropy, one backward and one Adam step.

Design choices:

* **Second order by default** (``first_order=False``): the inner loop runs on features, so
  differentiating through its steps costs a few small matrix products; the support features
  then receive gradients as well. MTL's official code (and ``mtl``'s default) is first order,
  which here would train the backbone through the query features only.
* **Frozen at test**: only the FC head is adapted per episode, so the core embeds each test
  image once and :meth:`Scratch.classify` fits the heads of a whole batch of episodes at once
  (BatchNorm uses the running statistics of meta-training).
* Being episodic, the core's meta-batch strategies apply: ``--hard-tasks`` gives "scratch + HT".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fsbench.backbones import create_backbone, feature_dim
from fsbench.config import EpisodicConfig, MethodPreset
from fsbench.engine.heads import FCHeadMetaLearner, fit_linear_heads, linear_logits
from fsbench.engine.pretrain import PRETRAIN_BACKBONES
from fsbench.errors import ConfigError
from fsbench.method import MethodContext


@dataclass(frozen=True)
class ScratchHparams:
    """Hyperparameters of train-from-scratch (MTL's base learner; defaults as MTL's paper).

    ``lr`` is Adam's learning rate for the whole backbone and the FC initialisation, multiplied
    by ``lr_decay`` every ``lr_decay_every`` outer updates (0: no decay). ``feature_norm`` as in
    MTL/finetune: ``None`` for raw features, or the length every feature is rescaled to.
    """

    inner_lr: float = 0.01
    train_steps: int = 20
    test_steps: int = 100
    first_order: bool = False
    lr: float = 1e-3
    lr_decay: float = 0.5
    lr_decay_every: int = 5000
    feature_norm: float | None = None

    def check(self) -> None:
        for name in ("train_steps", "test_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"hparams.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("inner_lr", "lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"hparams.{name} must be positive, got {getattr(self, name)}")
        if self.lr_decay_every < 0:
            raise ConfigError(f"hparams.lr_decay_every must be >= 0, got {self.lr_decay_every}")
        if self.feature_norm is not None and not self.feature_norm > 0:
            raise ConfigError(f"hparams.feature_norm must be positive or null, got {self.feature_norm}")


class Scratch(FCHeadMetaLearner):
    """The whole backbone and the FC initialisation meta-trained from random initialisation."""

    frozen_at_test = True

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        hp: ScratchHparams = ctx.hparams
        hp.check()
        self.hp = hp
        self.backbone = create_backbone(ctx.backbone, **ctx.backbone_kwargs)
        self._place_backbone()
        dim = feature_dim(self.backbone)
        self.fc_weight = nn.Parameter(torch.empty(ctx.way, dim))
        nn.init.kaiming_normal_(self.fc_weight)  # as MTL's FC initialisation
        self.fc_bias = nn.Parameter(torch.zeros(ctx.way))
        self.optimizer = torch.optim.Adam(self.parameters(), lr=hp.lr)
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=max(hp.lr_decay_every, 1),
            gamma=hp.lr_decay if hp.lr_decay_every else 1.0,
        )

    # -- test -------------------------------------------------------------------------------
    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self._features(images)

    def classify(self, support, support_y, query, way) -> torch.Tensor:
        self._check_way(way)
        weight, bias = fit_linear_heads(
            support.detach().float(), support_y, way, self.hp.test_steps, self.hp.inner_lr,
            weight=self.fc_weight.detach(), bias=self.fc_bias.detach(),
        )
        return linear_logits(query.detach().float(), weight, bias)


def _preset(name: str, hparams: ScratchHparams, episodic: EpisodicConfig, description: str) -> MethodPreset:
    backbone, kwargs = PRETRAIN_BACKBONES[name]  # the same backbone as finetune and MTL
    return MethodPreset(
        backbone=backbone, backbone_kwargs=dict(kwargs), hparams=hparams, episodic=episodic,
        pretrain=None, eval_batch=100, description=description,
    )


SCRATCH_PRESETS: dict[str, MethodPreset] = {
    # MTL's meta-training protocol (15k meta-batches of 2 tasks, 600 val episodes) on the
    # paper's ResNet-12, from random initialisation.
    "paper": _preset(
        "paper", ScratchHparams(),
        EpisodicConfig(iterations=15_000, meta_batch=2, train_query=15, val_every=500, val_episodes=600),
        "the MTL paper's SC baseline: ResNet-12 meta-trained from scratch",
    ),
    "quick": _preset(
        "quick", ScratchHparams(lr_decay_every=0),
        EpisodicConfig(iterations=400, meta_batch=2, train_query=6, val_every=100, val_episodes=60),
        "CPU budget: Conv-4 meta-trained from scratch",
    ),
    "smoke": _preset(
        "smoke", ScratchHparams(train_steps=5, test_steps=10, lr_decay_every=0),
        EpisodicConfig(iterations=12, meta_batch=2, train_query=4, val_every=6, val_episodes=10),
        "seconds: a tiny Conv-4, a dozen meta-batches",
    ),
}

__all__ = ["SCRATCH_PRESETS", "Scratch", "ScratchHparams"]

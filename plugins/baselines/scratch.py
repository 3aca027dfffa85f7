"""Train from scratch (the MTL paper's "SC" baseline, Sun et al., CVPR 2019, Sec. 5).

MTL without its two ingredients: no pre-training and no scale-and-shift. The backbone starts
from a random initialisation and is meta-trained episodically with the same base learner as
MTL, an FC head trained per task by ``train_steps`` steps of gradient descent
(:func:`fsbench.learners.linear.fit_linear_heads`, lr ``inner_lr``) from a meta-learned
initialisation. The query loss of the adapted heads is back-propagated to *every* backbone
weight and to the FC initialisation, which one Adam optimiser updates.

One meta-train step on ``T`` tasks: one backbone forward over all support and query images
(BatchNorm in training mode, under the run's precision policy), the ``T`` inner loops as
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
from fsbench.errors import ConfigError
from fsbench.learners.linear import FCHeadMetaLearner, fit_linear_heads, linear_logits
from fsbench.learners.schedules import check_step_decay, step_decay
from fsbench.method import MethodContext
from fsbench_plugins.mtl_protocol import MTL_PAPER_SOURCES, PRETRAIN_BACKBONES, PRETRAIN_SOURCES


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
    fc_init: str = "kaiming"  # the meta-learned FC initialisation starts as: kaiming, xavier, zero

    def check(self) -> None:
        for name in ("train_steps", "test_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"hparams.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("inner_lr", "lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"hparams.{name} must be positive, got {getattr(self, name)}")
        if self.fc_init not in ("kaiming", "xavier", "zero"):
            raise ConfigError(f"hparams.fc_init must be kaiming, xavier or zero, got {self.fc_init!r}")
        check_step_decay(self)
        if self.feature_norm is not None and not self.feature_norm > 0:
            raise ConfigError(f"hparams.feature_norm must be positive or null, got {self.feature_norm}")


class Scratch(FCHeadMetaLearner):
    """The whole backbone and the FC initialisation meta-trained from random initialisation."""

    frozen_at_test = True
    hp: ScratchHparams

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        hp = self.hp
        self.backbone = create_backbone(ctx.backbone, **ctx.backbone_kwargs)
        self._place_backbone()
        dim = feature_dim(self.backbone)
        self.fc_weight = nn.Parameter(torch.zeros(ctx.way, dim))
        if hp.fc_init == "kaiming":
            nn.init.kaiming_normal_(self.fc_weight)  # as MTL's FC initialisation
        elif hp.fc_init == "xavier":
            nn.init.xavier_uniform_(self.fc_weight)
        self.fc_bias = nn.Parameter(torch.zeros(ctx.way))
        self.optimizer = torch.optim.Adam(self.parameters(), lr=hp.lr)
        self.scheduler = step_decay(self.optimizer, hp.lr_decay, hp.lr_decay_every)

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


def _preset(name: str, hparams: ScratchHparams, episodic: EpisodicConfig, description: str,
            sources: dict[str, str]) -> MethodPreset:
    backbone, kwargs = PRETRAIN_BACKBONES[name]  # the same backbone as finetune and MTL
    shared = {k: v for k, v in PRETRAIN_SOURCES[name].items() if not k.startswith("pretrain.")}
    return MethodPreset(
        backbone=backbone, backbone_kwargs=dict(kwargs), hparams=hparams, episodic=episodic,
        pretrain=None, eval_batch=100, description=description, sources={**shared, **sources},
    )


_SC = "Sun et al., CVPR 2019, Sec. 5.2 (ablation 'SC': MTL's meta-training from random init)"
#: The CPU presets' base learner, shared with finetune and MTL there (zero FC init, features
#: L2-normalised to length 10): from a random backbone, raw features are too small for 0.01.
CPU_BASE_LEARNER = {"feature_norm": 10.0, "fc_init": "zero"}
_BASE = ("DEVIATION: the CPU presets' shared base learner (finetune's: zero init, features "
         "L2-normalised to 10); with raw features of a random backbone the inner loop barely moves "
         "and scratch stays at chance in a CPU-length run")
_M = MTL_PAPER_SOURCES

SCRATCH_PRESETS: dict[str, MethodPreset] = {
    # The paper's ablation: MTL's meta-training protocol and base learner on the paper's
    # ResNet-12, every weight meta-trained from random initialisation.
    "paper": _preset(
        "paper",
        ScratchHparams(inner_lr=0.01, train_steps=20, test_steps=100, first_order=False, lr=1e-3,
                       lr_decay=0.5, lr_decay_every=1000, feature_norm=None, fc_init="xavier"),
        EpisodicConfig(iterations=20_000, meta_batch=2, train_query=15, val_every=100, val_episodes=600),
        "the MTL paper's SC baseline: ResNet-12 meta-trained from scratch with MTL's protocol",
        {
            **{f"hparams.{k}": f"{_SC}; as MTL: {_M['hparams.' + k]}" for k in (
                "inner_lr", "train_steps", "test_steps", "first_order", "feature_norm",
                "lr_decay", "lr_decay_every")},
            "hparams.lr": f"{_SC}; MTL's outer lr: {_M['hparams.fc_lr']}",
            "hparams.fc_init": f"{_SC}; as MTL: {_M['hparams.fc_init']}",
            **{f"episodic.{k}": f"{_SC}; as MTL: {_M['episodic.' + k]}" for k in (
                "iterations", "meta_batch", "train_query", "train_way", "val_every",
                "val_episodes", "grad_clip")},
        },
    ),
    "quick": _preset(
        "quick", ScratchHparams(lr_decay_every=0, **CPU_BASE_LEARNER),
        EpisodicConfig(iterations=400, meta_batch=2, train_query=6, val_every=100, val_episodes=60),
        "CPU budget: Conv-4 meta-trained from scratch",
        {
            "hparams.feature_norm": _BASE, "hparams.fc_init": _BASE,
            "hparams.lr_decay_every": "DEVIATION: CPU budget: no decay in 400 iterations",
            "episodic.iterations": "DEVIATION: CPU budget: 400 meta-batches",
            "episodic.train_query": "DEVIATION: CPU budget: 6 queries per class",
            "episodic.val_every": "DEVIATION: CPU budget",
            "episodic.val_episodes": "DEVIATION: CPU budget: 60 val episodes",
        },
    ),
    "smoke": _preset(
        "smoke", ScratchHparams(train_steps=5, lr_decay_every=0, **CPU_BASE_LEARNER),
        EpisodicConfig(iterations=12, meta_batch=2, train_query=4, val_every=6, val_episodes=10),
        "seconds: a tiny Conv-4, a dozen meta-batches",
        {"hparams.feature_norm": _BASE, "hparams.fc_init": _BASE},
    ),
}

__all__ = ["SCRATCH_PRESETS", "Scratch", "ScratchHparams"]

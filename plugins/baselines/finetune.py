"""Finetune on pre-trained model (the MTL paper's "FT" baseline, Sun et al., CVPR 2019, Sec. 5).

The backbone pre-trained by many-shot classification on all train classes
(:func:`fsbench.engine.pretrain.ensure_pretrained`, shared with MTL through
:data:`fsbench_plugins.mtl_protocol.PRETRAIN_PRESETS`) is frozen. For each test episode a fresh
linear (FC) head is trained from zero on the support features by ``steps`` steps of plain
gradient descent on the mean cross-entropy (:func:`fsbench.learners.linear.fit_linear_heads`,
paper: 100 steps, lr 0.01), and the queries are classified by it. There is no meta-training.

All episodes of an evaluation batch are adapted together: ``fit_linear_heads`` runs the ``T``
heads as batched matrix products, so 600 test episodes cost a few hundred small ``bmm`` calls
instead of 600 Python loops (see ``benchmarks/test_bench_finetune.py``).

Learning rate and feature scale: the closed-form gradient of the mean cross-entropy moves a
support logit by about ``lr * |x|^2 / S`` per step, so lr 0.01 means something only relative to
the squared feature norm. The paper's 0.01 goes with 640-d ResNet features whose squared norm is
in the hundreds, while other backbones (the CPU presets' Conv-4, timm models) give other scales.
The presets therefore L2-normalise each feature and rescale it to ``feature_norm = 10``
(``|x|^2 = 100``), which keeps the paper's lr 0.01 and 100 steps with an effective step
(``lr * |x|^2 = 1``) that does not depend on the backbone (README, "Figures behind design
choices", has the check on real miniImageNet val episodes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fsbench.backbones import feature_dim
from fsbench.config import MethodPreset
from fsbench.errors import ConfigError
from fsbench.learners.linear import fit_linear_heads, linear_logits, scale_features
from fsbench.learners.pretrained import FrozenPretrained
from fsbench.method import MethodContext
from fsbench_plugins.mtl_protocol import (
    MTL_PAPER_SOURCES,
    PRETRAIN_BACKBONES,
    PRETRAIN_PRESETS,
    PRETRAIN_SOURCES,
)

FC_INITS = ("zero", "xavier", "kaiming")


@dataclass(frozen=True)
class FinetuneHparams:
    """The per-episode FC head: ``steps`` of gradient descent at ``lr`` from a zero head.

    ``feature_norm``: ``None`` feeds raw backbone features to the head; a number L2-normalises
    each feature and rescales it to that length (see the module docstring).
    """

    steps: int = 100
    lr: float = 0.01
    feature_norm: float | None = 10.0
    weight_decay: float = 0.0
    #: Where each episode's head starts: ``zero``, or one random head drawn once per run under
    #: the training seed (``xavier``/``kaiming``, as MTL's FC initialisation before meta-training).
    fc_init: str = "zero"

    def check(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"hparams.steps must be at least 1, got {self.steps}")
        if not self.lr > 0:
            raise ConfigError(f"hparams.lr must be positive, got {self.lr}")
        if self.feature_norm is not None and not self.feature_norm > 0:
            raise ConfigError(f"hparams.feature_norm must be positive or null, got {self.feature_norm}")
        if self.weight_decay < 0:
            raise ConfigError(f"hparams.weight_decay must be >= 0, got {self.weight_decay}")
        if self.fc_init not in FC_INITS:
            raise ConfigError(f"hparams.fc_init must be one of {', '.join(FC_INITS)}, got {self.fc_init!r}")


class Finetune(FrozenPretrained):
    """A frozen pre-trained backbone and a new FC head per episode, all episodes batched."""

    hp: FinetuneHparams

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx, "finetune")
        hp = self.hp
        # The heads' starting point (a buffer: part of the state, not trained).
        init = torch.zeros(ctx.way, feature_dim(self.backbone))
        if hp.fc_init != "zero":
            with torch.random.fork_rng(devices=[]):  # seeded as MTL's FC init, global RNG untouched
                torch.manual_seed(ctx.seed)
                (nn.init.xavier_uniform_ if hp.fc_init == "xavier" else nn.init.kaiming_normal_)(init)
        self.register_buffer("fc_init", init)

    def fit_heads(self, support: torch.Tensor, support_y: torch.Tensor, way: int) -> tuple[torch.Tensor, torch.Tensor]:
        """FC heads [T, way, D], [T, way] trained on support features [T, S, D]."""
        init = None if self.hp.fc_init == "zero" else self.fc_init[:way]
        return fit_linear_heads(
            scale_features(support.float(), self.hp.feature_norm), support_y, way,
            self.hp.steps, self.hp.lr, weight=init, weight_decay=self.hp.weight_decay,
        )

    def classify(self, support, support_y, query, way) -> torch.Tensor:
        weight, bias = self.fit_heads(support, support_y, way)
        return linear_logits(scale_features(query.float(), self.hp.feature_norm), weight, bias)


def _preset(name: str, hparams: FinetuneHparams, description: str,
            sources: dict[str, str]) -> MethodPreset:
    backbone, kwargs = PRETRAIN_BACKBONES[name]
    return MethodPreset(
        backbone=backbone, backbone_kwargs=dict(kwargs), hparams=hparams, episodic=None,
        pretrain=PRETRAIN_PRESETS[name], eval_batch=100, description=description,
        sources={**PRETRAIN_SOURCES[name], **sources},
    )


_FT = "Sun et al., CVPR 2019, Sec. 5.2 (ablation 'FT': the pre-trained model, its FC head finetuned per task)"
_BASE = ("DEVIATION: the CPU presets' shared base learner (zero init, features L2-normalised to 10): "
         "stable in 100 steps on any backbone; MTL's CPU presets use the same")

FINETUNE_PRESETS: dict[str, MethodPreset] = {
    # The paper's ablation: MTL's base learner (an FC head, Xavier init, raw features, 100
    # steps of lr 0.01) on the pre-trained ResNet-12, without meta-training.
    "paper": _preset(
        "paper", FinetuneHparams(steps=100, lr=0.01, feature_norm=None, fc_init="xavier"),
        "the MTL paper's FT baseline: MTL's base learner on its pre-trained ResNet-12",
        {
            "hparams.steps": f"{_FT}; MTL's test steps ({MTL_PAPER_SOURCES['hparams.test_steps']})",
            "hparams.lr": f"{_FT}; MTL's base-learner lr ({MTL_PAPER_SOURCES['hparams.inner_lr']})",
            "hparams.feature_norm": MTL_PAPER_SOURCES["hparams.feature_norm"],
            "hparams.fc_init": f"MTL's FC init before meta-training: {MTL_PAPER_SOURCES['hparams.fc_init']}",
            "hparams.weight_decay": "none in the paper or the official codes' base learner",
        },
    ),
    "quick": _preset("quick", FinetuneHparams(), "CPU budget: the shared quick pre-trained Conv-4",
                     {"hparams.feature_norm": _BASE, "hparams.fc_init": _BASE}),
    "smoke": _preset("smoke", FinetuneHparams(), "seconds: a tiny Conv-4, three short pre-training epochs",
                     {"hparams.feature_norm": _BASE, "hparams.fc_init": _BASE}),
}

__all__ = ["FINETUNE_PRESETS", "Finetune", "FinetuneHparams"]

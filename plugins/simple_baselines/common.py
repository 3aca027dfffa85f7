"""What SimpleShot, Baseline++ and RFS share: a frozen pre-trained backbone, and preset pieces."""

from __future__ import annotations

from typing import Any

import torch

from fsbench.backbones import create_backbone
from fsbench.config import MethodPreset, PretrainConfig
from fsbench.engine.pretrain import PRETRAIN_BACKBONES, PRETRAIN_PRESETS
from fsbench.method import Method, MethodContext
from fsbench_plugins.baselines.common import load_pretrained


class FrozenPretrained(Method):
    """A pre-trained backbone, frozen and in eval mode (its pre-trained BatchNorm statistics) in
    every mode; the core embeds each test image once and calls :meth:`classify` on features."""

    frozen_at_test = True

    def __init__(self, ctx: MethodContext, method: str) -> None:
        super().__init__(ctx)
        backbone = create_backbone(ctx.backbone, **ctx.backbone_kwargs)
        load_pretrained(backbone, ctx.pretrained, ctx.backbone, method)
        backbone.requires_grad_(False)
        self.backbone = ctx.precision.prepare(backbone.eval())

    def train(self, mode: bool = True) -> FrozenPretrained:
        super().train(mode)
        self.backbone.eval()
        return self

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.ctx.precision.forward(self.backbone, images)  # float32 features


def shared_preset(name: str, paper: MethodPreset, hparams: Any, description: str,
                  sources: dict[str, str], pretrain: PretrainConfig | None = None,
                  **fields: Any) -> MethodPreset:
    """A ``quick``/``smoke`` preset on the pre-training of that name which every method shares
    (finetune, MTL...: one cached backbone, so results pair up), or on ``pretrain`` (e.g. the
    same schedule with another head: then its own cache entry).

    Every pre-training setting that differs from the method's ``paper`` preset gets a source
    saying so; ``sources`` (the method's own, ``backbone`` included) take precedence.
    """
    backbone, kwargs = PRETRAIN_BACKBONES[name]
    pretrain = pretrain or PRETRAIN_PRESETS[name]
    own = "" if pretrain == PRETRAIN_PRESETS[name] else ", with the changes sourced here"
    shared = (f"DEVIATION: the {name} pre-training that every method shares (fsbench/engine/"
              f"pretrain.py, PRETRAIN_PRESETS[{name!r}]{own}): a backbone trained in minutes on a "
              "CPU, one cache entry for all")
    differs = {f"pretrain.{k}": shared for k, v in vars(pretrain).items()
               if paper.pretrain is None or getattr(paper.pretrain, k) != v}
    return MethodPreset(
        backbone=backbone, backbone_kwargs=dict(kwargs), hparams=hparams, pretrain=pretrain,
        description=description, sources={**differs, **sources}, **fields,
    )

"""A pre-trained backbone in a method: loading its weights, and the frozen-backbone base class of
finetune, SimpleShot, Baseline++ and RFS."""

from __future__ import annotations

import torch
from torch import nn

from fsbench.backbones import create_backbone
from fsbench.errors import ConfigError
from fsbench.method import Method, MethodContext


def load_pretrained(backbone: nn.Module, state: dict[str, torch.Tensor] | None, name: str, method: str) -> None:
    """Load pre-trained ``state`` into ``backbone`` (strict), with a clear error on a mismatch."""
    if state is None:
        raise ConfigError(
            f"{method} needs a pre-trained backbone (the preset's `pretrain` settings); none was given"
        )
    try:
        missing, unexpected = backbone.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches raise even when not strict
        first = str(exc).strip().splitlines()[-1].strip()
        raise ConfigError(f"pre-trained weights do not fit backbone {name!r}: {first}") from None
    if missing or unexpected:
        raise ConfigError(
            f"pre-trained weights do not fit backbone {name!r}: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )


def pretrained_backbone(ctx: MethodContext, method: str) -> nn.Module:
    """``ctx``'s backbone with the pre-trained weights the core passed (``ctx.pretrained``)."""
    backbone = create_backbone(ctx.backbone, **ctx.backbone_kwargs)
    load_pretrained(backbone, ctx.pretrained, ctx.backbone, method)
    return backbone


class FrozenPretrained(Method):
    """A pre-trained backbone, frozen and in eval mode (its pre-trained BatchNorm statistics) in
    every mode; the core embeds each test image once and calls :meth:`classify` on features.

    ``method`` names the method in the error raised when no pre-trained weights were given.
    """

    frozen_at_test = True

    def __init__(self, ctx: MethodContext, method: str) -> None:
        super().__init__(ctx)
        backbone = pretrained_backbone(ctx, method)
        backbone.requires_grad_(False)
        self.backbone = ctx.precision.prepare(backbone.eval())

    def train(self, mode: bool = True) -> FrozenPretrained:
        super().train(mode)
        self.backbone.eval()
        return self

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.ctx.precision.forward(self.backbone, images)  # float32 features

"""Pieces the two baselines share: loading pre-trained weights and the feature transform."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fsbench.errors import ConfigError


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


def scale_features(feats: torch.Tensor, norm: float | None) -> torch.Tensor:
    """Raw features (``norm=None``) or each one L2-normalised and rescaled to length ``norm``.

    Why it matters for the FC base learner: one gradient step of the mean cross-entropy moves a
    support logit by about ``lr * |x|^2 / S``, so the inner loop's learning rate only means
    something relative to the squared feature norm. Fixing the norm makes ``lr`` portable
    across backbones (the official MTL lr 0.01 was tuned for 640-d ResNet features with
    ``|x|^2`` in the hundreds; ``norm=10`` gives such an lr the same effective step).
    """
    return feats if norm is None else F.normalize(feats, dim=-1) * norm

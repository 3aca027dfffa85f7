"""Pieces the two baselines share: loading pre-trained weights and the feature transform."""

from __future__ import annotations

import torch
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

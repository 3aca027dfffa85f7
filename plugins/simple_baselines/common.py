"""What the simple baselines' presets share: the pre-training of finetune and MTL."""

from __future__ import annotations

from typing import Any

from fsbench.config import MethodPreset, PretrainConfig
from fsbench.provenance import SMOKE_PRESET
from fsbench_plugins.mtl_protocol import PRETRAIN_BACKBONES, PRETRAIN_PRESETS


def shared_preset(name: str, paper: MethodPreset, hparams: Any, description: str,
                  sources: dict[str, str], pretrain: PretrainConfig | None = None,
                  **fields: Any) -> MethodPreset:
    """A ``quick``/``smoke`` preset on the pre-training of that name which every method shares
    (finetune, MTL...: one cached backbone, so results pair up), or on ``pretrain`` (e.g. the
    same schedule with another head: then its own cache entry).

    Every pre-training setting of a ``quick`` preset that differs from the method's ``paper``
    preset gets a source saying so (a ``smoke`` preset's deviations are for tests:
    :data:`fsbench.provenance.SMOKE_DEVIATION`); ``sources`` (the method's own, ``backbone``
    included) take precedence.
    """
    backbone, kwargs = PRETRAIN_BACKBONES[name]
    pretrain = pretrain or PRETRAIN_PRESETS[name]
    own = "" if pretrain == PRETRAIN_PRESETS[name] else ", with the changes sourced here"
    shared = (f"DEVIATION: the {name} pre-training that every method shares (fsbench_plugins/"
              f"mtl_protocol.py, PRETRAIN_PRESETS[{name!r}]{own}): a backbone trained in minutes on a "
              "CPU, one cache entry for all")
    differs = {f"pretrain.{k}": shared for k, v in vars(pretrain).items()
               if name != SMOKE_PRESET and (paper.pretrain is None or getattr(paper.pretrain, k) != v)}
    return MethodPreset(
        backbone=backbone, backbone_kwargs=dict(kwargs), hparams=hparams, pretrain=pretrain,
        description=description, sources={**differs, **sources}, **fields,
    )

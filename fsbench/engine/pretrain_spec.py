"""What one pre-training is: :class:`PretrainSpec` (everything its weights depend on), its cache
key, the validation of its settings, and :class:`PretrainResult` (what it gives a run).

The training loop (:mod:`fsbench.engine.pretrain_loop`) and the cache
(:func:`fsbench.engine.pretrain.ensure_pretrained`) both take a :class:`PretrainSpec`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from fsbench.config import PretrainConfig, to_jsonable
from fsbench.data.base import FewShotDataset, Split
from fsbench.episodes import EpisodeSpec
from fsbench.errors import ConfigError
from fsbench.precision import Precision

__all__ = ["PretrainResult", "PretrainSpec", "cache_key", "check_pretrain_config", "probe_spec"]

SCHEDULES = ("cosine", "step", "halve")
OPTIMIZERS = ("sgd", "adam")
HEADS = ("linear", "cosine")

#: Pre-training settings added after the first release, with their defaults: a configuration
#: that keeps them at these values keeps the cache key it had (its cached backbone stays valid).
_LATER_DEFAULTS = {"optimizer": "sgd", "crop": True, "halve_every": 5000, "lr_min": 0.0,
                   "step_every": 0, "step_gamma": 0.1, "head_hidden": 0, "head": "linear",
                   "cosine_scale": 2.0, "distill_generations": 0, "distill_ce_weight": 0.5,
                   "distill_kl_weight": 0.5, "distill_temperature": 4.0}
PROBE_SHOT = 1
PROBE_QUERY = 15


@dataclass
class PretrainResult:
    """A pre-trained backbone.

    ``state``: the backbone's ``state_dict`` without classifier (CPU tensors), from the epoch
    with the best val-probe accuracy; ``seconds``: training time spent for it, over all
    (resumed) sessions, 0 when it came from the cache; ``history``: one row per epoch;
    ``path``: the cache file; ``cached``: True when nothing was trained now.
    """

    state: dict[str, torch.Tensor]
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    path: Path = Path()
    cached: bool = False
    best_accuracy: float = float("nan")
    best_epoch: int = 0
    #: The classifier head of the best epoch (a teacher's soft targets need it, engine/distill.py);
    #: None for cache files written before heads were kept.
    head: dict[str, torch.Tensor] | None = None


def probe_spec(way: int, val: Split) -> EpisodeSpec:
    """The val-probe episodes: ``way`` classes, 1 shot, 15 queries (fewer if a class is small).

    The probe does not depend on the run's shot or query count, so 1-shot and 5-shot runs of a
    method share one pre-trained backbone.
    """
    query = max(1, min(PROBE_QUERY, val.min_class_size - PROBE_SHOT))
    return EpisodeSpec(way, PROBE_SHOT, query)


@dataclass(frozen=True)
class PretrainSpec:
    """One pre-training: everything its weights depend on, hence its cache key.

    ``way``: the way of the val-probe episodes (:func:`probe_spec`); ``preset``: the preset name
    the run resolved (part of the key); ``precision``: the run's resolved policy (a bf16
    pre-training is another backbone); ``device``: where it trains.
    """

    dataset: FewShotDataset
    backbone: str
    backbone_kwargs: dict[str, Any]
    cfg: PretrainConfig
    preset: str
    seed: int
    way: int
    precision: Precision
    device: torch.device

    @property
    def probe(self) -> EpisodeSpec:
        return probe_spec(self.way, self.dataset.split("val"))

    @property
    def key(self) -> str:
        """The cache file's stem (:func:`cache_key`)."""
        return cache_key(self)

    def previous_generation(self) -> PretrainSpec:
        """The teacher of a distilled generation: the same pre-training, one generation fewer."""
        return replace(self, cfg=replace(self.cfg, distill_generations=self.cfg.distill_generations - 1))


def cache_key(spec: PretrainSpec) -> str:
    """File stem naming one pre-trained backbone: readable parts plus a hash of all inputs.

    The precision enters as its resolved dtype, and only when it is not fp32, so fp32 keeps the
    keys it had before the precision policy (cached files stay valid).
    """
    train = spec.dataset.split("train")
    ident = {
        "dataset": spec.dataset.name,
        "train_images": len(train),
        "train_classes": train.num_classes,
        "image_shape": list(train.image_shape),
        "backbone": spec.backbone,
        "backbone_kwargs": to_jsonable(spec.backbone_kwargs),
        "preset": spec.preset,
        "seed": spec.seed,
        "pretrain": {k: v for k, v in to_jsonable(spec.cfg).items()
                     if k not in _LATER_DEFAULTS or v != _LATER_DEFAULTS[k]},
        "probe": to_jsonable(spec.probe),
    }
    if spec.precision.dtype != "fp32":
        ident["precision"] = spec.precision.dtype
    digest = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]
    safe_backbone = re.sub(r"[^A-Za-z0-9_.-]+", "-", spec.backbone)
    return f"{spec.dataset.name}_{safe_backbone}_{spec.preset}_s{spec.seed}_{digest}"


def check_pretrain_config(cfg: PretrainConfig) -> None:
    """Raise a :class:`ConfigError` naming the first invalid setting of ``cfg``."""
    if cfg.schedule not in SCHEDULES:
        raise ConfigError(f"pretrain.schedule must be one of {', '.join(SCHEDULES)}, got {cfg.schedule!r}")
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"pretrain.optimizer must be one of {', '.join(OPTIMIZERS)}, got {cfg.optimizer!r}")
    if cfg.step_every < 0 or cfg.head_hidden < 0:
        raise ConfigError("pretrain.step_every and pretrain.head_hidden must be >= 0")
    if cfg.halve_every < 1:
        raise ConfigError(f"pretrain.halve_every must be at least 1, got {cfg.halve_every}")
    for name in ("epochs", "batch_size", "val_episodes"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"pretrain.{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.images_per_epoch is not None and cfg.images_per_epoch < 1:
        raise ConfigError(f"pretrain.images_per_epoch must be at least 1 or null, got {cfg.images_per_epoch}")
    if not cfg.lr > 0:
        raise ConfigError(f"pretrain.lr must be positive, got {cfg.lr}")
    if not 0 <= cfg.label_smoothing < 1:
        raise ConfigError(f"pretrain.label_smoothing must be in [0, 1), got {cfg.label_smoothing}")
    if cfg.head not in HEADS:
        raise ConfigError(f"pretrain.head must be one of {', '.join(HEADS)}, got {cfg.head!r}")
    if cfg.head == "cosine" and cfg.head_hidden:
        raise ConfigError("pretrain.head_hidden must be 0 with pretrain.head=cosine (a single cosine layer)")
    if not cfg.cosine_scale > 0 or not cfg.distill_temperature > 0:
        raise ConfigError("pretrain.cosine_scale and pretrain.distill_temperature must be positive")
    if cfg.distill_generations < 0 or cfg.distill_ce_weight < 0 or cfg.distill_kl_weight < 0:
        raise ConfigError("pretrain.distill_generations, distill_ce_weight and distill_kl_weight must be >= 0")

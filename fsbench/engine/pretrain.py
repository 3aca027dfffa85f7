"""Many-shot supervised pre-training of a backbone, shared by every method that needs one.

The "pre-training" phase of Meta-Transfer Learning (Sun, Liu, Chua, Schiele, CVPR 2019, Sec. 4.1)
and of its "finetune on pre-trained model" baseline: the backbone plus a linear head over *all*
train classes (64-way on miniImageNet, 60-way on FC100) is trained by ordinary softmax
classification with SGD (Nesterov momentum, weight decay, cosine or step schedule, optional
label smoothing) and random-resized-crop + flip augmentation. After every epoch the backbone's
features are probed on a fixed set of val episodes with a nearest-centroid classifier, and the
epoch with the best probe accuracy is the one kept. The result is the backbone's ``state_dict``
as built by ``create_backbone(name, **kwargs)`` (no classifier); the head of the same epoch is
kept beside it only as a distillation teacher's.

Two variants, each its own cache entry (their settings enter the key): ``head="cosine"``, the
cosine classifier with learned per-class gains of Baseline++ (:class:`fsbench.engine.heads.CosineClassifier`),
and ``distill_generations=k``, born-again self-distillation from generation ``k - 1`` (RFS,
:mod:`fsbench.engine.distill`).

Everything that is random flows from generators seeded by ``(seed, epoch, batch)`` (the epoch's
image order, each batch's crops and flips) and the weights are initialised under a seed derived
from the cache key, so a run is a pure function of its inputs: an interrupted pre-training
resumes from its per-epoch checkpoint and ends with the same weights, bit for bit on the CPU, as
an uninterrupted one.

Cache: one finished file per (dataset, backbone, backbone kwargs, preset, seed, PretrainConfig,
probe), under ``cache_dir``; a second method or run that needs the same backbone loads it
instead of training again (and says so). A ``filelock`` keeps two processes from training the
same backbone at once: the second waits for the first, then reuses its result. To retrain,
delete the file the message names.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import filelock
import torch
import torch.nn.functional as F
from torch import nn

from fsbench.atomic import atomic_write_json
from fsbench.backbones import create_backbone, feature_dim
from fsbench.checkpoints import atomic_torch_save, safe_torch_load
from fsbench.config import MethodPreset, PretrainConfig, to_jsonable
from fsbench.data.base import FewShotDataset, Normalizer, Split
from fsbench.episodes import EpisodeSampler, EpisodeSpec, derive_seed
from fsbench.errors import ConfigError, DivergenceError
from fsbench.method import Method, MethodContext
from fsbench.progress import bar, console
from fsbench.stats import mean_ci95

from . import distributed
from .augment import CropFlip, random_resized_crop_flip
from .distill import Teacher, distillation_loss
from .evaluate import evaluate_episodes
from .heads import pretrain_head
from .precision import Precision, resolve_precision
from .prototypes import nearest_centroid_logits

__all__ = [
    "PRETRAIN_BACKBONES",
    "PRETRAIN_PRESETS",
    "PRETRAIN_SOURCES",
    "PretrainResult",
    "cache_key",
    "ensure_pretrained",
    "probe_spec",
]

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

#: The pre-training schedule of each preset, shared by every method that needs a pre-trained
#: backbone (finetune, MTL): methods import these so that they hit the same cache entry.
#:
#: * ``paper``: the MTL paper's pre-training (TPAMI Sec. 5.2, the TensorFlow code that produced
#:   its numbers where the paper is silent): Adam 1e-3 halved every 5k iterations, batch 64,
#:   about 10k iterations, horizontal flips, a single FC head, on its ResNet-12 (64-128-256-512).
#: * ``quick``: a Conv-4 on real miniImageNet (84x84) for CPUs: 12 epochs of 6,400 images (two
#:   passes over the 38,400 train images) and a 100-episode val probe. 6 epochs took 992 s in
#:   fp32 with glibc's default allocator and 195 s under ``--precision auto`` with fsbench's
#:   (one thread each, side by side; README, "Precision and CPU speed"). 12 epochs rather than
#:   the 6 of earlier releases: the bf16 speed-up paid for them, and they raised finetune, MTL and
#:   MTL+HT by 2.3-2.4 points (paired, 600 val episodes, 1-shot; probe 34.4% -> 36.4%; README,
#:   "Measured").
#: * ``smoke``: seconds on the synthetic data.
PRETRAIN_PRESETS: dict[str, PretrainConfig] = {
    "paper": PretrainConfig(
        epochs=17, batch_size=64, lr=1e-3, momentum=0.0, weight_decay=0.0, optimizer="adam",
        schedule="halve", halve_every=5000, lr_min=1e-4, crop=False, val_episodes=600,
    ),
    "quick": PretrainConfig(
        epochs=12, batch_size=64, lr=0.05, momentum=0.9, weight_decay=5e-4,
        schedule="cosine", images_per_epoch=6400, val_episodes=100,
    ),
    "smoke": PretrainConfig(
        epochs=3, batch_size=32, lr=0.05, momentum=0.9, weight_decay=5e-4,
        schedule="cosine", images_per_epoch=256, val_episodes=20,
    ),
    # The official MTL PyTorch code's pre-training, for side-by-side comparisons with that code.
    "official_pytorch": PretrainConfig(
        epochs=110, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="step",
        step_every=30, step_gamma=0.2, head_hidden=1000, val_episodes=600,
    ),
}

#: The backbone (timm name, kwargs) pre-trained under each preset.
PRETRAIN_BACKBONES: dict[str, tuple[str, dict[str, Any]]] = {
    "paper": ("resnet12_mtl", {}),
    "quick": ("conv4", {}),
    "smoke": ("conv4", {"width": 16}),
    "official_pytorch": ("resnet25_mtl", {}),
}

_T = "Sun et al., TPAMI (in press), Sec. 5.2"
_TF = "yaoyao-liu/meta-transfer-learning tensorflow/"
_CPU_PRE = "DEVIATION: CPU budget (a Conv-4 pre-trained in minutes on 2 cores) with the SGD recipe " \
           "that trains a Conv-4 fastest; the paper's Adam schedule is the paper preset's"

#: Provenance of every pre-training setting (and the backbone) per preset; methods that share
#: the pre-training merge these into their presets' ``sources``.
_PT = "yaoyao-liu/meta-transfer-learning pytorch/"

PRETRAIN_SOURCES: dict[str, dict[str, str]] = {
    "official_pytorch": {
        "backbone": f"{_PT}models/resnet_mtl.py:165-204 ('ResNet-25': stem 80, 3 stages of 4 basic "
                    f"blocks at 160/320/640, AvgPool(10), 640 features; 80-px inputs, "
                    f"{_PT}dataloader/dataset_loader.py:56-69)",
        "pretrain.optimizer": f"{_PT}trainer/pre.py:58-60 (SGD, Nesterov momentum)",
        "pretrain.lr": f"{_PT}main.py:48-52 (0.1)",
        "pretrain.momentum": f"{_PT}trainer/pre.py:58-60 (0.9)",
        "pretrain.weight_decay": f"{_PT}trainer/pre.py:58-60 (5e-4)",
        "pretrain.schedule": f"{_PT}trainer/pre.py (StepLR)",
        "pretrain.step_every": f"{_PT}main.py:48-52 (x0.2 every 30 epochs)",
        "pretrain.step_gamma": f"{_PT}main.py:48-52 (gamma 0.2)",
        "pretrain.epochs": f"{_PT}run_pre.py:14 (110 epochs)",
        "pretrain.batch_size": f"{_PT}main.py:48-52 (batch 128)",
        "pretrain.images_per_epoch": "every train image once per epoch",
        "pretrain.head_hidden": f"{_PT}models/mtl.py:55 (MLP 640-1000-ReLU-64 head)",
        "pretrain.augment": f"{_PT}dataloader/dataset_loader.py:55-64 (random crops and flips)",
        "pretrain.crop": "DEVIATION: the official Resize 92, RandomResizedCrop 88, CenterCrop 80 is "
                         "approximated by fsbench's random-resized crop of the 84-px image (the model "
                         "then sees its central 80 px)",
        "pretrain.label_smoothing": "none in the official PyTorch code",
        "pretrain.val_episodes": f"{_PT}trainer/pre.py:47-49,148-197 (best of 600 1-shot val episodes "
                                 "per epoch). DEVIATION: fsbench's probe is nearest-centroid; the "
                                 "official code fits an FC head 100 steps at lr 0.01",
        "pretrain.halve_every": "unused by the step schedule",
        "pretrain.lr_min": "unused by the step schedule",
    },
    "paper": {
        "backbone": f"Sun et al., CVPR 2019, Sec. 5.1 (ResNet-12, 4 residual blocks of 3 conv3x3, "
                    f"64 to 512 filters); {_TF}models/resnet12.py:58-75 (64-128-256-512)",
        "pretrain.optimizer": f"{_T} (Adam); {_TF}models/pre_model.py:52",
        "pretrain.lr": f"{_T} (1e-3); {_TF}run_experiment.py:32",
        "pretrain.schedule": f"{_T} (halved every 5k iterations); {_TF}trainer/pre.py:87-88",
        "pretrain.halve_every": f"{_T} (5k iterations); {_TF}run_experiment.py:33",
        "pretrain.lr_min": f"{_T} (until below 1e-4; never reached within 10k iterations)",
        "pretrain.step_every": "unused by the halving schedule",
        "pretrain.step_gamma": "unused by the halving schedule",
        "pretrain.head_hidden": "Sun et al., CVPR 2019, Sec. 4.1 (a single FC head, discarded after "
                                f"pre-training); {_TF}models/resnet12.py:159-162 (FC 512-64)",
        "pretrain.head": f"Sun et al., CVPR 2019, Sec. 4.1 (a linear FC head); {_TF}models/resnet12.py:159-162",
        "pretrain.cosine_scale": "unused by the linear head",
        "pretrain.distill_generations": f"{_T}: plain many-shot classification, no distillation",
        **{f"pretrain.distill_{k}": "unused without distillation"
           for k in ("ce_weight", "kl_weight", "temperature")},
        "pretrain.batch_size": f"{_T} (batch 64); {_TF} pre-train batch 64",
        "pretrain.epochs": f"{_T} (10k iterations): 17 epochs of 600 batches of 64 = 10,200 "
                           f"iterations; {_TF}run_experiment.py:40 uses the 10k checkpoint",
        "pretrain.images_per_epoch": "every train image once per epoch (38,400 on miniImageNet)",
        "pretrain.momentum": "unused with Adam",
        "pretrain.weight_decay": f"{_TF}: no weight decay (models/pre_model.py:52, plain Adam)",
        "pretrain.augment": f"{_T} (horizontal flip)",
        "pretrain.crop": f"{_T}: flips only, no crops ({_TF}data_generator/pre_data_generator.py:53-56 "
                         "has none at all)",
        "pretrain.label_smoothing": f"{_T}: none",
        "pretrain.val_episodes": "DEVIATION: the paper stops at a fixed 10k iterations "
                                 f"({_TF}run_experiment.py:40); fsbench keeps the epoch whose "
                                 "features score best on 600 val episodes (nearest-centroid probe), "
                                 "no dropout (the TF code keeps 0.9 after each block)",
    },
    "quick": {
        "backbone": "DEVIATION: Conv-4 (64 filters) instead of ResNet-12, for a CPU",
        **{f"pretrain.{k}": _CPU_PRE for k in (
            "optimizer", "lr", "schedule", "momentum", "weight_decay",
            "images_per_epoch", "crop", "lr_min")},
        "pretrain.epochs": "DEVIATION: CPU budget, 12 epochs of 6,400 images: +2.3 points for finetune "
                           "and MTL over 6 epochs on miniImageNet val, 1-shot (README, Measured)",
        "pretrain.step_every": "unused by the cosine schedule",
        "pretrain.step_gamma": "unused by the cosine schedule",
        "pretrain.val_episodes": "DEVIATION: 100 val episodes per probe, for a CPU",
    },
    "smoke": {
        "backbone": "DEVIATION: a width-16 Conv-4 for seconds-long tests",
        "backbone_kwargs.width": "DEVIATION: see backbone",
        **{f"pretrain.{k}": "DEVIATION: tests (seconds on synthetic data)" for k in (
            "optimizer", "lr", "schedule", "momentum", "weight_decay", "epochs", "batch_size",
            "images_per_epoch", "crop", "val_episodes", "lr_min")},
        "pretrain.step_every": "unused by the cosine schedule",
        "pretrain.step_gamma": "unused by the cosine schedule",
    },
}


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


def probe_spec(spec: EpisodeSpec, val: Split) -> EpisodeSpec:
    """The val-probe episodes: the run's ``way``, 1 shot, 15 queries (fewer if a class is small).

    The probe does not depend on the run's shot or query count, so 1-shot and 5-shot runs of a
    method share one pre-trained backbone.
    """
    query = max(1, min(PROBE_QUERY, val.min_class_size - PROBE_SHOT))
    return EpisodeSpec(spec.way, PROBE_SHOT, query)


def cache_key(
    dataset: FewShotDataset,
    backbone: str,
    backbone_kwargs: dict[str, Any],
    cfg: PretrainConfig,
    preset: str,
    seed: int,
    probe: EpisodeSpec,
    precision: str = "fp32",
) -> str:
    """File stem naming one pre-trained backbone: readable parts plus a hash of all inputs.

    ``precision`` is the resolved dtype (``fp32`` or ``bf16``): a bf16 pre-training is another
    backbone. fp32 keeps the keys it had before the precision policy (cached files stay valid).
    """
    train = dataset.split("train")
    ident = {
        "dataset": dataset.name,
        "train_images": len(train),
        "train_classes": train.num_classes,
        "image_shape": list(train.image_shape),
        "backbone": backbone,
        "backbone_kwargs": to_jsonable(backbone_kwargs),
        "preset": preset,
        "seed": seed,
        "pretrain": {k: v for k, v in to_jsonable(cfg).items()
                     if k not in _LATER_DEFAULTS or v != _LATER_DEFAULTS[k]},
        "probe": to_jsonable(probe),
    }
    if precision != "fp32":
        ident["precision"] = precision
    digest = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]
    safe_backbone = re.sub(r"[^A-Za-z0-9_.-]+", "-", backbone)
    return f"{dataset.name}_{safe_backbone}_{preset}_s{seed}_{digest}"


def _check(cfg: PretrainConfig) -> None:
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


def _lr_factor(cfg: PretrainConfig, total_steps: int):
    """Multiplier of the base lr after ``step`` optimizer steps (cosine to 0, or x0.1 at 50%/75%)."""

    def factor(step: int) -> float:
        if cfg.schedule == "halve":  # the MTL paper: x0.5 every halve_every steps, to a floor
            return max(0.5 ** (step // cfg.halve_every), cfg.lr_min / cfg.lr)
        if cfg.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
        if cfg.step_every:  # x step_gamma every step_every epochs
            return cfg.step_gamma ** ((step // max(1, total_steps // cfg.epochs)) // cfg.step_every)
        return cfg.step_gamma ** ((step >= 0.5 * total_steps) + (step >= 0.75 * total_steps))

    return factor


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


class _Probe(Method):
    """A nearest-centroid classifier on the backbone's features: the val probe."""

    frozen_at_test = True

    def __init__(self, ctx: MethodContext, backbone: nn.Module) -> None:
        super().__init__(ctx)
        self.backbone = backbone

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.ctx.precision.forward(self.backbone, images)

    def classify(self, support, support_y, query, way):
        return nearest_centroid_logits(support, support_y, query, way)


@dataclass
class _Setup:
    """Everything one pre-training needs, resolved once."""

    dataset: FewShotDataset
    backbone: str
    backbone_kwargs: dict[str, Any]
    cfg: PretrainConfig
    preset: str
    seed: int
    device: torch.device
    key: str
    probe: EpisodeSpec
    precision: Precision
    teacher: PretrainResult | None = None  # the previous generation, when distilling


def ensure_pretrained(
    dataset: FewShotDataset,
    backbone: str,
    backbone_kwargs: dict[str, Any],
    cfg: PretrainConfig,
    preset: str,
    seed: int,
    device: torch.device,
    cache_dir: Path,
    spec: EpisodeSpec,
    show_progress: bool = True,
    resume: bool = True,
    precision: Precision | str | None = None,
) -> PretrainResult:
    """The pre-trained backbone for these settings: from the cache, or trained now and cached.

    ``spec`` gives the way of the val-probe episodes (see :func:`probe_spec`). With ``resume``
    (the default) an interrupted pre-training continues from its per-epoch checkpoint;
    ``resume=False`` discards such a checkpoint and starts over. A finished file is always
    reused (delete it to retrain). ``precision``: a resolved policy or a ``--precision`` name
    (None: ``auto``, the run default) for the forward passes (:mod:`fsbench.engine.precision`).

    Raises:
        DivergenceError: the training loss became non-finite.
        ConfigError: invalid ``cfg``.
    """
    _check(cfg)
    device = distributed.setup(torch.device(device))  # under torchrun: process group, rank's device
    if not isinstance(precision, Precision):
        precision = resolve_precision(precision or "auto", device)
    val = dataset.split("val")
    probe = probe_spec(spec, val)
    probe.check(val, "val")
    key = cache_key(dataset, backbone, backbone_kwargs, cfg, preset, seed, probe, precision.dtype)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / f"{key}.pt"
    if distributed.world_size() == 1 and final.exists():
        return _load_cached(final)
    teacher = None
    if cfg.distill_generations:  # born-again: generation k learns from k - 1 (engine/distill.py)
        teacher = ensure_pretrained(
            dataset, backbone, backbone_kwargs, replace(cfg, distill_generations=cfg.distill_generations - 1),
            preset, seed, device, cache_dir, spec, show_progress, resume, precision)
    setup = _Setup(dataset, backbone, dict(backbone_kwargs), cfg, preset, seed, device, key, probe,
                   precision, teacher)
    if distributed.world_size() > 1:  # torchrun: all ranks train (DDP), rank 0 writes
        return _ensure_distributed(setup, final, cache_dir, show_progress, resume)
    lock = filelock.FileLock(str(cache_dir / f"{key}.lock"))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        console.print(f"[yellow]waiting[/] for another process pre-training the same backbone ({final})")
        lock.acquire()
    try:
        if final.exists():  # trained by the process we waited for
            return _load_cached(final)
        return _train(setup, final, cache_dir / f"{key}.ckpt.pt", show_progress, resume)
    finally:
        lock.release()


def _load_cached(path: Path) -> PretrainResult:
    saved = safe_torch_load(path)
    meta = saved.get("meta", {})
    console.print(
        f"[green]reusing pre-trained backbone[/] {meta.get('backbone', '?')} "
        f"(preset {meta.get('preset', '?')}, seed {meta.get('seed', '?')}, best val probe "
        f"{saved['best_accuracy']:.1f}% at epoch {saved['best_epoch']}): {path}"
    )
    return PretrainResult(
        state=saved["state"], seconds=0.0, history=list(saved["history"]), path=path, cached=True,
        best_accuracy=float(saved["best_accuracy"]), best_epoch=int(saved["best_epoch"]),
        head=saved.get("head"),
    )


def _train(s: _Setup, final: Path, checkpoint: Path, show_progress: bool, resume: bool) -> PretrainResult:
    cfg, device = s.cfg, s.device
    train, val = s.dataset.split("train"), s.dataset.split("val")
    normalize = Normalizer(s.dataset.mean, s.dataset.std, device)
    with torch.random.fork_rng(devices=[]):  # a seeded initialisation, global RNG untouched
        torch.manual_seed(derive_seed("pretrain-init", s.key))
        model = create_backbone(s.backbone, **s.backbone_kwargs)
        head = pretrain_head(cfg, feature_dim(model), train.num_classes)
    model.to(device)
    s.precision.prepare(model)
    head.to(device)
    net = distributed.wrap(nn.Sequential(model, head), device)  # head(model(x)); DDP under torchrun
    teacher = None if s.teacher is None else Teacher(
        s.backbone, s.backbone_kwargs, cfg, train.num_classes, s.teacher.state, s.teacher.head,
        s.precision, device, str(s.teacher.path))
    save, write_json = distributed.main_only(atomic_torch_save), distributed.main_only(atomic_write_json)
    params = list(model.parameters()) + list(head.parameters())
    if cfg.optimizer == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(
            params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
            nesterov=cfg.momentum > 0,
        )
    per_epoch = min(cfg.images_per_epoch or len(train), len(train))
    steps_per_epoch = max(1, per_epoch // cfg.batch_size)
    batch_size = min(cfg.batch_size, per_epoch)
    total_steps = cfg.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(cfg, total_steps))

    ctx = MethodContext(
        preset=MethodPreset(backbone=s.backbone, hparams=None, backbone_kwargs=s.backbone_kwargs,
                            pretrain=cfg),
        backbone=s.backbone, backbone_kwargs=s.backbone_kwargs, num_train_classes=train.num_classes,
        image_shape=train.image_shape, device=device, seed=s.seed, way=s.probe.way, shot=s.probe.shot,
        precision=s.precision,
    )
    probe = _Probe(ctx, model)
    val_episodes = EpisodeSampler(val, s.probe, s.seed, s.dataset.name, stream="pretrain-val").batch(
        range(cfg.val_episodes)
    )
    crop = CropFlip() if cfg.crop else CropFlip(scale=(1.0, 1.0), ratio=(1.0, 1.0))  # flips only

    start, seconds = 0, 0.0
    best_state, best_head = _cpu_state(model), _cpu_state(head)
    best_accuracy, best_epoch = -math.inf, 0
    history: list[dict[str, Any]] = []
    if checkpoint.exists():
        state = safe_torch_load(checkpoint) if resume else None
        if state is not None and state.get("key") == s.key:
            model.load_state_dict(state["backbone"])
            head.load_state_dict(state["head"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            start, seconds = int(state["epoch"]), float(state["seconds"])
            best_state, best_head = state["best"], state.get("best_head")
            best_accuracy, best_epoch = float(state["best_accuracy"]), int(state["best_epoch"])
            history = list(state["history"])
            console.print(f"[yellow]resuming pre-training[/] after epoch {start}/{cfg.epochs}: {checkpoint}")
        else:
            checkpoint.unlink(missing_ok=True)

    console.print(
        f"pre-training {s.backbone} on {s.dataset.name} ({train.num_classes}-way, "
        f"{steps_per_epoch} batches of {batch_size} per epoch, {cfg.epochs} epochs) -> {final}"
    )
    began = time.perf_counter() - seconds
    with bar("pre-train", total_steps, show_progress, completed=start * steps_per_epoch) as progress:
        for epoch in range(start, cfg.epochs):
            model.train()
            head.train()
            order_gen = torch.Generator().manual_seed(derive_seed("pretrain-order", s.seed, epoch))
            order = torch.randperm(len(train), generator=order_gen)[:per_epoch]
            running = torch.zeros((), device=device)
            epoch_began, epoch_images = time.perf_counter(), 0
            for b in range(steps_per_epoch):
                idx = distributed.shard(order[b * batch_size : (b + 1) * batch_size])
                x = normalize(train.images[idx])
                if cfg.augment:
                    aug_gen = torch.Generator().manual_seed(derive_seed("pretrain-augment", s.seed, epoch, b, *distributed.rank_salt()))
                    x = random_resized_crop_flip(x, aug_gen, crop)
                y = train.labels[idx].to(device, non_blocking=True)
                epoch_images += len(idx)
                with ctx.autocast():
                    logits = net(s.precision.input(x))
                loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
                if teacher is not None:
                    loss = cfg.distill_ce_weight * loss + cfg.distill_kl_weight * distillation_loss(
                        logits.float(), teacher(x), cfg.distill_temperature)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                running += loss.detach()
                progress.advance()
            mean_loss = float(running) / steps_per_epoch  # synchronises: the epoch's work is done
            images_per_s = epoch_images / (time.perf_counter() - epoch_began)
            if not math.isfinite(mean_loss):
                raise DivergenceError(
                    f"pre-training of {s.backbone} diverged in epoch {epoch + 1}: the loss is not "
                    f"finite (lower the learning rate, e.g. --set pretrain.lr={cfg.lr / 10:g})"
                )
            accs = evaluate_episodes(probe, val, val_episodes, normalize)
            acc, ci = mean_ci95(accs.numpy() * 100)
            seconds = time.perf_counter() - began
            history.append({
                "phase": "pretrain", "step": epoch + 1, "val_accuracy": acc, "val_ci95": ci,
                "loss": mean_loss, "seconds": seconds, "images_per_s": images_per_s,
            })
            if acc > best_accuracy:
                best_accuracy, best_epoch = acc, epoch + 1
                best_state, best_head = _cpu_state(model), _cpu_state(head)
            progress.note(
                f"epoch {epoch + 1}/{cfg.epochs}  loss {mean_loss:.3f}  val {acc:.1f}±{ci:.1f}%  "
                f"best {best_accuracy:.1f}%"
            )
            save({
                "key": s.key, "epoch": epoch + 1, "backbone": _cpu_state(model),
                "head": _cpu_state(head), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "best": best_state, "best_head": best_head,
                "best_accuracy": best_accuracy, "best_epoch": best_epoch, "history": history,
                "seconds": seconds,
            }, checkpoint)
    meta = {
        "dataset": s.dataset.name, "backbone": s.backbone, "backbone_kwargs": to_jsonable(s.backbone_kwargs),
        "preset": s.preset, "seed": s.seed, "pretrain": to_jsonable(cfg), "probe": to_jsonable(s.probe),
        "device": str(device), "precision": s.precision.label,
    }
    save({
        "key": s.key, "state": best_state, "head": best_head, "history": history,
        "best_accuracy": best_accuracy, "best_epoch": best_epoch, "seconds": seconds, "meta": meta,
    }, final)
    write_json(final.with_suffix(".json"), {
        **meta, "best_accuracy": best_accuracy, "best_epoch": best_epoch, "seconds": seconds,
        "history": history,
    })
    checkpoint.unlink(missing_ok=True)
    console.print(
        f"[green]pre-trained[/] {s.backbone}: best val probe {best_accuracy:.1f}% at epoch "
        f"{best_epoch}/{cfg.epochs} ({seconds:.0f} s), saved to {final}"
    )
    return PretrainResult(  # the time of the generations trained now for it included
        state=copy.deepcopy(best_state), seconds=seconds + (s.teacher.seconds if s.teacher else 0.0),
        history=history, path=final, cached=False, best_accuracy=best_accuracy,
        best_epoch=best_epoch, head=best_head,
    )


def _ensure_distributed(s: _Setup, final: Path, cache_dir: Path, show_progress: bool,
                        resume: bool) -> PretrainResult:
    """:func:`ensure_pretrained` under torchrun: rank 0 holds the file lock and decides (cached or
    not) for all; every rank trains its shard; the other ranks load what rank 0 wrote."""
    main = distributed.is_main()
    lock = filelock.FileLock(str(cache_dir / f"{s.key}.lock")) if main else None
    if lock is not None:
        lock.acquire()  # the other ranks wait in the broadcast below
    try:
        result = None
        if not distributed.broadcast_flag(final.exists(), s.device):
            result = _train(s, final, cache_dir / f"{s.key}.ckpt.pt", show_progress and main, resume)
        distributed.barrier()  # rank 0's cache entry is complete
        return result if main and result is not None else _load_cached(final)
    finally:
        if lock is not None:
            lock.release()

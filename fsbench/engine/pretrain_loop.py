"""The pre-training loop: many-shot softmax classification over all train classes.

The backbone plus a classifier head (:func:`fsbench.engine.heads.pretrain_head`) is trained with
SGD (Nesterov momentum, weight decay) or Adam, under a cosine, step or halving schedule, optional
label smoothing, and random-resized-crop + flip augmentation batched on the device. After every
epoch the backbone's features are probed on a fixed set of val episodes with a nearest-centroid
classifier, and the epoch with the best probe accuracy is the one kept. A distilled generation
adds the teacher's soft targets to the loss (:mod:`fsbench.engine.distill`).

Everything that is random flows from generators seeded by ``(seed, epoch, batch)`` (the epoch's
image order, each batch's crops and flips) and the weights are initialised under a seed derived
from the cache key, so a pre-training is a pure function of its :class:`~.pretrain_spec.PretrainSpec`:
an interrupted one resumes from its per-epoch checkpoint and ends with the same weights, bit for
bit on the CPU, as an uninterrupted one. The cache around it is :mod:`fsbench.engine.pretrain`.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fsbench.atomic import atomic_write_json
from fsbench.backbones import create_backbone, feature_dim
from fsbench.checkpoints import atomic_torch_save, safe_torch_load
from fsbench.config import MethodPreset, PretrainConfig, to_jsonable
from fsbench.data.base import Normalizer
from fsbench.episodes import EpisodeSampler, derive_seed
from fsbench.errors import DivergenceError
from fsbench.learners.prototypes import nearest_centroid_logits
from fsbench.method import Method, MethodContext
from fsbench.progress import bar, console
from fsbench.stats import mean_ci95

from . import distributed
from .augment import CropFlip, random_resized_crop_flip
from .distill import Teacher, distillation_loss
from .evaluate import evaluate_episodes
from .heads import pretrain_head
from .pretrain_spec import PretrainResult, PretrainSpec

__all__ = ["Job", "train"]


@dataclass(frozen=True)
class Job:
    """One pre-training to run: its spec and key, the finished file, the per-epoch checkpoint,
    and the previous generation when it distils."""

    spec: PretrainSpec
    key: str
    final: Path
    checkpoint: Path
    teacher: PretrainResult | None = None


@dataclass
class _Progress:
    """What the per-epoch checkpoint carries besides the weights and the optimizer."""

    best_state: dict[str, torch.Tensor]
    best_head: dict[str, torch.Tensor] | None
    epoch: int = 0
    seconds: float = 0.0
    best_accuracy: float = -math.inf
    best_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


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


def _optimizer(cfg: PretrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           nesterov=cfg.momentum > 0)


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


class _Trainer:
    """The model, head, optimizer, schedule and probe of one pre-training, built in a fixed order
    (the weights' initialisation is seeded by the key)."""

    def __init__(self, job: Job) -> None:
        s = self.spec = job.spec
        self.job, cfg, device = job, s.cfg, s.device
        self.train, self.val = s.dataset.split("train"), s.dataset.split("val")
        self.normalize = Normalizer(s.dataset.mean, s.dataset.std, device)
        with torch.random.fork_rng(devices=[]):  # a seeded initialisation, global RNG untouched
            torch.manual_seed(derive_seed("pretrain-init", job.key))
            self.model = create_backbone(s.backbone, **s.backbone_kwargs)
            self.head = pretrain_head(cfg, feature_dim(self.model), self.train.num_classes)
        self.model.to(device)
        s.precision.prepare(self.model)
        self.head.to(device)
        # head(model(x)); DDP under torchrun
        self.net = distributed.wrap(nn.Sequential(self.model, self.head), device)
        t = job.teacher
        self.teacher = None if t is None else Teacher(
            s.backbone, s.backbone_kwargs, cfg, self.train.num_classes, t.state, t.head,
            s.precision, device, str(t.path))
        self.optimizer = _optimizer(cfg, list(self.model.parameters()) + list(self.head.parameters()))
        self.per_epoch = min(cfg.images_per_epoch or len(self.train), len(self.train))
        self.steps_per_epoch = max(1, self.per_epoch // cfg.batch_size)
        self.batch_size = min(cfg.batch_size, self.per_epoch)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_factor(cfg, self.total_steps))
        probe = s.probe
        ctx = MethodContext(
            preset=MethodPreset(backbone=s.backbone, hparams=None, backbone_kwargs=s.backbone_kwargs,
                                pretrain=cfg),
            backbone=s.backbone, backbone_kwargs=s.backbone_kwargs,
            num_train_classes=self.train.num_classes, image_shape=self.train.image_shape,
            device=device, seed=s.seed, way=probe.way, shot=probe.shot, precision=s.precision,
        )
        self.probe = _Probe(ctx, self.model)
        self.val_episodes = EpisodeSampler(self.val, probe, s.seed, s.dataset.name,
                                           stream="pretrain-val").batch(range(cfg.val_episodes))
        self.crop = CropFlip() if cfg.crop else CropFlip(scale=(1.0, 1.0), ratio=(1.0, 1.0))  # flips only

    def resume(self, resume: bool) -> _Progress:
        """The progress of an earlier session from the checkpoint (with ``resume``), else fresh."""
        progress = _Progress(_cpu_state(self.model), _cpu_state(self.head))
        checkpoint = self.job.checkpoint
        if not checkpoint.exists():
            return progress
        state = safe_torch_load(checkpoint) if resume else None
        if state is None or state.get("key") != self.job.key:
            checkpoint.unlink(missing_ok=True)
            return progress
        self.model.load_state_dict(state["backbone"])
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        progress = _Progress(
            best_state=state["best"], best_head=state.get("best_head"), epoch=int(state["epoch"]),
            seconds=float(state["seconds"]), best_accuracy=float(state["best_accuracy"]),
            best_epoch=int(state["best_epoch"]), history=list(state["history"]))
        console.print(f"[yellow]resuming pre-training[/] after epoch {progress.epoch}/"
                      f"{self.spec.cfg.epochs}: {checkpoint}")
        return progress

    def epoch(self, epoch: int, advance) -> tuple[float, float]:
        """Train one epoch; its mean loss and images per second."""
        s, cfg = self.spec, self.spec.cfg
        self.model.train()
        self.head.train()
        order_gen = torch.Generator().manual_seed(derive_seed("pretrain-order", s.seed, epoch))
        order = torch.randperm(len(self.train), generator=order_gen)[: self.per_epoch]
        running = torch.zeros((), device=s.device)
        began, images = time.perf_counter(), 0
        for b in range(self.steps_per_epoch):
            idx = distributed.shard(order[b * self.batch_size : (b + 1) * self.batch_size])
            x = self.normalize(self.train.images[idx])
            if cfg.augment:
                aug_gen = torch.Generator().manual_seed(
                    derive_seed("pretrain-augment", s.seed, epoch, b, *distributed.rank_salt()))
                x = random_resized_crop_flip(x, aug_gen, self.crop)
            y = self.train.labels[idx].to(s.device, non_blocking=True)
            images += len(idx)
            with s.precision.autocast():
                logits = self.net(s.precision.input(x))
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            if self.teacher is not None:
                loss = cfg.distill_ce_weight * loss + cfg.distill_kl_weight * distillation_loss(
                    logits.float(), self.teacher(x), cfg.distill_temperature)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            running += loss.detach()
            advance()
        mean_loss = float(running) / self.steps_per_epoch  # synchronises: the epoch's work is done
        return mean_loss, images / (time.perf_counter() - began)

    def checkpoint_state(self, p: _Progress) -> dict[str, Any]:
        return {
            "key": self.job.key, "epoch": p.epoch, "backbone": _cpu_state(self.model),
            "head": _cpu_state(self.head), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "best": p.best_state, "best_head": p.best_head,
            "best_accuracy": p.best_accuracy, "best_epoch": p.best_epoch, "history": p.history,
            "seconds": p.seconds,
        }


def train(job: Job, show_progress: bool, resume: bool) -> PretrainResult:
    """Run ``job`` to its end (resuming its checkpoint with ``resume``); write and return the result."""
    t, s = _Trainer(job), job.spec
    cfg = s.cfg
    save = distributed.main_only(atomic_torch_save)
    p = t.resume(resume)
    console.print(
        f"pre-training {s.backbone} on {s.dataset.name} ({t.train.num_classes}-way, "
        f"{t.steps_per_epoch} batches of {t.batch_size} per epoch, {cfg.epochs} epochs) -> {job.final}"
    )
    began = time.perf_counter() - p.seconds
    with bar("pre-train", t.total_steps, show_progress, completed=p.epoch * t.steps_per_epoch) as progress:
        for epoch in range(p.epoch, cfg.epochs):
            mean_loss, images_per_s = t.epoch(epoch, progress.advance)
            if not math.isfinite(mean_loss):
                raise DivergenceError(
                    f"pre-training of {s.backbone} diverged in epoch {epoch + 1}: the loss is not "
                    f"finite (lower the learning rate, e.g. --set pretrain.lr={cfg.lr / 10:g})"
                )
            accs = evaluate_episodes(t.probe, t.val, t.val_episodes, t.normalize)
            acc, ci = mean_ci95(accs.numpy() * 100)
            p.epoch, p.seconds = epoch + 1, time.perf_counter() - began
            p.history.append({
                "phase": "pretrain", "step": epoch + 1, "val_accuracy": acc, "val_ci95": ci,
                "loss": mean_loss, "seconds": p.seconds, "images_per_s": images_per_s,
            })
            if acc > p.best_accuracy:
                p.best_accuracy, p.best_epoch = acc, epoch + 1
                p.best_state, p.best_head = _cpu_state(t.model), _cpu_state(t.head)
            progress.note(
                f"epoch {epoch + 1}/{cfg.epochs}  loss {mean_loss:.3f}  val {acc:.1f}±{ci:.1f}%  "
                f"best {p.best_accuracy:.1f}%"
            )
            save(t.checkpoint_state(p), job.checkpoint)
    return _finish(job, p)


def _finish(job: Job, p: _Progress) -> PretrainResult:
    """Write the finished file (and its JSON summary), drop the checkpoint, return the result."""
    s = job.spec
    meta = {
        "dataset": s.dataset.name, "backbone": s.backbone, "backbone_kwargs": to_jsonable(s.backbone_kwargs),
        "preset": s.preset, "seed": s.seed, "pretrain": to_jsonable(s.cfg), "probe": to_jsonable(s.probe),
        "device": str(s.device), "precision": s.precision.label,
    }
    distributed.main_only(atomic_torch_save)({
        "key": job.key, "state": p.best_state, "head": p.best_head, "history": p.history,
        "best_accuracy": p.best_accuracy, "best_epoch": p.best_epoch, "seconds": p.seconds, "meta": meta,
    }, job.final)
    distributed.main_only(atomic_write_json)(job.final.with_suffix(".json"), {
        **meta, "best_accuracy": p.best_accuracy, "best_epoch": p.best_epoch, "seconds": p.seconds,
        "history": p.history,
    })
    job.checkpoint.unlink(missing_ok=True)
    console.print(
        f"[green]pre-trained[/] {s.backbone}: best val probe {p.best_accuracy:.1f}% at epoch "
        f"{p.best_epoch}/{s.cfg.epochs} ({p.seconds:.0f} s), saved to {job.final}"
    )
    return PretrainResult(  # the time of the generations trained now for it included
        state=copy.deepcopy(p.best_state),
        seconds=p.seconds + (job.teacher.seconds if job.teacher else 0.0),
        history=p.history, path=job.final, cached=False, best_accuracy=p.best_accuracy,
        best_epoch=p.best_epoch, head=p.best_head,
    )

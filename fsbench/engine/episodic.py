"""The episodic meta-training loop shared by every episodic method.

Each iteration draws a meta-batch of ``meta_batch`` training tasks (by index, so a resumed run
draws the same ones), gathers and normalises their images batched on the device, and calls the
method's ``meta_train_step``. A meta-batch strategy observes every batch and may add extra
batches (the hard-task meta-batch). Every ``val_every`` iterations the method is evaluated on a
fixed set of val episodes; the best state is kept and restored at the end. The loop checkpoints
atomically at every validation point (and at least every ``checkpoint_seconds``), so an
interrupted run resumes where it stopped and ends with the same weights.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fsbench.checkpoints import atomic_torch_save, safe_torch_load
from fsbench.config import EpisodicConfig, HardTaskConfig
from fsbench.data.base import Normalizer, Split
from fsbench.episodes import Episode, EpisodeSampler, EpisodeSpec
from fsbench.errors import DivergenceError
from fsbench.method import Method
from fsbench.progress import bar
from fsbench.stats import mean_ci95

from .evaluate import evaluate_episodes
from .hardtasks import HardTaskMetaBatch, PlainMetaBatch

CHECKPOINT_SECONDS = 120.0


@dataclass
class TrainLog:
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per validation point
    best_accuracy: float = -1.0
    best_iteration: int = -1
    hard_tasks_used: int = 0
    seconds: float = 0.0  # wall time of meta-training, validation included
    val_seconds: float = 0.0  # the part of ``seconds`` spent evaluating val episodes
    tasks: int = 0  # meta-train tasks (episodes) trained on, hard tasks included
    outer_updates: int = 0  # the method's outer updates (hard-task meta-batches included)

    @property
    def episodes_per_s(self) -> float | None:
        """Meta-train throughput: tasks per second of training, validation excluded."""
        train_s = self.seconds - self.val_seconds
        return self.tasks / train_s if self.tasks and train_s > 0 else None


def _detach_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


@dataclass(frozen=True)
class MetaTrainSpec:
    """One meta-training: the data, the task shape, the schedule and the seeds.

    ``spec``: the run's way/shot/query (the validation episodes'; training tasks take
    ``cfg.train_way`` and ``cfg.train_query``); ``seed``: the training tasks and hard tasks;
    ``episode_seed``: the validation episodes, so that runs with different training seeds select
    their best state on the same episodes; ``eval_batch``: validation episodes per batch.
    """

    dataset_name: str
    train: Split
    val: Split
    spec: EpisodeSpec
    cfg: EpisodicConfig
    hard: HardTaskConfig
    seed: int
    episode_seed: int
    eval_batch: int = 50


def meta_train(
    method: Method,
    task: MetaTrainSpec,
    normalize: Normalizer,
    checkpoint: Path | None = None,
    show_progress: bool = True,
) -> TrainLog:
    """Meta-train ``method`` as ``task`` says; resume from ``checkpoint`` when it exists. The
    method ends in the state of its best validation point."""
    loop = _Loop(method, task, normalize, checkpoint)
    cfg = task.cfg
    with bar("meta-train", cfg.iterations, show_progress, completed=loop.start) as progress:
        for it in range(loop.start, cfg.iterations):
            loop.train_iteration(it)
            progress.advance()
            if (it + 1) % cfg.val_every == 0 or it + 1 == cfg.iterations:
                progress.note(loop.validate(it))
            elif time.perf_counter() - loop.last_save > CHECKPOINT_SECONDS:
                loop.log.seconds = time.perf_counter() - loop.began
                loop.save(it + 1)
    return loop.finish()


class _Loop:
    """The state of one meta-training: samplers, the meta-batch strategy, the running loss, the
    best state and the log; restored from the checkpoint when there is one."""

    def __init__(self, method: Method, task: MetaTrainSpec, normalize: Normalizer,
                 checkpoint: Path | None) -> None:
        cfg, hard = task.cfg, task.hard
        self.method, self.task, self.normalize, self.checkpoint = method, task, normalize, checkpoint
        train_spec = EpisodeSpec(cfg.train_way or task.spec.way, task.spec.shot, cfg.train_query)
        self.sampler = EpisodeSampler(task.train, train_spec, task.seed, task.dataset_name, stream="train")
        val_sampler = EpisodeSampler(task.val, task.spec, task.episode_seed, task.dataset_name, stream="val")
        self.val_episodes = val_sampler.batch(range(cfg.val_episodes))
        self.strategy: PlainMetaBatch = (
            HardTaskMetaBatch(hard, EpisodeSampler(task.train, train_spec, task.seed, task.dataset_name,
                                                   "hard"), cfg.meta_batch)
            if hard.enabled else PlainMetaBatch()
        )
        self.replace_mode = hard.enabled and hard.mode == "replace"
        self.log = TrainLog()
        self.best_state = _detach_state(method)
        self.start = 0
        state = safe_torch_load(checkpoint) if checkpoint is not None and checkpoint.exists() else None
        if state is not None:
            self._restore(state)
        method.train()
        device = normalize.device
        self.running = torch.zeros((), device=device)
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        self.steps_since = 0
        if state is not None:
            self.running += state["running_loss"]
            self.steps_since = int(state["running_steps"])
        self.began = time.perf_counter() - self.log.seconds
        self.last_save = time.perf_counter()

    def _restore(self, state: dict[str, Any]) -> None:
        self.method.load_state_dict(state["method"])
        self.method.load_training_state(state["training"])
        self.best_state = state["best"]
        self.strategy.load_state(state["strategy"])
        self.start = int(state["iteration"])
        log = self.log
        log.history = list(state["history"])
        log.best_accuracy, log.best_iteration = float(state["best_accuracy"]), int(state["best_iteration"])
        log.seconds = float(state["seconds"])
        log.val_seconds = float(state.get("val_seconds", 0.0))

    def save(self, iteration: int) -> None:
        if self.checkpoint is not None:
            self._write(iteration)
        self.last_save = time.perf_counter()

    def _write(self, iteration: int) -> None:
        log = self.log
        atomic_torch_save({
            "iteration": iteration, "method": _detach_state(self.method),
            "training": self.method.training_state(), "best": self.best_state,
            "strategy": self.strategy.state(), "history": log.history,
            "best_accuracy": log.best_accuracy, "best_iteration": log.best_iteration,
            "seconds": log.seconds, "val_seconds": log.val_seconds,
            "running_loss": float(self.running), "running_steps": self.steps_since,
        }, self.checkpoint)

    def _step(self, batch: Episode):
        return _step(self.method, batch, self.task.train, self.normalize)

    def train_iteration(self, it: int) -> None:
        """Iteration ``it``: its meta-batch (or the hard one that replaces it) and any extra ones."""
        meta_batch, strategy = self.task.cfg.meta_batch, self.strategy
        # Compute-matched hard tasks: a hard meta-batch due after iteration it-1 is trained
        # in place of the regular meta-batch of iteration it (same number of updates).
        hard_batches = strategy.extra_batches(it - 1) if self.replace_mode and it > 0 else []
        if hard_batches:
            for hard_batch in hard_batches:
                out = self._step(hard_batch)
                self.nonfinite |= ~torch.isfinite(out.loss)
        else:
            batch = self.sampler.batch(range(it * meta_batch, (it + 1) * meta_batch))
            out = self._step(batch)
            strategy.observe(batch, out.query_logits)
        if not self.replace_mode:
            # Algorithm 1: the hard meta-batch is an extra one; the schedule counts iterations.
            with self.method.schedule_held():
                for extra in strategy.extra_batches(it):
                    self.nonfinite |= ~torch.isfinite(self._step(extra).loss)
        self.running += out.loss
        self.nonfinite |= ~torch.isfinite(out.loss)
        self.steps_since += 1

    def validate(self, it: int) -> str:
        """Evaluate on the val episodes after iteration ``it``, keep the best state, checkpoint;
        the progress note."""
        if bool(self.nonfinite):
            raise DivergenceError(
                f"meta-training diverged before iteration {it + 1}: the loss is not finite "
                "(lower the learning rate, e.g. --set hparams.lr=...)"
            )
        log, task = self.log, self.task
        loss = float(self.running) / self.steps_since
        val_began = time.perf_counter()
        accs = evaluate_episodes(self.method, task.val, self.val_episodes, self.normalize, task.eval_batch)
        log.val_seconds += time.perf_counter() - val_began
        acc, ci = mean_ci95(accs.numpy() * 100)
        log.seconds = time.perf_counter() - self.began
        log.history.append({
            "phase": "meta_train", "step": it + 1, "val_accuracy": acc, "val_ci95": ci,
            "loss": loss, "hard_tasks": self.strategy.hard_tasks_used, "seconds": log.seconds,
        })
        if acc > log.best_accuracy:
            log.best_accuracy, log.best_iteration = acc, it + 1
            self.best_state = _detach_state(self.method)
        note = f"loss {loss:.3f}  val {acc:.1f}±{ci:.1f}%  best {log.best_accuracy:.1f}%"
        self.running.zero_()
        self.steps_since = 0
        self.save(it + 1)
        return note

    def finish(self) -> TrainLog:
        """Restore the best state; the log with the totals of the whole meta-training."""
        method, log, strategy, cfg = self.method, self.log, self.strategy, self.task.cfg
        method.load_state_dict(copy.deepcopy(self.best_state))
        log.hard_tasks_used = strategy.hard_tasks_used
        # Each hard meta-batch holds ``count`` tasks; in replace mode it took a regular one's place.
        replaced = (strategy.hard_tasks_used // strategy.count) * cfg.meta_batch if self.replace_mode else 0
        log.tasks = cfg.iterations * cfg.meta_batch - replaced + strategy.hard_tasks_used
        log.outer_updates = method.outer_updates
        log.seconds = time.perf_counter() - self.began
        if not math.isfinite(log.best_accuracy):
            raise DivergenceError("meta-training produced no finite validation accuracy")
        return log


def _step(method: Method, batch: Episode, split: Split, normalize: Normalizer):
    support, query = batch.images(split)
    device = normalize.device
    # A method that trains on global class ids too (TADAM's auxiliary task) asks for them.
    extra = {"classes": batch.classes.to(device)} if method.needs_class_ids else {}
    return method.meta_train_step(
        normalize(support), batch.support_labels.to(device),
        normalize(query), batch.query_labels.to(device), batch.spec.way, **extra,
    )

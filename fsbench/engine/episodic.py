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


def meta_train(
    method: Method,
    dataset_name: str,
    train: Split,
    val: Split,
    spec: EpisodeSpec,
    cfg: EpisodicConfig,
    hard: HardTaskConfig,
    normalize: Normalizer,
    seed: int,
    checkpoint: Path | None = None,
    show_progress: bool = True,
    eval_batch: int = 50,
    episode_seed: int | None = None,
) -> TrainLog:
    """Meta-train ``method``; training tasks (and hard tasks) are seeded by ``seed``, the
    validation episodes by ``episode_seed`` (default: ``seed``), so that runs with different
    training seeds select their best state on the same validation episodes."""
    train_spec = EpisodeSpec(cfg.train_way or spec.way, spec.shot, cfg.train_query)
    sampler = EpisodeSampler(train, train_spec, seed, dataset_name, stream="train")
    val_seed = seed if episode_seed is None else episode_seed
    val_sampler = EpisodeSampler(val, spec, val_seed, dataset_name, stream="val")
    val_episodes = val_sampler.batch(range(cfg.val_episodes))
    strategy: PlainMetaBatch = (
        HardTaskMetaBatch(hard, EpisodeSampler(train, train_spec, seed, dataset_name, "hard"), cfg.meta_batch)
        if hard.enabled else PlainMetaBatch()
    )
    replace_mode = hard.enabled and hard.mode == "replace"
    log = TrainLog()
    best_state = _detach_state(method)
    start = 0
    if checkpoint is not None and checkpoint.exists():
        state = safe_torch_load(checkpoint)
        method.load_state_dict(state["method"])
        method.load_training_state(state["training"])
        best_state = state["best"]
        strategy.load_state(state["strategy"])
        start = int(state["iteration"])
        log.history = list(state["history"])
        log.best_accuracy, log.best_iteration = float(state["best_accuracy"]), int(state["best_iteration"])
        log.seconds = float(state["seconds"])
        log.val_seconds = float(state.get("val_seconds", 0.0))

    def save(iteration: int) -> None:
        if checkpoint is None:
            return
        atomic_torch_save(
            {
                "iteration": iteration,
                "method": _detach_state(method),
                "training": method.training_state(),
                "best": best_state,
                "strategy": strategy.state(),
                "history": log.history,
                "best_accuracy": log.best_accuracy,
                "best_iteration": log.best_iteration,
                "seconds": log.seconds,
                "val_seconds": log.val_seconds,
                "running_loss": float(running),
                "running_steps": steps_since,
            },
            checkpoint,
        )

    method.train()
    device = normalize.device
    running = torch.zeros((), device=device)
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    steps_since = 0
    if checkpoint is not None and checkpoint.exists():
        running += state["running_loss"]
        steps_since = int(state["running_steps"])
    began = time.perf_counter() - log.seconds
    last_save = time.perf_counter()
    with bar("meta-train", cfg.iterations, show_progress, completed=start) as progress:
        for it in range(start, cfg.iterations):
            # Compute-matched hard tasks: a hard meta-batch due after iteration it-1 is trained
            # in place of the regular meta-batch of iteration it (same number of updates).
            hard_batches = strategy.extra_batches(it - 1) if replace_mode and it > 0 else []
            if hard_batches:
                for hard_batch in hard_batches:
                    out = _step(method, hard_batch, train, normalize)
                    nonfinite |= ~torch.isfinite(out.loss)
            else:
                batch = sampler.batch(range(it * cfg.meta_batch, (it + 1) * cfg.meta_batch))
                out = _step(method, batch, train, normalize)
                strategy.observe(batch, out.query_logits)
            if not replace_mode:
                # Algorithm 1: the hard meta-batch is an extra one; the schedule counts iterations.
                with method.schedule_held():
                    for extra in strategy.extra_batches(it):
                        nonfinite |= ~torch.isfinite(_step(method, extra, train, normalize).loss)
            running += out.loss
            nonfinite |= ~torch.isfinite(out.loss)
            steps_since += 1
            progress.advance()
            last = it + 1 == cfg.iterations
            if (it + 1) % cfg.val_every == 0 or last:
                if bool(nonfinite):
                    raise DivergenceError(
                        f"meta-training diverged before iteration {it + 1}: the loss is not finite "
                        "(lower the learning rate, e.g. --set hparams.lr=...)"
                    )
                loss = float(running) / steps_since
                val_began = time.perf_counter()
                accs = evaluate_episodes(method, val, val_episodes, normalize, eval_batch)
                log.val_seconds += time.perf_counter() - val_began
                acc, ci = mean_ci95(accs.numpy() * 100)
                log.seconds = time.perf_counter() - began
                log.history.append({
                    "phase": "meta_train", "step": it + 1, "val_accuracy": acc, "val_ci95": ci,
                    "loss": loss, "hard_tasks": strategy.hard_tasks_used, "seconds": log.seconds,
                })
                if acc > log.best_accuracy:
                    log.best_accuracy, log.best_iteration = acc, it + 1
                    best_state = _detach_state(method)
                progress.note(f"loss {loss:.3f}  val {acc:.1f}±{ci:.1f}%  best {log.best_accuracy:.1f}%")
                running.zero_()
                steps_since = 0
                save(it + 1)
                last_save = time.perf_counter()
            elif time.perf_counter() - last_save > CHECKPOINT_SECONDS:
                log.seconds = time.perf_counter() - began
                save(it + 1)
                last_save = time.perf_counter()
    method.load_state_dict(copy.deepcopy(best_state))
    log.hard_tasks_used = strategy.hard_tasks_used
    # Each hard meta-batch holds ``count`` tasks; in replace mode it took a regular one's place.
    replaced = (strategy.hard_tasks_used // strategy.count) * cfg.meta_batch if replace_mode else 0
    log.tasks = cfg.iterations * cfg.meta_batch - replaced + strategy.hard_tasks_used
    log.outer_updates = method.outer_updates
    log.seconds = time.perf_counter() - began
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

"""The hard-task (HT) meta-batch: fsbench's reference implementation.

From "Meta-Transfer Learning for Few-Shot Learning" (Sun, Liu, Chua, Schiele, CVPR 2019),
Algorithm 1. The official code does not include it; this module is written from the paper.

1. After every meta-batch, each task's *failure class* is recorded: the class whose queries
   were classified worst. Ties in accuracy go to the class with the lower mean softmax
   probability on its true label, then to the class drawn first. Beside it the class its queries
   were most often mistaken for (its *confusion*) is kept for the ``confused`` fill rule.
2. After every ``every`` *regular* meta-batches (counted since the last hard batch; a hard
   batch is never counted), ``count`` hard tasks are composed from the distinct failure classes
   recorded since the last hard batch: if there are at least ``way`` of them, each hard task
   takes a random ``way`` of them; otherwise each takes all of them and is completed by the fill
   rule (``confused``: their confusions first, then random train classes; ``random``: random
   train classes). Images are drawn fresh (a separate seeded stream), classes are shuffled.
3. The hard tasks are trained on as a meta-batch and the failure set is emptied: in ``extra``
   mode in addition to the regular ones (right after the ``every``-th), in ``replace`` mode in
   the place of the next regular one. Either way the cycle is ``every`` regular meta-batches,
   then one hard one: over 30 iterations with ``every`` = 1, 2, 3, ``replace`` trains 15, 10, 7
   hard meta-batches (the other iterations regular), ``extra`` 30, 15, 10 (beside all 30).

Everything is a pure function of the seed and the iteration, and checkpoints carry the pending
failure set and the count of regular meta-batches since the last hard batch: a resumed run
composes the same hard tasks at the same iterations.
Per-class accuracies stay on the device until a hard batch is composed.
"""

from __future__ import annotations

from typing import Any

import torch

from fsbench.config import HardTaskConfig
from fsbench.episodes import Episode, EpisodeSampler


def failure_classes(logits: torch.Tensor, labels: torch.Tensor, way: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per task, the episode label of its failure class and of that class's confusion.

    ``logits`` [T, Q, way], ``labels`` [T, Q]. Returns two [T] int64 tensors (on the device).
    """
    labels = labels.to(logits.device)
    onehot = torch.nn.functional.one_hot(labels, way).float()  # [T, Q, way]
    per_class = onehot.sum(1).clamp_min(1)  # queries per class
    pred = logits.argmax(-1)
    correct = (pred == labels).float()
    acc = torch.einsum("tq,tqc->tc", correct, onehot) / per_class  # [T, way]
    prob = logits.float().softmax(-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    conf = torch.einsum("tq,tqc->tc", prob, onehot) / per_class  # mean true-class probability
    # Lexicographic argmin over (accuracy, confidence, position).
    tied = acc == acc.min(-1, keepdim=True).values
    conf = conf.masked_fill(~tied, float("inf"))
    tied &= conf == conf.min(-1, keepdim=True).values
    failure = tied.float().argmax(-1)  # the first of the remaining ties
    position = torch.arange(way, device=logits.device).float()
    # Confusion: among the failure class's queries, the most frequent wrong prediction.
    on_failure = labels == failure.unsqueeze(-1)  # [T, Q]
    wrong = torch.nn.functional.one_hot(pred, way).float() * on_failure.unsqueeze(-1)
    counts = wrong.sum(1)
    counts.scatter_(1, failure.unsqueeze(-1), -1.0)  # never the class itself
    confused = (counts - position / (2 * way)).argmax(-1)  # ties: the class drawn first
    return failure, confused


class PlainMetaBatch:
    """The ordinary meta-batch: no extra batches."""

    def observe(self, batch: Episode, logits: torch.Tensor) -> None:
        del batch, logits

    def extra_batches(self, iteration: int) -> list[Episode]:
        del iteration
        return []

    @property
    def hard_tasks_used(self) -> int:
        return 0

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        del state


class HardTaskMetaBatch(PlainMetaBatch):
    """Records failure classes and composes hard meta-batches (see the module docstring)."""

    def __init__(self, cfg: HardTaskConfig, sampler: EpisodeSampler, meta_batch: int) -> None:
        self.cfg = cfg
        self.sampler = sampler
        self.count = cfg.count or meta_batch
        self.meta_batch = meta_batch
        self._failures: list[torch.Tensor] = []  # [T, 2] original class ids: failure, confusion
        self._used = 0
        #: Regular meta-batches observed since the last hard batch (the cadence counts these only).
        self.regular_since_hard = 0

    def observe(self, batch: Episode, logits: torch.Tensor) -> None:
        failure, confused = failure_classes(logits, batch.query_labels, batch.spec.way)
        classes = batch.classes.to(logits.device)
        self._failures.append(
            torch.stack([classes.gather(1, failure[:, None]), classes.gather(1, confused[:, None])], -1)
            .squeeze(1)
        )
        self.regular_since_hard += 1

    @property
    def recorded(self) -> list[tuple[int, int]]:
        """The (failure class, confusion) pairs recorded since the last hard batch."""
        if not self._failures:
            return []
        return [tuple(p) for p in torch.cat(self._failures).cpu().tolist()]  # type: ignore[misc]

    def extra_batches(self, iteration: int) -> list[Episode]:
        """The hard meta-batch, once ``every`` regular meta-batches have been observed since the
        last one (else none); ``iteration`` seeds its composition."""
        if self.regular_since_hard < self.cfg.every:
            return []
        pairs = self.recorded
        self._failures, self.regular_since_hard = [], 0
        tasks = [self.compose(pairs, iteration, k) for k in range(self.count)]
        self._used += len(tasks)
        return [Episode.cat(tasks)]

    def compose(self, pairs: list[tuple[int, int]], iteration: int, k: int) -> Episode:
        """Hard task ``k`` of ``iteration`` from the recorded (failure, confusion) pairs."""
        way = self.sampler.spec.way
        gen = self.sampler.generator("hard", iteration, k)
        failures = list(dict.fromkeys(f for f, _ in pairs))
        if len(failures) >= way:
            pick = torch.randperm(len(failures), generator=gen)[:way]
            classes = [failures[i] for i in pick.tolist()]
        else:
            classes = list(failures)
            if self.cfg.fill == "confused":
                for _, c in pairs:
                    if len(classes) < way and c not in classes:
                        classes.append(c)
            rest = [c for c in torch.randperm(self.sampler.split.num_classes, generator=gen).tolist()
                    if c not in classes]
            classes += rest[: way - len(classes)]
        order = torch.randperm(way, generator=gen)
        return self.sampler.with_classes(torch.tensor(classes)[order], gen)

    @property
    def hard_tasks_used(self) -> int:
        return self._used

    def state(self) -> dict[str, Any]:
        pending = torch.cat(self._failures).cpu() if self._failures else torch.zeros(0, 2, dtype=torch.long)
        return {"pending": pending, "used": self._used, "regular": self.regular_since_hard}

    def load_state(self, state: dict[str, Any]) -> None:
        pending = state.get("pending")
        self._failures = [pending] if pending is not None and len(pending) else []
        self._used = int(state.get("used", 0))
        # Checkpoints written before the count was saved: one pending pair per task of each batch.
        self.regular_since_hard = int(state.get("regular", len(self.recorded) // self.meta_batch))

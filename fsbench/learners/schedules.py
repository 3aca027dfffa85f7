"""The outer loop's step-decay schedule, one meaning and one validation for every method.

A method whose hparams have ``lr_decay`` and ``lr_decay_every`` (ProtoNets, MTL, scratch, TADAM)
multiplies its outer learning rate by ``lr_decay`` every ``lr_decay_every`` outer updates, and
``lr_decay_every = 0`` switches the decay off. It validates the two with :func:`check_step_decay`
and builds the schedule with :func:`step_decay`; ``tests/test_schedules.py`` checks both meanings
on every registered method that has the fields.

The schedule counts the updates :meth:`fsbench.method.Method.apply_outer_update` makes outside
:meth:`~fsbench.method.Method.schedule_held` (meta-iterations: the hard-task meta-batches of the
paper's Algorithm 1 do not advance it).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch

from fsbench.errors import ConfigError

__all__ = ["check_step_decay", "step_decay"]


def check_step_decay(hp: Any) -> None:
    """Raise a :class:`ConfigError` unless ``hp.lr_decay_every >= 0`` and ``0 < hp.lr_decay <= 1``."""
    if hp.lr_decay_every < 0:
        raise ConfigError(f"hparams.lr_decay_every must be >= 0 (0: no decay), got {hp.lr_decay_every}")
    if not 0 < hp.lr_decay <= 1:
        raise ConfigError(f"hparams.lr_decay must be in (0, 1], got {hp.lr_decay}")


def _floored(step: int, *, decay: float, every: int, floor: float) -> float:
    """The lr multiplier after ``step`` updates: ``decay`` every ``every``, never below ``floor``."""
    return max(decay ** (step // every), floor)


def step_decay(
    optimizer: torch.optim.Optimizer,
    decay: float,
    every: int,
    floors: Sequence[float] = (),
    milestones: Sequence[int] = (),
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The schedule of ``optimizer``: ``x decay`` every ``every`` updates (None when ``every`` is 0).

    ``floors``: one lr multiplier per parameter group below which that group's rate stops (MTL's
    ``lr_min``); ``milestones``: decay at these update counts instead (TADAM's official
    schedule; ``every`` must then be 0).
    """
    if milestones:
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=decay)
    if every == 0:
        return None
    if floors:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, [
            functools.partial(_floored, decay=decay, every=every, floor=floor) for floor in floors])
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=every, gamma=decay)

"""The one interface every few-shot method implements: the method contract.

The core owns the loops: it samples tasks, gathers and normalises their images, runs the
episodic meta-training loop (with its meta-batch strategy, e.g. hard tasks), selects the model on
val episodes, checkpoints, and evaluates. A method only says what is specific to it:

* ``meta_train_step(support, support_y, query, query_y, way)``: one outer update on a meta-batch
  of tasks, returning a :class:`StepOutput` (episodic methods);
* at test time either ``embed`` + ``classify`` (backbone frozen at test: the core computes
  each test image's features once and builds every episode from them), or
  ``adapt_and_predict`` (methods that adapt per episode, e.g. MAML);
* optionally ``fit_base(train, normalize)``: statistics of the base (train) classes, once
  before the test episodes (SimpleShot's CL2N centres features on the base classes' mean).

All tensors carry a leading task dimension ``T``: tasks are processed batched.

This module sits below the engine and imports nothing from it; helpers that methods share (the
FC-head base learner, prototypes, schedules) are in :mod:`fsbench.learners`.
"""

from __future__ import annotations

import contextlib
from abc import ABC
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from fsbench.config import MethodPreset
from fsbench.precision import Precision

if TYPE_CHECKING:
    from fsbench.data.base import Normalizer, Split


@dataclass
class MethodContext:
    """What the core hands a method when it builds it.

    ``precision`` is the run's resolved policy (:mod:`fsbench.precision`): the one door to how
    features are computed (``ctx.precision.autocast()``, ``.prepare``, ``.input``, ``.forward``).
    """

    preset: MethodPreset  # resolved: backbone, schedules, the method's hparams
    backbone: str
    backbone_kwargs: dict[str, Any]
    num_train_classes: int
    image_shape: tuple[int, int, int]
    device: torch.device
    seed: int
    way: int
    shot: int
    precision: Precision
    pretrained: dict[str, torch.Tensor] | None = None  # pre-trained backbone weights, if any

    @property
    def hparams(self) -> Any:
        return self.preset.hparams


@dataclass
class StepOutput:
    """What a meta-train step reports. Tensors stay on the device (no host sync per step)."""

    loss: torch.Tensor  # scalar, detached
    query_logits: torch.Tensor  # [T, way*query, way], detached: the core derives accuracies


class Method(nn.Module, ABC):
    """Base class of all methods. Subclasses set ``frozen_at_test`` and implement the hooks."""

    #: True when the backbone does not change per test episode: the core then embeds every
    #: test image once and calls :meth:`classify` on features.
    frozen_at_test: ClassVar[bool] = True
    #: True when ``meta_train_step`` also takes ``classes`` [T, way]: each task's global
    #: train-split class ids (for an auxiliary many-way loss, as TADAM's co-training).
    needs_class_ids: ClassVar[bool] = False

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__()
        self.ctx = ctx
        #: The method's hyperparameters (``ctx.hparams``), validated here by their ``check()``
        #: when they have one: a subclass reads ``self.hp`` and never checks them itself.
        self.hp: Any = ctx.hparams
        check = getattr(self.hp, "check", None)
        if callable(check):
            check()
        #: The outer optimizer and its schedule, if the method trains: checkpoints carry their
        #: state (:meth:`training_state`), so a resumed run continues bit for bit.
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        #: Outer updates applied so far (hard-task meta-batches included); checkpointed.
        self.outer_updates = 0
        self._schedule_held = False

    # -- training ---------------------------------------------------------------------------
    def meta_train_step(
        self,
        support: torch.Tensor,
        support_y: torch.Tensor,
        query: torch.Tensor,
        query_y: torch.Tensor,
        way: int,
    ) -> StepOutput:
        """One outer update on ``T`` tasks: support [T, S, C, H, W], query [T, Q, C, H, W]."""
        raise NotImplementedError(f"{type(self).__name__} does no episodic training")

    def outer_step(self, loss: torch.Tensor) -> None:
        """One outer update on ``loss``: zero the gradients, back-propagate, then
        :meth:`apply_outer_update`."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.apply_outer_update()

    def apply_outer_update(self) -> None:
        """Step ``self.optimizer`` (after clipping the global gradient norm of its parameters to
        ``episodic.grad_clip``, when set) and ``self.scheduler`` on the gradients now held."""
        episodic = self.ctx.preset.episodic
        if episodic is not None and episodic.grad_clip is not None:
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, episodic.grad_clip)
        self.optimizer.step()
        self.outer_updates += 1
        if self.scheduler is not None and not self._schedule_held:
            self.scheduler.step()

    @contextlib.contextmanager
    def schedule_held(self) -> Iterator[None]:
        """Outer updates inside do not advance ``self.scheduler``: the learning-rate schedule
        counts meta-iterations (the paper's Algorithm 1), not the extra hard-task meta-batches."""
        held, self._schedule_held = self._schedule_held, True
        try:
            yield
        finally:
            self._schedule_held = held

    def training_state(self) -> dict[str, Any]:
        """Optimizer and scheduler state (and the outer-update count) for checkpoints; loadable
        with weights_only=True.

        Override to carry more (and :meth:`load_training_state` to restore it)."""
        state: dict[str, Any] = {name: obj.state_dict()
                                 for name, obj in self._training_objects().items()}
        state["outer_updates"] = self.outer_updates
        return state

    def load_training_state(self, state: dict[str, Any]) -> None:
        for name, obj in self._training_objects().items():
            obj.load_state_dict(state[name])
        self.outer_updates = int(state.get("outer_updates", 0))

    def _training_objects(self) -> dict[str, Any]:
        objs = {"optimizer": self.optimizer, "scheduler": self.scheduler}
        return {name: obj for name, obj in objs.items() if obj is not None}

    # -- test -------------------------------------------------------------------------------
    def fit_base(self, train: Split, normalize: Normalizer) -> None:
        """Learn what the method needs from the base (train) classes before it is tested.

        The core calls this once per run, after any meta-training and before the test episodes,
        with the train split (uint8 images, labels) and the normaliser that turns its images into
        the backbone's input; it is never given the split that is evaluated. The default does
        nothing. SimpleShot's CL2N keeps the mean feature of the base classes here
        (``fsbench.engine.evaluate.embed_images`` embeds a split's images in chunks). Its time
        counts as training time (``train_seconds``).
        """

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Features [N, D] of normalised images [N, C, H, W] (``frozen_at_test`` methods)."""
        raise NotImplementedError

    def classify(
        self,
        support: torch.Tensor,
        support_y: torch.Tensor,
        query: torch.Tensor,
        way: int,
    ) -> torch.Tensor:
        """Logits [T, Q, way] from support features [T, S, D] and query features [T, Q, D]."""
        raise NotImplementedError

    def adapt_and_predict(
        self,
        support: torch.Tensor,
        support_y: torch.Tensor,
        query: torch.Tensor,
        way: int,
    ) -> torch.Tensor:
        """Logits [T, Q, way] for query images after adapting to each task's support images."""
        t, s = support.shape[:2]
        q = query.shape[1]
        feats = self.embed(torch.cat([support.flatten(0, 1), query.flatten(0, 1)]))
        return self.classify(
            feats[: t * s].view(t, s, -1), support_y, feats[t * s :].view(t, q, -1), way
        )

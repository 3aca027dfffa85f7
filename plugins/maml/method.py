"""The MAML method: meta-training and per-episode adaptation on any timm backbone.

Model-Agnostic Meta-Learning (Finn, Abbeel, Levine, ICML 2017). The learner is
``create_backbone(backbone, num_classes=way)``: the backbone with its own ``way``-output linear
classifier (timm's ``num_classes`` head), every parameter of which is meta-learned and adapted in
the inner loop. BatchNorm uses batch statistics at meta-training and at test
(:func:`fsbench_plugins.maml.inner_loop.use_batch_statistics`).

The tasks of a meta-batch (and the test episodes of an evaluation batch) run batched with
``torch.func.vmap`` over the per-task inner loop. If vmap fails on a backbone (an operation
without a batching rule, data-dependent control flow, ...), the failure is reported once with a
``RuntimeWarning`` and the method switches to a per-task loop for the rest of its life; the
``batched`` hparam selects the loop from the start.

Precision (``ctx.precision``, :mod:`fsbench.precision`): the forward passes run under the
run's policy (bf16 autocast + channels_last where native); losses are fp32. In fp32, and always
under vmap, BatchNorm is computed from primitives (:class:`~.inner_loop.PrimitiveNorms`); the
per-task loop under bf16 uses PyTorch's fused batch norm instead (the same function, 3x faster
on a CPU). At test the inner loop is first order and nothing is differentiated through it, so the
loop adapts with plain ``torch.autograd.grad`` (:meth:`~.inner_loop.InnerLoop.predict`).

Layout on a CPU under bf16 (:func:`contiguous_meta_train`): the second-order meta-train
step runs in the contiguous layout, the test adaptation in channels_last. The weights stay
contiguous and only the images change layout (oneDNN follows the input's). The double backward
through batch norm (many small element-wise ops) measured slower in channels_last, the test
adaptation faster (README, "Precision and CPU speed").
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch.func import vmap

from fsbench.backbones import create_backbone, with_image_size
from fsbench.errors import ConfigError
from fsbench.method import Method, MethodContext, StepOutput

from .inner_loop import (
    InnerLoop,
    Params,
    PrimitiveNorms,
    at_least_float32,
    use_batch_statistics,
)

R = TypeVar("R")


@dataclass(frozen=True)
class MAMLHparams:
    """MAML's hyperparameters (defaults: the paper's miniImageNet setting).

    inner_lr: step size of the inner gradient descent (alpha; 0.01).
    inner_steps: inner steps at meta-training (5).
    test_inner_steps: inner steps when adapting to a val/test episode (10).
    meta_lr: Adam learning rate of the outer loop (beta; 1e-3).
    first_order: drop the second-order terms (first-order MAML, the paper's Section 5.2).
    batched: run the tasks of a meta-batch / evaluation batch with ``torch.func.vmap``; False
        runs a per-task loop (also used automatically when vmap fails on a backbone). Both
        compute the same function; on a CPU vmap turns the convolutions into grouped ones, and
        the CPU presets use the loop.
    clip_value: clamp each element of the meta-gradient to [-clip_value, clip_value] before the
        Adam step, as the official code does on miniImageNet (10); None: no clamp. A norm clip
        is available through ``episodic.grad_clip``.
    """

    inner_lr: float = 0.01
    inner_steps: int = 5
    test_inner_steps: int = 10
    meta_lr: float = 1e-3
    first_order: bool = False
    batched: bool = True
    clip_value: float | None = 10.0

    def check(self) -> None:
        for name in ("inner_steps", "test_inner_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"hparams.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("inner_lr", "meta_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"hparams.{name} must be positive, got {getattr(self, name)}")
        if self.clip_value is not None and not self.clip_value > 0:
            raise ConfigError(f"hparams.clip_value must be positive or null, got {self.clip_value}")


def contiguous_meta_train(ctx: MethodContext) -> bool:
    """Whether the second-order meta-train step runs contiguous (a CPU under bf16; module doc)."""
    hp: MAMLHparams = ctx.hparams
    prec = ctx.precision
    return prec.device_type == "cpu" and prec.dtype == "bf16" and not hp.first_order


def build_learner(ctx: MethodContext) -> torch.nn.Module:
    """The backbone with a ``ctx.way``-way classifier, BatchNorm on batch statistics.

    When ``backbone_kwargs`` asks fsbench's Conv-4 / ResNet-12 for ``pool="flatten"`` (the
    original MAML flattens Conv-4's 5x5 map at 84x84) without an ``img_size``, the dataset's
    image size is filled in. Weights are channels_last under a bf16 policy, except where the
    meta-train step runs contiguous (:func:`contiguous_meta_train`).
    """
    kwargs = with_image_size(ctx.backbone_kwargs, ctx.image_shape)
    model = create_backbone(ctx.backbone, num_classes=ctx.way, **kwargs)
    use_batch_statistics(model)
    return model if contiguous_meta_train(ctx) else ctx.precision.prepare(model)


def _contiguous(images: torch.Tensor) -> torch.Tensor:
    return images.contiguous()


class MAML(Method):
    """MAML, second order by default (``first_order`` hparam); adapts per test episode."""

    frozen_at_test = False
    hp: MAMLHparams

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.model = build_learner(ctx)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.hp.meta_lr)
        #: Why vmap was given up on this backbone (None while it works or was never tried).
        self.vmap_failure: str | None = None

    @property
    def train_loop(self) -> InnerLoop:
        hp = self.hp
        return InnerLoop(self.model, hp.inner_lr, hp.inner_steps, hp.first_order)

    @property
    def test_loop(self) -> InnerLoop:
        """At test nothing is differentiated through the inner loop: first order is exact."""
        return InnerLoop(self.model, self.hp.inner_lr, self.hp.test_inner_steps, first_order=True)

    # -- batching ---------------------------------------------------------------------------
    @property
    def uses_vmap(self) -> bool:
        """Whether tasks currently run batched (``batched`` and vmap has not failed)."""
        return self.hp.batched and self.vmap_failure is None

    def _vmap_or_loop(self, compute: Callable[[bool], R]) -> R:
        """``compute(True)`` (vmap) if it may and it works; otherwise ``compute(False)`` (loop)."""
        if self.uses_vmap:
            try:
                return compute(True)
            except Exception as exc:  # any failure of the batched path: the loop re-raises real bugs
                self.vmap_failure = f"{type(exc).__name__}: {exc}"
                warnings.warn(
                    f"MAML: torch.func.vmap failed on backbone {self.ctx.backbone!r} "
                    f"({self.vmap_failure}); running tasks one by one from now on "
                    "(set hparams.batched=false to skip this attempt)",
                    RuntimeWarning, stacklevel=3,
                )
        return compute(False)

    def task_logits(
        self,
        loop: InnerLoop,
        params: Params,
        support: torch.Tensor,
        support_y: torch.Tensor,
        query: torch.Tensor,
        batched: bool,
    ) -> torch.Tensor:
        """Query logits [T, Q, way] of ``T`` tasks, each adapted from ``params`` by ``loop``."""
        buffers = dict(self.model.named_buffers())
        if batched:
            with PrimitiveNorms():
                run = vmap(loop, in_dims=(None, None, 0, 0, 0), randomness="different")
                return run(params, buffers, support, support_y, query)
        prec = self.ctx.precision
        # The per-task loop: PrimitiveNorms in fp32 (the same function as the vmap path, bit for
        # bit the reference); under bf16 PyTorch's fused batch norm (batch statistics, correct to
        # any order outside vmap), 3x faster on a CPU than the fp32 primitives it replaces.
        norms = PrimitiveNorms() if prec.dtype == "fp32" else contextlib.nullcontext()
        # At test nothing is differentiated through the inner loop: adapt without torch.func.
        testing = not torch.is_grad_enabled() and loop.first_order
        call = loop.predict if testing else loop
        # The images' layout picks the convolutions' (module doc: contiguous_meta_train).
        layout = prec.input if testing or not contiguous_meta_train(self.ctx) else _contiguous
        with norms:
            return torch.stack([
                call(params, buffers, layout(support[t]), support_y[t], layout(query[t]))
                for t in range(support.shape[0])
            ])

    # -- training ---------------------------------------------------------------------------
    def meta_loss(
        self,
        support: torch.Tensor,
        support_y: torch.Tensor,
        query: torch.Tensor,
        query_y: torch.Tensor,
        batched: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The outer loss (mean query cross-entropy over tasks, differentiable with respect to
        the model's parameters) and the query logits [T, Q, way]. ``batched`` None: vmap if
        the hparams allow it (no fallback here)."""
        params = dict(self.model.named_parameters())
        use_vmap = self.uses_vmap if batched is None else batched
        with self.ctx.precision.autocast():
            logits = self.task_logits(self.train_loop, params, support, support_y, query, use_vmap)
        loss = F.cross_entropy(at_least_float32(logits).flatten(0, 1), query_y.flatten())
        return loss, logits

    def meta_train_step(self, support, support_y, query, query_y, way) -> StepOutput:
        self._check_way(way)

        def step(batched: bool) -> tuple[torch.Tensor, torch.Tensor]:
            self.optimizer.zero_grad(set_to_none=True)
            loss, logits = self.meta_loss(support, support_y, query, query_y, batched)
            loss.backward()
            return loss, logits

        loss, logits = self._vmap_or_loop(step)
        if self.hp.clip_value is not None:
            torch.nn.utils.clip_grad_value_(self.model.parameters(), self.hp.clip_value)
        self.apply_outer_update()
        return StepOutput(loss.detach(), at_least_float32(logits.detach()))

    # -- test -------------------------------------------------------------------------------
    def adapt_and_predict(self, support, support_y, query, way) -> torch.Tensor:
        """Adapt a copy of the meta-learned initialisation to each episode's support set
        (``test_inner_steps`` steps) and return its query logits; the model is not changed."""
        self._check_way(way)
        params = {name: p.detach() for name, p in self.model.named_parameters()}

        def predict(batched: bool) -> torch.Tensor:
            with torch.no_grad(), self.ctx.precision.autocast():  # torch.func.grad ignores the outer no_grad
                return self.task_logits(self.test_loop, params, support, support_y, query, batched)

        return at_least_float32(self._vmap_or_loop(predict))

    def _check_way(self, way: int) -> None:
        if way != self.ctx.way:
            raise ValueError(f"MAML was built for {self.ctx.way}-way tasks (its head), got {way}-way")

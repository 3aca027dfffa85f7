"""The TADAM method: scaled-metric prototypes with task conditioning (FiLM from a TEN).

One forward of a meta-batch of ``T`` tasks:

1. the backbone without conditioning embeds every support image; the task representation of
   each task is the mean of its class prototypes (``c_bar`` [T, D]);
2. the task-embedding network (TEN) maps ``c_bar`` to per-channel FiLM parameters of every
   conditioned layer: ``gamma = 1 + gamma0 * g(c_bar)``, ``beta = beta0 * h(c_bar)`` (``g``, ``h``:
   3 fully connected layers, swish between them, residual from the second on; scalars ``gamma0``,
   ``beta0`` per layer, initialised 0 and L2-penalised, so FiLM starts as the identity);
3. the backbone embeds support and query images again, each image's feature maps scaled and
   shifted right after the BatchNorm of every conditioned layer by its own task's FiLM: the
   supports in one forward, the queries in another, so that in training each set is normalised
   with its own batch statistics, as the official code's two graph calls
   (``hparams.separate_query_forward``);
4. logits ``-alpha * ||q - c_k||`` (the official code's Euclidean distance, not squared;
   ``hparams.metric``) to the prototypes of the conditioned support features, ``alpha`` the metric
   scale (fixed and cross-validated in the paper preset, learnable on request).

The auxiliary 64-way head (all train classes) is trained, at an update with a probability that
decays over training, in an *extra* step before the episodic one, on the unconditioned features of
the meta-batch's images with their global class ids, by its own optimizer on the same learning
rate schedule; it never runs at test time. The schedule counts regular updates (meta-iterations,
as the learning rate's): an extra hard-task meta-batch (``--ht-mode extra``) takes no auxiliary
step and does not advance it. Weight decay is an L2 term of the gradient, added before every
gradient tensor is clipped to norm ``hparams.clip_norm`` (the official code's regularisation
losses and per-variable clipping; ``hparams.decay_before_clip``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from fsbench.backbones import create_backbone, feature_dim
from fsbench.episodes import derive_seed
from fsbench.errors import ConfigError
from fsbench.learners.prototypes import neg_sq_euclidean, prototypes
from fsbench.learners.schedules import check_step_decay, step_decay
from fsbench.method import Method, MethodContext, StepOutput

OPTIMIZERS = ("sgd", "adam")
METRICS = ("euclidean", "sq_euclidean")
EVAL_CHUNK = 4  # test episodes per backbone forward in adapt_and_predict


@dataclass(frozen=True)
class TADAMHparams:
    """TADAM's hyperparameters (defaults: the ``paper`` preset, the official code's settings).

    optimizer/lr/momentum/weight_decay: the outer optimiser (the auxiliary task's is the same kind).
    lr_milestones / lr_decay / lr_decay_every: the learning rate is multiplied by ``lr_decay`` at
        each update count in ``lr_milestones``, or else every ``lr_decay_every`` updates (0: never).
    metric: ``"euclidean"`` (``-alpha * ||q - c||``, the official code) or ``"sq_euclidean"``
        (``-alpha * ||q - c||^2``, ProtoNets').
    alpha_init / learn_alpha: the metric scale and whether it is trained (else fixed).
    task_conditioning / ten_layers: FiLM from a TEN of ``ten_layers`` layers per gamma/beta net
        (False: a scaled-metric ProtoNet).
    film_l2: weight of the L2 penalty ``film_l2 * (gamma0^2 + beta0^2) / 2`` (TensorFlow's
        ``l2_regularizer``) on the FiLM post-multipliers.
    clip_norm: every gradient tensor is clipped to this norm before a step (None: no clipping).
    decay_before_clip: weight decay joins the gradient (``weight_decay * w``) before the clip, as
        the official code's L2 losses do; False: the optimizer adds it after the clip.
    separate_query_forward: supports and queries pass the conditioned backbone in two forwards
        (each set normalised with its own batch statistics in training, as the official code);
        False: one forward of both.
    aux_prob / aux_decay / aux_decay_every: an auxiliary step precedes regular update ``n`` with
        probability ``aux_prob * aux_decay ** (n // aux_decay_every)`` (``aux_prob`` 0: never).
    """

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_decay: float = 0.1
    lr_milestones: tuple[int, ...] = (15_000, 17_500, 20_000)
    lr_decay_every: int = 0
    metric: str = "euclidean"
    alpha_init: float = 7.5
    learn_alpha: bool = False
    task_conditioning: bool = True
    ten_layers: int = 3
    film_l2: float = 0.01
    clip_norm: float | None = 1.0
    decay_before_clip: bool = True
    separate_query_forward: bool = True
    aux_prob: float = 0.9
    aux_decay: float = 0.9
    aux_decay_every: int = 1_500

    def check(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"hparams.optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.metric not in METRICS:
            raise ConfigError(f"hparams.metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        for name in ("lr", "alpha_init", "aux_decay"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"hparams.{name} must be positive, got {getattr(self, name)}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ConfigError(f"hparams.clip_norm must be positive or null, got {self.clip_norm}")
        if not 0 <= self.aux_prob <= 1:
            raise ConfigError(f"hparams.aux_prob must be in [0, 1], got {self.aux_prob}")
        check_step_decay(self)
        for name in ("film_l2", "weight_decay"):
            if getattr(self, name) < 0:
                raise ConfigError(f"hparams.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("aux_decay_every", "ten_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"hparams.{name} must be at least 1, got {getattr(self, name)}")
        milestones = list(self.lr_milestones)
        if milestones and (milestones != sorted(set(milestones)) or milestones[0] < 1):
            raise ConfigError(f"hparams.lr_milestones must be increasing positive update counts, got {milestones}")
        if milestones and self.lr_decay_every:
            raise ConfigError("hparams.lr_milestones and hparams.lr_decay_every are two schedules: set one")

    def aux_probability(self, update: int) -> float:
        return self.aux_prob * self.aux_decay ** (update // self.aux_decay_every)


def film_layers(backbone: nn.Module) -> list[tuple[str, nn.BatchNorm2d]]:
    """The BatchNorm layers FiLM follows: every BatchNorm2d of the main path (shortcut
    ``downsample`` branches excluded): Conv-4's one per block, ResNet-12's three per block."""
    return [(name, m) for name, m in backbone.named_modules()
            if isinstance(m, nn.BatchNorm2d) and "downsample" not in name]


class TaskEmbeddingNetwork(nn.Module):
    """TEN: per conditioned layer of ``C`` channels, a gamma net and a beta net of ``layers``
    fully connected layers of width ``C`` (the first projects the task representation; each later
    one adds its input back; swish between layers, the last linear), and the scalar
    post-multipliers gamma0 and beta0 (initialised 0). Weights are drawn N(0, 0.2 / C), biases 0
    (the official code's initialiser with factor 0.1)."""

    def __init__(self, dim: int, channels: list[int], layers: int = 3) -> None:
        super().__init__()

        def net(c: int) -> nn.ModuleList:
            linears = nn.ModuleList(nn.Linear(dim if i == 0 else c, c) for i in range(layers))
            for lin in linears:
                nn.init.normal_(lin.weight, std=(0.2 / c) ** 0.5)
                nn.init.zeros_(lin.bias)
            return linears

        self.gamma_nets = nn.ModuleList(net(c) for c in channels)
        self.beta_nets = nn.ModuleList(net(c) for c in channels)
        self.gamma0 = nn.Parameter(torch.zeros(len(channels)))
        self.beta0 = nn.Parameter(torch.zeros(len(channels)))

    @staticmethod
    def _run(linears: nn.ModuleList, task: torch.Tensor) -> torch.Tensor:
        h = task
        for i, lin in enumerate(linears):
            h = lin(h) if i == 0 else lin(h) + h
            if i < len(linears) - 1:
                h = F.silu(h)
        return h

    def forward(self, task: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """FiLM (gamma [T, C], beta [T, C]) of every layer from task representations [T, D]."""
        return [(1 + self.gamma0[i] * self._run(g, task), self.beta0[i] * self._run(b, task))
                for i, (g, b) in enumerate(zip(self.gamma_nets, self.beta_nets, strict=True))]

    def penalty(self) -> torch.Tensor:
        """TensorFlow's ``l2_regularizer`` of the post-multipliers: half their sum of squares."""
        return 0.5 * (self.gamma0.pow(2).sum() + self.beta0.pow(2).sum())


def _decay_groups(params: list[nn.Parameter], decay: float) -> list[dict]:
    """Weight decay ``decay`` on the conv and fully connected weights only (the official code
    regularises ``weights``: not biases, BatchNorm, the metric scale or the FiLM post-multipliers).
    Each group carries its decay as ``l2``; the optimizer's own ``weight_decay`` is set by
    :meth:`TADAM._make_optimizer`."""
    return [{"params": [p for p in params if p.ndim > 1], "l2": decay},
            {"params": [p for p in params if p.ndim <= 1], "l2": 0.0}]


class TADAM(Method):
    """TADAM; the backbone is conditioned per task, so test episodes are embedded per episode."""

    frozen_at_test = False
    hp: TADAMHparams
    #: The auxiliary task needs each training task's global class ids (``Episode.classes``): a
    #: core that honours this flag passes them to :meth:`meta_train_step` as ``classes``.
    needs_class_ids: ClassVar[bool] = True

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        hp = self.hp
        self.backbone = ctx.precision.prepare(create_backbone(ctx.backbone, **ctx.backbone_kwargs))
        dim = feature_dim(self.backbone)
        layers = film_layers(self.backbone)
        if hp.task_conditioning and not layers:
            raise ConfigError(f"TADAM conditions BatchNorm2d layers; backbone {ctx.backbone!r} has none")
        self._film: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.ten = (TaskEmbeddingNetwork(dim, [m.num_features for _, m in layers], hp.ten_layers)
                    if hp.task_conditioning else None)
        if self.ten is not None:
            for i, (_, m) in enumerate(layers):
                m.register_forward_hook(partial(self._apply_film, i))
        alpha = torch.tensor(float(hp.alpha_init))
        if hp.learn_alpha:
            self.alpha = nn.Parameter(alpha)
        else:
            self.register_buffer("alpha", alpha)
        self.aux_head = nn.Linear(dim, ctx.num_train_classes)
        #: Regular updates taken: the auxiliary task's schedule, which extra hard-task meta-batches
        #: do not advance (saved with the state, so a resumed run draws the same auxiliary steps).
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self.aux_steps = 0
        self._warned_no_classes = False
        head = set(map(id, self.aux_head.parameters()))
        main = [p for p in self.parameters() if p.requires_grad and id(p) not in head]
        self.optimizer = self._make_optimizer(_decay_groups(main, hp.weight_decay))
        # The auxiliary 64-way task: its own optimizer over the backbone and the head (no weight
        # decay on the head), at the main schedule's learning rate (set before each auxiliary step).
        self.aux_optimizer = self._make_optimizer([
            *_decay_groups(list(self.backbone.parameters()), hp.weight_decay),
            {"params": list(self.aux_head.parameters()), "l2": 0.0},
        ])
        self.scheduler = step_decay(self.optimizer, hp.lr_decay, hp.lr_decay_every,
                                    milestones=hp.lr_milestones)

    def _make_optimizer(self, groups: list[dict]) -> torch.optim.Optimizer:
        """SGD or Adam over ``groups``; with ``decay_before_clip`` the decay is added to the
        gradient by :meth:`_decay_and_clip`, else by the optimizer (after the clip)."""
        hp = self.hp
        for group in groups:
            group["weight_decay"] = 0.0 if hp.decay_before_clip else group["l2"]
        if hp.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum)
        return torch.optim.Adam(groups, lr=hp.lr)

    def _training_objects(self) -> dict:
        return {**super()._training_objects(), "aux_optimizer": self.aux_optimizer}

    # -- FiLM -------------------------------------------------------------------------------
    def _apply_film(self, index: int, module: nn.Module, inputs, output: torch.Tensor):
        if self._film is None:
            return None
        gamma, beta = self._film[index]
        # one fused pass (x1.06-1.51 against a multiply then an add on a CPU: benchmarks/pool_speed.py)
        return torch.addcmul(beta[:, :, None, None].to(output.dtype), output, gamma[:, :, None, None].to(output.dtype))

    def features(self, images: torch.Tensor, film=None) -> torch.Tensor:
        """Backbone features [N, D]; ``film``: per-image (gamma [N, C], beta [N, C]) per layer."""
        self._film = film
        try:
            return self.ctx.precision.forward(self.backbone, images)  # float32 features
        finally:
            self._film = None

    def task_film(self, support_f: torch.Tensor, support_y: torch.Tensor, way: int):
        """FiLM per task from unconditioned support features [T, S, D]."""
        task = prototypes(support_f, support_y, way).mean(1)  # [T, D]
        return self.ten(task)

    # -- the episode --------------------------------------------------------------------------
    def episode_logits(self, support, support_y, query, way) -> torch.Tensor:
        """Logits [T, Q, way] of images support [T, S, C, H, W], query [T, Q, C, H, W]."""
        t, s, q = support.shape[0], support.shape[1], query.shape[1]
        films: list = [None, None]  # per image of the supports, of the queries
        if self.ten is not None:
            plain = self.features(support.flatten(0, 1)).view(t, s, -1)
            per_task = self.task_film(plain, support_y, way)
            films = [[(g.repeat_interleave(n, 0), b.repeat_interleave(n, 0)) for g, b in per_task] for n in (s, q)]
        if self.hp.separate_query_forward:  # the official code: two forwards, two sets of batch statistics
            support_f = self.features(support.flatten(0, 1), films[0])
            query_f = self.features(query.flatten(0, 1), films[1])
        else:
            both = films[0] and [(torch.cat([gs, gq]), torch.cat([bs, bq]))
                                 for (gs, bs), (gq, bq) in zip(films[0], films[1], strict=True)]
            feats = self.features(torch.cat([support.flatten(0, 1), query.flatten(0, 1)]), both)
            support_f, query_f = feats[: t * s], feats[t * s:]
        return self.scaled_logits(support_f.view(t, s, -1), support_y, query_f.view(t, q, -1), way)

    def scaled_logits(self, support_f, support_y, query_f, way) -> torch.Tensor:
        """``-alpha * d(q, c_k)`` [T, Q, way] to the class prototypes ``c_k`` of support features."""
        neg = neg_sq_euclidean(query_f, prototypes(support_f, support_y, way))
        if self.hp.metric == "euclidean":
            neg = -(-neg).clamp_min(1e-12).sqrt()  # the norm; clamped: no infinite gradient at 0
        return self.alpha * neg

    def adapt_and_predict(self, support, support_y, query, way) -> torch.Tensor:
        """Test episodes (no gradients), ``EVAL_CHUNK`` tasks per backbone forward: tasks are
        independent at test (BatchNorm uses running statistics), so chunking changes nothing but
        the peak memory (a 20-episode batch at 84x84 would hold ~1,600 images' feature maps)."""
        with torch.no_grad():
            return torch.cat([
                self.episode_logits(support[i:i + EVAL_CHUNK], support_y[i:i + EVAL_CHUNK],
                                    query[i:i + EVAL_CHUNK], way)
                for i in range(0, support.shape[0], EVAL_CHUNK)
            ])

    # -- training -----------------------------------------------------------------------------
    def take_aux_step(self) -> bool:
        """Whether this update trains the auxiliary task (seeded by (seed, update))."""
        p = self.hp.aux_probability(int(self.updates))
        if p <= 0:
            return False
        g = torch.Generator().manual_seed(derive_seed("tadam-aux", self.ctx.seed, int(self.updates)))
        return float(torch.rand((), generator=g)) < p

    def aux_loss(self, support, support_y, query, query_y, classes) -> torch.Tensor:
        """64-way cross-entropy of the unconditioned features of all the meta-batch's images
        (global labels ``classes[t, y]``)."""
        feats = self.features(torch.cat([support.flatten(0, 1), query.flatten(0, 1)]))
        labels = torch.cat([classes.gather(1, support_y).flatten(), classes.gather(1, query_y).flatten()])
        return F.cross_entropy(self.aux_head(feats), labels.to(feats.device))

    def _decay_and_clip(self, optimizer: torch.optim.Optimizer) -> None:
        """With ``decay_before_clip`` add each group's ``l2 * w`` to its gradients (the official
        code's L2 losses); then clip every gradient tensor to norm ``clip_norm``."""
        if self.hp.decay_before_clip:
            for group in optimizer.param_groups:
                pairs = [(p.grad, p.detach()) for p in group["params"] if p.grad is not None]
                if group["l2"] and pairs:
                    torch._foreach_add_([g for g, _ in pairs], [w for _, w in pairs], alpha=group["l2"])
        if self.hp.clip_norm is None:
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads:
            norms = torch._foreach_norm(grads)
            scale = [(self.hp.clip_norm / (n + 1e-6)).clamp(max=1.0) for n in norms]
            torch._foreach_mul_(grads, scale)

    def aux_step(self, support, support_y, query, query_y, classes) -> None:
        """One auxiliary update (backbone and head), at the main schedule's current learning rate."""
        loss = self.aux_loss(support, support_y, query, query_y, classes)
        self.aux_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._decay_and_clip(self.aux_optimizer)
        lr = self.optimizer.param_groups[0]["lr"]
        for group in self.aux_optimizer.param_groups:
            group["lr"] = lr
        self.aux_optimizer.step()
        self.aux_steps += 1

    def meta_train_step(self, support, support_y, query, query_y, way,
                        classes: torch.Tensor | None = None) -> StepOutput:
        """One update, preceded (with the decaying probability) by an auxiliary 64-way step.
        ``classes`` [T, way]: the tasks' global train-class ids, which the auxiliary task needs;
        without them only the episodic loss is trained (warned once). An extra hard-task
        meta-batch (run with the schedule held) takes no auxiliary step and is not counted."""
        regular = not self._schedule_held  # the base class's: an extra hard-task meta-batch
        aux = regular and self.take_aux_step()
        if aux and classes is None:
            if not self._warned_no_classes:
                warnings.warn("TADAM: no global class ids were passed to meta_train_step, so the "
                              "auxiliary 64-way co-training is skipped", RuntimeWarning, stacklevel=2)
                self._warned_no_classes = True
            aux = False
        if aux:
            self.aux_step(support, support_y, query, query_y, classes.to(query_y.device))
        logits = self.episode_logits(support, support_y, query, way)
        loss = F.cross_entropy(logits.flatten(0, 1), query_y.flatten())
        total = loss + self.hp.film_l2 * self.ten.penalty() if self.ten is not None else loss
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self._decay_and_clip(self.optimizer)
        self.apply_outer_update()
        if regular:
            self.updates += 1
        return StepOutput(loss.detach(), logits.detach())

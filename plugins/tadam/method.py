"""The TADAM method: scaled-metric prototypes with task conditioning (FiLM from a TEN).

One forward of a meta-batch of ``T`` tasks:

1. the backbone without conditioning embeds every support image; the task representation of
   each task is the mean of its class prototypes (``c_bar`` [T, D]);
2. the task-embedding network (TEN) maps ``c_bar`` to per-channel FiLM parameters of every
   conditioned layer: ``gamma = 1 + gamma0 * g(c_bar)``, ``beta = beta0 * h(c_bar)`` (scalars
   ``gamma0``, ``beta0`` per layer, initialised 0 and L2-penalised, so FiLM starts as the identity);
3. the backbone embeds support and query images again, each image's feature maps scaled and
   shifted right after the BatchNorm of every conditioned layer by its own task's FiLM;
4. logits ``-alpha * ||q - c_k||^2`` to the prototypes of the conditioned support features,
   ``alpha`` the learned metric scale.

The auxiliary 64-way head (all train classes) is trained, with a probability that decays over
training, on the unconditioned features of a meta-batch's images with their global class ids;
it never runs at test time.
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
from fsbench.engine.prototypes import neg_sq_euclidean, prototypes
from fsbench.episodes import derive_seed
from fsbench.errors import ConfigError
from fsbench.method import Method, MethodContext, StepOutput

OPTIMIZERS = ("sgd", "adam")
EVAL_CHUNK = 4  # test episodes per backbone forward in adapt_and_predict


@dataclass(frozen=True)
class TADAMHparams:
    """TADAM's hyperparameters (defaults: the ``paper`` preset).

    optimizer/lr/momentum/weight_decay/lr_decay/lr_decay_every: the outer optimiser and its step
        schedule (``lr_decay_every`` counts updates; 0: none).
    alpha_init / learn_alpha: the metric scale.
    task_conditioning: FiLM from the TEN (False: a scaled-metric ProtoNet).
    film_l2: weight of the L2 penalty on the FiLM post-multipliers gamma0, beta0.
    aux_prob / aux_decay / aux_decay_every: the auxiliary task is trained at update ``n`` with
        probability ``aux_prob * aux_decay ** (n / aux_decay_every)`` (0: never).
    """

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_decay: float = 0.1
    lr_decay_every: int = 10_000
    alpha_init: float = 1.0
    learn_alpha: bool = True
    task_conditioning: bool = True
    film_l2: float = 0.01
    aux_prob: float = 0.9
    aux_decay: float = 0.9
    aux_decay_every: int = 500

    def check(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"hparams.optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        for name in ("lr", "alpha_init", "aux_decay"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"hparams.{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.aux_prob <= 1:
            raise ConfigError(f"hparams.aux_prob must be in [0, 1], got {self.aux_prob}")
        for name in ("lr_decay_every", "film_l2", "weight_decay"):
            if getattr(self, name) < 0:
                raise ConfigError(f"hparams.{name} must be >= 0, got {getattr(self, name)}")
        if self.aux_decay_every < 1:
            raise ConfigError(f"hparams.aux_decay_every must be at least 1, got {self.aux_decay_every}")

    def aux_probability(self, update: int) -> float:
        return self.aux_prob * self.aux_decay ** (update / self.aux_decay_every)


def film_layers(backbone: nn.Module) -> list[tuple[str, nn.BatchNorm2d]]:
    """The BatchNorm layers FiLM follows: every BatchNorm2d of the main path (shortcut
    ``downsample`` branches excluded): Conv-4's one per block, ResNet-12's three per block."""
    return [(name, m) for name, m in backbone.named_modules()
            if isinstance(m, nn.BatchNorm2d) and "downsample" not in name]


class TaskEmbeddingNetwork(nn.Module):
    """TEN: per conditioned layer, two 2-layer MLPs (gamma and beta) of the task representation,
    with the scalar post-multipliers gamma0 and beta0 (initialised 0)."""

    def __init__(self, dim: int, channels: list[int]) -> None:
        super().__init__()

        def mlp(c: int) -> nn.Sequential:
            return nn.Sequential(nn.Linear(dim, c), nn.ReLU(), nn.Linear(c, c))

        self.gamma_nets = nn.ModuleList(mlp(c) for c in channels)
        self.beta_nets = nn.ModuleList(mlp(c) for c in channels)
        self.gamma0 = nn.Parameter(torch.zeros(len(channels)))
        self.beta0 = nn.Parameter(torch.zeros(len(channels)))

    def forward(self, task: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """FiLM (gamma [T, C], beta [T, C]) of every layer from task representations [T, D]."""
        return [(1 + self.gamma0[i] * g(task), self.beta0[i] * b(task))
                for i, (g, b) in enumerate(zip(self.gamma_nets, self.beta_nets, strict=True))]

    def penalty(self) -> torch.Tensor:
        return self.gamma0.pow(2).sum() + self.beta0.pow(2).sum()


class TADAM(Method):
    """TADAM; the backbone is conditioned per task, so test episodes are embedded per episode."""

    frozen_at_test = False
    #: The auxiliary task needs each training task's global class ids (``Episode.classes``): a
    #: core that honours this flag passes them to :meth:`meta_train_step` as ``classes``.
    needs_class_ids: ClassVar[bool] = True

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        hp: TADAMHparams = ctx.hparams
        hp.check()
        self.hp = hp
        self.backbone = ctx.precision.prepare(create_backbone(ctx.backbone, **ctx.backbone_kwargs))
        dim = feature_dim(self.backbone)
        layers = film_layers(self.backbone)
        if hp.task_conditioning and not layers:
            raise ConfigError(f"TADAM conditions BatchNorm2d layers; backbone {ctx.backbone!r} has none")
        self._film: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.ten = TaskEmbeddingNetwork(dim, [m.num_features for _, m in layers]) if hp.task_conditioning else None
        if self.ten is not None:
            for i, (_, m) in enumerate(layers):
                m.register_forward_hook(partial(self._apply_film, i))
        alpha = torch.tensor(float(hp.alpha_init))
        if hp.learn_alpha:
            self.alpha = nn.Parameter(alpha)
        else:
            self.register_buffer("alpha", alpha)
        self.aux_head = nn.Linear(dim, ctx.num_train_classes)
        #: Updates taken (the auxiliary task's schedule; saved with the state, so a resumed run
        #: draws the same auxiliary steps).
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self.aux_steps = 0
        self._warned_no_classes = False
        params = [p for p in self.parameters() if p.requires_grad]
        if hp.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        else:
            self.optimizer = torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=max(hp.lr_decay_every, 1), gamma=hp.lr_decay if hp.lr_decay_every else 1.0,
        )

    # -- FiLM -------------------------------------------------------------------------------
    def _apply_film(self, index: int, module: nn.Module, inputs, output: torch.Tensor):
        if self._film is None:
            return None
        gamma, beta = self._film[index]
        return output * gamma[:, :, None, None].to(output.dtype) + beta[:, :, None, None].to(output.dtype)

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
        images = torch.cat([support.flatten(0, 1), query.flatten(0, 1)])
        film = None
        if self.ten is not None:
            plain = self.features(support.flatten(0, 1)).view(t, s, -1)
            per_task = self.task_film(plain, support_y, way)
            owner = torch.cat([torch.arange(t).repeat_interleave(s), torch.arange(t).repeat_interleave(q)])
            owner = owner.to(images.device)
            film = [(g[owner], b[owner]) for g, b in per_task]
        feats = self.features(images, film)
        support_f, query_f = feats[: t * s].view(t, s, -1), feats[t * s:].view(t, q, -1)
        return self.alpha * neg_sq_euclidean(query_f, prototypes(support_f, support_y, way))

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

    def aux_loss(self, support, support_y, query, query_y, way, classes) -> tuple[torch.Tensor, torch.Tensor]:
        """64-way cross-entropy of the unconditioned features of all the meta-batch's images
        (global labels ``classes[t, y]``), and the plain scaled-metric query logits."""
        t, s, q = support.shape[0], support.shape[1], query.shape[1]
        feats = self.features(torch.cat([support.flatten(0, 1), query.flatten(0, 1)]))
        labels = torch.cat([classes.gather(1, support_y).flatten(), classes.gather(1, query_y).flatten()])
        loss = F.cross_entropy(self.aux_head(feats), labels.to(feats.device))
        support_f, query_f = feats[: t * s].view(t, s, -1), feats[t * s:].view(t, q, -1)
        logits = self.alpha * neg_sq_euclidean(query_f, prototypes(support_f, support_y, way))
        return loss, logits

    def meta_train_step(self, support, support_y, query, query_y, way,
                        classes: torch.Tensor | None = None) -> StepOutput:
        """One update. ``classes`` [T, way]: the tasks' global train-class ids, which the
        auxiliary task needs; without them only the episodic loss is trained (warned once)."""
        aux = self.take_aux_step()
        if aux and classes is None:
            if not self._warned_no_classes:
                warnings.warn("TADAM: no global class ids were passed to meta_train_step, so the "
                              "auxiliary 64-way co-training is skipped", RuntimeWarning, stacklevel=2)
                self._warned_no_classes = True
            aux = False
        if aux:
            loss, logits = self.aux_loss(support, support_y, query, query_y, way, classes.to(query_y.device))
            self.aux_steps += 1
        else:
            logits = self.episode_logits(support, support_y, query, way)
            loss = F.cross_entropy(logits.flatten(0, 1), query_y.flatten())
        total = loss + self.hp.film_l2 * self.ten.penalty() if self.ten is not None else loss
        self.outer_step(total)
        self.updates += 1
        return StepOutput(loss.detach(), logits.detach())


"""The FC-head base learner: batched linear heads trained on support features (finetune, MTL,
scratch), and :class:`FCHeadMetaLearner`, the method whose head initialisation is meta-learned.

``fit_linear_heads`` trains one head per task for all ``T`` tasks at once: plain gradient
descent on the mean cross-entropy of each task's support set, with the gradient written out in
closed form (softmax minus one-hot) so that no autograd graph is needed at test time and the
steps run as a handful of batched matrix products with no host synchronisation. When the
inputs require grad (meta-training) the same expressions are differentiable: the returned
weights depend on the features and on the initial head, so an outer loss reaches both.
``first_order=True`` treats each step's gradient as a constant (the official MTL code's choice).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fsbench.errors import ConfigError
from fsbench.method import Method, StepOutput


def linear_logits(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """[T, N, way] logits of features [T, N, D] under heads weight [T, way, D], bias [T, way]."""
    return torch.baddbmm(bias.unsqueeze(1), features, weight.transpose(1, 2))


def fit_linear_heads(
    features: torch.Tensor,
    labels: torch.Tensor,
    way: int,
    steps: int,
    lr: float,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    first_order: bool = False,
    weight_decay: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Heads after ``steps`` of gradient descent from ``weight``/``bias`` (zeros by default).

    ``features`` [T, S, D], ``labels`` [T, S] in 0..way-1; ``weight`` [way, D] or [T, way, D].
    """
    t, s, d = features.shape
    w = torch.zeros(t, way, d, device=features.device, dtype=features.dtype) if weight is None else weight
    b = torch.zeros(t, way, device=features.device, dtype=features.dtype) if bias is None else bias
    w = w.expand(t, way, d)
    b = b.expand(t, way)
    target = F.one_hot(labels, way).to(features.dtype)
    for _ in range(steps):
        g = (linear_logits(features, w, b).softmax(-1) - target) / s  # dL/dlogits, [T, S, way]
        gw = g.transpose(1, 2) @ features
        gb = g.sum(1)
        if weight_decay:
            gw = gw + weight_decay * w
        if first_order:
            gw, gb = gw.detach(), gb.detach()
        w = w - lr * gw
        b = b - lr * gb
    return w, b


def embed_tasks(
    embed: Callable[[torch.Tensor], torch.Tensor], support: torch.Tensor, query: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Support [T, S, ...] and query [T, Q, ...] images -> features [T, S, D], [T, Q, D] with one
    ``embed`` call over all images of the meta-batch (one backbone forward)."""
    t, s, q = support.shape[0], support.shape[1], query.shape[1]
    feats = embed(torch.cat([support.flatten(0, 1), query.flatten(0, 1)]))
    return feats[: t * s].view(t, s, -1), feats[t * s :].view(t, q, -1)


def adapted_query_loss(
    support: torch.Tensor,
    support_y: torch.Tensor,
    query: torch.Tensor,
    query_y: torch.Tensor,
    way: int,
    steps: int,
    lr: float,
    weight: torch.Tensor,
    bias: torch.Tensor,
    first_order: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean query cross-entropy and query logits [T, Q, way] of heads adapted on the support set.

    The outer loss of every method whose base learner is a meta-learned FC head (MTL, scratch).
    """
    w, b = fit_linear_heads(support, support_y, way, steps, lr, weight=weight, bias=bias,
                            first_order=first_order)
    logits = linear_logits(query, w, b)
    return F.cross_entropy(logits.flatten(0, 1), query_y.flatten()), logits


def scale_features(feats: torch.Tensor, norm: float | None) -> torch.Tensor:
    """Raw features (``norm=None``) or each one L2-normalised and rescaled to length ``norm``.

    Why it matters for the FC base learner: one gradient step of the mean cross-entropy moves a
    support logit by about ``lr * |x|^2 / S``, so the inner loop's learning rate only means
    something relative to the squared feature norm. Fixing the norm makes ``lr`` portable
    across backbones (the official MTL lr 0.01 was tuned for 640-d ResNet features with
    ``|x|^2`` in the hundreds; ``norm=10`` gives such an lr the same effective step).
    """
    return feats if norm is None else F.normalize(feats, dim=-1) * norm


class FCHeadMetaLearner(Method):
    """A method whose base learner is an FC head with a meta-learned initialisation (MTL, scratch).

    A subclass's hparams have ``feature_norm``, ``train_steps``, ``inner_lr`` and ``first_order``;
    it sets ``self.backbone``, ``self.fc_weight`` [way, D], ``self.fc_bias`` [way],
    ``self.optimizer`` and ``self.scheduler``, and calls :meth:`_place_backbone` once the backbone
    is built. One meta-train step embeds all images of the meta-batch in one forward, adapts the ``T``
    heads batched (:func:`adapted_query_loss`) and takes one outer step.
    """

    backbone: nn.Module
    fc_weight: nn.Parameter
    fc_bias: nn.Parameter

    def _place_backbone(self) -> None:
        """The backbone in the run's memory format (channels_last under a bf16 policy)."""
        self.ctx.precision.prepare(self.backbone)

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        """float32 features of ``images``: the forward under the run's precision policy."""
        return scale_features(self.ctx.precision.forward(self.backbone, images), self.hp.feature_norm)

    def _check_way(self, way: int) -> None:
        if way != self.fc_weight.shape[0]:
            raise ConfigError(
                f"{type(self).__name__}'s FC initialisation was meta-learned for "
                f"{self.fc_weight.shape[0]}-way tasks, got a {way}-way task"
            )

    def meta_train_step(self, support, support_y, query, query_y, way) -> StepOutput:
        self._check_way(way)
        support_f, query_f = embed_tasks(self._features, support, query)
        loss, logits = adapted_query_loss(
            support_f, support_y, query_f, query_y, way, self.hp.train_steps, self.hp.inner_lr,
            self.fc_weight, self.fc_bias, first_order=self.hp.first_order,
        )
        self.outer_step(loss)
        return StepOutput(loss.detach(), logits.detach())

"""The Matching Networks method: shared CNN, full-context embeddings, cosine attention.

Every function here is batched over tasks: support features [T, S, D], query features
[T, Q, D], labels [T, S] in 0..way-1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fsbench.backbones import create_backbone, feature_dim, with_image_size
from fsbench.errors import ConfigError
from fsbench.method import Method, MethodContext, StepOutput


@dataclass(frozen=True)
class MatchingNetHparams:
    """Matching Networks' hyperparameters (defaults: the ``paper`` preset).

    fce: full-context embeddings (bidirectional LSTM over the support, attention LSTM over each
        query); False: plain shared-CNN embeddings.
    processing_steps: K, the attention LSTM's steps (Ravi's config: 3).
    scale_init: the cosine is multiplied by this scale before the softmax (see the package doc).
    learn_scale: learn the scale (True) or keep it fixed at ``scale_init``.
    lr: Adam learning rate.
    eps: added to the attention read-out before its log.
    """

    fce: bool = True
    processing_steps: int = 3
    scale_init: float = 10.0
    learn_scale: bool = True
    lr: float = 1e-4
    eps: float = 1e-8

    def check(self) -> None:
        if self.processing_steps < 1:
            raise ConfigError(f"hparams.processing_steps must be at least 1, got {self.processing_steps}")
        for name in ("scale_init", "lr", "eps"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"hparams.{name} must be positive, got {getattr(self, name)}")


def attention_readout(
    query: torch.Tensor, support: torch.Tensor, support_y: torch.Tensor, way: int, scale: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention a [T, Q, S] (softmax over the support of the scaled cosine) and the read-out
    P(y | x) = sum_i a_i onehot(y_i), [T, Q, way] (each row sums to one; Vinyals et al. eq. 1-2)."""
    cos = F.normalize(query, dim=-1) @ F.normalize(support, dim=-1).transpose(1, 2)
    attention = (scale * cos).softmax(-1)
    probs = attention @ F.one_hot(support_y, way).to(attention.dtype)
    return attention, probs


class FullContextEmbedding(nn.Module):
    """g: a bidirectional LSTM over the support set; f: an attention LSTM over each query.

    ``g(x_i) = h_fwd_i + h_bwd_i + g'(x_i)`` (hidden size D, so both directions add to the CNN
    embedding). ``f``: ``h_hat, c = LSTM(f'(x), [h, r], c)``, ``h = h_hat + f'(x)``,
    ``r = sum_i softmax(h . g(x_i)) g(x_i)``, K times (Vinyals et al. appendix A.2), written out as
    one linear map of the input and one of the state ``[h, r]`` so that queries of all tasks run at
    once.
    """

    def __init__(self, dim: int, steps: int) -> None:
        super().__init__()
        self.dim, self.steps = dim, steps
        self.support_lstm = nn.LSTM(dim, dim, batch_first=True, bidirectional=True)
        self.att_input = nn.Linear(dim, 4 * dim)
        self.att_state = nn.Linear(2 * dim, 4 * dim, bias=False)

    def embed_support(self, support: torch.Tensor) -> torch.Tensor:
        """g(S): [T, S, D] -> [T, S, D]."""
        out, _ = self.support_lstm(support)
        fwd, bwd = out.split(self.dim, dim=-1)
        return support + fwd + bwd

    def embed_query(self, query: torch.Tensor, support_g: torch.Tensor) -> torch.Tensor:
        """f(x) for queries [T, Q, D], attending over g(S) [T, S, D]."""
        h = torch.zeros_like(query)
        c = torch.zeros_like(query)
        r = torch.zeros_like(query)
        x_part = self.att_input(query)
        for _ in range(self.steps):
            gates = x_part + self.att_state(torch.cat([h, r], -1))
            i, f, g, o = gates.chunk(4, -1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c) + query
            a = (h @ support_g.transpose(1, 2)).softmax(-1)  # [T, Q, S]
            r = a @ support_g
        return h


class MatchingNet(Method):
    frozen_at_test = True
    hp: MatchingNetHparams

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        hp = self.hp
        kwargs = with_image_size(ctx.backbone_kwargs, ctx.image_shape)
        self.backbone = ctx.precision.prepare(create_backbone(ctx.backbone, **kwargs))
        dim = feature_dim(self.backbone)
        self.fce = FullContextEmbedding(dim, hp.processing_steps) if hp.fce else None
        scale = torch.tensor(float(hp.scale_init))
        if hp.learn_scale:
            self.scale = nn.Parameter(scale)
        else:
            self.register_buffer("scale", scale)
        self.optimizer = torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=hp.lr)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The shared CNN f' = g' (features [N, D], float32; the run's precision policy)."""
        return self.ctx.precision.forward(self.backbone, images)

    def contextual(self, support: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """g(S) and f(x) (FCE), or the CNN embeddings unchanged."""
        if self.fce is None:
            return support, query
        g = self.fce.embed_support(support)
        return g, self.fce.embed_query(query, g)

    def probabilities(self, support, support_y, query, way) -> torch.Tensor:
        """P(y | x) [T, Q, way] from CNN features."""
        g, f = self.contextual(support.float(), query.float())
        return attention_readout(f, g, support_y, way, self.scale)[1]

    def classify(self, support, support_y, query, way) -> torch.Tensor:
        """Log-probabilities [T, Q, way] (the log of the attention read-out)."""
        return (self.probabilities(support, support_y, query, way) + self.hp.eps).log()

    def meta_train_step(self, support, support_y, query, query_y, way) -> StepOutput:
        logp = self.adapt_and_predict(support, support_y, query, way)
        loss = F.nll_loss(logp.flatten(0, 1), query_y.flatten())
        self.outer_step(loss)
        return StepOutput(loss.detach(), logp.detach())

"""Prototypes and nearest-centroid logits, batched over tasks (ProtoNets, SimpleShot, Meta-Baseline
and the pre-training probe)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def prototypes(features: torch.Tensor, labels: torch.Tensor, way: int) -> torch.Tensor:
    """Class means [T, way, D] of support features [T, S, D] with labels [T, S] in 0..way-1."""
    onehot = F.one_hot(labels, way).to(features.dtype)  # [T, S, way]
    sums = torch.einsum("tsw,tsd->twd", onehot, features)
    return sums / onehot.sum(1).clamp_min(1).unsqueeze(-1)


def neg_sq_euclidean(query: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """Logits [T, Q, way] = -||q - p||^2, computed as a batched matrix product."""
    q2 = query.pow(2).sum(-1, keepdim=True)  # [T, Q, 1]
    p2 = protos.pow(2).sum(-1).unsqueeze(1)  # [T, 1, way]
    return -(q2 - 2 * query @ protos.transpose(1, 2) + p2)


#: The distances a nearest-centroid classifier can use: ``sq_euclidean`` (Snell et al.'s squared
#: Euclidean distance) or ``euclidean`` (its square root, as ``torch.cdist``).
METRICS: tuple[str, ...] = ("sq_euclidean", "euclidean")


def nearest_centroid_logits(
    support: torch.Tensor,
    support_y: torch.Tensor,
    query: torch.Tensor,
    way: int,
    metric: str = "sq_euclidean",
) -> torch.Tensor:
    """Logits [T, Q, way]: minus the ``metric`` distance of each query to each class mean."""
    neg = neg_sq_euclidean(query, prototypes(support, support_y, way))
    if metric == "euclidean":  # clamped: rounding can make a tiny squared distance negative
        return -(-neg).clamp_min(1e-12).sqrt()
    if metric != "sq_euclidean":
        raise ValueError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
    return neg


def cosine_logits(query: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """Logits [T, Q, way] = cos(q, p): the cosine similarity of each query to each prototype."""
    return F.normalize(query, dim=-1) @ F.normalize(protos, dim=-1).transpose(1, 2)

"""Meta-test: per-episode accuracy of a method on seeded episodes of one split.

Methods whose backbone is frozen at test time (``Method.frozen_at_test``) are evaluated from
features: every split image that any requested episode uses is embedded once, and each batch of
episodes is built by indexing that feature table. Other methods (MAML, scratch) get each
batch's images and adapt per episode.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fsbench.data.base import Normalizer, Split
from fsbench.episodes import Episode
from fsbench.method import Method

ProgressFn = Callable[[int], None]  # called with the number of episodes just finished


def episode_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[T] accuracy of each task from logits [T, Q, way] and labels [T, Q]."""
    return (logits.argmax(-1) == labels.to(logits.device)).float().mean(-1)


@torch.no_grad()
def embed_images(
    method: Method, split: Split, indices: torch.Tensor, normalize: Normalizer, chunk: int = 256
) -> torch.Tensor:
    feats = []
    for start in range(0, len(indices), chunk):
        x = normalize(split.images[indices[start : start + chunk]])
        feats.append(method.embed(x).float())
    return torch.cat(feats)


def evaluate_episodes(
    method: Method,
    split: Split,
    episodes: Episode,
    normalize: Normalizer,
    batch: int = 50,
    progress: ProgressFn | None = None,
) -> torch.Tensor:
    """Accuracy in [0, 1] of each task of ``episodes`` (on the CPU, float64)."""
    was_training = method.training
    method.eval()
    accs = []
    try:
        if method.frozen_at_test:
            used, inverse = torch.unique(
                torch.cat([episodes.support_idx.flatten(), episodes.query_idx.flatten()]),
                return_inverse=True,
            )
            table = embed_images(method, split, used, normalize)
            n_support = episodes.support_idx.numel()
            support_pos = inverse[:n_support].view_as(episodes.support_idx)
            query_pos = inverse[n_support:].view_as(episodes.query_idx)
        for start in range(0, episodes.num_tasks, batch):
            part = episodes.select(slice(start, start + batch))
            sy, qy = part.support_labels.to(normalize.device), part.query_labels
            if method.frozen_at_test:
                sl = slice(start, start + batch)
                with torch.no_grad():
                    logits = method.classify(
                        table[support_pos[sl].to(table.device)], sy,
                        table[query_pos[sl].to(table.device)], part.spec.way,
                    )
            else:
                support, query = part.images(split)
                logits = method.adapt_and_predict(normalize(support), sy, normalize(query), part.spec.way)
            accs.append(episode_accuracy(logits.detach(), qy).double().cpu())
            if progress is not None:
                progress(part.num_tasks)
    finally:
        method.train(was_training)
    return torch.cat(accs)

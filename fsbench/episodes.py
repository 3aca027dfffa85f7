"""Episodes: N-way K-shot tasks drawn by index from a split.

Every episode is a pure function of ``(dataset, split, way, shot, query, seed, stream, index)``:
its generator is seeded from a hash of those values, so two methods run with the same seed see
identical test episodes, a training run resumed at iteration ``i`` draws exactly the tasks it
would have drawn, and nothing depends on the global RNG or on the order episodes are requested.

Within an episode the classes are relabelled ``0..way-1`` in the (random) order they were drawn;
support and query are laid out class-major: ``[c0 x shot, c1 x shot, ...]``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fsbench.data.base import Split
from fsbench.errors import ConfigError


@dataclass(frozen=True)
class EpisodeSpec:
    """The shape of a task: ``way`` classes, ``shot`` support and ``query`` query images each."""

    way: int
    shot: int
    query: int

    def check(self, split: Split, what: str = "") -> None:
        """Fail before any work starts when the split cannot supply such episodes."""
        where = f"{what} split {split.name!r}" if what else f"split {split.name!r}"
        for name in ("way", "shot", "query"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.way > split.num_classes:
            raise ConfigError(
                f"--way {self.way} is larger than the {split.num_classes} classes of the {where}"
            )
        need = self.shot + self.query
        if need > split.min_class_size:
            small = min(range(split.num_classes), key=lambda c: len(split.class_index[c]))
            raise ConfigError(
                f"shot + query = {self.shot} + {self.query} = {need} is more than class "
                f"{split.class_names[small]!r} of the {where} holds ({split.min_class_size} images)"
            )


@dataclass(frozen=True)
class Episode:
    """A batch of ``T`` tasks of one shape (``T == 1`` for a single episode).

    ``support_idx``/``query_idx`` index the split's images; ``classes`` holds the original class
    ids (the split's labels) of each task's episode labels ``0..way-1``. Images are gathered on
    demand with :meth:`images`, so methods whose backbone is frozen at test time can work from
    features computed once per split image instead.
    """

    support_idx: torch.Tensor  # [T, way*shot] int64
    query_idx: torch.Tensor  # [T, way*query] int64
    classes: torch.Tensor  # [T, way] int64
    spec: EpisodeSpec

    @property
    def num_tasks(self) -> int:
        return int(self.classes.shape[0])

    @property
    def support_labels(self) -> torch.Tensor:
        return episode_labels(self.num_tasks, self.spec.way, self.spec.shot)

    @property
    def query_labels(self) -> torch.Tensor:
        return episode_labels(self.num_tasks, self.spec.way, self.spec.query)

    def images(self, split: Split) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 support [T, way*shot, C, H, W] and query [T, way*query, C, H, W] images."""
        return split.images[self.support_idx], split.images[self.query_idx]

    def select(self, tasks: slice | torch.Tensor) -> Episode:
        return Episode(
            self.support_idx[tasks], self.query_idx[tasks], self.classes[tasks], self.spec
        )

    def fingerprint(self) -> str:
        """A hash of every task's classes and image indices, in order.

        Two runs whose ``summary.json`` carry the same ``episode_bank`` were tested on
        identical episodes, whatever their methods or training seeds.
        """
        digest = hashlib.sha1()
        for t in range(self.num_tasks):
            for part in (self.classes[t], self.support_idx[t], self.query_idx[t]):
                digest.update(part.to(torch.int64).numpy().astype("<i8").tobytes())
        return digest.hexdigest()[:16]

    @staticmethod
    def cat(episodes: Sequence[Episode]) -> Episode:
        spec = episodes[0].spec
        if any(e.spec != spec for e in episodes):
            raise ValueError("cannot batch episodes of different shapes")
        return Episode(
            torch.cat([e.support_idx for e in episodes]),
            torch.cat([e.query_idx for e in episodes]),
            torch.cat([e.classes for e in episodes]),
            spec,
        )


def episode_labels(tasks: int, way: int, per_class: int) -> torch.Tensor:
    """Class-major episode labels ``[T, way*per_class]``: 0,0,..,1,1,.. ."""
    return torch.arange(way).repeat_interleave(per_class).expand(tasks, -1)


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any printable values (stable across processes and platforms)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class EpisodeSampler:
    """Draws episodes of one spec from one split, by index, under an explicit seed.

    ``stream`` separates independent families of episodes drawn from the same split (``"test"``
    evaluation episodes, ``"train"`` meta-training tasks, ``"hard"`` hard tasks...).
    """

    def __init__(
        self,
        split: Split,
        spec: EpisodeSpec,
        seed: int,
        dataset: str,
        stream: str = "eval",
    ) -> None:
        spec.check(split)
        self.split = split
        self.spec = spec
        self.seed = seed
        self.key = (dataset, split.name, spec.way, spec.shot, spec.query, seed, stream)

    def generator(self, *index: object) -> torch.Generator:
        return torch.Generator().manual_seed(derive_seed(*self.key, *index))

    def episode(self, index: int) -> Episode:
        gen = self.generator(index)
        classes = torch.randperm(self.split.num_classes, generator=gen)[: self.spec.way]
        return self.with_classes(classes, gen)

    def batch(self, indices: Sequence[int] | range) -> Episode:
        return Episode.cat([self.episode(i) for i in indices])

    def with_classes(self, classes: torch.Tensor, gen: torch.Generator) -> Episode:
        """An episode over the given original classes, images drawn fresh from ``gen``."""
        way, shot, query = self.spec.way, self.spec.shot, self.spec.query
        if len(classes) != way:
            raise ValueError(f"need {way} classes, got {len(classes)}")
        support, queries = [], []
        for c in classes.tolist():
            pool = self.split.class_index[c]
            pick = pool[torch.randperm(len(pool), generator=gen)[: shot + query]]
            support.append(pick[:shot])
            queries.append(pick[shot:])
        return Episode(
            torch.cat(support).unsqueeze(0),
            torch.cat(queries).unsqueeze(0),
            torch.as_tensor(classes, dtype=torch.long).unsqueeze(0),
            self.spec,
        )

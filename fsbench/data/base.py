"""Dataset containers shared by every loader.

A dataset is a set of splits; a split is a uint8 image tensor (N x C x H x W) with integer labels
in ``0..num_classes-1`` and the class names. Images stay uint8 in memory (or a memory map) and
are normalised batched on the device (see :func:`fsbench.data.base.Normalizer`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from fsbench.errors import FsbenchError

SPLITS = ("train", "val", "test")


class DataError(FsbenchError):
    """Bad or missing dataset input. The message is one line naming the file or value at fault."""


@dataclass(frozen=True)
class Split:
    """One split: ``images`` uint8 [N, C, H, W], ``labels`` int64 [N] in 0..len(class_names)-1."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    # Per class, the indices of its images (built once; the sampler draws from these).
    class_index: tuple[torch.Tensor, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(
                f"split {self.name!r}: images must be uint8 N x C x H x W, got "
                f"{self.images.dtype} with shape {tuple(self.images.shape)}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(
                f"split {self.name!r}: {self.labels.shape[0]} labels for {self.images.shape[0]} images"
            )
        order = torch.argsort(self.labels, stable=True)
        counts = torch.bincount(self.labels, minlength=len(self.class_names)).tolist()
        if len(counts) != len(self.class_names):
            raise DataError(
                f"split {self.name!r}: labels reach {len(counts) - 1} but only "
                f"{len(self.class_names)} class names are given"
            )
        object.__setattr__(self, "class_index", tuple(torch.split(order, counts)))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def min_class_size(self) -> int:
        return min(len(ix) for ix in self.class_index)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return (int(c), int(h), int(w))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def to(self, device: torch.device | str) -> Split:
        """This split with its images on ``device`` (labels and class indices stay on the CPU,
        where the episode sampler reads them; a CUDA tensor accepts CPU indices)."""
        if self.images.device == torch.device(device):
            return self
        return replace(self, images=self.images.to(device))


@dataclass(frozen=True)
class FewShotDataset:
    """A named dataset: its splits plus the per-channel mean/std (0..255) used to normalise."""

    name: str
    splits: dict[str, Split]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    notes: tuple[str, ...] = ()  # human-readable facts the loader wants reported (resizes, ...)

    def split(self, name: str) -> Split:
        try:
            return self.splits[name]
        except KeyError:
            raise DataError(
                f"dataset {self.name!r} has no split {name!r} (it has: {', '.join(self.splits)})"
            ) from None

    def to(self, device: torch.device | str) -> FewShotDataset:
        """This dataset with every split's images resident on ``device`` (decoded once, moved
        once: batches are then gathered on the device, with no host-to-device copy per step)."""
        return replace(self, splits={k: v.to(device) for k, v in self.splits.items()})

    def resident(self, device: torch.device | str) -> FewShotDataset:
        """The dataset where training runs on ``device``: moved once to a CUDA device (then
        every batch, episode and augmentation is gathered there, with no host copy per step);
        unchanged on the CPU, where it already is in memory or memory-mapped."""
        return self.to(device) if torch.device(device).type == "cuda" else self

    @property
    def image_size(self) -> int:
        return next(iter(self.splits.values())).image_shape[-1]


class Normalizer:
    """uint8 images -> normalised float on a device, batched (channels_last on CUDA)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device):
        self.device = torch.device(device)
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        lead = images.shape[:-3]
        x = images.reshape(-1, *images.shape[-3:]).to(self.device, non_blocking=True).float()
        x = (x - self.mean) / self.std
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return x.reshape(*lead, *x.shape[1:]) if lead != x.shape[:1] else x

"""Batched training augmentation on the device: random-resized-crop and horizontal flip.

The crop and flip of every image of a batch are one affine transform of the sampling grid
(``F.affine_grid`` + ``F.grid_sample``, bilinear), so a whole batch is augmented by two
kernels on whatever device holds it; no per-image PIL or Python loop. The random parameters
(five numbers per image) are drawn on the CPU from an explicit ``torch.Generator``, never from
the global RNG, so a batch's augmentation is a pure function of the generator's seed and is the
same on the CPU and on CUDA.

The crop follows torchvision's ``RandomResizedCrop`` parameterisation (area fraction ``scale``,
aspect ratio ``ratio`` drawn log-uniformly) except that a crop which would not fit in the image
is clamped to the image instead of being re-drawn up to ten times: that keeps the draw a fixed
number of random numbers per image. The output has the input's size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class CropFlip:
    """Random-resized-crop + horizontal-flip settings.

    ``scale``: range of the crop's area as a fraction of the image; ``ratio``: range of its
    aspect ratio (width / height); ``flip``: probability of a horizontal flip.
    The default scale range is milder than torchvision's (0.08, 1.0), which suits 84x84
    few-shot images and short schedules.
    """

    scale: tuple[float, float] = (0.25, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5

    def __post_init__(self) -> None:
        lo, hi = self.scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {self.scale}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {self.ratio}")
        if not 0 <= self.flip <= 1:
            raise ValueError(f"flip must be a probability, got {self.flip}")


def crop_flip_theta(n: int, generator: torch.Generator, cfg: CropFlip = CropFlip()) -> torch.Tensor:
    """Affine matrices [n, 2, 3] (CPU, float32) mapping output to input coordinates in [-1, 1].

    Row ``i`` samples a crop of width ``w`` and height ``h`` (fractions of the side) centred at
    ``(cx, cy)``, mirrored when the flip is drawn.
    """
    u = torch.rand(n, 5, generator=generator)
    area = cfg.scale[0] + (cfg.scale[1] - cfg.scale[0]) * u[:, 0]
    log_lo, log_hi = math.log(cfg.ratio[0]), math.log(cfg.ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1])
    w = torch.sqrt(area * aspect).clamp(max=1.0)
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (1 - w) * (2 * u[:, 2] - 1)  # the crop stays inside [-1, 1]
    cy = (1 - h) * (2 * u[:, 3] - 1)
    sign = torch.where(u[:, 4] < cfg.flip, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = w * sign
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    return theta


def apply_affine(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample float images [N, C, H, W] through affine matrices [N, 2, 3] (bilinear)."""
    theta = theta.to(device=images.device, dtype=images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_resized_crop_flip(
    images: torch.Tensor, generator: torch.Generator, cfg: CropFlip = CropFlip()
) -> torch.Tensor:
    """Random-resized-crop and horizontal flip of a float batch [N, C, H, W], on its device.

    Deterministic given the generator's state; the output keeps the input's shape and dtype.
    """
    if not images.is_floating_point():
        raise TypeError(f"augment float images (normalise first), got {images.dtype}")
    out = apply_affine(images, crop_flip_theta(images.shape[0], generator, cfg))
    if images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous():
        out = out.contiguous(memory_format=torch.channels_last)
    return out

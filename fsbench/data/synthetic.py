"""The built-in synthetic dataset: deterministic, no download, shaped like miniImageNet.

100 classes split 64/16/20 (train/val/test), 32x32 RGB. Each class is a texture: a sum of a few
coloured oriented gratings with class-specific frequencies, phases and colours. Each image of
the class shifts and rescales its texture, blends in another class's texture as a distractor and
adds pixel noise, so classes are learnable from few examples but not trivially separable.
Generation takes about a second and depends only on the class id and image index, never on the
global RNG.

``synthetic_easy`` is the same classes with a faint distractor and little noise: a task every
method learns within seconds, for the CI suite's regression gate (a broken method falls to
chance there, where on ``synthetic`` a seconds-long run would sit near chance anyway).
"""

from __future__ import annotations

import math

import torch

from fsbench.data.base import FewShotDataset, Split
from fsbench.episodes import derive_seed

SPLIT_CLASSES = {"train": 64, "val": 16, "test": 20}
IMAGES_PER_CLASS = 120
SIZE = 32
COMPONENTS = 3
DISTRACTOR = (0.6, 1.0)  # weight range of another class's texture blended into each image
NOISE = 0.8  # std of pixel noise, relative to the texture's unit amplitude

#: (distractor weight range, noise) per variant: ``synthetic`` and ``synthetic_easy``.
VARIANTS: dict[str, tuple[tuple[float, float], float]] = {
    "synthetic": (DISTRACTOR, NOISE),
    "synthetic_easy": ((0.0, 0.3), 0.3),
}


def _class_params(cls: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(derive_seed("synthetic-class", cls))
    return {
        "freq": 1.0 + 3.0 * torch.rand(COMPONENTS, generator=g),  # cycles per image
        "angle": math.pi * torch.rand(COMPONENTS, generator=g),
        "phase": 2 * math.pi * torch.rand(COMPONENTS, generator=g),
        "color": torch.rand(COMPONENTS, 3, generator=g) * 2 - 1,
    }


def _texture(params: dict[str, torch.Tensor], shift: torch.Tensor) -> torch.Tensor:
    """[n, 3, SIZE, SIZE] textures, image i drawn from ``params[...][i]`` shifted by ``shift[i]``."""
    coords = torch.arange(SIZE, dtype=torch.float32)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    y = yy[None, None] + shift[:, 0, None, None, None]
    x = xx[None, None] + shift[:, 1, None, None, None]  # [n, 1, H, W]
    angle = params["angle"][..., None, None]  # [n, K, 1, 1]
    k = 2 * math.pi * params["freq"][..., None, None] / SIZE
    wave = torch.sin(k * (x * torch.cos(angle) + y * torch.sin(angle)) + params["phase"][..., None, None])
    return torch.einsum("nkhw,nkc->nchw", wave, params["color"]) / math.sqrt(COMPONENTS)


def _split_images(first: int, count: int, distractor: tuple[float, float] = DISTRACTOR,
                  noise: float = NOISE) -> torch.Tensor:
    params = [_class_params(first + c) for c in range(count)]
    table = {key: torch.stack([p[key] for p in params]) for key in params[0]}  # [C, K, ...]
    out = []
    for c in range(count):
        g = torch.Generator().manual_seed(derive_seed("synthetic-images", first + c))
        n = IMAGES_PER_CLASS
        own = _texture({k: v[c].expand(n, *v.shape[1:]) for k, v in table.items()},
                       torch.rand(n, 2, generator=g) * SIZE)
        # A distractor from another class of the same split, so that classes overlap.
        others = torch.randint(count - 1, (n,), generator=g)
        others = others + (others >= c).long()
        distract = _texture({k: v[others] for k, v in table.items()}, torch.rand(n, 2, generator=g) * SIZE)
        weight = distractor[0] + (distractor[1] - distractor[0]) * torch.rand(n, 1, 1, 1, generator=g)
        contrast = 0.7 + 0.6 * torch.rand(n, 1, 1, 1, generator=g)
        img = contrast * (own + weight * distract) + noise * torch.randn(n, 3, SIZE, SIZE, generator=g)
        out.append((128 + 60 * img).clamp(0, 255).round().to(torch.uint8))
    return torch.cat(out)


def load_synthetic(variant: str = "synthetic") -> FewShotDataset:
    distractor, noise = VARIANTS[variant]
    splits: dict[str, Split] = {}
    first = 0
    for name, count in SPLIT_CLASSES.items():
        images = _split_images(first, count, distractor, noise)
        labels = torch.arange(count).repeat_interleave(IMAGES_PER_CLASS)
        names = tuple(f"synthetic_{first + c:03d}" for c in range(count))
        splits[name] = Split(name, images, labels, names)
        first += count
    flat = torch.cat([s.images for s in splits.values()]).float()
    mean = tuple(flat.mean(dim=(0, 2, 3)).tolist())
    std = tuple(flat.std(dim=(0, 2, 3)).tolist())
    return FewShotDataset(variant, splits, mean, std)  # type: ignore[arg-type]

"""FC100 (Oreshkin et al., TADAM, NeurIPS 2018): CIFAR-100 split by superclass, 32x32.

The 100 fine classes of CIFAR-100 (train and test merged, 600 images each; see
:mod:`fsbench.data.cifar`) are split by their coarse (superclass) label: 12 superclasses (60
classes) for meta-train, 4 (20) for meta-val, 4 (20) for meta-test. The superclass ids below are
TADAM's (its official ``create_dataset_cifar100.py`` and paper appendix); several public repos
use other "FC100" splits. Classes are in fine-label order, named by ``meta``'s fine label names.
"""

from __future__ import annotations

from pathlib import Path

from .base import SPLITS
from .cifar import NUM_FINE, CifarData, cifar_source
from .prepare import Source

NAME = "fc100"
TRAIN_COARSE: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 9, 10, 15, 17, 18, 19)
VAL_COARSE: tuple[int, ...] = (8, 11, 13, 16)
TEST_COARSE: tuple[int, ...] = (0, 7, 12, 14)
COARSE_SPLITS: dict[str, tuple[int, ...]] = {
    "train": TRAIN_COARSE,
    "val": VAL_COARSE,
    "test": TEST_COARSE,
}


def _select(data: CifarData) -> dict[str, list[int]]:
    return {s: [f for f in range(NUM_FINE) if data.fine_to_coarse[f] in coarse]
            for s, coarse in COARSE_SPLITS.items()}


def _notes(data: CifarData) -> list[str]:
    per_class = sorted(set(int((data.fine == f).sum()) for f in range(NUM_FINE)))
    sizes = ", ".join(f"{s} {len(ids)} classes" for s, ids in _select(data).items() if s in SPLITS)
    return [f"{NAME}: CIFAR-100 train+test merged ({len(data.fine)} images, "
            f"{'/'.join(map(str, per_class))} per fine class) from {data.where}, split by "
            f"superclass (TADAM): {sizes}"]


def source(root: Path) -> Source:
    """FC100 from CIFAR-100's python version (the folder, its parent, or the ``.tar.gz``)."""
    return cifar_source(NAME, Path(root), _select, f"split={COARSE_SPLITS}", _notes)

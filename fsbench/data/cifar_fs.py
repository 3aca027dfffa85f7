"""CIFAR-FS (Bertinetto et al., ICLR 2019): 64 / 16 / 20 CIFAR-100 classes, 32x32.

The classes of each split are read from ``splits/cifar_fs/{train,val,test}.json`` (``[superclass,
class]`` pairs; sources in ``splits/README.md``) and matched to CIFAR-100's fine label names; the
images are CIFAR-100's train and test merged, 600 per class (:mod:`fsbench.data.cifar`), in
fine-label order within a split.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .base import SPLITS, DataError
from .cifar import CifarData, cifar_source
from .prepare import Source

NAME = "cifar_fs"
SPLIT_DIR = Path(__file__).with_name("splits") / "cifar_fs"


def read_split(path: Path) -> list[str]:
    """The class names of one split file (a JSON list of ``[superclass, class]`` pairs)."""
    try:
        pairs = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read split file {path}: {exc}") from None
    if not isinstance(pairs, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in pairs):
        raise DataError(f"split file {path}: expected a JSON list of [superclass, class] pairs")
    return [name for _, name in pairs]


def source(root: Path, *, split_dir: Path | None = None) -> Source:
    """CIFAR-FS from CIFAR-100's python version; ``split_dir`` replaces the committed split."""
    split_dir = SPLIT_DIR if split_dir is None else Path(split_dir)
    files = {s: split_dir / f"{s}.json" for s in SPLITS}
    names = {s: read_split(p) for s, p in files.items()}
    tag = hashlib.sha256(json.dumps(names, sort_keys=True).encode()).hexdigest()[:16]

    def select(data: CifarData) -> dict[str, list[int]]:
        index = {n: f for f, n in enumerate(data.fine_names)}
        out = {}
        for split, classes in names.items():
            missing = [c for c in classes if c not in index]
            if missing:
                raise DataError(f"{files[split]}: class {missing[0]!r} is not a CIFAR-100 fine label "
                                f"name in {data.where}")
            out[split] = sorted(index[c] for c in classes)
        return out

    def notes(data: CifarData) -> list[str]:
        return [f"{NAME}: Bertinetto et al.'s split of CIFAR-100 (train+test merged) from "
                f"{data.where}: " + ", ".join(f"{s} {len(c)} classes" for s, c in names.items())]

    return cifar_source(NAME, Path(root), select, f"split={tag}", notes)

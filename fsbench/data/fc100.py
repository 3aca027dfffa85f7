"""FC100 (Oreshkin et al., TADAM, NeurIPS 2018): CIFAR-100 split by superclass, 32x32.

CIFAR-100's python-version ``train`` (50,000) and ``test`` (10,000) pickles are merged, giving 600
images per fine class, and the 100 fine classes are split by their coarse (superclass) label:
12 superclasses (60 classes) for meta-train, 4 (20) for meta-val, 4 (20) for meta-test. The
superclass ids below are TADAM's (its official ``create_dataset_cifar100.py`` and paper
appendix); several public repos use other "FC100" splits.

``root`` may be the ``cifar-100-python`` folder itself or its parent. The pickles are read with
:func:`fsbench.data.safe_pickle.safe_load` (no arbitrary code), accepting bytes keys (the original
Python 2 files read with ``encoding="bytes"``) and str keys alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from .base import SPLITS, DataError, FewShotDataset, Split
from .cache import fingerprint_files, load_or_build
from .safe_pickle import safe_load

NAME = "fc100"
IMAGE_SIZE = 32
MEAN = (129.3, 124.1, 112.4)
STD = (68.2, 65.4, 70.4)
NUM_FINE = 100
NUM_COARSE = 20
FOLDER = "cifar-100-python"
FILES = ("train", "test", "meta")

TRAIN_COARSE: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 9, 10, 15, 17, 18, 19)
VAL_COARSE: tuple[int, ...] = (8, 11, 13, 16)
TEST_COARSE: tuple[int, ...] = (0, 7, 12, 14)
COARSE_SPLITS: dict[str, tuple[int, ...]] = {
    "train": TRAIN_COARSE,
    "val": VAL_COARSE,
    "test": TEST_COARSE,
}
CACHE_VERSION = 1


def find_cifar_dir(root: Path) -> Path:
    """The folder holding ``train``, ``test`` and ``meta``: ``root`` or ``root/cifar-100-python``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"FC100 root {root} is not a folder (expected CIFAR-100's python version: "
            f"{FOLDER}/ with train, test, meta)"
        )
    for cand in (root, root / FOLDER):
        if all((cand / f).is_file() for f in FILES):
            return cand
    cand = root / FOLDER if (root / FOLDER).is_dir() else root
    missing = [f for f in FILES if not (cand / f).is_file()]
    raise DataError(
        f"CIFAR-100 python files missing: {', '.join(str(cand / f) for f in missing)} "
        f"(root may be the {FOLDER} folder or its parent)"
    )


def _str_keys(obj: object, path: Path) -> dict[str, object]:
    if not isinstance(obj, Mapping):
        raise DataError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if isinstance(k, bytes):
            k = k.decode("latin-1")
        if not isinstance(k, str):
            raise DataError(f"{path}: unexpected key {k!r} (expected str or bytes)")
        out[k] = v
    return out


def _require(d: Mapping[str, object], keys: tuple[str, ...], path: Path) -> None:
    missing = [k for k in keys if k not in d]
    if missing:
        raise DataError(
            f"{path}: missing key(s) {', '.join(missing)} (has: {', '.join(sorted(d)) or 'none'})"
        )


def _int_labels(value: object, n: int, upper: int, key: str, path: Path) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        arr = np.asarray([])
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise DataError(f"{path}: {key} must be a list of integers")
    if len(arr) != n:
        raise DataError(f"{path}: {len(arr)} {key} for {n} images (lengths must match)")
    if n and (arr.min() < 0 or arr.max() >= upper):
        raise DataError(
            f"{path}: {key} out of range {int(arr.min())}..{int(arr.max())} (expected 0..{upper - 1})"
        )
    return arr.astype(np.int64)


def _read_part(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images uint8 N x 3 x 32 x 32, fine labels, coarse labels) of one pickle."""
    d = _str_keys(safe_load(path, encoding="bytes"), path)
    _require(d, ("data", "fine_labels", "coarse_labels"), path)
    data = d["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        kind = (
            f"{data.dtype} array of shape {data.shape}"
            if isinstance(data, np.ndarray)
            else type(data).__name__
        )
        raise DataError(f"{path}: data must be a uint8 N x 3072 array, got {kind}")
    if data.shape[1] != 3 * IMAGE_SIZE * IMAGE_SIZE:
        raise DataError(f"{path}: data must be N x 3072 (32x32 RGB planes), got {data.shape}")
    n = data.shape[0]
    fine = _int_labels(d["fine_labels"], n, NUM_FINE, "fine_labels", path)
    coarse = _int_labels(d["coarse_labels"], n, NUM_COARSE, "coarse_labels", path)
    # Each row: 1024 red, 1024 green, 1024 blue values, each plane row-major 32x32 -> C x H x W.
    images = np.ascontiguousarray(data.reshape(n, 3, IMAGE_SIZE, IMAGE_SIZE))
    return images, fine, coarse


def _read_meta(path: Path) -> list[str]:
    d = _str_keys(safe_load(path, encoding="bytes"), path)
    _require(d, ("fine_label_names",), path)
    names = d["fine_label_names"]
    if not isinstance(names, (list, tuple)) or len(names) != NUM_FINE:
        got = len(names) if isinstance(names, (list, tuple)) else type(names).__name__
        raise DataError(f"{path}: fine_label_names must list {NUM_FINE} names, got {got}")
    out = []
    for n in names:
        if isinstance(n, bytes):
            n = n.decode("utf-8", "replace")
        if not isinstance(n, str):
            raise DataError(f"{path}: fine_label_names holds a {type(n).__name__}, not a name")
        out.append(n)
    return out


def _fine_to_coarse(fine: np.ndarray, coarse: np.ndarray, cifar_dir: Path) -> list[int]:
    mapping = [-1] * NUM_FINE
    for f in range(NUM_FINE):
        cs = np.unique(coarse[fine == f])
        if len(cs) == 0:
            raise DataError(f"{cifar_dir}: fine class {f} has no images in train+test")
        if len(cs) > 1:
            raise DataError(
                f"{cifar_dir}: fine class {f} has several coarse labels {cs.tolist()} "
                "(coarse_labels inconsistent with fine_labels)"
            )
        mapping[f] = int(cs[0])
    return mapping


def _build(cifar_dir: Path) -> dict[str, torch.Tensor | list[str]]:
    parts = [_read_part(cifar_dir / "train"), _read_part(cifar_dir / "test")]
    names = _read_meta(cifar_dir / "meta")
    images = np.concatenate([p[0] for p in parts])
    fine = np.concatenate([p[1] for p in parts])
    coarse = np.concatenate([p[2] for p in parts])
    f2c = _fine_to_coarse(fine, coarse, cifar_dir)
    out: dict[str, torch.Tensor | list[str]] = {}
    counts = np.bincount(fine, minlength=NUM_FINE)
    for split, coarse_ids in COARSE_SPLITS.items():
        fine_ids = [f for f in range(NUM_FINE) if f2c[f] in coarse_ids]
        relabel = np.full(NUM_FINE, -1, dtype=np.int64)
        relabel[fine_ids] = np.arange(len(fine_ids))
        mask = relabel[fine] >= 0
        out[f"{split}_images"] = torch.from_numpy(np.ascontiguousarray(images[mask]))
        out[f"{split}_labels"] = torch.from_numpy(relabel[fine[mask]])
        out[f"{split}_classes"] = [names[f] for f in fine_ids]
    sizes = ", ".join(
        f"{s} {len(out[f'{s}_classes'])} classes / {len(out[f'{s}_labels'])} images" for s in SPLITS
    )
    per_class = sorted(set(counts.tolist()))
    out["notes"] = [
        f"{NAME}: CIFAR-100 train+test merged ({len(fine)} images, "
        f"{'/'.join(map(str, per_class))} per fine class) from {cifar_dir}, split by superclass "
        f"(TADAM): {sizes}"
    ]
    return out


def load_fc100(root: Path, cache_dir: Path | None, progress: bool = True) -> FewShotDataset:
    """FC100 from CIFAR-100's python-version files (``root`` = ``cifar-100-python`` or its parent).

    Splits ``train``/``val``/``test`` hold 60/20/20 fine classes (labels 0..C-1 in fine-label
    order, class names from ``meta``), uint8 N x 3 x 32 x 32. ``cache_dir=None`` re-reads the
    pickles every time. ``progress`` shows a spinner while the pickles are read.
    """
    cifar_dir = find_cifar_dir(Path(root))
    try:
        fp = fingerprint_files([cifar_dir / f for f in FILES], root=cifar_dir)
    except FileNotFoundError as exc:
        raise DataError(f"CIFAR-100 file {exc.filename} disappeared") from None
    fp = f"{fp};v={CACHE_VERSION};split={COARSE_SPLITS}"
    tag = hashlib.sha256(str(cifar_dir.resolve()).encode("utf-8", "surrogateescape")).hexdigest()

    def build() -> dict[str, torch.Tensor | list[str]]:
        if not progress:
            return _build(cifar_dir)
        from rich.console import Console

        with Console(stderr=True).status(f"reading CIFAR-100 pickles in {cifar_dir}"):
            return _build(cifar_dir)

    entry = load_or_build(cache_dir, f"{NAME}-{tag[:12]}", fp, build)
    splits = {
        s: Split(
            name=s,
            images=entry[f"{s}_images"],
            labels=entry[f"{s}_labels"],
            class_names=tuple(entry[f"{s}_classes"]),
        )
        for s in SPLITS
    }
    return FewShotDataset(name=NAME, splits=splits, mean=MEAN, std=STD, notes=tuple(entry["notes"]))

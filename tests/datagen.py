"""Small fake datasets written in the exact on-disk formats the loaders read.

Reusable by any test::

    from datagen import write_miniimagenet_folders, write_miniimagenet_csv, write_cifar100_python

(``tests/`` is on ``sys.path`` under pytest's default rootdir-based import mode; otherwise import
it as ``tests.datagen``.) Every writer is deterministic for a given ``seed`` and returns a
description of what it wrote.
"""

from __future__ import annotations

import csv
import pickle
import struct
import types
from pathlib import Path

import numpy as np
from PIL import Image

MINI_SPLITS = ("train", "val", "test")
DEFAULT_CLASSES = {"train": 4, "val": 3, "test": 3}


def fake_wnids(classes_per_split: dict[str, int]) -> dict[str, list[str]]:
    """Distinct ImageNet-style ids per split: ``n01000000``, ``n01000001``, ... (sorted)."""
    out: dict[str, list[str]] = {}
    k = 0
    for split in MINI_SPLITS:
        n = classes_per_split.get(split, 0)
        out[split] = [f"n{1000000 + k + i:08d}" for i in range(n)]
        k += n
    return out


def fake_image(rng: np.random.Generator, size: int | tuple[int, int], class_idx: int) -> np.ndarray:
    """A uint8 H x W x 3 image: a class-tinted gradient plus noise (compresses well as JPEG)."""
    w, h = (size, size) if isinstance(size, int) else size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack(
        [
            (xx * 255 // max(w - 1, 1)),
            (yy * 255 // max(h - 1, 1)),
            np.full((h, w), (class_idx * 37) % 256),
        ],
        axis=-1,
    ).astype(np.int16)
    noise = rng.integers(-20, 21, size=(h, w, 3), dtype=np.int16)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _save_jpeg(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, "RGB").save(path, format="JPEG", quality=90)


def write_miniimagenet_folders(
    root: Path,
    classes_per_split: dict[str, int] | None = None,
    per_class: int = 20,
    size: int = 84,
    seed: int = 0,
) -> dict[str, list[str]]:
    """Write ``root/{split}/<wnid>/<wnid>NNNNNNNN.jpg`` (the folder-per-class layout).

    A split with 0 classes is not written. Returns ``{split: [wnid, ...]}`` for written splits.
    """
    classes_per_split = dict(DEFAULT_CLASSES if classes_per_split is None else classes_per_split)
    rng = np.random.default_rng(seed)
    wnids = fake_wnids(classes_per_split)
    written = {}
    for split, ids in wnids.items():
        if not ids:
            continue
        for ci, wnid in enumerate(ids):
            for j in range(per_class):
                _save_jpeg(
                    Path(root) / split / wnid / f"{wnid}{j + 1:08d}.jpg", fake_image(rng, size, ci)
                )
        written[split] = ids
    return written


def write_miniimagenet_csv(
    root: Path,
    classes_per_split: dict[str, int] | None = None,
    per_class: int = 20,
    size: int = 84,
    seed: int = 0,
) -> dict[str, list[str]]:
    """Write ``root/images/<wnid>NNNNNNNN.jpg`` and Ravi-style ``root/{split}.csv``.

    CSV header ``filename,label``; one row per image, label = wnid. Returns ``{split: [wnid]}``.
    """
    classes_per_split = dict(DEFAULT_CLASSES if classes_per_split is None else classes_per_split)
    rng = np.random.default_rng(seed)
    wnids = fake_wnids(classes_per_split)
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    written = {}
    for split, ids in wnids.items():
        if not ids:
            continue
        rows = []
        for ci, wnid in enumerate(ids):
            for j in range(per_class):
                name = f"{wnid}{j + 1:08d}.jpg"
                _save_jpeg(root / "images" / name, fake_image(rng, size, ci))
                rows.append((name, wnid))
        with (root / f"{split}.csv").open("w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["filename", "label"])
            w.writerows(rows)
        written[split] = ids
    return written


class Py2StylePickler(pickle._Pickler):  # the pure-Python pickler, so dispatch can be changed
    """Pickles the way Python 2's cPickle wrote the original CIFAR files (protocol 2).

    ``str`` and ``bytes`` both become Python 2 ``str`` opcodes (SHORT_BINSTRING / BINSTRING), so
    ``pickle.load(f, encoding="bytes")`` returns them as ``bytes``, and numpy globals are named
    ``numpy.core.*`` as numpy 1.x named them.
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj: str | bytes) -> None:
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    def save_global(self, obj: object, name: str | None = None) -> None:
        module = pickle.whichmodule(obj, name or obj.__qualname__)
        module = module.replace("numpy._core", "numpy.core")
        name = name or obj.__qualname__
        self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii"))
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str
    dispatch[type] = save_global
    dispatch[types.FunctionType] = save_global


def _dump(obj: object, path: Path, protocol: int, py2_style: bool) -> None:
    with path.open("wb") as fh:
        if py2_style:
            Py2StylePickler(fh, protocol=2).dump(obj)
        else:
            pickle.dump(obj, fh, protocol=protocol)


def fake_fine_to_coarse() -> list[int]:
    """A fine -> coarse map with 5 fine classes per superclass, scattered like CIFAR-100's."""
    return [(7 * f) % 20 for f in range(100)]


def write_cifar100_python(
    root: Path,
    per_class_train: int = 5,
    per_class_test: int = 1,
    seed: int = 0,
    fine_to_coarse: list[int] | None = None,
    bytes_keys: bool = True,
    protocol: int = 2,
    py2_style: bool = False,
) -> Path:
    """Write ``root/cifar-100-python/{train,test,meta}`` in CIFAR-100's python-version format.

    Each data pickle is a dict with keys ``filenames``, ``batch_label``, ``fine_labels``,
    ``coarse_labels``, ``data`` (uint8 N x 3072: 1024 R, 1024 G, 1024 B, each 32x32 row-major);
    ``meta`` has ``fine_label_names`` and ``coarse_label_names``. With ``bytes_keys`` (default)
    keys and names are ``bytes``, so ``pickle.load(f, encoding="bytes")`` gives what it gives on
    the original Python 2 files; ``bytes_keys=False`` writes ``str`` keys. ``py2_style`` writes
    the opcodes Python 2 wrote (see :class:`Py2StylePickler`) instead of ``pickle.dump``
    with ``protocol``. Fine class ``f``
    belongs to superclass ``fine_to_coarse[f]`` (default :func:`fake_fine_to_coarse`); every
    image's pixels encode its fine label in its first red value. Returns the
    ``cifar-100-python`` folder.
    """
    f2c = fake_fine_to_coarse() if fine_to_coarse is None else list(fine_to_coarse)
    rng = np.random.default_rng(seed)
    out_dir = Path(root) / "cifar-100-python"
    out_dir.mkdir(parents=True, exist_ok=True)

    def key(s: str) -> str | bytes:
        return s.encode("ascii") if bytes_keys else s

    for part, per_class in (("train", per_class_train), ("test", per_class_test)):
        fine = np.repeat(np.arange(100), per_class)
        fine = fine[rng.permutation(len(fine))]
        data = rng.integers(0, 256, size=(len(fine), 3072), dtype=np.uint8)
        data[:, 0] = fine  # a checkable trace of the label
        d = {
            key("filenames"): [key(f"fake_{part}_{i:05d}.png") for i in range(len(fine))],
            key("batch_label"): key(f"{part}ing batch 1 of 1"),
            key("fine_labels"): [int(f) for f in fine],
            key("coarse_labels"): [f2c[int(f)] for f in fine],
            key("data"): data,
        }
        _dump(d, out_dir / part, protocol, py2_style)
    meta = {
        key("fine_label_names"): [key(f"fine{f:02d}") for f in range(100)],
        key("coarse_label_names"): [key(f"coarse{c:02d}") for c in range(20)],
    }
    _dump(meta, out_dir / "meta", protocol, py2_style)
    return out_dir


def random_tasks(way: int, t: int = 2, shot: int = 1, query: int = 2, size: int = 16, seed: int = 0,
                 generator=None):
    """``t`` random ``way``-way tasks of ``size``x``size`` images, as a method's step takes them:
    support [t, way*shot, 3, size, size], its labels [t, way*shot], query, its labels. Draws from
    ``generator`` (default: a new one seeded with ``seed``), so a caller can draw more after."""
    import torch

    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    support = torch.randn(t, way * shot, 3, size, size, generator=g)
    query_x = torch.randn(t, way * query, 3, size, size, generator=g)
    sy = torch.arange(way).repeat_interleave(shot).expand(t, -1)
    qy = torch.arange(way).repeat_interleave(query).expand(t, -1)
    return support, sy, query_x, qy

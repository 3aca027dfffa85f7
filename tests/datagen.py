"""Small fake datasets written in the exact on-disk formats the loaders read.

Reusable by any test::

    from datagen import write_miniimagenet_folders, write_miniimagenet_csv, write_cifar100_python
    from datagen import write_ilsvrc_train, write_ravi_csvs, write_mini_pickles, write_cub

(``tests/`` is on ``sys.path`` under pytest's default rootdir-based import mode; otherwise import
it as ``tests.datagen``.) Every writer is deterministic for a given ``seed`` and returns a
description of what it wrote.
"""

from __future__ import annotations

import csv
import io
import json
import pickle
import struct
import tarfile
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
    fine_names: list[str] | None = None,
) -> Path:
    """Write ``root/cifar-100-python/{train,test,meta}`` in CIFAR-100's python-version format.

    Each data pickle is a dict with keys ``filenames``, ``batch_label``, ``fine_labels``,
    ``coarse_labels``, ``data`` (uint8 N x 3072: 1024 R, 1024 G, 1024 B, each 32x32 row-major);
    ``meta`` has ``fine_label_names`` and ``coarse_label_names``. With ``bytes_keys`` (default)
    keys and names are ``bytes``, so ``pickle.load(f, encoding="bytes")`` gives what it gives on
    the original Python 2 files; ``bytes_keys=False`` writes ``str`` keys. ``py2_style`` writes
    the opcodes Python 2 wrote (see :class:`Py2StylePickler`) instead of ``pickle.dump``
    with ``protocol``. Fine class ``f``
    belongs to superclass ``fine_to_coarse[f]`` (default :func:`fake_fine_to_coarse`) and is named
    ``fine_names[f]`` (default ``fineNN``); every image's pixels encode its fine label in its
    first red value. Returns the ``cifar-100-python`` folder.
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
        key("fine_label_names"): [key(n) for n in (fine_names or [f"fine{f:02d}" for f in range(100)])],
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


# --------------------------------------------------------------------------- ILSVRC-2012 train


def _jpeg_bytes(arr: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _add_bytes(tar, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1_300_000_000
    tar.addfile(info, io.BytesIO(data))


def ilsvrc_numbers(rng: np.random.Generator, n: int) -> list[int]:
    """``n`` distinct ILSVRC-like image numbers of 1 to 5 digits (so text and number order differ)."""
    pool = np.concatenate([np.arange(1, 10), np.arange(10, 100), np.arange(100, 13000, 7)])
    return sorted(int(x) for x in rng.choice(pool, size=n, replace=False))


def write_ilsvrc_train(root: Path, classes: dict[str, int], form: str = "tar", seed: int = 0,
                       sizes: tuple[tuple[int, int], ...] = ((120, 90), (100, 130), (96, 96)),
                       truncate: tuple[str, ...] = ()) -> dict[str, list[int]]:
    """ILSVRC-2012 train in one of its forms, for ``{wnid: image count}``:

    * ``tar``: ``root/ILSVRC2012_img_train.tar`` holding ``<wnid>.tar`` per class, each holding
      ``<wnid>_<number>.JPEG`` (flat, as in the real archive);
    * ``tars``: ``root/<wnid>.tar`` (the outer tar extracted);
    * ``folder``: ``root/train/<wnid>/<wnid>_<number>.JPEG`` (the fully extracted form).

    Images are JPEGs of a few sizes (not 84x84, so they are resized). Members are written in a
    shuffled order; the JPEGs named in ``truncate`` are cut to half their bytes (a well-formed
    tar holding a truncated image). The same ``seed`` writes the same images in every form.
    Returns ``{wnid: the class's image numbers, ascending}``.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    numbers: dict[str, list[int]] = {}
    outer = tarfile.open(root / "ILSVRC2012_img_train.tar", "w") if form == "tar" else None
    for ci, (wnid, n) in enumerate(classes.items()):
        numbers[wnid] = ilsvrc_numbers(rng, n)
        order = rng.permutation(n)
        blobs = {f"{wnid}_{numbers[wnid][k]}.JPEG":
                 _jpeg_bytes(fake_image(rng, sizes[k % len(sizes)], ci)) for k in order}
        blobs = {n: b[: len(b) // 2] if n in truncate else b for n, b in blobs.items()}
        if form == "folder":
            for name, data in blobs.items():
                (root / "train" / wnid).mkdir(parents=True, exist_ok=True)
                (root / "train" / wnid / name).write_bytes(data)
            continue
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as inner:
            for name, data in blobs.items():
                _add_bytes(inner, name, data)
        if outer is not None:
            _add_bytes(outer, f"{wnid}.tar", buf.getvalue())
        else:
            (root / f"{wnid}.tar").write_bytes(buf.getvalue())
    if outer is not None:
        outer.close()
    return numbers


def write_ravi_csvs(folder: Path, ranks: dict[str, dict[str, list[int]]]) -> None:
    """Ravi-format split files ``folder/{split}.csv``: ``filename,label`` rows
    ``<wnid><rank, 8 digits>.jpg,<wnid>`` for ``{split: {wnid: [1-based ranks]}}``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for split, classes in ranks.items():
        rows = ["filename,label"] + [f"{w}{r:08d}.jpg,{w}" for w, rs in classes.items() for r in rs]
        (folder / f"{split}.csv").write_text("\n".join(rows) + "\n")


def write_mini_pickles(folder: Path, splits: dict[str, dict[str, np.ndarray]], protocol: int = 4,
                       py2_style: bool = False, shuffle_seed: int | None = 0) -> None:
    """``folder/mini-imagenet-cache-{split}.pkl`` in Ren et al.'s format for
    ``{split: {wnid: uint8 n x 84 x 84 x 3}}``: ``{"image_data": N x 84 x 84 x 3, "class_dict":
    {wnid: [row indices]}}``. Rows are shuffled across classes (``shuffle_seed``; None keeps
    class blocks) so the reader must follow ``class_dict``. ``py2_style`` writes the protocol-2
    opcodes Python 2 wrote (keys then read back as bytes)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for split, classes in splits.items():
        images = np.concatenate(list(classes.values()))
        perm = (np.random.default_rng(shuffle_seed).permutation(len(images))
                if shuffle_seed is not None else np.arange(len(images)))
        where = np.argsort(perm)  # original row -> its row in the pickle
        class_dict: dict[str, list[int]] = {}
        start = 0
        for w, a in classes.items():  # each class's rows listed in the class's own order
            class_dict[w] = [int(where[i]) for i in range(start, start + len(a))]
            start += len(a)
        data = {"image_data": np.ascontiguousarray(images[perm]), "class_dict": class_dict}
        _dump(data, folder / f"mini-imagenet-cache-{split}.pkl", protocol, py2_style)


# --------------------------------------------------------------------------- CUB-200-2011


def write_cub(root: Path, classes: list[str], per_class: int = 3, archive: bool = False,
              seed: int = 0) -> Path:
    """CUB-200-2011 as distributed: ``CUB_200_2011/{images.txt, image_class_labels.txt,
    classes.txt, images/<class>/<Name>_<n>_<m>.jpg}`` (+ ``attributes.txt`` beside it, as in the
    archive). Class ids follow ``classes`` order, image ids run over classes in order. With
    ``archive``, writes ``root/CUB_200_2011.tgz`` instead and returns it; else the folder."""
    rng = np.random.default_rng(seed)
    files: dict[str, bytes] = {}
    images, labels = [], []
    for ci, cls in enumerate(classes, start=1):
        stem = cls.split(".", 1)[-1].title()
        for j in range(per_class):
            rel = f"{cls}/{stem}_{1000 + 17 * j:04d}_{rng.integers(100, 800)}.jpg"
            files[f"CUB_200_2011/images/{rel}"] = _jpeg_bytes(
                fake_image(rng, (int(rng.integers(90, 200)), int(rng.integers(90, 200))), ci))
            images.append(rel)
            labels.append(ci)
    files["CUB_200_2011/images.txt"] = "".join(f"{i} {p}\n" for i, p in enumerate(images, 1)).encode()
    files["CUB_200_2011/image_class_labels.txt"] = "".join(
        f"{i} {c}\n" for i, c in enumerate(labels, 1)).encode()
    files["CUB_200_2011/classes.txt"] = "".join(f"{i} {c}\n" for i, c in enumerate(classes, 1)).encode()
    files["attributes.txt"] = b"1 has_bill_shape::curved_(up_or_down)\n"
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if archive:
        path = root / "CUB_200_2011.tgz"
        with tarfile.open(path, "w:gz") as tar:
            for name in sorted(files):  # images/ before the lists, as a directory walk gives
                _add_bytes(tar, name, files[name])
        return path
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root / "CUB_200_2011"


def cifar100_fine_names() -> list[str]:
    """CIFAR-100's 100 fine label names in label order (alphabetical, as ``meta`` lists them):
    the union of the committed CIFAR-FS split files."""
    split_dir = Path(__file__).resolve().parents[1] / "fsbench" / "data" / "splits" / "cifar_fs"
    names = {c for s in ("train", "val", "test")
             for _, c in json.loads((split_dir / f"{s}.json").read_text())}
    return sorted(names)

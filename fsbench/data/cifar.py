"""CIFAR-100's python version, the source of FC100 and CIFAR-FS: 60,000 images, 32x32.

The ``train`` (50,000) and ``test`` (10,000) pickles are merged, giving 600 images per fine class;
a split is a set of fine classes (:func:`cifar_source`). The source may be the
``cifar-100-python`` folder, its parent, or the ``cifar-100-python.tar.gz`` archive itself (read
in place; it is 161 MB). The pickles are read with :func:`fsbench.data.safe_pickle.safe_load`
(no arbitrary code), accepting bytes keys (the original Python 2 files read with
``encoding="bytes"``) and str keys alike. Reading holds the 184 MB of pixels in memory.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from .base import DataError
from .cache import fingerprint_files
from .hashing import HashingReader, sha256_file
from .prepare import ClassImages, ClassSpec, Plan, Source
from .safe_pickle import safe_load, str_keys

IMAGE_SIZE = 32
MEAN = (129.3, 124.1, 112.4)  # RGB on 0..255, over CIFAR-100 train + test
STD = (68.2, 65.4, 70.4)
NUM_FINE = 100
NUM_COARSE = 20
FOLDER = "cifar-100-python"
ARCHIVE = "cifar-100-python.tar.gz"
FILES = ("train", "test", "meta")
CACHE_VERSION = 2


@dataclass
class CifarData:
    """Train and test merged: images uint8 N x 3 x 32 x 32, fine and coarse labels, names."""

    images: np.ndarray
    fine: np.ndarray
    fine_names: list[str]
    fine_to_coarse: list[int]
    checksums: dict[str, str]
    where: str


def find_cifar(root: Path) -> Path:
    """The folder holding ``train``, ``test``, ``meta``, or the ``.tar.gz`` archive."""
    root = Path(root).expanduser()
    if root.is_file() and tarfile.is_tarfile(root):
        return root
    if not root.is_dir():
        raise DataError(
            f"CIFAR-100 root {root} is not a folder (expected CIFAR-100's python version: "
            f"{FOLDER}/ with train, test, meta, or {ARCHIVE})"
        )
    for cand in (root, root / FOLDER):
        if all((cand / f).is_file() for f in FILES):
            return cand
    if (root / ARCHIVE).is_file():
        return root / ARCHIVE
    cand = root / FOLDER if (root / FOLDER).is_dir() else root
    missing = [f for f in FILES if not (cand / f).is_file()]
    raise DataError(
        f"CIFAR-100 python files missing: {', '.join(str(cand / f) for f in missing)} "
        f"(root may be the {FOLDER} folder, its parent, or {ARCHIVE})"
    )


def _require(d: dict[str, object], keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in d]
    if missing:
        raise DataError(
            f"{where}: missing key(s) {', '.join(missing)} (has: {', '.join(sorted(d)) or 'none'})"
        )


def _int_labels(value: object, n: int, upper: int, key: str, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        arr = np.asarray([])
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise DataError(f"{where}: {key} must be a list of integers")
    if len(arr) != n:
        raise DataError(f"{where}: {len(arr)} {key} for {n} images (lengths must match)")
    if n and (arr.min() < 0 or arr.max() >= upper):
        raise DataError(
            f"{where}: {key} out of range {int(arr.min())}..{int(arr.max())} (expected 0..{upper - 1})"
        )
    return arr.astype(np.int64)


def _read_part(obj: object, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images uint8 N x 3 x 32 x 32, fine labels, coarse labels) of one unpickled part."""
    d = str_keys(obj, where)
    _require(d, ("data", "fine_labels", "coarse_labels"), where)
    data = d["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        kind = (
            f"{data.dtype} array of shape {data.shape}"
            if isinstance(data, np.ndarray)
            else type(data).__name__
        )
        raise DataError(f"{where}: data must be a uint8 N x 3072 array, got {kind}")
    if data.shape[1] != 3 * IMAGE_SIZE * IMAGE_SIZE:
        raise DataError(f"{where}: data must be N x 3072 (32x32 RGB planes), got {data.shape}")
    n = data.shape[0]
    fine = _int_labels(d["fine_labels"], n, NUM_FINE, "fine_labels", where)
    coarse = _int_labels(d["coarse_labels"], n, NUM_COARSE, "coarse_labels", where)
    # Each row: 1024 red, 1024 green, 1024 blue values, each plane row-major 32x32 -> C x H x W.
    return np.ascontiguousarray(data.reshape(n, 3, IMAGE_SIZE, IMAGE_SIZE)), fine, coarse


def _read_meta(obj: object, where: str) -> list[str]:
    d = str_keys(obj, where)
    _require(d, ("fine_label_names",), where)
    names = d["fine_label_names"]
    if not isinstance(names, (list, tuple)) or len(names) != NUM_FINE:
        got = len(names) if isinstance(names, (list, tuple)) else type(names).__name__
        raise DataError(f"{where}: fine_label_names must list {NUM_FINE} names, got {got}")
    out = []
    for n in names:
        if isinstance(n, bytes):
            n = n.decode("utf-8", "replace")
        if not isinstance(n, str):
            raise DataError(f"{where}: fine_label_names holds a {type(n).__name__}, not a name")
        out.append(n)
    return out


def _fine_to_coarse(fine: np.ndarray, coarse: np.ndarray, where: str) -> list[int]:
    mapping = [-1] * NUM_FINE
    for f in range(NUM_FINE):
        cs = np.unique(coarse[fine == f])
        if len(cs) == 0:
            raise DataError(f"{where}: fine class {f} has no images in train+test")
        if len(cs) > 1:
            raise DataError(
                f"{where}: fine class {f} has several coarse labels {cs.tolist()} "
                "(coarse_labels inconsistent with fine_labels)"
            )
        mapping[f] = int(cs[0])
    return mapping


def _unpickle_all(source: Path) -> tuple[dict[str, object], dict[str, str]]:
    """The three unpickled files and the sha256 of what was read (the archive, or each file)."""
    if source.is_dir():
        return ({f: safe_load(source / f, encoding="bytes") for f in FILES},
                {f"{FOLDER}/{f}": sha256_file(source / f) for f in FILES})
    objs: dict[str, object] = {}
    try:
        with source.open("rb") as raw:
            reader = HashingReader(raw, str(source))
            with tarfile.open(fileobj=reader, mode="r|gz") as tar:  # type: ignore[call-overload]
                for member in tar:
                    name = member.name.rsplit("/", 1)[-1]
                    if member.isfile() and name in FILES and name not in objs:
                        f: IO[bytes] = tar.extractfile(member)  # type: ignore[assignment]
                        named = HashingReader(f, f"{source}:{member.name}")  # errors name it
                        objs[name] = safe_load(named, encoding="bytes")  # type: ignore[arg-type]
            sha = reader.hexdigest()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"cannot read {source}: {exc}") from None
    missing = [f for f in FILES if f not in objs]
    if missing:
        raise DataError(f"{source} has no {FOLDER}/{missing[0]}")
    return objs, {source.name: sha}


def read_cifar(source: Path) -> CifarData:
    """CIFAR-100's train + test from a folder or the archive (see :func:`find_cifar`)."""
    objs, checksums = _unpickle_all(source)
    where = (lambda f: str(source / f)) if source.is_dir() else (lambda f: f"{source}:{FOLDER}/{f}")
    parts = [_read_part(objs["train"], where("train")), _read_part(objs["test"], where("test"))]
    names = _read_meta(objs["meta"], where("meta"))
    fine = np.concatenate([p[1] for p in parts])
    coarse = np.concatenate([p[2] for p in parts])
    return CifarData(np.concatenate([p[0] for p in parts]), fine, names,
                     _fine_to_coarse(fine, coarse, str(source)), checksums, str(source))


def cifar_source(dataset: str, root: Path, select: Callable[[CifarData], dict[str, list[int]]],
                 split_tag: str, notes: Callable[[CifarData], list[str]]) -> Source:
    """A dataset of CIFAR-100 fine classes: ``select`` gives each split's fine ids, in label order."""
    found = find_cifar(root)
    files = [found / f for f in FILES] if found.is_dir() else [found]
    try:
        fp = fingerprint_files(files, root=found if found.is_dir() else found.parent)
    except FileNotFoundError as exc:
        raise DataError(f"CIFAR-100 file {exc.filename} disappeared") from None

    def plan() -> Plan:
        data = read_cifar(found)
        splits = select(data)
        counts = np.bincount(data.fine, minlength=NUM_FINE)

        def produce(done: Collection[tuple[str, str]], advance: Callable[[int], None]
                    ) -> Iterator[ClassImages]:
            for split, fine_ids in splits.items():
                for f in fine_ids:
                    if (split, data.fine_names[f]) not in done:
                        advance(int(counts[f]))
                        yield ClassImages(split, data.fine_names[f], data.images[data.fine == f])

        return Plan({s: tuple(ClassSpec(data.fine_names[f], int(counts[f])) for f in ids)
                     for s, ids in splits.items()}, produce, data.checksums, tuple(notes(data)))

    return Source(dataset, "CIFAR-100 python version", found, f"{fp};v={CACHE_VERSION};{split_tag}",
                  plan, IMAGE_SIZE, "area", MEAN, STD)

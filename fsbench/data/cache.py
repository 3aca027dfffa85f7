"""The dataset cache: every real dataset decoded once into uint8 arrays on disk, memory-mapped.

A run uses ``<--cache-dir>/datasets``; one entry per (dataset, source path, options):

* ``<key>/`` -- a complete entry: ``meta.json`` (format version, the source fingerprint, class
  names, notes, mean/std, the sha256 of every source file or archive read), and per split
  ``<split>.images.npy`` (uint8 N x C x H x W) and ``<split>.labels.npy`` (int64 N), read with
  ``numpy.load(mmap_mode="c")``: memory-mapped, never copied, private to the process;
* ``<key>.partial/`` -- an entry being written: the same ``.npy`` image files, preallocated at their
  full size, and ``progress.json`` (what is being built and which classes are written, each
  with its checksums). Classes are written one at a time into their rows of the memory-mapped file
  and flushed before ``progress.json`` records them, so a killed preparation resumes at the first
  class not recorded. It becomes ``<key>/`` by one ``rename`` when every class is written: a
  reader sees a complete entry or none;
* ``<key>.lock`` -- a ``filelock.FileLock``: one process prepares, the others wait and reuse.

An entry whose fingerprint or format differs, or that cannot be read, is prepared again; a
partial entry whose header (dataset, fingerprint, classes and counts, image shape) differs is
started afresh. ``meta.json`` and ``progress.json`` are read strictly and size-bounded
(:mod:`fsbench.strictjson`): anything the strict reader refuses (NaN, huge integers, deep nesting,
a file larger than :data:`MAX_SIDECAR_BYTES`) means "prepare again", never a traceback.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock

from fsbench.atomic import atomic_write, atomic_write_json
from fsbench.strictjson import JSONError, read_json

from .base import DataError

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
ENV_VAR = "FSBENCH_CACHE"
META, PROGRESS = "meta.json", "progress.json"
PARTIAL = ".partial"
MAX_SIDECAR_BYTES = 16 << 20  # meta.json / progress.json hold names, counts and checksums

_SAFE_KEY = re.compile(r"[^A-Za-z0-9._-]+")


def default_cache_dir() -> Path:
    """``$FSBENCH_CACHE`` when set (and not empty), else ``~/.cache/fsbench``."""
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "fsbench"


def fingerprint_files(paths: Iterable[str | os.PathLike[str]], root: Path | None = None) -> str:
    """A cheap fingerprint of a set of source files: sorted paths + sizes + mtimes, hashed.

    Paths are taken relative to ``root`` when given (so the fingerprint names the dataset's own
    structure, e.g. ``train/n01532829/x.jpg``), else as given. A missing file raises
    ``FileNotFoundError``; the caller turns it into a ``DataError`` naming the file.
    """
    rows = []
    for p in paths:
        p = Path(p)
        st = p.stat()
        name = p.relative_to(root).as_posix() if root is not None else p.as_posix()
        rows.append(f"{name}\t{st.st_size}\t{st.st_mtime_ns}")
    return digest_lines(sorted(rows))


def digest_lines(rows: Iterable[str]) -> str:
    """sha256 of text rows (count first, one row a line)."""
    rows = list(rows)
    h = hashlib.sha256(f"n={len(rows)}\n".encode())
    for row in rows:
        h.update(row.encode("utf-8", "surrogateescape"))
        h.update(b"\n")
    return h.hexdigest()


def entry_key(*parts: str) -> str:
    """A file-name-safe key from its parts (the dataset name first, then a hash of the rest)."""
    tag = hashlib.sha256("\0".join(parts[1:]).encode("utf-8", "surrogateescape")).hexdigest()
    return _SAFE_KEY.sub("_", f"{parts[0]}-{tag[:16]}").strip("._")


def acquire_lock(cache_dir: Path, key: str, timeout: float = 24 * 3600.0) -> FileLock:
    """``<key>.lock``, acquired: one process prepares an entry, the others wait for it.

    Raises ``OSError`` when the cache directory cannot be created or written.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(cache_dir / f"{key}.lock", timeout=timeout)
    lock.acquire()
    return lock


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Entry:
    """A complete cache entry: its folder and its ``meta.json``."""

    path: Path
    meta: dict[str, Any]

    def split_arrays(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(images uint8 N x C x H x W, labels int64 N), memory-mapped copy-on-write."""
        images = np.load(self.path / f"{split}.images.npy", mmap_mode="c")
        labels = np.load(self.path / f"{split}.labels.npy", mmap_mode="c")
        return torch.from_numpy(images), torch.from_numpy(labels)


def read_entry(path: Path) -> Entry | None:
    """The entry at ``path``, or None when absent, of another format or inconsistent."""
    if not (path / META).exists():
        return None
    try:
        meta = read_json(path / META, MAX_SIDECAR_BYTES)
    except JSONError as exc:  # unreadable, too large, NaN, deep nesting...: prepare again
        log.warning("cache entry %s is unreadable (%s); preparing it again", path, exc)
        return None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        log.info("cache entry %s has another format; preparing it again", path)
        return None
    try:
        for split, shape in meta["shapes"].items():
            images = np.load(path / f"{split}.images.npy", mmap_mode="r")
            labels = np.load(path / f"{split}.labels.npy", mmap_mode="r")
            if list(images.shape) != shape or images.dtype != np.uint8 or labels.shape != (shape[0],):
                raise ValueError(f"{split}: shape {images.shape} / {labels.shape}, meta says {shape}")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("cache entry %s is inconsistent (%s); preparing it again", path, exc)
        return None
    return Entry(path, meta)


def find_entry(cache_dir: Path, key: str, fingerprint: str) -> Entry | None:
    """The complete entry ``key`` when its fingerprint is ``fingerprint``, else None."""
    entry = read_entry(cache_dir / key)
    if entry is not None and entry.meta.get("fingerprint") != fingerprint:
        log.info("cache entry %s is stale (its source changed); preparing it again", entry.path)
        return None
    return entry


def list_entries(cache_dir: Path) -> list[tuple[str, dict[str, Any], bool]]:
    """``(key, meta or progress header, complete)`` of every entry and partial entry in ``cache_dir``."""
    out: list[tuple[str, dict[str, Any], bool]] = []
    if not cache_dir.is_dir():
        return out
    for path in sorted(cache_dir.iterdir()):
        if not path.is_dir():
            continue
        complete = not path.name.endswith(PARTIAL)
        try:
            data = read_json(path / (META if complete else PROGRESS), MAX_SIDECAR_BYTES)
        except JSONError:
            continue
        if isinstance(data, dict):
            out.append((path.name.removesuffix(PARTIAL), data, complete))
    return out


# --------------------------------------------------------------------------- writing


class PartialEntry:
    """An entry being written under ``<key>.partial``: preallocated image files, class by class.

    ``header`` says what is built (dataset, fingerprint, image shape, split -> [[class, count]]);
    :meth:`start` resumes a partial entry with the same header, else starts afresh.
    """

    def __init__(self, cache_dir: Path, key: str, header: dict[str, Any]) -> None:
        self.cache_dir, self.key, self.header = cache_dir, key, header
        self.dir = cache_dir / f"{key}{PARTIAL}"
        self.shape = tuple(header["image_shape"])
        self.offsets: dict[tuple[str, str], tuple[int, int]] = {}
        for split, classes in header["splits"].items():
            start = 0
            for name, count in classes:
                self.offsets[(split, name)] = (start, count)
                start += count
        self.done: dict[str, dict[str, Any]] = {}

    def _images_path(self, split: str) -> Path:
        return self.dir / f"{split}.images.npy"

    def start(self) -> dict[str, dict[str, Any]]:
        """Resume (returns the records of the classes already written) or create the files."""
        try:
            progress = read_json(self.dir / PROGRESS, MAX_SIDECAR_BYTES)
            if progress.get("header") == self.header and all(
                self._images_path(s).is_file() for s in self.header["splits"]
            ):
                self.done = dict(progress["done"])
                return self.done
        except (JSONError, AttributeError, KeyError, TypeError, ValueError):
            pass
        if self.dir.exists():
            log.info("discarding partial cache entry %s (another source or version)", self.dir)
            shutil.rmtree(self.dir)
        totals = {s: sum(c for _, c in classes) for s, classes in self.header["splits"].items()}
        need = sum(totals.values()) * int(np.prod(self.shape))
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.cache_dir).free
        if need > free:
            raise DataError(f"preparing {self.header['dataset']} needs {need / 1e9:.1f} GB in "
                            f"{self.cache_dir}, which has {free / 1e9:.1f} GB free (--cache-dir)")
        self.dir.mkdir()
        for split, n in totals.items():  # sparse files of the full size, filled class by class
            np.lib.format.open_memmap(self._images_path(split), mode="w+", dtype=np.uint8,
                                      shape=(n, *self.shape)).flush()
        self._save_progress()
        return self.done

    def _save_progress(self) -> None:
        atomic_write_json(self.dir / PROGRESS, {"header": self.header, "done": self.done})

    def write_class(self, split: str, name: str, images: np.ndarray, record: dict[str, Any]) -> None:
        """Write one class's images into its rows, flush them, then record the class as done."""
        start, count = self.offsets[(split, name)]
        if images.shape != (count, *self.shape) or images.dtype != np.uint8:
            raise DataError(f"{self.header['dataset']}/{split}: class {name} gave images of shape "
                            f"{images.shape}, expected ({count}, {', '.join(map(str, self.shape))})")
        # The whole file is mapped but only this class's pages are touched, then unmapped:
        # resident memory stays one class, whatever the dataset's size.
        rows = np.lib.format.open_memmap(self._images_path(split), mode="r+")
        rows[start:start + count] = images
        rows.flush()
        del rows
        self.done[f"{split}/{name}"] = record
        self._save_progress()

    def commit(self, meta: dict[str, Any]) -> Entry:
        """Write labels and ``meta.json``, then rename the folder to ``<key>`` (atomic)."""
        missing = [k for k in (f"{s}/{n}" for s, n in self.offsets) if k not in self.done]
        if missing:
            raise DataError(f"{self.header['dataset']}: class {missing[0]} was never written "
                            f"({len(missing)} missing)")
        shapes = {}
        for split, classes in self.header["splits"].items():
            labels = np.repeat(np.arange(len(classes), dtype=np.int64), [c for _, c in classes])
            atomic_write(self.dir / f"{split}.labels.npy", lambda f, a=labels: np.save(f, a))
            with self._images_path(split).open("rb+") as f:
                os.fsync(f.fileno())
            shapes[split] = [int(labels.shape[0]), *self.shape]
        atomic_write_json(self.dir / META, {**meta, "format_version": FORMAT_VERSION,
                                            "shapes": shapes})
        final = self.cache_dir / self.key
        if final.exists():  # a stale entry: moved aside first, so the rename below is atomic
            stale = self.cache_dir / f".{self.key}.stale-{secrets.token_hex(4)}"
            final.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        self.dir.rename(final)
        (final / PROGRESS).unlink()
        entry = read_entry(final)
        if entry is None:  # pragma: no cover - only a concurrent deletion gets here
            raise DataError(f"cache entry {final} vanished right after it was written")
        return entry

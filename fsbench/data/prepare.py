"""Preparation: a dataset's source decoded once, class by class, into the cache.

Every real dataset comes from a :class:`Source` (what a loader found at the path a user gave: its
kind, a cheap fingerprint, the image size) whose :meth:`Source.plan` lists the classes of each
split with their image counts, checked against the split file, and a producer that yields one
class's decoded images at a time. :func:`prepare` writes them into a preallocated, memory-mapped
cache entry (:mod:`fsbench.data.cache`) with a progress bar, recording the sha256 of every
source file or archive it read; a killed preparation resumes at the first class not written.
Memory stays bounded by one class (its uint8 images, plus the decoder's bounded window of source
images), whatever the dataset's size.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import SPLITS, DataError, FewShotDataset, Split
from .cache import Entry, PartialEntry, acquire_lock, entry_key, find_entry, read_entry
from .images import DecodeStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassSpec:
    """One class of a split: its name (a wnid, a folder name) and how many images it has."""

    name: str
    count: int


@dataclass
class ClassImages:
    """One class's decoded images (uint8 count x 3 x S x S) and what reading them found."""

    split: str
    name: str
    images: np.ndarray
    checksums: dict[str, str] = field(default_factory=dict)  # source file/archive -> sha256
    stats: DecodeStats = field(default_factory=DecodeStats)


#: ``produce(done, advance)`` yields every class not in ``done`` ({(split, class)}), in any
#: order, calling ``advance(n)`` as images are decoded.
Producer = Callable[[Collection[tuple[str, str]], Callable[[int], None]], Iterator[ClassImages]]


@dataclass
class Plan:
    """The classes of each split (label order) and how to produce their images."""

    splits: dict[str, tuple[ClassSpec, ...]]
    produce: Producer
    checksums: dict[str, str] = field(default_factory=dict)  # files read while planning
    notes: tuple[str, ...] = ()


@dataclass
class Source:
    """A dataset's source found at a path: identified cheaply, planned only when not cached."""

    dataset: str  # the registry name
    kind: str  # what was found, e.g. "ILSVRC-2012 train tar"
    root: Path
    fingerprint: str  # source file names/sizes/mtimes, split files, decoding settings
    plan: Callable[[], Plan]
    image_size: int
    resample: str = "bicubic"  # the filter for images of another size (fsbench.data.images)
    mean: tuple[float, float, float] | None = None  # None: computed from the train split
    std: tuple[float, float, float] | None = None
    options: str = ""  # what else selects the entry (e.g. the requested splits)
    size_fixed: bool = True  # False: reuse an entry of any image size prepared from this source

    @property
    def key_base(self) -> str:
        return entry_key(self.dataset, self.kind, str(self.root.resolve()), self.options)

    @property
    def key(self) -> str:
        return f"{self.key_base}-{self.image_size}px"


def channel_sums(images: np.ndarray) -> list[list[int]]:
    """Exact per-channel [count, sum, sum of squares] of uint8 N x C x H x W images."""
    values = np.arange(256, dtype=np.int64)
    out = []
    for c in range(images.shape[1]):
        hist = np.bincount(images[:, c].reshape(-1), minlength=256).astype(np.int64)
        out.append([int(hist.sum()), int(hist @ values), int(hist @ (values * values))])
    return out


def _mean_std(sums: list[list[list[int]]]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    total = np.asarray(sums, dtype=np.float64).sum(axis=0)  # [C, 3]
    n, s, ss = total[:, 0], total[:, 1], total[:, 2]
    mean = s / n
    std = np.sqrt(np.maximum(ss / n - mean * mean, 0.0))
    return tuple(round(float(m), 2) for m in mean), tuple(round(float(v), 2) for v in std)


def _progress_bar():
    from fsbench.progress import make_progress

    return make_progress(transient=True, info=False)


def _run(plan: Plan, done: Collection[tuple[str, str]], write: Callable[[ClassImages], None],
         description: str, progress: bool) -> None:
    """Produce every class not in ``done`` and hand it to ``write``, with a progress bar."""
    total = sum(c.count for classes in plan.splits.values() for c in classes)
    already = sum(c.count for s, classes in plan.splits.items() for c in classes if (s, c.name) in done)
    bar = _progress_bar() if progress else None
    task = bar.add_task(description, total=total, completed=already) if bar is not None else None

    def advance(n: int) -> None:
        if bar is not None:
            bar.update(task, advance=n)

    if bar is not None:
        bar.start()
    try:
        for item in plan.produce(done, advance):
            spec = {c.name: c.count for c in plan.splits[item.split]}
            if item.images.shape[0] != spec.get(item.name):
                raise DataError(f"{description}: class {item.name} of {item.split} gave "
                                f"{item.images.shape[0]} images, the split says {spec.get(item.name)}")
            write(item)
    finally:
        if bar is not None:
            bar.stop()


def _meta(source: Source, plan: Plan, records: dict[str, dict[str, Any]], seconds: float
          ) -> dict[str, Any]:
    stats: dict[str, DecodeStats] = {}
    checksums = dict(plan.checksums)
    for key, rec in records.items():
        stats.setdefault(key.split("/", 1)[0], DecodeStats()).add(DecodeStats.from_json(rec["stats"]))
        checksums.update(rec["checksums"])
    mean, std = source.mean, source.std
    if mean is None or std is None:  # from the train split; an evaluation-only dataset: all
        mean, std = _mean_std([rec["sums"] for rec in records.values() if rec["sums"] is not None])
    sizes = ", ".join(f"{s} {len(cs)} classes / {sum(c.count for c in cs)} images"
                      for s, cs in plan.splits.items())
    notes = [f"{source.dataset}: {source.kind} at {source.root} ({sizes})", *plan.notes]
    for split, st in stats.items():
        notes += st.notes(f"{source.dataset}/{split}", source.image_size, source.resample)
    return {
        "dataset": source.dataset, "kind": source.kind, "source": str(source.root),
        "fingerprint": source.fingerprint, "image_size": source.image_size,
        "classes": {s: [c.name for c in cs] for s, cs in plan.splits.items()},
        "mean": list(mean), "std": list(std), "notes": notes,
        "checksums": dict(sorted(checksums.items())), "seconds": round(seconds, 1),
        "prepared": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _record(item: ClassImages, has_train: bool) -> dict[str, Any]:
    rec: dict[str, Any] = {"checksums": item.checksums, "stats": item.stats.to_json()}
    counted = item.split == "train" or not has_train  # what the mean and std are computed from
    rec["sums"] = channel_sums(item.images) if counted else None
    return rec


def _header(source: Source, plan: Plan) -> dict[str, Any]:
    return {"dataset": source.dataset, "kind": source.kind, "source": str(source.root),
            "fingerprint": source.fingerprint,
            "image_shape": [3, source.image_size, source.image_size],
            "splits": {s: [[c.name, c.count] for c in cs] for s, cs in plan.splits.items()}}


def build_entry(source: Source, cache_dir: Path, progress: bool = True) -> Entry:
    """Plan ``source`` and write (or finish writing) its cache entry; the caller holds the lock."""
    began = time.perf_counter()
    plan = source.plan()
    partial = PartialEntry(cache_dir, source.key, _header(source, plan))
    records = partial.start()
    done = {tuple(k.split("/", 1)) for k in records}
    if done:
        log.info("resuming %s: %d of %d classes already prepared", partial.dir, len(done),
                 len(partial.offsets))

    def write(item: ClassImages) -> None:
        partial.write_class(item.split, item.name, item.images, _record(item, "train" in plan.splits))

    _run(plan, done, write, f"preparing {source.dataset}", progress)
    return partial.commit(_meta(source, plan, partial.done, time.perf_counter() - began))


def cached_entry(source: Source, cache_dir: Path) -> Entry | None:
    """The fresh cache entry of ``source``, if prepared (of any size when the size is not fixed)."""
    entry = find_entry(cache_dir, source.key, source.fingerprint)
    if entry is not None or source.size_fixed:
        return entry
    for path in sorted(cache_dir.glob(f"{source.key_base}-*px")):
        other = read_entry(path)
        if other is not None and other.meta.get("fingerprint") == source.fingerprint:
            return other
    return None


def to_dataset(entry: Entry) -> FewShotDataset:
    """The memory-mapped dataset of a cache entry.

    An entry whose ``meta.json`` lacks what a dataset needs (written by another version, or
    edited) is a one-line error naming it, before any work.
    """
    meta = entry.meta
    try:
        splits = {}
        for name in (s for s in SPLITS if s in meta["shapes"]):
            images, labels = entry.split_arrays(name)
            splits[name] = Split(name, images, labels, tuple(str(c) for c in meta["classes"][name]))
        return FewShotDataset(str(meta["dataset"]), splits, tuple(float(v) for v in meta["mean"]),
                              tuple(float(v) for v in meta["std"]), tuple(str(n) for n in meta["notes"]))
    except (KeyError, TypeError, ValueError, OSError) as exc:
        raise DataError(f"cache entry {entry.path} does not hold a dataset fsbench can read "
                        f"({type(exc).__name__}: {exc}); delete {entry.path} to prepare it again") from None


def in_memory(source: Source, progress: bool = True) -> FewShotDataset:
    """``source`` decoded into memory, nothing cached (``cache_dir=None``)."""
    plan = source.plan()
    arrays = {s: np.empty((sum(c.count for c in cs), 3, source.image_size, source.image_size),
                          dtype=np.uint8) for s, cs in plan.splits.items()}
    offsets = {}
    for split, classes in plan.splits.items():
        start = 0
        for c in classes:
            offsets[(split, c.name)] = start
            start += c.count
    records: dict[str, dict[str, Any]] = {}

    def write(item: ClassImages) -> None:
        start = offsets[(item.split, item.name)]
        arrays[item.split][start:start + len(item.images)] = item.images
        records[f"{item.split}/{item.name}"] = _record(item, "train" in plan.splits)

    _run(plan, (), write, f"decoding {source.dataset}", progress)
    meta = _meta(source, plan, records, 0.0)
    splits = {}
    for name in (s for s in SPLITS if s in plan.splits):
        counts = [c.count for c in plan.splits[name]]
        labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
        splits[name] = Split(name, torch.from_numpy(arrays[name]), labels,
                             tuple(meta["classes"][name]))
    return FewShotDataset(source.dataset, splits, tuple(meta["mean"]), tuple(meta["std"]),
                          tuple(meta["notes"]))


class CacheUnusable(DataError):
    """The cache directory cannot be created or locked (read-only, a file in the way)."""


def prepare_entry(source: Source, cache_dir: Path, progress: bool = True) -> tuple[Entry, bool]:
    """``source``'s cache entry under ``cache_dir`` and whether it was prepared now (else found)."""
    cache_dir = Path(cache_dir).expanduser()
    try:
        lock = acquire_lock(cache_dir, source.key_base)
    except OSError as exc:
        raise CacheUnusable(f"cache directory {cache_dir} is not usable: "
                            f"{exc.strerror or exc}") from None
    try:
        entry = cached_entry(source, cache_dir)
        if entry is not None:
            return entry, False
        return build_entry(source, cache_dir, progress), True
    except OSError as exc:  # disk full, permissions: name what failed, on one line
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        raise DataError(f"preparing {source.dataset} from {source.root} into {cache_dir} "
                        f"failed: {exc.strerror or exc}{where}") from None
    finally:
        lock.release()


def prepare(source: Source, cache_dir: Path | None, progress: bool = True) -> FewShotDataset:
    """The dataset of ``source``: from its cache entry, prepared now when absent or stale.

    ``cache_dir=None`` decodes into memory every time. A cache directory that cannot be used is
    reported in the log and the dataset is decoded into memory.
    """
    if cache_dir is None:
        return in_memory(source, progress)
    try:
        entry, _ = prepare_entry(source, cache_dir, progress)
    except CacheUnusable as exc:
        log.warning("%s; decoding %s into memory", exc, source.dataset)
        return in_memory(source, progress)
    return to_dataset(entry)

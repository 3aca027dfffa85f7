"""miniImageNet (Vinyals et al. 2016; Ravi & Larochelle 2017 split): 100 classes x 600, 84x84.

Two on-disk layouts are accepted (detected automatically):

* folder per class -- ``root/{train,val,test}/<wnid>/*.jpg`` (the layout the official MTL code
  reads); a split whose folder is absent is absent from the dataset;
* Ravi CSV -- ``root/images/*.jpg`` plus ``root/{train,val,test}.csv`` with header
  ``filename,label`` (label = wnid).

``root`` may also be a parent folder holding ``miniimagenet/`` (or ``mini-imagenet/``,
``miniImageNet/``, ``mini_imagenet/``). Every image is decoded once with PIL (in a thread pool:
Pillow releases the GIL while decoding, and threads write straight into the shared output tensor),
converted to RGB and resized to 84x84 when needed; conversions and resizes are counted and
reported in ``FewShotDataset.notes``. Each split is cached as uint8 N x 3 x 84 x 84 via
:mod:`fsbench.data.cache`, fingerprinted by its source files.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .base import SPLITS, DataError, FewShotDataset, Split
from .cache import fingerprint_files, load_or_build

NAME = "miniimagenet"
IMAGE_SIZE = 84
MEAN = (120.1, 114.8, 103.4)
STD = (69.3, 67.5, 71.0)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
PARENT_NAMES = ("miniimagenet", "mini-imagenet", "miniImageNet", "mini_imagenet")
# Bump when decoding changes (resampling, conversion): old cache entries are then rebuilt.
DECODE_VERSION = 1
CHUNK = 256

LAYOUT_HELP = (
    "folder per class ROOT/{train,val,test}/<wnid>/*.jpg, or Ravi CSV ROOT/images/*.jpg "
    "with ROOT/{train,val,test}.csv (header filename,label)"
)


@dataclass
class _SplitSource:
    """What one split is made of, before decoding."""

    name: str
    files: list[Path]
    labels: list[int]
    class_names: list[str]
    fingerprint_inputs: list[Path] = field(default_factory=list)  # files besides the images
    origin: dict[Path, str] = field(default_factory=dict)  # image -> where it was named (CSV row)


@dataclass
class _DecodeStats:
    converted: Counter[str] = field(default_factory=Counter)  # source mode -> count
    resized: Counter[tuple[int, int]] = field(default_factory=Counter)  # source (w, h) -> count

    def add(self, other: _DecodeStats) -> None:
        self.converted.update(other.converted)
        self.resized.update(other.resized)


# --------------------------------------------------------------------------- layout detection


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def _folder_splits(root: Path) -> list[str]:
    return [s for s in SPLITS if (root / s).is_dir()]


def _csv_splits(root: Path) -> list[str]:
    if not (root / "images").is_dir():
        return []
    return [s for s in SPLITS if (root / f"{s}.csv").is_file()]


def _describe(root: Path, limit: int = 8) -> str:
    try:
        entries = sorted(os.listdir(root))
    except OSError as exc:
        return f"cannot list it ({exc.strerror or exc})"
    if not entries:
        return "an empty folder"
    shown = [e + ("/" if (root / e).is_dir() else "") for e in entries[:limit]]
    more = f" (+{len(entries) - limit} more)" if len(entries) > limit else ""
    return ", ".join(shown) + more


def detect_layout(root: Path) -> tuple[str, Path, list[str]]:
    """``(layout, root, splits)`` with layout ``"folders"`` or ``"csv"``; DataError otherwise."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"miniImageNet root {root} does not exist (expected {LAYOUT_HELP})")
    if not root.is_dir():
        raise DataError(f"miniImageNet root {root} is not a folder (expected {LAYOUT_HELP})")
    candidates = [root] + [root / n for n in PARENT_NAMES if (root / n).is_dir()]
    for cand in candidates:
        splits = _folder_splits(cand)
        if splits:
            return "folders", cand, splits
        splits = _csv_splits(cand)
        if splits:
            return "csv", cand, splits
    raise DataError(
        f"no miniImageNet layout found in {root}: expected {LAYOUT_HELP}; found: {_describe(root)}"
    )


def _folder_source(root: Path, split: str) -> _SplitSource:
    split_dir = root / split
    class_dirs = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"split folder {split_dir} has no class folders (expected <wnid>/*.jpg)")
    files: list[Path] = []
    labels: list[int] = []
    for label, cdir in enumerate(class_dirs):
        # scandir's is_file() uses the directory entry's type: no stat per image here (the
        # fingerprint stats each file once).
        with os.scandir(cdir) as it:
            images = sorted(Path(e.path) for e in it if _is_image(Path(e.name)) and e.is_file())
        if not images:
            raise DataError(f"class folder {cdir} holds no images (*.jpg, *.jpeg, *.png)")
        files.extend(images)
        labels.extend([label] * len(images))
    return _SplitSource(split, files, labels, [p.name for p in class_dirs])


def _csv_source(root: Path, split: str) -> _SplitSource:
    csv_path = root / f"{split}.csv"
    images_dir = root / "images"
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read split file {csv_path}: {exc}") from None
    rows = list(csv.reader(text.splitlines()))
    header = [c.strip() for c in rows[0]] if rows else []
    if header != ["filename", "label"]:
        raise DataError(
            f"malformed header in {csv_path}: expected 'filename,label', got {','.join(header)!r}"
        )
    pairs: list[tuple[str, str]] = []
    linenos: list[int] = []
    for lineno, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise DataError(f"{csv_path} line {lineno}: expected 'filename,label', got {row!r}")
        pairs.append((row[0].strip(), row[1].strip()))
        linenos.append(lineno)
    if not pairs:
        raise DataError(f"split file {csv_path} has a header but no rows")
    class_names = sorted({label for _, label in pairs})
    index = {c: i for i, c in enumerate(class_names)}
    files = [images_dir / fname for fname, _ in pairs]
    labels = [index[label] for _, label in pairs]
    # Existence is checked by the fingerprint's stat; this names the row of a missing file.
    origin = {f: f"{csv_path} line {lineno}" for f, lineno in zip(files, linenos, strict=True)}
    return _SplitSource(split, files, labels, class_names, [csv_path], origin)


# --------------------------------------------------------------------------- decoding


def _decode_image(path: Path) -> tuple[np.ndarray, str | None, tuple[int, int] | None]:
    """One image -> (uint8 H x W x 3 at 84x84, source mode if converted, source size if resized).

    Truncated files raise (``ImageFile.LOAD_TRUNCATED_IMAGES`` is deliberately left off).
    """
    try:
        with Image.open(path) as im:
            im.load()
            converted = None
            if im.mode != "RGB":
                converted = im.mode
                if im.mode in ("P", "PA") or (im.mode == "L" and "transparency" in im.info):
                    im = im.convert("RGBA")
                im = im.convert("RGB")
            resized = None
            if im.size != (IMAGE_SIZE, IMAGE_SIZE):
                resized = im.size
                im = im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
            arr = np.asarray(im, dtype=np.uint8)
    except UnidentifiedImageError:
        raise DataError(
            f"cannot decode image {path}: not an image file Pillow can identify"
        ) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        msg = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"cannot decode image {path}: {msg}") from None
    if arr.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise DataError(f"cannot decode image {path}: unexpected array shape {arr.shape}")
    return arr, converted, resized


def _decode_chunk(files: Sequence[Path], out: np.ndarray, start: int) -> _DecodeStats:
    stats = _DecodeStats()
    for i, path in enumerate(files):
        arr, converted, resized = _decode_image(path)
        out[start + i] = arr.transpose(2, 0, 1)
        if converted is not None:
            stats.converted[converted] += 1
        if resized is not None:
            stats.resized[resized] += 1
    return stats


def _num_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def decode_images(
    files: Sequence[Path], *, progress: bool = True, description: str = "decoding"
) -> tuple[torch.Tensor, _DecodeStats]:
    """Decode ``files`` into a uint8 N x 3 x 84 x 84 tensor with a thread pool."""
    images = torch.empty((len(files), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8)
    out = images.numpy()
    stats = _DecodeStats()
    chunks = [(files[i : i + CHUNK], i) for i in range(0, len(files), CHUNK)]
    bar = _progress_bar() if progress else None
    task = bar.add_task(description, total=len(files)) if bar is not None else None
    with ThreadPoolExecutor(max_workers=_num_workers()) as pool:
        pending = {
            pool.submit(_decode_chunk, chunk, out, start): len(chunk) for chunk, start in chunks
        }
        try:
            if bar is not None:
                bar.start()
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    n = pending.pop(fut)
                    stats.add(fut.result())  # re-raises the first DataError
                    if bar is not None:
                        bar.update(task, advance=n)
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
        finally:
            if bar is not None:
                bar.stop()
    return images, stats


def _progress_bar():
    from fsbench.progress import make_progress

    return make_progress(transient=True, info=False)


def _stats_notes(split: str, stats: _DecodeStats) -> list[str]:
    notes = []
    if stats.converted:
        total = sum(stats.converted.values())
        modes = ", ".join(f"{m}: {n}" for m, n in sorted(stats.converted.items()))
        notes.append(f"{NAME}/{split}: converted {total} image(s) to RGB ({modes})")
    if stats.resized:
        total = sum(stats.resized.values())
        sizes = ", ".join(f"{w}x{h}: {n}" for (w, h), n in stats.resized.most_common(5))
        more = " ..." if len(stats.resized) > 5 else ""
        notes.append(
            f"{NAME}/{split}: resized {total} image(s) to {IMAGE_SIZE}x{IMAGE_SIZE} "
            f"(bicubic; from {sizes}{more})"
        )
    return notes


# --------------------------------------------------------------------------- loading


def _load_split(
    layout: str, root: Path, split: str, cache_dir: Path | None, progress: bool
) -> tuple[Split, list[str]]:
    source = _folder_source(root, split) if layout == "folders" else _csv_source(root, split)
    try:
        fp = fingerprint_files([*source.files, *source.fingerprint_inputs], root=root)
    except FileNotFoundError as exc:
        missing = Path(exc.filename)
        where = source.origin.get(missing)
        if where is not None:
            raise DataError(f"{where}: image {missing} does not exist") from None
        raise DataError(f"image {missing} disappeared while listing {root}") from None
    fp = f"{fp};size={IMAGE_SIZE};decode=v{DECODE_VERSION}"
    root_tag = hashlib.sha256(str(root.resolve()).encode("utf-8", "surrogateescape")).hexdigest()
    key = f"{NAME}-{layout}-{split}-{root_tag[:12]}"

    def build() -> dict[str, torch.Tensor | list[str]]:
        images, stats = decode_images(
            source.files, progress=progress, description=f"decoding {NAME}/{split}"
        )
        return {
            "images": images,
            "labels": torch.tensor(source.labels, dtype=torch.int64),
            "class_names": list(source.class_names),
            "notes": _stats_notes(split, stats),
        }

    entry = load_or_build(cache_dir, key, fp, build)
    split_obj = Split(
        name=split,
        images=entry["images"],
        labels=entry["labels"],
        class_names=tuple(entry["class_names"]),
    )
    return split_obj, list(entry["notes"])


def load_miniimagenet(
    root: Path,
    cache_dir: Path | None,
    progress: bool = True,
    *,
    splits: Sequence[str] | None = None,
) -> FewShotDataset:
    """miniImageNet from ``root`` in either accepted layout (see module docstring).

    Returns the splits present on disk (the shared copy here has only train and val), or only
    ``splits`` when given (a requested split that is absent is a DataError). Each split is uint8
    N x 3 x 84 x 84 with labels 0..C-1 over its classes sorted by wnid (class names = wnids).
    ``cache_dir=None`` decodes every time; otherwise each split is cached there.
    """
    layout, data_root, split_names = detect_layout(Path(root))
    if splits is not None:
        missing = [s for s in splits if s not in split_names]
        if missing:
            raise DataError(
                f"miniImageNet at {data_root} has no split {missing[0]!r} "
                f"(it has: {', '.join(split_names)})"
            )
        split_names = [s for s in SPLITS if s in splits]
    loaded: dict[str, Split] = {}
    layout_desc = "folder per class" if layout == "folders" else "images/ + Ravi CSV"
    notes = [f"{NAME}: {layout_desc} layout at {data_root} (splits: {', '.join(split_names)})"]
    for name in split_names:
        split, split_notes = _load_split(layout, data_root, name, cache_dir, progress)
        loaded[name] = split
        notes.extend(split_notes)
    return FewShotDataset(name=NAME, splits=loaded, mean=MEAN, std=STD, notes=tuple(notes))

"""miniImageNet (Vinyals et al. 2016; Ravi & Larochelle 2017 split): 100 classes x 600, 84x84.

Five sources are accepted (detected from the path given):

* ILSVRC-2012's train set -- ``ILSVRC2012_img_train.tar``, a folder of its per-class tars, or the
  extracted ``train/<wnid>/*.JPEG`` -- with Ravi & Larochelle's split CSVs committed in the package
  (see :mod:`fsbench.data.ravi`: how a CSV row names an ILSVRC image, and the resize);
* the ``mini-imagenet-cache-{train,val,test}.pkl`` files many projects ship (read with the
  restricted unpickler, checked against the split CSVs; :mod:`fsbench.data.ravi`);
* folder per class -- ``root/{train,val,test}/<wnid>/*.jpg`` (the layout the official MTL code
  reads); a split whose folder is absent is absent from the dataset;
* Ravi CSV -- ``root/images/*.jpg`` plus ``root/{train,val,test}.csv`` with header
  ``filename,label`` (label = wnid).

For the two image layouts, ``root`` may also be a parent folder holding ``miniimagenet/`` (or
``mini-imagenet/``, ``miniImageNet/``, ``mini_imagenet/``); images that are not 84x84 RGB are
converted and resized (bicubic), and the counts reported in ``FewShotDataset.notes``. Labels are
0..C-1 over each split's classes sorted by wnid (class names = wnids), images in file-name order.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path

import numpy as np

from .base import SPLITS, DataError
from .cache import digest_lines, fingerprint_files
from .images import Decoder
from .prepare import ClassImages, ClassSpec, Plan, Source
from .ravi import IMAGE_SIZE, MEAN, NAME, PARENT_NAMES, STD, find_source

# Bump when decoding changes (resampling, conversion): old cache entries are then prepared again.
DECODE_VERSION = 2
IMAGE_LAYOUT_SUFFIXES = (".jpg", ".jpeg", ".png")

LAYOUT_HELP = (
    "ILSVRC2012_img_train.tar (or its per-class tars, or train/<wnid>/*.JPEG), "
    "mini-imagenet-cache-{train,val,test}.pkl, folder per class ROOT/{train,val,test}/<wnid>/*.jpg, "
    "or Ravi CSV ROOT/images/*.jpg with ROOT/{train,val,test}.csv (header filename,label)"
)

#: One class of an image layout: (wnid, its files in order).
_LayoutClass = tuple[str, list[Path]]


def _is_layout_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_LAYOUT_SUFFIXES)


def describe(root: Path, limit: int = 8) -> str:
    """What a folder holds, for an error message: the first entries, folders with a slash."""
    try:
        entries = sorted(os.listdir(root))
    except OSError as exc:
        return f"cannot list it ({exc.strerror or exc})"
    if not entries:
        return "an empty folder"
    shown = [e + ("/" if (root / e).is_dir() else "") for e in entries[:limit]]
    more = f" (+{len(entries) - limit} more)" if len(entries) > limit else ""
    return ", ".join(shown) + more


def _folder_classes(root: Path, split: str) -> list[_LayoutClass]:
    split_dir = root / split
    class_dirs = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"split folder {split_dir} has no class folders (expected <wnid>/*.jpg)")
    out = []
    for cdir in class_dirs:
        with os.scandir(cdir) as it:
            images = sorted(Path(e.path) for e in it if _is_layout_image(e.name) and e.is_file())
        if not images:
            raise DataError(f"class folder {cdir} holds no images (*.jpg, *.jpeg, *.png)")
        out.append((cdir.name, images))
    return out


def _csv_classes(root: Path, split: str) -> tuple[list[_LayoutClass], dict[Path, str]]:
    """The classes a Ravi CSV names, and where each file was named (for a missing file)."""
    csv_path = root / f"{split}.csv"
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
    by_class: dict[str, list[Path]] = {}
    origin: dict[Path, str] = {}
    for lineno, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise DataError(f"{csv_path} line {lineno}: expected 'filename,label', got {row!r}")
        path = root / "images" / row[0].strip()
        by_class.setdefault(row[1].strip(), []).append(path)
        origin[path] = f"{csv_path} line {lineno}"
    if not by_class:
        raise DataError(f"split file {csv_path} has a header but no rows")
    return sorted(by_class.items()), origin


def _find_layout(root: Path) -> tuple[str, Path, list[str]] | None:
    candidates = [root] + [root / n for n in PARENT_NAMES if (root / n).is_dir()]
    for cand in candidates:
        splits = [s for s in SPLITS if (cand / s).is_dir()]
        if splits:
            return "folders", cand, splits
        if (cand / "images").is_dir():
            splits = [s for s in SPLITS if (cand / f"{s}.csv").is_file()]
            if splits:
                return "csv", cand, splits
    return None


def _produce_layout(jobs: list[tuple[str, str, list[Path]]], decoder: Decoder
                    ) -> Callable[[Collection[tuple[str, str]], Callable[[int], None]],
                                  Iterator[ClassImages]]:
    def produce(done: Collection[tuple[str, str]], advance: Callable[[int], None]
                ) -> Iterator[ClassImages]:
        size = decoder.size
        for split, wnid, files in jobs:
            if (split, wnid) in done:
                continue
            out = np.empty((len(files), 3, size, size), dtype=np.uint8)
            digests: dict[int, str] = {}
            stats = decoder.into(out, ((i, str(f), f) for i, f in enumerate(files)), advance,
                                 digests)
            checksum = digest_lines(f"{f.name}\t{digests[i]}" for i, f in enumerate(files))
            yield ClassImages(split, wnid, out, {f"{split}/{wnid}/*": checksum}, stats)
    return produce


def layout_source(layout: str, root: Path, splits: Sequence[str]) -> Source:
    """A folder-per-class or Ravi-CSV layout at ``root`` (as found by detection)."""
    classes: dict[str, list[_LayoutClass]] = {}
    origin: dict[Path, str] = {}
    for split in splits:
        if layout == "folders":
            classes[split] = _folder_classes(root, split)
        else:
            classes[split], where = _csv_classes(root, split)
            origin.update(where)
    csvs = [root / f"{s}.csv" for s in splits] if layout == "csv" else []
    files = [f for cs in classes.values() for _, fs in cs for f in fs]
    try:
        fp = fingerprint_files([*files, *csvs], root=root)
    except FileNotFoundError as exc:
        missing = Path(exc.filename)
        if missing in origin:
            raise DataError(f"{origin[missing]}: image {missing} does not exist") from None
        raise DataError(f"image {missing} disappeared while listing {root}") from None
    jobs = [(s, wnid, fs) for s, cs in classes.items() for wnid, fs in cs]

    def plan() -> Plan:
        return Plan(
            splits={s: tuple(ClassSpec(w, len(fs)) for w, fs in cs) for s, cs in classes.items()},
            produce=_produce_layout(jobs, Decoder(IMAGE_SIZE, "bicubic")),
            checksums={c.name: hashlib.sha256(c.read_bytes()).hexdigest() for c in csvs},
        )

    kind = "folder-per-class layout" if layout == "folders" else "images/ + Ravi CSV layout"
    return Source(NAME, kind, root, f"{fp};size={IMAGE_SIZE};decode=v{DECODE_VERSION}", plan,
                  IMAGE_SIZE, "bicubic", MEAN, STD, options=",".join(splits))


def source(root: Path, *, splits: Sequence[str] | None = None,
           split_dir: Path | None = None) -> Source:
    """miniImageNet from ``root`` in any accepted form (see the module docstring).

    ``splits`` limits the splits read (a requested split that is absent is a DataError);
    ``split_dir`` replaces the committed Ravi CSVs (ILSVRC and pickle sources; tests use it).
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"miniImageNet root {root} does not exist (expected {LAYOUT_HELP})")
    found = find_source(root, splits, split_dir)
    if found is not None:
        return found
    layout = _find_layout(root) if root.is_dir() else None
    if layout is None:
        what = _describe_root(root)
        raise DataError(f"no miniImageNet source (archive or image layout) found at {root}: expected "
                        f"{LAYOUT_HELP}; found: {what}")
    kind, data_root, present = layout
    if splits is not None:
        missing = [s for s in splits if s not in present]
        if missing:
            raise DataError(f"miniImageNet at {data_root} has no split {missing[0]!r} "
                            f"(it has: {', '.join(present)})")
        present = [s for s in SPLITS if s in splits]
    return layout_source(kind, data_root, present)


def _describe_root(root: Path) -> str:
    return describe(root) if root.is_dir() else "a file that is not a tar of per-class tars"

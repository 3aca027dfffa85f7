"""``folder``: a user's own benchmark, with no code. Two layouts:

* ``ROOT/{train,val,test}/<class>/<image>`` -- a folder per split (any subset of the three), a
  folder per class;
* ``ROOT/<class>/<image>`` plus a split file ``ROOT/split.csv`` (or the ``.csv`` file itself given
  as the root, its classes in the folder beside it): a header ``class,split`` and one row per class,
  ``split`` being ``train``, ``val`` or ``test``. Class folders the file does not name are left
  out (and reported); a class it names that has no folder is an error naming its line.

Images may be in any format Pillow reads (jpg, png, bmp, gif, webp, tif, ppm; by suffix), of any
size and mode: each is converted to RGB and resized, whole, to ``image_size`` x ``image_size``
(default 84; aspect ratio not kept) with the area filter. Classes are labelled in name order
within a split, images taken in file-name order; the mean and std are computed from the train
split (from every image when there is none: a dataset only evaluated on, ``--eval-dataset``). A run (``--dataset folder --data-root ROOT``) uses the entry prepared from ``ROOT`` whatever
its image size (``fsbench data prepare folder --source ROOT --image-size 64``), else prepares it
at 84.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

import numpy as np

from .base import SPLITS, DataError
from .cache import digest_lines, fingerprint_files
from .hashing import sha256_file
from .images import Decoder, is_image_name
from .prepare import ClassImages, ClassSpec, Plan, Source

NAME = "folder"
DEFAULT_SIZE = 84
SPLIT_FILE = "split.csv"
DECODE_VERSION = 1
HELP = ("ROOT/{train,val,test}/<class>/<image>, or ROOT/<class>/<image> with ROOT/split.csv "
        "(header class,split)")

#: split -> [(class name, its image files in order)]
_Classes = dict[str, list[tuple[str, list[Path]]]]


def _images(folder: Path) -> list[Path]:
    with os.scandir(folder) as it:
        files = sorted(Path(e.path) for e in it if is_image_name(e.name) and e.is_file())
    if not files:
        raise DataError(f"class folder {folder} holds no images (any Pillow format: jpg, png, ...)")
    return files


def _split_folders(root: Path) -> _Classes:
    out: _Classes = {}
    for split in (s for s in SPLITS if (root / s).is_dir()):
        dirs = sorted(p for p in (root / split).iterdir() if p.is_dir() and not p.name.startswith("."))
        if not dirs:
            raise DataError(f"split folder {root / split} has no class folders")
        out[split] = [(d.name, _images(d)) for d in dirs]
    return out


def _split_csv(csv_path: Path) -> tuple[_Classes, list[str]]:
    """The classes the split file names, and the class folders it leaves out."""
    root = csv_path.parent
    try:
        rows = list(csv.reader(csv_path.read_text(encoding="utf-8-sig").splitlines()))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read split file {csv_path}: {exc}") from None
    if not rows or [c.strip() for c in rows[0]] != ["class", "split"]:
        raise DataError(f"malformed header in {csv_path}: expected 'class,split'")
    out: _Classes = {}
    named = set()
    for lineno, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 2 or row[1].strip() not in SPLITS or not row[0].strip():
            raise DataError(f"{csv_path} line {lineno}: expected '<class folder>,<train|val|test>', "
                            f"got {row!r}")
        name, split = row[0].strip(), row[1].strip()
        if name in named:
            raise DataError(f"{csv_path} line {lineno}: class {name!r} is named twice")
        if not (root / name).is_dir():
            raise DataError(f"{csv_path} line {lineno}: class folder {root / name} does not exist")
        named.add(name)
        out.setdefault(split, []).append((name, _images(root / name)))
    if not out:
        raise DataError(f"split file {csv_path} names no classes")
    left_out = sorted(p.name for p in root.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and p.name not in named)
    return {s: sorted(out[s]) for s in SPLITS if s in out}, left_out


def _produce(classes: _Classes, decoder: Decoder
             ) -> Callable[[Collection[tuple[str, str]], Callable[[int], None]], Iterator[ClassImages]]:
    def produce(done: Collection[tuple[str, str]], advance: Callable[[int], None]
                ) -> Iterator[ClassImages]:
        for split, cs in classes.items():
            for name, files in cs:
                if (split, name) in done:
                    continue
                out = np.empty((len(files), 3, decoder.size, decoder.size), dtype=np.uint8)
                digests: dict[int, str] = {}
                stats = decoder.into(out, ((i, str(f), f) for i, f in enumerate(files)), advance,
                                     digests)
                checksum = digest_lines(f"{f.name}\t{digests[i]}" for i, f in enumerate(files))
                yield ClassImages(split, name, out, {f"{split}/{name}/*": checksum}, stats)
    return produce


def source(root: Path, *, image_size: int | None = None) -> Source:
    """A user's folder of images (see the module docstring); ``image_size`` default 84."""
    root = Path(root).expanduser()
    if image_size is not None and not 8 <= image_size <= 1024:
        raise DataError(f"image size must be 8..1024 pixels, got {image_size}")
    csv_path = root if root.is_file() and root.suffix.lower() == ".csv" else root / SPLIT_FILE
    if not root.exists():
        raise DataError(f"folder dataset {root} does not exist (expected {HELP})")
    left_out: list[str] = []
    if csv_path.is_file():
        classes, left_out = _split_csv(csv_path)
        base, inputs = csv_path.parent, [csv_path]
    else:
        classes, base, inputs = _split_folders(root), root, []
    if not classes:
        raise DataError(f"no dataset found at {root}: expected {HELP}")
    files = [f for cs in classes.values() for _, fs in cs for f in fs]
    fp = f"{fingerprint_files([*files, *inputs], root=base)};decode=v{DECODE_VERSION}"
    size = DEFAULT_SIZE if image_size is None else image_size

    def plan() -> Plan:
        notes = [f"{NAME}: classes from {csv_path.name}; {len(left_out)} class folder(s) it does "
                 f"not name left out ({', '.join(left_out[:5])}{' ...' if len(left_out) > 5 else ''})"
                 ] if left_out else []
        return Plan({s: tuple(ClassSpec(n, len(fs)) for n, fs in cs) for s, cs in classes.items()},
                    _produce(classes, Decoder(size, "area")),
                    {p.name: sha256_file(p) for p in inputs}, tuple(notes))

    kind = f"image folders with {csv_path.name}" if inputs else "image folders per split"
    return Source(NAME, kind, base, fp, plan, size, "area", size_fixed=image_size is not None)

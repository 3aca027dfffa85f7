"""tieredImageNet (Ren et al., ICLR 2018): 608 ILSVRC-2012 classes in 34 superclasses, 84x84.

Built from ILSVRC-2012's train set (the tar of per-class tars, a folder of them, or the extracted
folder; :mod:`fsbench.data.imagenet`) with Ren et al.'s class split committed in the package
(``splits/tieredimagenet/{train,val,test}.csv``, rows ``wnid,superclass wnid``): 351 / 97 / 160
classes in 20 / 6 / 8 superclasses. As in Ren et al.'s loader, every train image of each class is
used (448,695 / 124,261 / 206,209 images, checked when the committed split is used), resized
whole to 84x84 with a bicubic filter (theirs: OpenCV ``INTER_CUBIC``; see
:mod:`fsbench.data.images`), in RGB. Classes are labelled in wnid order within a split.

The decoded dataset is 16.5 GB (779,165 x 3 x 84 x 84 bytes): preparation streams it class by
class into the preallocated, memory-mapped cache files, so resident memory is bounded by one class
(at most 1,300 x 21,168 bytes = 28 MB of decoded images, the same again while its rows are written
and flushed), the decoder's window of 64 JPEGs read ahead (ILSVRC's average about 110 KB) and one
full-size image per decoding thread (at most 8; about 400 x 350 x 3 bytes on average): about
100 MB over the interpreter's own, whatever the dataset's size (README, "Datasets", has the
measurement on miniImageNet's 48,000 JPEGs).
The mean and std used to normalise are computed from the train split while it is prepared.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .base import SPLITS, DataError
from .cache import digest_lines
from .hashing import sha256_file
from .imagenet import WNID, ImageNetTrain, open_train, produce
from .images import Decoder
from .prepare import ClassSpec, Plan, Source

NAME = "tieredimagenet"
IMAGE_SIZE = 84
SPLIT_DIR = Path(__file__).with_name("splits") / "tieredimagenet"
#: Images per split in Ren et al. (2018), checked when the committed split is used.
IMAGES = {"train": 448_695, "val": 124_261, "test": 206_209}
DECODE_VERSION = 1


def read_split(path: Path) -> dict[str, str]:
    """One split file: wnid -> superclass wnid, in file order."""
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read split file {path}: {exc}") from None
    out: dict[str, str] = {}
    for lineno, row in enumerate(rows, start=1):
        if len(row) != 2 or not (WNID.match(row[0]) and WNID.match(row[1])):
            raise DataError(f"{path} line {lineno}: expected '<wnid>,<superclass wnid>', got {row!r}")
        out[row[0]] = row[1]
    if not out:
        raise DataError(f"split file {path} is empty")
    return out


def _list_classes(train: ImageNetTrain, classes: dict[str, dict[str, str]],
                  totals: dict[str, int] | None) -> dict[str, list[tuple[str, list[str]]]]:
    out = {}
    for split, rows in classes.items():
        listed = [(w, train.list(w)) for w in sorted(rows)]
        empty = [w for w, names in listed if not names]
        if empty:
            raise DataError(f"{train.where(empty[0])} holds no images (class {empty[0]} of "
                            f"tieredImageNet {split})")
        n = sum(len(names) for _, names in listed)
        if totals is not None and n != totals[split]:
            raise DataError(f"tieredImageNet {split}: {train.root} holds {n:,} images of the split's "
                            f"{len(rows)} classes, Ren et al.'s split has {totals[split]:,} (an "
                            "incomplete or modified ILSVRC-2012 train set)")
        out[split] = listed
    return out


def source(root: Path, *, split_dir: Path | None = None) -> Source:
    """tieredImageNet from ILSVRC-2012 train at ``root``; ``split_dir`` replaces the committed
    split files (then the paper's image counts are not checked)."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"tieredImageNet source {root} does not exist")
    train = open_train(root)
    if train is None:
        raise DataError(f"no ILSVRC-2012 train set at {root}: expected ILSVRC2012_img_train.tar, a "
                        "folder of its per-class tars, or the extracted train/<wnid>/*.JPEG")
    files = {s: (SPLIT_DIR if split_dir is None else Path(split_dir)) / f"{s}.csv" for s in SPLITS}
    classes = {s: read_split(p) for s, p in files.items()}
    for split, rows in classes.items():
        missing = train.missing(rows)
        if missing:
            raise DataError(f"{train.where(missing[0])} not found: class {missing[0]} of "
                            f"tieredImageNet {split} ({files[split]}); {len(missing)} class(es) missing")
    split_sha = {f"splits/tieredimagenet/{p.name}": sha256_file(p) for p in files.values()}
    fp = (f"{train.fingerprint([w for rows in classes.values() for w in rows])};"
          f"{digest_lines(sorted(split_sha.values()))};decode=v{DECODE_VERSION}")

    def plan() -> Plan:
        listed = _list_classes(train, classes, IMAGES if split_dir is None else None)
        jobs = [(s, w, names) for s, cs in listed.items() for w, names in cs]
        supers = ", ".join(f"{s} {len(cs)} classes in {len(set(classes[s].values()))} superclasses"
                           for s, cs in listed.items())
        return Plan(
            splits={s: tuple(ClassSpec(w, len(names)) for w, names in cs) for s, cs in listed.items()},
            produce=lambda done, advance: produce(train, jobs, Decoder(IMAGE_SIZE, "bicubic"), done,
                                                  advance),
            checksums=split_sha,
            notes=(f"{NAME}: Ren et al.'s split ({supers}); every image of each class, resized "
                   "whole to 84x84 (bicubic)",),
        )

    return Source(NAME, train.kind, train.root, fp, plan, IMAGE_SIZE, "bicubic")

"""miniImageNet as Ravi & Larochelle define it, built from ILSVRC-2012 train or from the pickles.

The dataset's constants live here; :mod:`fsbench.data.miniimagenet` is its entry point (which also
reads already-made image folders).

**From ILSVRC-2012.** Ravi & Larochelle's CSVs (``splits/miniimagenet/``, with header
``filename,label``) name each image ``<wnid><8 digits>.jpg``, e.g. ``n0153282900000005.jpg``: the
number is the 1-based rank of the image among the class's ILSVRC-2012 train files
``<wnid>_<number>.JPEG`` sorted by that number (so ``_10`` comes after ``_9``). That is how the
original conversion scripts pick the 600 images (``splits/README.md`` cites them); a row whose
rank exceeds the class's image count names a missing image. Each image is resized, whole, to
84x84 with an area filter (OpenCV's ``INTER_AREA`` in the scripts; Pillow's BOX here, see
:mod:`fsbench.data.images`), in RGB. The circulated miniImageNet JPEGs went through one more JPEG
encoding after that resize, so their pixels differ slightly from these.

**From the pickles.** ``mini-imagenet-cache-{train,val,test}.pkl`` (Ren et al.'s
``few-shot-ssl-public``, ``fewshot/data/mini_imagenet.py``, which many projects copy) hold a dict
``{"image_data": uint8 N x 84 x 84 x 3 (RGB), "class_dict": {wnid: [row indices]}}``, pickled with
the highest protocol of the Python that wrote it (2 under Python 2: keys then read as bytes).
They are read with :func:`fsbench.data.safe_pickle.safe_load` (no code runs) and checked against
the split CSVs: the same classes, 600 images each, every row used once. A pickle cannot be read
in parts: reading one holds its images in memory (the train pickle: 813 MB) while its classes are
written to the cache.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import SPLITS, DataError
from .cache import digest_lines, fingerprint_files
from .hashing import HashingReader, sha256_file
from .imagenet import ImageNetTrain, open_train, produce
from .images import Decoder
from .prepare import ClassImages, ClassSpec, Plan, Source
from .safe_pickle import safe_load, str_keys

NAME = "miniimagenet"
IMAGE_SIZE = 84
MEAN = (120.1, 114.8, 103.4)  # RGB on 0..255, over the real train split
STD = (69.3, 67.5, 71.0)
PARENT_NAMES = ("miniimagenet", "mini-imagenet", "miniImageNet", "mini_imagenet")
SPLIT_DIR = Path(__file__).with_name("splits") / "miniimagenet"
PICKLE = "mini-imagenet-cache-{}.pkl"
ROW_NAME = re.compile(r"^(n\d{8})(\d{8})\.jpg$")
DECODE_VERSION = 1


@dataclass(frozen=True)
class Row:
    """One CSV row: where it is, the image name, its rank among the class's ILSVRC files."""

    where: str
    filename: str
    number: int


def read_split(path: Path) -> dict[str, list[Row]]:
    """A Ravi CSV: wnid -> its rows in file order. One-line DataErrors name the file and line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read split file {path}: {exc}") from None
    rows = list(csv.reader(text.splitlines()))
    if not rows or [c.strip() for c in rows[0]] != ["filename", "label"]:
        raise DataError(f"malformed header in {path}: expected 'filename,label'")
    out: dict[str, list[Row]] = {}
    for lineno, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        m = ROW_NAME.match(row[0].strip()) if len(row) == 2 else None
        if m is None or m.group(1) != row[1].strip():
            raise DataError(f"{path} line {lineno}: expected '<wnid><8 digits>.jpg,<wnid>', got {row!r}")
        out.setdefault(m.group(1), []).append(Row(f"{path} line {lineno}", m.group(0), int(m.group(2))))
    if not out:
        raise DataError(f"split file {path} has a header but no rows")
    return out


def _split_files(split_dir: Path, splits: Sequence[str]) -> dict[str, Path]:
    files = {s: split_dir / f"{s}.csv" for s in splits}
    for split, path in files.items():
        if not path.is_file():
            raise DataError(f"split file {path} for miniImageNet {split} does not exist")
    return files


def _wanted(splits: Sequence[str] | None, present: Sequence[str], where: Path) -> list[str]:
    if splits is None:
        return list(present)
    missing = [s for s in splits if s not in present]
    if missing:
        raise DataError(f"miniImageNet at {where} has no split {missing[0]!r} (it has: "
                        f"{', '.join(present) or 'none'})")
    return [s for s in SPLITS if s in splits]


# --------------------------------------------------------------------------- ILSVRC-2012


def _select(train: ImageNetTrain, wnid: str, rows: list[Row]) -> list[str]:
    names = train.list(wnid)
    out = []
    for row in rows:
        if not 1 <= row.number <= len(names):
            raise DataError(f"{row.where}: {row.filename} is image {row.number} of {wnid}, but "
                            f"{train.where(wnid)} holds {len(names)} images")
        out.append(names[row.number - 1])
    return out


def ilsvrc_source(train: ImageNetTrain, split_dir: Path, splits: Sequence[str] | None) -> Source:
    """miniImageNet from ILSVRC-2012 train and the Ravi CSVs in ``split_dir`` (its splits)."""
    present = [s for s in SPLITS if (split_dir / f"{s}.csv").is_file()]
    if not present:
        raise DataError(f"no split files {{train,val,test}}.csv in {split_dir}")
    files = _split_files(split_dir, _wanted(splits, present, split_dir))
    rows = {s: read_split(p) for s, p in files.items()}
    for split, classes in rows.items():
        missing = train.missing(classes)
        if missing:
            raise DataError(f"{train.where(missing[0])} not found: class {missing[0]} of miniImageNet "
                            f"{split} ({classes[missing[0]][0].where}); {len(missing)} class(es) missing")
    split_sha = {f"splits/miniimagenet/{p.name}": sha256_file(p) for p in files.values()}
    fp = (f"{train.fingerprint([w for cs in rows.values() for w in cs])};"
          f"{digest_lines(sorted(split_sha.values()))};decode=v{DECODE_VERSION}")

    def plan() -> Plan:
        jobs = [(s, w, _select(train, w, rows[s][w])) for s in rows for w in sorted(rows[s])]
        return Plan(
            splits={s: tuple(ClassSpec(w, len(rows[s][w])) for w in sorted(rows[s])) for s in rows},
            produce=lambda done, advance: produce(train, jobs, Decoder(IMAGE_SIZE, "area"), done,
                                                  advance),
            checksums=split_sha,
            notes=("miniimagenet: Ravi & Larochelle's split; each image the n-th of its class's "
                   "ILSVRC files sorted by number, resized whole to 84x84 (area filter)",),
        )

    return Source(NAME, train.kind, train.root, fp, plan, IMAGE_SIZE, "area", MEAN, STD,
                  options=",".join(rows))


# --------------------------------------------------------------------------- pickles


def read_pickle(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray], str]:
    """(image_data uint8 N x 84 x 84 x 3, class_dict wnid -> indices, sha256 of the file)."""
    try:
        with path.open("rb") as raw:
            reader = HashingReader(raw, str(path))
            data = str_keys(safe_load(reader, encoding="bytes"), path)  # type: ignore[arg-type]
            sha = reader.hexdigest()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    missing = [k for k in ("image_data", "class_dict") if k not in data]
    if missing:
        raise DataError(f"{path}: missing key {missing[0]!r} (has: {', '.join(sorted(data)) or 'none'})")
    images = data["image_data"]
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8
            and images.shape[1:] == (IMAGE_SIZE, IMAGE_SIZE, 3)):
        got = (f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray)
               else type(images).__name__)
        raise DataError(f"{path}: image_data must be a uint8 N x 84 x 84 x 3 array, got {got}")
    class_dict = {}
    for wnid, idx in str_keys(data["class_dict"], f"{path} class_dict").items():
        arr = np.asarray(idx)
        if arr.ndim != 1 or arr.dtype.kind not in "iu" or (
                len(arr) and (arr.min() < 0 or arr.max() >= len(images))):
            raise DataError(f"{path}: class_dict[{wnid!r}] must list row indices 0..{len(images) - 1}")
        class_dict[wnid] = arr.astype(np.int64)
    used = np.concatenate(list(class_dict.values())) if class_dict else np.empty(0, np.int64)
    if len(np.unique(used)) != len(used) or len(used) != len(images):
        raise DataError(f"{path}: class_dict must use each of the {len(images)} rows exactly once "
                        f"(it lists {len(used)} indices, {len(np.unique(used))} distinct)")
    return images, class_dict, sha


def _produce_pickles(files: dict[str, Path], rows: dict[str, dict[str, list[Row]]]
                     ) -> Callable[[Collection[tuple[str, str]], Callable[[int], None]],
                                   Iterator[ClassImages]]:
    def produce_split(split: str, done: Collection[tuple[str, str]],
                      advance: Callable[[int], None]) -> Iterator[ClassImages]:
        images, class_dict, sha = read_pickle(files[split])
        expected = rows[split]
        for wnid in sorted(set(expected) | set(class_dict)):
            if wnid not in class_dict:
                raise DataError(f"{files[split]}: no class {wnid} (miniImageNet {split}, "
                                f"{expected[wnid][0].where})")
            if wnid not in expected:
                raise DataError(f"{files[split]}: class {wnid} is not in the {split} split "
                                f"({expected[next(iter(expected))][0].where.rsplit(' line', 1)[0]})")
            if len(class_dict[wnid]) != len(expected[wnid]):
                raise DataError(f"{files[split]}: class {wnid} has {len(class_dict[wnid])} images, "
                                f"the split has {len(expected[wnid])}")
        checksums = {files[split].name: sha}
        for wnid in sorted(expected):
            if (split, wnid) in done:
                continue
            out = np.ascontiguousarray(images[class_dict[wnid]].transpose(0, 3, 1, 2))
            advance(len(out))
            yield ClassImages(split, wnid, out, checksums)
            checksums = {}

    def produce_all(done: Collection[tuple[str, str]], advance: Callable[[int], None]
                    ) -> Iterator[ClassImages]:
        for split in files:
            if all((split, w) in done for w in rows[split]):
                continue  # nothing left of this split: its pickle is not read again
            yield from produce_split(split, done, advance)

    return produce_all


def pickle_source(folder: Path, split_dir: Path, splits: Sequence[str] | None) -> Source:
    """miniImageNet from ``mini-imagenet-cache-*.pkl`` in ``folder``, checked against ``split_dir``."""
    present = [s for s in SPLITS if (folder / PICKLE.format(s)).is_file()]
    wanted = _wanted(splits, present, folder)
    files = {s: folder / PICKLE.format(s) for s in wanted}
    split_files = _split_files(split_dir, wanted)
    rows = {s: read_split(p) for s, p in split_files.items()}
    split_sha = {f"splits/miniimagenet/{p.name}": sha256_file(p) for p in split_files.values()}
    fp = f"{fingerprint_files(files.values(), root=folder)};{digest_lines(sorted(split_sha.values()))}"

    def plan() -> Plan:
        return Plan(
            splits={s: tuple(ClassSpec(w, len(rows[s][w])) for w in sorted(rows[s])) for s in rows},
            produce=_produce_pickles(files, rows), checksums=split_sha,
            notes=("miniimagenet: images as stored in the pickles (RGB, 84x84)",),
        )

    return Source(NAME, "mini-imagenet-cache pickles", folder, fp, plan, IMAGE_SIZE, "area",
                  MEAN, STD, options=",".join(wanted))


def find_source(root: Path, splits: Sequence[str] | None, split_dir: Path | None) -> Source | None:
    """The ILSVRC-2012 or pickle source at ``root``, or None when ``root`` holds neither."""
    split_dir = SPLIT_DIR if split_dir is None else Path(split_dir)
    train = open_train(root)
    if train is not None:
        return ilsvrc_source(train, split_dir, splits)
    if root.is_dir():
        for folder in [root] + [root / n for n in PARENT_NAMES]:
            if any((folder / PICKLE.format(s)).is_file() for s in SPLITS):
                return pickle_source(folder, split_dir, splits)
    return None

"""CUB-200-2011 (Wah et al. 2011): 200 bird species, 11,788 images; few-shot split 100 / 50 / 50.

The source is ``CUB_200_2011.tgz`` (read in place, as a stream) or its extracted folder
``CUB_200_2011/`` (or the folder above it): ``images.txt`` (``<image id> <class folder>/<file>``),
``image_class_labels.txt`` (``<image id> <class id>``), ``classes.txt`` (``<class id> <class
folder>``) and ``images/``. The split is Chen et al.'s (*A Closer Look at Few-shot
Classification*, ICLR 2019), committed as ``splits/cub/{train,val,test}.json`` (class folder
names; sources in ``splits/README.md``). A class's images are in image-id order; classes are
labelled in folder-name order within a split.

**Resize.** The whole image is resized to 84x84 (aspect ratio not kept) with the area filter, as
the miniImageNet conversion does; the bounding boxes (``bounding_boxes.txt``) are not used, as in
CloserLookFewShot, whose filelists name the whole images (its evaluation transform then resizes to
1.15 x 84 and centre-crops 84, an augmentation choice fsbench leaves to the methods). The mean
and std are computed from the train split.

Reading the archive takes two passes of its 1.1 GB: the first hashes it (sha256) and reads the
three lists; the second decodes each class once all its images have been read (the archive
holds them class folder by class folder, so one class's JPEG bytes are held at a time).
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import SPLITS, DataError
from .cache import digest_lines, fingerprint_files
from .hashing import HashingReader, sha256_file
from .images import Decoder
from .prepare import ClassImages, ClassSpec, Plan, Source

NAME = "cub"
IMAGE_SIZE = 84
FOLDER = "CUB_200_2011"
ARCHIVE = "CUB_200_2011.tgz"
LISTS = ("images.txt", "image_class_labels.txt", "classes.txt")
SPLIT_DIR = Path(__file__).with_name("splits") / "cub"
DECODE_VERSION = 1


@dataclass
class Catalogue:
    """What the three lists say: class folder -> its image paths (``class/file``), id order."""

    images: dict[str, list[str]]
    checksums: dict[str, str]


def _parse(texts: dict[str, str], where: str) -> dict[str, list[str]]:
    def pairs(name: str) -> dict[int, str]:
        out = {}
        for lineno, line in enumerate(texts[name].splitlines(), start=1):
            key, _, value = line.strip().partition(" ")
            if not line.strip():
                continue
            if not key.isdigit() or not value:
                raise DataError(f"{where}/{name} line {lineno}: expected '<id> <value>', got {line!r}")
            out[int(key)] = value.strip()
        return out

    paths, labels, classes = pairs("images.txt"), pairs("image_class_labels.txt"), pairs("classes.txt")
    by_class: dict[str, list[str]] = {name: [] for name in classes.values()}
    for image_id in sorted(paths):
        label = labels.get(image_id)
        if label is None or not label.isdigit() or int(label) not in classes:
            raise DataError(f"{where}/image_class_labels.txt: image {image_id} ({paths[image_id]}) "
                            f"has no valid class (got {label!r})")
        by_class[classes[int(label)]].append(paths[image_id])
    return by_class


def _catalogue_folder(folder: Path) -> Catalogue:
    texts = {}
    for name in LISTS:
        try:
            texts[name] = (folder / name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read {folder / name}: {exc}") from None
    images = _parse(texts, str(folder))
    for paths in images.values():
        for p in paths:
            if not (folder / "images" / p).is_file():
                raise DataError(f"{folder}/images.txt names images/{p}, which does not exist")
    return Catalogue(images, {f"{FOLDER}/{n}": sha256_file(folder / n) for n in LISTS})


def _stream(archive: Path) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo, str]]:
    """(tar, member, path under CUB_200_2011/) of every file member, in archive order."""
    prefix = f"{FOLDER}/"
    with tarfile.open(archive, mode="r|gz") as tar:
        for member in tar:
            if member.isfile() and member.name.startswith(prefix):
                yield tar, member, member.name[len(prefix):]


def _catalogue_archive(archive: Path) -> Catalogue:
    texts: dict[str, str] = {}
    members: set[str] = set()
    try:
        with archive.open("rb") as raw:
            reader = HashingReader(raw, str(archive))
            with tarfile.open(fileobj=reader, mode="r|gz") as tar:  # type: ignore[call-overload]
                for member in tar:
                    name = member.name.removeprefix(f"{FOLDER}/")
                    if member.isfile() and name in LISTS:
                        texts[name] = tar.extractfile(member).read().decode("utf-8")  # type: ignore[union-attr]
                    elif member.isfile() and name.startswith("images/"):
                        members.add(name[len("images/"):])
            sha = reader.hexdigest()
    except (tarfile.TarError, OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {archive}: {exc}") from None
    missing = [n for n in LISTS if n not in texts]
    if missing:
        raise DataError(f"{archive} has no {FOLDER}/{missing[0]}")
    images = _parse(texts, f"{archive}:{FOLDER}")
    for paths in images.values():
        for p in paths:
            if p not in members:
                raise DataError(f"{archive}:{FOLDER}/images.txt names images/{p}, which the archive "
                                "does not hold")
    return Catalogue(images, {archive.name: sha})


def _produce_archive(archive: Path, jobs: dict[str, tuple[str, list[str]]], decoder: Decoder
                     ) -> Callable[[Collection[tuple[str, str]], Callable[[int], None]],
                                   Iterator[ClassImages]]:
    """Decode each class of ``jobs`` (class -> (split, image paths)) once all its bytes are read."""
    def produce(done: Collection[tuple[str, str]], advance: Callable[[int], None]
                ) -> Iterator[ClassImages]:
        rows = {p: (cls, i) for cls, (split, paths) in jobs.items() if (split, cls) not in done
                for i, p in enumerate(paths)}
        held: dict[str, dict[int, bytes]] = {}
        size = decoder.size
        try:
            for tar, member, name in _stream(archive):
                if not name.startswith("images/") or name[7:] not in rows:
                    continue
                cls, i = rows[name[7:]]
                held.setdefault(cls, {})[i] = tar.extractfile(member).read()  # type: ignore[union-attr]
                split, paths = jobs[cls]
                if len(held[cls]) == len(paths):
                    data = held.pop(cls)
                    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
                    stats = decoder.into(out, ((j, f"{archive}:{FOLDER}/images/{paths[j]}", data[j])
                                               for j in range(len(paths))), advance)
                    yield ClassImages(split, cls, out, {}, stats)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"cannot read {archive}: {exc}") from None
        if held:
            raise DataError(f"{archive}: class {next(iter(held))} is incomplete in the archive")
    return produce


def _produce_folder(folder: Path, jobs: dict[str, tuple[str, list[str]]], decoder: Decoder
                    ) -> Callable[[Collection[tuple[str, str]], Callable[[int], None]],
                                  Iterator[ClassImages]]:
    def produce(done: Collection[tuple[str, str]], advance: Callable[[int], None]
                ) -> Iterator[ClassImages]:
        for cls, (split, paths) in jobs.items():
            if (split, cls) in done:
                continue
            files = [folder / "images" / p for p in paths]
            out = np.empty((len(files), 3, decoder.size, decoder.size), dtype=np.uint8)
            digests: dict[int, str] = {}
            stats = decoder.into(out, ((i, str(f), f) for i, f in enumerate(files)), advance, digests)
            checksum = digest_lines(f"{p}\t{digests[i]}" for i, p in enumerate(paths))
            yield ClassImages(split, cls, out, {f"{FOLDER}/images/{cls}/*": checksum}, stats)
    return produce


def find_cub(root: Path) -> Path:
    """The archive or the ``CUB_200_2011`` folder at ``root``."""
    root = Path(root).expanduser()
    if root.is_file() and tarfile.is_tarfile(root):
        return root
    for cand in (root, root / FOLDER):
        if all((cand / n).is_file() for n in LISTS) and (cand / "images").is_dir():
            return cand
    if (root / ARCHIVE).is_file():
        return root / ARCHIVE
    raise DataError(f"no CUB-200-2011 at {root}: expected {ARCHIVE} or its folder {FOLDER}/ with "
                    f"{', '.join(LISTS)} and images/")


def read_split(path: Path) -> list[str]:
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read split file {path}: {exc}") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DataError(f"split file {path}: expected a JSON list of class folder names")
    return names


def source(root: Path, *, split_dir: Path | None = None) -> Source:
    """CUB from the archive or its folder; ``split_dir`` replaces the committed split files."""
    found = find_cub(root)
    files = {s: (SPLIT_DIR if split_dir is None else Path(split_dir)) / f"{s}.json" for s in SPLITS}
    names = {s: read_split(p) for s, p in files.items()}
    inputs = [found] if found.is_file() else [  # the folder: its lists and every image
        *(found / n for n in LISTS), *(p for p in (found / "images").rglob("*") if p.is_file())]
    fp = (f"{fingerprint_files(inputs, root=found.parent)};"
          f"{digest_lines(json.dumps(names[s]) for s in SPLITS)};decode=v{DECODE_VERSION}")

    def plan() -> Plan:
        cat = _catalogue_archive(found) if found.is_file() else _catalogue_folder(found)
        jobs: dict[str, tuple[str, list[str]]] = {}
        for split, classes in names.items():
            for cls in sorted(classes):
                if not cat.images.get(cls):
                    raise DataError(f"class {cls} of CUB {split} ({files[split]}) is not in "
                                    f"{found}'s classes.txt or has no images")
                jobs[cls] = (split, cat.images[cls])
        decoder = Decoder(IMAGE_SIZE, "area")
        produce = (_produce_archive if found.is_file() else _produce_folder)(found, jobs, decoder)
        return Plan({s: tuple(ClassSpec(c, len(jobs[c][1])) for c in sorted(cs))
                     for s, cs in names.items()}, produce, cat.checksums,
                    (f"{NAME}: Chen et al.'s split; whole images resized to 84x84 (area filter), "
                     "bounding boxes not used",))

    kind = "CUB-200-2011 archive" if found.is_file() else "CUB-200-2011 folder"
    return Source(NAME, kind, found, fp, plan, IMAGE_SIZE, "area")

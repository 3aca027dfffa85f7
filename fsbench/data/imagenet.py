"""ILSVRC-2012's train set as distributed, read class by class: the source of mini- and tieredImageNet.

Three forms are accepted (detected by :func:`open_train`):

* ``ILSVRC2012_img_train.tar`` -- the tar of 1,000 per-class tars ``nXXXXXXXX.tar``, each holding
  ``nXXXXXXXX_<number>.JPEG`` (138 GB; image-net.org);
* a folder of the per-class tars (the outer tar extracted);
* the extracted folder ``<wnid>/<wnid>_<number>.JPEG`` (``train/``, or Kaggle's
  ``ILSVRC/Data/CLS-LOC/train/``; the folder itself, ``train/`` or ``ILSVRC/`` under it).

A class's images are its files sorted by the number after the last ``_`` (the order the
miniImageNet conversion scripts index). Nothing is extracted to disk: a per-class tar is listed
through the outer tar, then read once as a stream, hashed (sha256) as it goes; only the members
asked for are kept, and only until they are decoded. In the extracted folder, each file read is
hashed and a class's checksum is the sha256 of its files' names and digests.
"""

from __future__ import annotations

import contextlib
import os
import re
import tarfile
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import IO

import numpy as np

from .base import DataError
from .cache import digest_lines
from .hashing import HashingReader
from .images import Decoder, ImageSource, is_image_name
from .prepare import ClassImages

WNID = re.compile(r"^n\d{8}$")
CLASS_TAR = re.compile(r"^(n\d{8})\.tar$")
TRAIN_TAR = "ILSVRC2012_img_train.tar"
SUBFOLDERS = ("", "train", "ILSVRC/Data/CLS-LOC/train", "Data/CLS-LOC/train", "CLS-LOC/train")


def image_number(name: str, where: str) -> int:
    """The number of ``n01532829_10026.JPEG`` (10026); a DataError naming ``where`` otherwise."""
    stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    number = stem.rsplit("_", 1)[-1]
    if "_" not in stem or not number.isdigit():
        raise DataError(f"{where}: {name!r} is not an ILSVRC train file name (<wnid>_<number>.JPEG)")
    return int(number)


def sort_images(names: list[str], where: str) -> list[str]:
    """Image names sorted by their ILSVRC number (not by text: _10 after _9)."""
    return sorted((n for n in names if is_image_name(n.rsplit("/", 1)[-1])),
                  key=lambda n: image_number(n, where))


class ClassRead:
    """The images of one class as ``(name, bytes or path)``, wanted names only; then ``checksum``."""

    def __init__(self, items: Callable[[], Iterator[tuple[str, ImageSource]]]) -> None:
        self._items = items
        self.checksum = ""  # set once iterated: the class archive's sha256 (tar forms)

    def __iter__(self) -> Iterator[tuple[str, ImageSource]]:
        return self._items()


class ImageNetTrain:
    """ILSVRC-2012 train, one of the three forms; subclasses list and read a class."""

    kind = ""

    def __init__(self, root: Path) -> None:
        self.root = root

    def classes(self) -> list[str]:
        raise NotImplementedError

    def fingerprint(self, wnids: Collection[str]) -> str:
        raise NotImplementedError

    def list(self, wnid: str) -> list[str]:
        """The class's image names, sorted by number."""
        raise NotImplementedError

    def read(self, wnid: str, wanted: Collection[str]) -> ClassRead:
        raise NotImplementedError

    def where(self, wnid: str, name: str | None = None) -> str:
        """How an error names the class (its archive) or one of its images."""
        raise NotImplementedError

    def archive(self, wnid: str) -> str:
        """The name a class's checksum is recorded under."""
        raise NotImplementedError

    def missing(self, wnids: Collection[str]) -> list[str]:
        have = set(self.classes())
        return [w for w in wnids if w not in have]


class _Tars(ImageNetTrain):
    """Per-class tars: members of the outer tar, or files in a folder."""

    def __init__(self, root: Path, members: dict[str, tarfile.TarInfo] | None) -> None:
        super().__init__(root)
        self._members = members  # None: a folder of .tar files
        self.kind = f"ILSVRC-2012 train tar {root.name}" if members is not None else \
            "ILSVRC-2012 train, a folder of per-class tars"

    def classes(self) -> list[str]:
        if self._members is not None:
            return sorted(self._members)
        return sorted(m.group(1) for p in self.root.iterdir() if (m := CLASS_TAR.match(p.name)))

    def fingerprint(self, wnids: Collection[str]) -> str:
        if self._members is not None:
            st = self.root.stat()
            return digest_lines([f"{self.root.name}\t{st.st_size}\t{st.st_mtime_ns}"])
        rows = []
        for w in sorted(wnids):
            st = (self.root / f"{w}.tar").stat()
            rows.append(f"{w}.tar\t{st.st_size}\t{st.st_mtime_ns}")
        return digest_lines(rows)

    def archive(self, wnid: str) -> str:
        return f"{self.root.name}:{wnid}.tar" if self._members is not None else f"{wnid}.tar"

    def where(self, wnid: str, name: str | None = None) -> str:
        base = f"{self.root}:{wnid}.tar" if self._members is not None else str(self.root / f"{wnid}.tar")
        return base if name is None else f"{base}:{name}"

    @contextlib.contextmanager
    def _open_class(self, wnid: str) -> Iterator[IO[bytes]]:
        if self._members is None:
            with (self.root / f"{wnid}.tar").open("rb") as f:
                yield f
            return
        # A TarFile over the outer file reads one header; the member is then read at its offset
        # (the outer index was listed once, by open_train).
        with self.root.open("rb") as raw, tarfile.TarFile(fileobj=raw, mode="r") as outer:
            member = outer.extractfile(self._members[wnid])
            assert member is not None  # listed as a regular file by open_train
            yield member

    def list(self, wnid: str) -> list[str]:
        try:
            with self._open_class(wnid) as f, tarfile.open(fileobj=f, mode="r:") as inner:
                names = [m.name for m in inner.getmembers() if m.isfile()]
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"cannot read {self.where(wnid)}: {exc}") from None
        return sort_images(names, self.where(wnid))

    def read(self, wnid: str, wanted: Collection[str]) -> ClassRead:
        wanted = set(wanted)

        def items() -> Iterator[tuple[str, ImageSource]]:
            seen = 0
            try:
                with self._open_class(wnid) as f:
                    reader = HashingReader(f)
                    with tarfile.open(fileobj=reader, mode="r|") as inner:  # type: ignore[call-overload]
                        for m in inner:
                            if m.isfile() and m.name in wanted:
                                data = inner.extractfile(m).read()  # type: ignore[union-attr]
                                if len(data) != m.size:
                                    raise DataError(f"{self.where(wnid, m.name)} is truncated")
                                seen += 1
                                yield m.name, data
                    result.checksum = reader.hexdigest()
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise DataError(f"cannot read {self.where(wnid)}: {exc}") from None
            if seen != len(wanted):
                raise DataError(f"{self.where(wnid)}: {len(wanted) - seen} listed image(s) not found "
                                "when reading it (the archive changed?)")

        result = ClassRead(items)
        return result


class _Folder(ImageNetTrain):
    """The extracted folder: ``<wnid>/<wnid>_<number>.JPEG``."""

    kind = "ILSVRC-2012 train, extracted folder"

    def classes(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if WNID.match(p.name) and p.is_dir())

    def fingerprint(self, wnids: Collection[str]) -> str:
        rows = []
        for w in sorted(wnids):  # names and count per class: no stat of a million files
            names = self.list(w)
            rows.append(f"{w}\t{len(names)}\t{digest_lines(names)}")
        return digest_lines(rows)

    def list(self, wnid: str) -> list[str]:
        with os.scandir(self.root / wnid) as it:
            names = [e.name for e in it if e.is_file()]
        return sort_images(names, str(self.root / wnid))

    def read(self, wnid: str, wanted: Collection[str]) -> ClassRead:
        return ClassRead(lambda: ((n, self.root / wnid / n) for n in wanted))

    def where(self, wnid: str, name: str | None = None) -> str:
        return str(self.root / wnid if name is None else self.root / wnid / name)

    def archive(self, wnid: str) -> str:
        return f"{wnid}/*"


def open_train(root: Path) -> ImageNetTrain | None:
    """ILSVRC-2012 train at ``root`` in one of its three forms, or None when it is not that."""
    if root.is_file():
        if not tarfile.is_tarfile(root):
            return None
        try:
            with tarfile.open(root, mode="r:") as outer:
                members = {m.group(1): ti for ti in outer.getmembers()
                           if ti.isfile() and (m := CLASS_TAR.match(ti.name.rsplit("/", 1)[-1]))}
        except (tarfile.TarError, OSError) as exc:
            raise DataError(f"cannot read {root}: {exc}") from None
        return _Tars(root, members) if members else None
    for sub in SUBFOLDERS:
        folder = root / sub if sub else root
        if not folder.is_dir():
            continue
        entries = sorted(os.listdir(folder))
        if any(CLASS_TAR.match(e) for e in entries):
            return _Tars(folder, None)
        wnid_dirs = [e for e in entries if WNID.match(e) and (folder / e).is_dir()]
        if wnid_dirs and any(n.startswith(f"{wnid_dirs[0]}_") and is_image_name(n)
                             for n in os.listdir(folder / wnid_dirs[0])):
            return _Folder(folder)
    return None


def produce(train: ImageNetTrain, jobs: list[tuple[str, str, list[str]]], decoder: Decoder,
            done: Collection[tuple[str, str]], advance: Callable[[int], None]
            ) -> Iterator[ClassImages]:
    """Decode each ``(split, wnid, image names in order)`` of ``jobs`` not in ``done``."""
    size = decoder.size
    for split, wnid, names in jobs:
        if (split, wnid) in done:
            continue
        rows = {n: i for i, n in enumerate(names)}
        out = np.empty((len(names), 3, size, size), dtype=np.uint8)
        digests: dict[int, str] = {}
        read = train.read(wnid, rows)
        stats = decoder.into(out, ((rows[n], train.where(wnid, n), src) for n, src in read),
                             advance, digests)
        checksum = read.checksum or digest_lines(f"{n}\t{digests[rows[n]]}" for n in names)
        yield ClassImages(split, wnid, out, {train.archive(wnid): checksum}, stats)

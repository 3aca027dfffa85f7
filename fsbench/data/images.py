"""Image decoding shared by every loader: a file or the bytes of an archive member -> uint8 C x H x W.

Every image is decoded with Pillow, converted to RGB (palette and grey images with transparency
through RGBA, as before) and, when it is not already ``size`` x ``size``, resized to that square
(the whole image, aspect ratio not kept: what the miniImageNet and tieredImageNet conversions do)
with one of two filters:

* ``area`` -- Pillow's BOX filter: each output pixel is the mean of the source pixels it covers,
  the area average that OpenCV's ``INTER_AREA`` computes when shrinking (the miniImageNet
  conversion scripts use it); values may differ by one from OpenCV's by rounding;
* ``bicubic`` -- Pillow's bicubic filter (antialiased when shrinking); tieredImageNet's conversion
  uses OpenCV's ``INTER_CUBIC``, which is not antialiased, so shrunk pixels differ from its
  pickles by more than rounding.

Truncated files raise (``ImageFile.LOAD_TRUNCATED_IMAGES`` is left off): the error is one line
naming the file or archive member. :class:`Decoder` decodes many images in a thread pool (Pillow
releases the GIL while decoding) straight into a preallocated array, with a bounded number of
images in flight.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .base import DataError

RESAMPLE = {"area": Image.Resampling.BOX, "bicubic": Image.Resampling.BICUBIC}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")

#: What a decode job reads: a path (read in the worker) or bytes already read from an archive.
ImageSource = Path | bytes


def is_image_name(name: str) -> bool:
    """A visible file whose suffix Pillow decodes (case-insensitive)."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)


@dataclass
class DecodeStats:
    """How many images needed a conversion to RGB or a resize (reported in the dataset notes)."""

    converted: Counter[str] = field(default_factory=Counter)  # source mode -> count
    resized: Counter[tuple[int, int]] = field(default_factory=Counter)  # source (w, h) -> count

    def add(self, other: DecodeStats) -> None:
        self.converted.update(other.converted)
        self.resized.update(other.resized)

    def to_json(self) -> dict[str, dict[str, int]]:
        return {"converted": dict(self.converted),
                "resized": {f"{w}x{h}": n for (w, h), n in self.resized.items()}}

    @classmethod
    def from_json(cls, data: dict[str, dict[str, int]]) -> DecodeStats:
        resized = Counter({tuple(int(v) for v in k.split("x")): n
                           for k, n in data.get("resized", {}).items()})
        return cls(Counter(data.get("converted", {})), resized)  # type: ignore[arg-type]

    def notes(self, prefix: str, size: int, resample: str) -> list[str]:
        out = []
        if self.converted:
            total = sum(self.converted.values())
            modes = ", ".join(f"{m}: {n}" for m, n in sorted(self.converted.items()))
            out.append(f"{prefix}: converted {total} image(s) to RGB ({modes})")
        if self.resized:
            total = sum(self.resized.values())
            sizes = ", ".join(f"{w}x{h}: {n}" for (w, h), n in self.resized.most_common(5))
            more = " ..." if len(self.resized) > 5 else ""
            out.append(f"{prefix}: resized {total} image(s) to {size}x{size} "
                       f"({resample}; from {sizes}{more})")
        return out


def decode_image(data: bytes, name: str, size: int, resample: str = "bicubic"
                 ) -> tuple[np.ndarray, str | None, tuple[int, int] | None]:
    """One image's bytes -> (uint8 3 x size x size, source mode if converted, source (w, h) if
    resized). ``name`` is what an error names (a path, or ``archive:member``).
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            converted = None
            if im.mode != "RGB":
                converted = im.mode
                if im.mode in ("P", "PA") or (im.mode == "L" and "transparency" in im.info):
                    im = im.convert("RGBA")
                im = im.convert("RGB")
            resized = None
            if im.size != (size, size):
                resized = im.size
                im = im.resize((size, size), RESAMPLE[resample])
            arr = np.asarray(im, dtype=np.uint8)
    except UnidentifiedImageError:
        raise DataError(f"cannot decode image {name}: not an image file Pillow can identify") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        msg = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"cannot decode image {name}: {msg}") from None
    if arr.shape != (size, size, 3):
        raise DataError(f"cannot decode image {name}: unexpected array shape {arr.shape}")
    return arr.transpose(2, 0, 1), converted, resized


def num_workers() -> int:
    """Decoding threads: the CPUs this process may use, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


class Decoder:
    """Decodes images into rows of a preallocated uint8 array with a thread pool.

    At most ``window`` images are in flight, so the memory a decode holds is bounded by
    ``window`` source images (their bytes and their full-size pixels), whatever the count.
    """

    def __init__(self, size: int, resample: str, workers: int | None = None,
                 window: int = 64) -> None:
        if resample not in RESAMPLE:
            raise ValueError(f"resample must be one of {sorted(RESAMPLE)}, got {resample!r}")
        self.size, self.resample = size, resample
        self.workers = workers or num_workers()
        self.window = max(window, self.workers)

    def into(self, out: np.ndarray, jobs: Iterable[tuple[int, str, ImageSource]],
             advance: Callable[[int], None] | None = None,
             digests: dict[int, str] | None = None) -> DecodeStats:
        """Decode each ``(row, name, source)`` of ``jobs`` into ``out[row]``; the first error raises.

        A path is read in the worker; with ``digests``, the sha256 of each file read is stored
        there under its row.
        """
        stats = DecodeStats()
        pending: set[Future] = set()

        def work(row: int, name: str, source: ImageSource) -> tuple[str | None, tuple | None]:
            if isinstance(source, Path):
                try:
                    source = source.read_bytes()
                except OSError as exc:
                    raise DataError(f"cannot read image {name}: {exc.strerror or exc}") from None
                if digests is not None:
                    digests[row] = hashlib.sha256(source).hexdigest()
            arr, converted, resized = decode_image(source, name, self.size, self.resample)
            out[row] = arr
            return converted, resized

        def collect(done: set[Future]) -> None:
            for fut in done:
                converted, resized = fut.result()  # re-raises the worker's DataError
                if converted is not None:
                    stats.converted[converted] += 1
                if resized is not None:
                    stats.resized[resized] += 1
                if advance is not None:
                    advance(1)

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            try:
                for row, name, source in jobs:
                    if len(pending) >= self.window:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        collect(done)
                    pending.add(pool.submit(work, row, name, source))
                done, pending = wait(pending)
                collect(done)
            except BaseException:
                for fut in pending:
                    fut.cancel()
                raise
        return stats

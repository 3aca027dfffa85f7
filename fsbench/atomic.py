"""Atomic files: the one writer every module uses.

A file is written to a temporary name in its own directory, flushed and fsync-ed, then renamed
over its final name (``os.replace``), and the directory entry is synced: a reader sees the old
file or the new one, never half of one, and a crash leaves at most a ``.NAME.*.tmp`` file. New
files get the mode a plain ``open`` would give them (0666 minus the umask).

JSON is written strictly (:func:`fsbench.strictjson.dumps`): a non-finite float becomes ``null``,
never ``NaN`` or ``Infinity``, which no JSON reader but Python's accepts.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from fsbench.strictjson import dumps

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_jsonl",
    "atomic_write_text",
]


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any],
                 *, make_parents: bool = True) -> int:
    """Call ``write(fh)`` on a binary temporary file, then move it to ``path``; returns its size.

    ``make_parents=False`` leaves a missing parent folder an error (``FileNotFoundError``).
    """
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    # os.open with 0o666 (not mkstemp's 0600): the file gets the usual umask-based mode.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        size = os.path.getsize(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable where the filesystem allows it
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return size


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, **kwargs: Any) -> int:
    return atomic_write(path, lambda fh: fh.write(data), **kwargs)


def atomic_write_text(path: str | os.PathLike[str], text: str, **kwargs: Any) -> int:
    """UTF-8, newlines written as given."""
    return atomic_write_bytes(path, text.encode("utf-8"), **kwargs)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, **kwargs: Any) -> int:
    return atomic_write_text(path, dumps(obj, indent=2) + "\n", **kwargs)


def atomic_write_jsonl(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]],
                       **kwargs: Any) -> int:
    return atomic_write_text(path, "".join(dumps(r) + "\n" for r in rows), **kwargs)

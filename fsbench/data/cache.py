"""A disk cache of decoded splits.

Decoding 48,000 JPEGs takes seconds to minutes; a decoded split is a few plain tensors. Each cache
entry is two files in the cache directory:

* ``<key>.pt``   -- a ``torch.save`` dict of plain tensors, loaded with
  ``torch.load(weights_only=True, mmap=True)`` so a large split is memory-mapped, not copied;
* ``<key>.json`` -- the sidecar: format version, the source fingerprint, the names of the tensors,
  the string lists (class names, notes) and the byte size of the ``.pt`` file.

The sidecar is the commit marker: it is removed before a rebuild and written last, so a crash
between the two writes leaves an entry that is rebuilt, never a mixed one. The sidecar is read strictly and size-bounded
(:mod:`fsbench.strictjson`); anything it refuses means "rebuild". Both files are written
atomically (temporary file in the same directory, fsync, ``os.replace``), and a
``filelock.FileLock`` on ``<key>.lock`` makes concurrent processes wait for one decode instead of
each decoding. An entry whose fingerprint or format version differs, or that cannot be read, is
rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from filelock import FileLock, Timeout

from fsbench.atomic import atomic_write, atomic_write_text
from fsbench.data.base import DataError
from fsbench.strictjson import JSONError, dumps, read_json

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
ENV_VAR = "FSBENCH_CACHE"

# What a build function returns and what load_or_build gives back.
CacheValue = torch.Tensor | list[str]
CacheDict = dict[str, CacheValue]

MAX_SIDECAR_BYTES = 16 << 20  # a sidecar holds names and notes: kilobytes

_SAFE_KEY = re.compile(r"[^A-Za-z0-9._-]+")


def default_cache_dir() -> Path:
    """``$FSBENCH_CACHE`` when set (and not empty), else ``~/.cache/fsbench``."""
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "fsbench"


def fingerprint_files(paths: Iterable[str | os.PathLike[str]], root: Path | None = None) -> str:
    """A cheap fingerprint of a set of source files: sorted paths + sizes + mtimes, hashed.

    Paths are taken relative to ``root`` when given (so the fingerprint names the dataset's own
    structure, e.g. ``train/n01532829/x.jpg``), else as given. A missing file raises
    ``FileNotFoundError``; the caller turns it into a ``DataError`` naming the file.
    """
    rows = []
    for p in paths:
        p = Path(p)
        st = p.stat()
        name = p.relative_to(root).as_posix() if root is not None else p.as_posix()
        rows.append(f"{name}\t{st.st_size}\t{st.st_mtime_ns}")
    rows.sort()
    h = hashlib.sha256()
    h.update(f"n={len(rows)}\n".encode())
    for row in rows:
        h.update(row.encode("utf-8", "surrogateescape"))
        h.update(b"\n")
    return h.hexdigest()


def _entry_paths(cache_dir: Path, key: str) -> tuple[Path, Path, Path]:
    safe = _SAFE_KEY.sub("_", key).strip("._") or "entry"
    return cache_dir / f"{safe}.pt", cache_dir / f"{safe}.json", cache_dir / f"{safe}.lock"


def _check_built(key: str, built: object) -> CacheDict:
    if not isinstance(built, dict) or not built:
        raise TypeError(f"cache build for {key!r} must return a non-empty dict, got {type(built)}")
    for name, value in built.items():
        if not isinstance(name, str):
            raise TypeError(f"cache build for {key!r}: key {name!r} is not a str")
        if isinstance(value, torch.Tensor):
            continue
        if isinstance(value, (list, tuple)) and all(isinstance(s, str) for s in value):
            continue
        raise TypeError(
            f"cache build for {key!r}: value {name!r} must be a tensor or a list of str, "
            f"got {type(value).__name__}"
        )
    return built


class CacheEntry(dict):
    """A cache entry's values; asking for a name it lacks is a one-line error naming its files.

    A self-consistent entry can still hold other names than the loader expects (written by
    another version of a loader, or edited): the loader's first look-up says so, before any work.
    """

    def __init__(self, values: CacheDict, pt_path: Path) -> None:
        super().__init__(values)
        self.pt_path = pt_path

    def __missing__(self, name: str) -> CacheValue:
        raise DataError(
            f"cache entry {self.pt_path} has no {name!r} (it holds {', '.join(self) or 'nothing'}); "
            f"delete {self.pt_path} and {self.pt_path.with_suffix('.json')} to rebuild it"
        )


def _str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _try_load(pt_path: Path, json_path: Path, fingerprint: str) -> CacheDict | None:
    """The cached entry, or None when it is absent, stale or unreadable."""
    if not json_path.exists():
        return None
    try:
        meta = read_json(json_path, MAX_SIDECAR_BYTES)
    except JSONError as exc:  # unreadable, too large, NaN, deep nesting...: rebuild
        log.warning("cache sidecar %s is unreadable (%s); rebuilding", json_path, exc)
        return None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        log.info("cache entry %s has another format version; rebuilding", json_path)
        return None
    if meta.get("fingerprint") != fingerprint:
        log.info("cache entry %s is stale (source changed); rebuilding", json_path)
        return None
    try:
        if pt_path.stat().st_size != meta.get("pt_bytes"):
            log.warning("cache file %s does not match its sidecar; rebuilding", pt_path)
            return None
        tensors = torch.load(pt_path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # corrupt/truncated zip, pickle errors, I/O errors: all mean rebuild
        log.warning(
            "cache file %s is unreadable (%s: %s); rebuilding", pt_path, type(exc).__name__, exc
        )
        return None
    names, strings = meta.get("tensors"), meta.get("strings")
    if "order" in meta:
        order = meta["order"]
    else:  # entries written before "order": tensors first
        order = [*names, *strings] if _str_list(names) and isinstance(strings, dict) else None
    if (
        not isinstance(tensors, dict)
        or not _str_list(names)
        or not isinstance(strings, dict)
        or not all(_str_list(v) for v in strings.values())
        or not _str_list(order)
        or set(tensors) != set(names)
        or sorted(order) != sorted([*names, *strings])
        or not all(isinstance(t, torch.Tensor) for t in tensors.values())
    ):
        log.warning("cache entry %s is inconsistent; rebuilding", pt_path)
        return None
    return CacheEntry({name: tensors[name] if name in tensors else list(strings[name])
                       for name in order}, pt_path)


def _store(pt_path: Path, json_path: Path, key: str, fingerprint: str, built: CacheDict) -> None:
    tensors: dict[str, torch.Tensor] = {}
    strings: dict[str, list[str]] = {}
    for name, value in built.items():
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            if t.untyped_storage().nbytes() != t.numel() * t.element_size():
                t = t.clone()  # a view: save only its own elements, not the whole storage
            tensors[name] = t
        else:
            strings[name] = list(value)
    # The sidecar is the commit marker: drop it first so a crash mid-write means "rebuild".
    with contextlib.suppress(FileNotFoundError):
        json_path.unlink()
    pt_bytes = atomic_write(pt_path, lambda f: torch.save(tensors, f))
    meta = {
        "format_version": FORMAT_VERSION,
        "key": key,
        "fingerprint": fingerprint,
        "pt_bytes": pt_bytes,
        "tensors": list(tensors),
        "strings": strings,
        "order": list(built),
    }
    atomic_write_text(json_path, dumps(meta, indent=1))


def load_or_build(
    cache_dir: Path | None,
    key: str,
    fingerprint: str,
    build: Callable[[], CacheDict],
    *,
    lock_timeout: float = 3600.0,
) -> CacheDict:
    """The cached dict for ``key`` when its fingerprint matches, else ``build()`` (then stored).

    ``build`` returns a dict of tensors and lists of str. Tensors come back memory-mapped on a
    cache hit. ``cache_dir=None`` disables caching (``build`` runs every time). A cache directory
    that cannot be written is reported once in the log and the build result is returned uncached.
    """
    if cache_dir is None:
        return _check_built(key, build())
    cache_dir = Path(cache_dir).expanduser()
    pt_path, json_path, lock_path = _entry_paths(cache_dir, key)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(lock_path, timeout=lock_timeout)
        lock.acquire()
    except (OSError, Timeout) as exc:
        # Read-only or unusable cache directory: use an existing entry if there is one, else
        # build without storing.
        log.warning("cache directory %s is not usable (%s); not caching %s", cache_dir, exc, key)
        hit = _try_load(pt_path, json_path, fingerprint)
        return hit if hit is not None else _check_built(key, build())
    try:
        hit = _try_load(pt_path, json_path, fingerprint)
        if hit is not None:
            log.debug("cache hit %s", pt_path)
            return hit
        built = _check_built(key, build())
        try:
            _store(pt_path, json_path, key, fingerprint, built)
        except OSError as exc:  # disk full, permissions: the data is still good
            log.warning("could not write cache entry %s (%s); continuing uncached", pt_path, exc)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in built.items()}
    finally:
        lock.release()

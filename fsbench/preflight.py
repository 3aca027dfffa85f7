"""Checks said once, before any work starts: permanent problems are errors, not retries.

A run or a sweep (``--dry-run`` too) checks where it will write and what it will read back
before it loads data or starts a job: ``--output`` must be a folder this process can write (or
create), the cache folder and its sub-folders must be folders, and a pre-trained backbone already
in the cache must be one fsbench wrote. Each failure is one line naming the path, the option
and what would be valid.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from fsbench.checkpoints import safe_torch_load
from fsbench.errors import ConfigError, FsbenchError

__all__ = ["PRETRAINED_FIELDS", "check_cache_folder", "check_pretrained_file", "writable_folder"]

#: Pre-trained cache files: the fields ``ensure_pretrained`` reads back, and their types.
PRETRAINED_FIELDS: dict[str, type | tuple[type, ...]] = {
    "state": dict, "history": list, "best_accuracy": (int, float), "best_epoch": int,
}

_CACHE = "--cache-dir (or $FSBENCH_CACHE)"


def writable_folder(path: Path, option: str) -> None:
    """A one-line error unless ``path`` is, or can be created as, a folder this process writes."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == path else f"cannot be created: {existing} is a file"
        raise ConfigError(f"{option} {path} {where}; give a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == path else f"cannot be created in {existing}"
        raise ConfigError(f"{option} {path} {what} (permission denied or a read-only "
                          "filesystem); give a folder this user can write")


def check_cache_folder(cache_dir: Path) -> None:
    """The cache folder and its ``datasets`` and ``pretrained`` sub-folders are not files.

    Writing is checked where it is needed (a pre-training not cached yet): a read-only cache
    of finished entries is valid.
    """
    for path in (cache_dir, cache_dir / "datasets", cache_dir / "pretrained"):
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{_CACHE} {cache_dir}: {path} is a file; give a folder")


def check_pretrained_cache(path: Path) -> None:
    """Before a pre-training: its cache file, if there, is valid; if not, it can be written."""
    if path.exists():
        check_pretrained_file(path)
    else:
        writable_folder(path.parent, _CACHE)


def check_pretrained_file(path: Path) -> None:
    """A one-line error unless ``path`` holds a pre-trained backbone as fsbench writes it."""
    saved = safe_torch_load(path)
    fields = sorted(map(str, saved)) if isinstance(saved, dict) else []
    wrong = [name for name, kind in PRETRAINED_FIELDS.items()
             if not isinstance(saved, dict) or not isinstance(saved.get(name), kind)]
    if not wrong and all(isinstance(v, torch.Tensor) for v in saved["state"].values()):
        return
    problem = f"bad or missing {', '.join(wrong)}" if wrong else "its state holds non-tensors"
    raise FsbenchError(
        f"{path}: not a pre-trained backbone fsbench wrote ({problem}; it has "
        f"{', '.join(fields)[:200] or 'nothing'}; needs {', '.join(PRETRAINED_FIELDS)}); "
        "delete it to pre-train again"
    )

"""Checkpoints: written atomically, read without executing code.

A checkpoint holds only tensors and plain values (dicts, lists, numbers, strings). It is read
with ``torch.load(weights_only=True)``, which refuses anything else, so a crafted file cannot
run code when fsbench resumes from it.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from fsbench.atomic import atomic_write
from fsbench.errors import FsbenchError


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    atomic_write(path, lambda fh: torch.save(obj, fh))


def safe_torch_load(path: str | os.PathLike[str]) -> Any:
    """Load a checkpoint without executing code: ``weights_only=True``, on the CPU."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # UnpicklingError for anything beyond tensors and plain values
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FsbenchError(f"refusing to load {path}: not a plain checkpoint ({first})") from None

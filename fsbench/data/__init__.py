"""Dataset loading: ``load_dataset(name, root)`` for every dataset fsbench knows.

A real dataset is prepared once (decoded into the memory-mapped cache under ``cache_dir``, see
:mod:`fsbench.data.prepare`) from whatever source ``root`` holds, and read from there after.
Importing this package is light (no torch, no Pillow): the command line builds its parsers from
:mod:`fsbench.data.commands` without them; the containers load on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fsbench.data.base import SPLITS, DataError, FewShotDataset, Normalizer, Split

__all__ = ["SPLITS", "DataError", "FewShotDataset", "Normalizer", "Split", "load_dataset"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from fsbench.data import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_dataset(
    name: str, root: Path | None = None, cache_dir: Path | None = None, progress: bool = True,
    *, image_size: int | None = None,
) -> FewShotDataset:
    """Load a dataset by name; a real dataset reads ``root`` and is prepared under ``cache_dir``
    on first use (``cache_dir=None``: decoded into memory every time)."""
    from fsbench.data import registry
    from fsbench.data.base import DataError
    from fsbench.data.prepare import prepare

    if registry.info(name).source is None:  # built in (an unknown name: the error lists them)
        from fsbench.data.synthetic import load_synthetic

        return load_synthetic(name)
    if root is None:
        raise DataError(f"dataset {name!r} needs --data-root")
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"data root {root} does not exist")
    return prepare(registry.source(name, root, image_size=image_size), cache_dir, progress)

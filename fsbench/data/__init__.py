"""Dataset loading: ``load_dataset(name, root)`` for every dataset fsbench knows.

A real dataset is prepared once (decoded into the memory-mapped cache under ``cache_dir``, see
:mod:`fsbench.data.prepare`) from whatever source ``root`` holds, and read from there after.
"""

from __future__ import annotations

from pathlib import Path

from fsbench.data.base import SPLITS, DataError, FewShotDataset, Normalizer, Split

__all__ = ["SPLITS", "DataError", "FewShotDataset", "Normalizer", "Split", "load_dataset"]


def load_dataset(
    name: str, root: Path | None = None, cache_dir: Path | None = None, progress: bool = True,
    *, image_size: int | None = None,
) -> FewShotDataset:
    """Load a dataset by name; a real dataset reads ``root`` and is prepared under ``cache_dir``
    on first use (``cache_dir=None``: decoded into memory every time)."""
    from fsbench.data import registry
    from fsbench.data.prepare import prepare

    if name in ("synthetic", "synthetic_easy"):
        from fsbench.data.synthetic import load_synthetic

        return load_synthetic(name)
    registry.info(name)  # an unknown name: the error lists the known ones
    if root is None:
        raise DataError(f"dataset {name!r} needs --data-root")
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"data root {root} does not exist")
    return prepare(registry.source(name, root, image_size=image_size), cache_dir, progress)

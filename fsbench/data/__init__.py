"""Dataset loading: ``load_dataset(name, root)`` for every dataset fsbench knows."""

from __future__ import annotations

from pathlib import Path

from fsbench.data.base import SPLITS, DataError, FewShotDataset, Normalizer, Split

__all__ = ["SPLITS", "DataError", "FewShotDataset", "Normalizer", "Split", "load_dataset"]


def load_dataset(
    name: str, root: Path | None = None, cache_dir: Path | None = None, progress: bool = True
) -> FewShotDataset:
    """Load a dataset by name; real datasets read ``root`` and cache decoded splits."""
    if name in ("synthetic", "synthetic_easy"):
        from fsbench.data.synthetic import load_synthetic

        return load_synthetic(name)
    if root is None:
        raise DataError(f"dataset {name!r} needs --data-root")
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"data root {root} does not exist")
    if name == "miniimagenet":
        from fsbench.data.miniimagenet import load_miniimagenet

        return load_miniimagenet(root, cache_dir, progress=progress)
    if name == "fc100":
        from fsbench.data.fc100 import load_fc100

        return load_fc100(root, cache_dir, progress=progress)
    raise DataError(f"unknown dataset {name!r}; choose from synthetic, synthetic_easy, miniimagenet, fc100")

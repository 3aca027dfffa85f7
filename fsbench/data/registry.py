"""Every dataset fsbench knows: what it needs, where a user gets it, and the loader that reads it.

:func:`source` turns (name, path) into the :class:`~fsbench.data.prepare.Source` that
:func:`fsbench.data.load_dataset` and ``fsbench data prepare`` prepare; ``fsbench datasets``
lists :data:`DATASETS`. ``fsbench.config.DATASETS`` names the same datasets (a test keeps them
equal; the config module imports no data code).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import cifar_fs, cub, fc100, folder, miniimagenet, tieredimagenet
from .base import DataError
from .prepare import Source


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset: its name, what to download and where from, its splits and image size."""

    name: str
    description: str
    archive: str  # what a user downloads (or already has)
    where: str  # where from
    classes: str  # train / val / test classes
    image_size: str
    source: Callable[..., Source] | None  # (root, **options) -> Source; None: built in


IMAGENET = "image-net.org (ILSVRC 2012, sign-up, non-commercial; also on Kaggle)"
ILSVRC = "ILSVRC2012_img_train.tar (138 GB) or its train/ folder"
CIFAR = "cifar-100-python.tar.gz (161 MB) or its folder"
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"

DATASETS: dict[str, DatasetInfo] = {d.name: d for d in (
    DatasetInfo("synthetic", "built-in coloured textures (deterministic)", "-", "built in",
                "64/16/20", "32", None),
    DatasetInfo("synthetic_easy", "built-in, a task every method learns in seconds (CI)", "-",
                "built in", "64/16/20", "32", None),
    DatasetInfo("miniimagenet", "Vinyals et al. 2016, Ravi & Larochelle's split (600 per class)",
                f"{ILSVRC}; or mini-imagenet-cache-*.pkl (1.3 GB); or miniImageNet image folders",
                IMAGENET, "64/16/20", "84", miniimagenet.source),
    DatasetInfo("tieredimagenet", "Ren et al. 2018: 608 classes in 34 superclasses, 779,165 images",
                ILSVRC, IMAGENET, "351/97/160", "84", tieredimagenet.source),
    DatasetInfo("fc100", "Oreshkin et al. 2018: CIFAR-100 split by superclass (600 per class)",
                CIFAR, CIFAR_URL, "60/20/20", "32", fc100.source),
    DatasetInfo("cifar_fs", "Bertinetto et al. 2019: CIFAR-100 split by class (600 per class)",
                CIFAR, CIFAR_URL, "64/16/20", "32", cifar_fs.source),
    DatasetInfo("cub", "CUB-200-2011 birds (Wah et al. 2011), Chen et al. 2019's split",
                "CUB_200_2011.tgz (1.1 GB) or its folder",
                "https://data.caltech.edu/records/65de6-vzh59", "100/50/50", "84", cub.source),
    DatasetInfo("folder", "your own images: a folder per class, split by folder or split.csv",
                "ROOT/{train,val,test}/<class>/*, or ROOT/<class>/* + ROOT/split.csv",
                "your own", "yours", "84 or --image-size", folder.source),
)}


def info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}") from None


def source(name: str, root: Path, *, image_size: int | None = None) -> Source:
    """The source of dataset ``name`` at ``root`` (a folder or an archive)."""
    d = info(name)
    if d.source is None:
        raise DataError(f"dataset {name!r} is built in: it has no source to prepare")
    if image_size is not None:
        if name != "folder":
            raise DataError(f"dataset {name!r} has a fixed image size ({d.image_size}); "
                            "--image-size is for the folder dataset")
        return d.source(Path(root).expanduser(), image_size=image_size)
    return d.source(Path(root).expanduser())

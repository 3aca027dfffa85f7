"""tieredImageNet from generated ILSVRC-2012 train archives with a tiny split in Ren et al.'s format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fsbench.data import tieredimagenet as tiered
from fsbench.data.base import DataError
from fsbench.data.images import decode_image
from fsbench.data.prepare import prepare

try:
    from datagen import write_ilsvrc_train
except ImportError:  # tests/ imported as a package
    from tests.datagen import write_ilsvrc_train

CLASSES = {"n01530575": 5, "n01531178": 4, "n02099267": 6, "n02099429": 3, "n03314780": 4}
SPLIT = {"train": {"n01531178": "n01524359", "n01530575": "n01524359"},
         "val": {"n02099429": "n02098550", "n02099267": "n02098550"},
         "test": {"n03314780": "n00020090"}}


def write_split(folder: Path, split: dict[str, dict[str, str]]) -> Path:
    """Split files as Ren et al. wrote them: ``wnid,superclass wnid`` rows, no header."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in split.items():
        (folder / f"{name}.csv").write_text("".join(f"{w},{s}\n" for w, s in rows.items()))
    return folder


@pytest.fixture(scope="module")
def ilsvrc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("tiered")
    write_ilsvrc_train(base / "tars", CLASSES, form="tars", seed=7)
    write_ilsvrc_train(base / "folder", CLASSES, form="folder", seed=7)
    write_split(base / "split", SPLIT)
    return base


@pytest.mark.parametrize("form", ["tars", "folder"])
def test_every_image_of_each_class(ilsvrc: Path, form: str, tmp_path: Path) -> None:
    src = tiered.source(ilsvrc / form, split_dir=ilsvrc / "split")
    ds = prepare(src, tmp_path, progress=False)
    assert ds.name == "tieredimagenet" and ds.image_size == 84
    for split, rows in SPLIT.items():
        s = ds.split(split)
        assert s.class_names == tuple(sorted(rows))
        assert s.labels.bincount().tolist() == [CLASSES[w] for w in sorted(rows)]
    # the images of a class in number order, each resized whole with the bicubic filter
    val = ds.split("val")
    folder = ilsvrc / "folder" / "train" / "n02099267"
    files = sorted(folder.iterdir(), key=lambda p: int(p.stem.split("_")[1]))
    rows = np.nonzero(val.labels.numpy() == val.class_names.index("n02099267"))[0]
    for row, f in zip(rows, files, strict=True):
        assert np.array_equal(val.images[row].numpy(), decode_image(f.read_bytes(), "x", 84, "bicubic")[0])
    # mean/std from the train split; superclasses in the notes
    x = ds.split("train").images.numpy().astype(np.float64)
    assert ds.mean == pytest.approx(tuple(x.mean(axis=(0, 2, 3))), abs=0.01)
    assert any("val 2 classes in 1 superclasses" in n for n in ds.notes)
    (meta,) = tmp_path.glob("*/meta.json")
    sums = json.loads(meta.read_text())["checksums"]
    key = "n01530575.tar" if form == "tars" else "n01530575/*"
    assert len(sums[key]) == 64 and "splits/tieredimagenet/train.csv" in sums


def test_forms_agree(ilsvrc: Path) -> None:
    a = prepare(tiered.source(ilsvrc / "tars", split_dir=ilsvrc / "split"), None, progress=False)
    b = prepare(tiered.source(ilsvrc / "folder", split_dir=ilsvrc / "split"), None, progress=False)
    for s in ("train", "val", "test"):
        assert np.array_equal(a.split(s).images.numpy(), b.split(s).images.numpy())


def test_missing_class(ilsvrc: Path, tmp_path: Path) -> None:
    write_split(tmp_path / "s", {**SPLIT, "test": {"n04596742": "n00020090"}})
    with pytest.raises(DataError) as err:
        tiered.source(ilsvrc / "tars", split_dir=tmp_path / "s")
    assert str(err.value) == (f"{ilsvrc / 'tars' / 'n04596742.tar'} not found: class n04596742 of "
                              f"tieredImageNet test ({tmp_path / 's' / 'test.csv'}); 1 class(es) missing")


def test_image_counts_checked_against_the_paper(ilsvrc: Path) -> None:
    train = tiered.open_train(ilsvrc / "tars")
    rows = {"val": SPLIT["val"]}
    with pytest.raises(DataError, match=r"holds 9 images of the split's 2 classes, Ren et al.'s split "
                                        r"has 124,261"):
        tiered._list_classes(train, rows, tiered.IMAGES)


def test_not_an_ilsvrc_source(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match="no ILSVRC-2012 train set at"):
        tiered.source(tmp_path / "x")


def test_malformed_split_row(ilsvrc: Path, tmp_path: Path) -> None:
    write_split(tmp_path / "bad", {**SPLIT, "train": {"dolphin": "mammal"}})
    with pytest.raises(DataError, match=r"train.csv line 1: expected '<wnid>,<superclass wnid>'"):
        tiered.source(ilsvrc / "tars", split_dir=tmp_path / "bad")

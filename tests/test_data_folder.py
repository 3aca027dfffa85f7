"""The folder dataset: a user's own images, split by folder or by split.csv."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fsbench.data import folder, load_dataset
from fsbench.data.base import DataError
from fsbench.data.prepare import prepare

try:
    from datagen import fake_image
except ImportError:  # tests/ imported as a package
    from tests.datagen import fake_image

FORMATS = ("png", "bmp", "webp", "jpg", "gif")


def write_classes(root: Path, classes: dict[str, int], seed: int = 0) -> None:
    """``root/<class>/img<i>.<format>`` in several formats, sizes and modes."""
    rng = np.random.default_rng(seed)
    for ci, (name, n) in enumerate(classes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = fake_image(rng, (40 + 7 * i, 30 + 5 * ci), ci)
            im = Image.fromarray(arr).convert("L") if i == 1 else Image.fromarray(arr)
            im.save(root / name / f"img{i}.{FORMATS[(i + ci) % len(FORMATS)]}")


def test_split_folders_any_format(tmp_path: Path) -> None:
    write_classes(tmp_path / "train", {"cat": 3, "dog": 4})
    write_classes(tmp_path / "test", {"fox": 2})
    ds = prepare(folder.source(tmp_path), None, progress=False)
    assert set(ds.splits) == {"train", "test"}
    assert ds.split("train").class_names == ("cat", "dog") and ds.image_size == 84
    assert ds.split("train").labels.tolist() == [0, 0, 0, 1, 1, 1, 1]
    notes = " | ".join(ds.notes)
    assert "folder/train: resized 7 image(s) to 84x84 (area" in notes
    assert "folder/train: converted 2 image(s) to RGB" in notes
    x = ds.split("train").images.numpy().astype(np.float64)
    assert ds.mean == pytest.approx(tuple(x.mean(axis=(0, 2, 3))), abs=0.01)


def test_split_csv_and_image_size(tmp_path: Path) -> None:
    write_classes(tmp_path, {"a": 2, "b": 3, "c": 2, "d": 2, "unused": 1})
    (tmp_path / "split.csv").write_text("class,split\nb,train\na,train\nc,val\nd,test\n")
    ds = prepare(folder.source(tmp_path, image_size=32), None, progress=False)
    assert ds.split("train").class_names == ("a", "b") and ds.image_size == 32
    assert ds.split("val").class_names == ("c",) and ds.split("test").class_names == ("d",)
    assert any("1 class folder(s) it does not name left out (unused)" in n for n in ds.notes)
    # the .csv itself may be the root
    again = prepare(folder.source(tmp_path / "split.csv", image_size=32), None, progress=False)
    assert np.array_equal(again.split("val").images.numpy(), ds.split("val").images.numpy())


@pytest.mark.parametrize("row,match", [
    ("zebra,train", r"split.csv line 3: class folder .*zebra does not exist"),
    ("a,holdout", r"split.csv line 3: expected '<class folder>,<train\|val\|test>'"),
    ("b,val", r"split.csv line 3: class 'b' is named twice"),
])
def test_split_csv_errors(tmp_path: Path, row: str, match: str) -> None:
    write_classes(tmp_path, {"a": 1, "b": 1})
    (tmp_path / "split.csv").write_text(f"class,split\nb,train\n{row}\n")
    with pytest.raises(DataError, match=match):
        folder.source(tmp_path)


def test_empty_class_and_no_layout(tmp_path: Path) -> None:
    (tmp_path / "train" / "empty").mkdir(parents=True)
    with pytest.raises(DataError, match="class folder .*empty holds no images"):
        folder.source(tmp_path)
    with pytest.raises(DataError, match="no dataset found at"):
        folder.source(tmp_path / "train" / "empty")


def test_a_run_reuses_the_prepared_size(tmp_path: Path) -> None:
    write_classes(tmp_path / "d" / "train", {"a": 2, "b": 2})
    write_classes(tmp_path / "d" / "val", {"c": 2})
    cache = tmp_path / "cache"
    small = load_dataset("folder", tmp_path / "d", cache, progress=False, image_size=24)
    assert small.image_size == 24
    reused = load_dataset("folder", tmp_path / "d", cache, progress=False)  # no size: the prepared one
    assert reused.image_size == 24
    fixed = load_dataset("folder", tmp_path / "d", cache, progress=False, image_size=84)
    assert fixed.image_size == 84
    metas = [json.loads(p.read_text()) for p in cache.glob("*/meta.json")]
    assert sorted(m["image_size"] for m in metas) == [24, 84]
    with pytest.raises(DataError, match="--image-size is for the folder dataset"):
        load_dataset("cub", tmp_path / "d", cache, progress=False, image_size=24)

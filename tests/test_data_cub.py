"""CUB-200-2011 from a generated archive and folder in the distributed layout."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from fsbench.data import cub
from fsbench.data.base import DataError
from fsbench.data.images import decode_image
from fsbench.data.prepare import prepare

try:
    from datagen import write_cub
except ImportError:  # tests/ imported as a package
    from tests.datagen import write_cub

NAMES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross",
         "004.Groove_billed_Ani", "005.Crested_Auklet", "006.Least_Auklet"]
SPLIT = {"train": [NAMES[0], NAMES[2], NAMES[4]], "val": [NAMES[1]], "test": [NAMES[3], NAMES[5]]}


def write_split(folder: Path, split: dict[str, list[str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, classes in split.items():
        (folder / f"{name}.json").write_text(json.dumps(classes))
    return folder


@pytest.fixture(scope="module")
def cub_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("cub")
    write_cub(base / "folder", NAMES, per_class=3)
    write_cub(base / "archive", NAMES, per_class=3, archive=True)
    write_split(base / "split", SPLIT)
    return base


def test_folder_and_archive_agree(cub_data: Path, tmp_path: Path) -> None:
    a = prepare(cub.source(cub_data / "folder", split_dir=cub_data / "split"), None, progress=False)
    b = prepare(cub.source(cub_data / "archive" / "CUB_200_2011.tgz", split_dir=cub_data / "split"),
                tmp_path, progress=False)
    for s, classes in SPLIT.items():
        assert a.split(s).class_names == tuple(sorted(classes))
        assert a.split(s).labels.bincount().tolist() == [3] * len(classes)
        assert np.array_equal(a.split(s).images.numpy(), b.split(s).images.numpy())
    # image-id order, whole image resized with the area filter
    lines = (cub_data / "folder" / "CUB_200_2011" / "images.txt").read_text().splitlines()
    first_val = [p for _, p in (ln.split(" ", 1) for ln in lines) if p.startswith(NAMES[1])][0]
    raw = (cub_data / "folder" / "CUB_200_2011" / "images" / first_val).read_bytes()
    assert np.array_equal(a.split("val").images[0].numpy(), decode_image(raw, "x", 84, "area")[0])
    (meta,) = tmp_path.glob("*/meta.json")
    tgz = cub_data / "archive" / "CUB_200_2011.tgz"
    assert json.loads(meta.read_text())["checksums"] == {
        "CUB_200_2011.tgz": hashlib.sha256(tgz.read_bytes()).hexdigest()}


def test_parent_folder_and_parent_of_archive(cub_data: Path) -> None:
    assert cub.find_cub(cub_data / "folder") == cub_data / "folder" / "CUB_200_2011"
    assert cub.find_cub(cub_data / "archive") == cub_data / "archive" / "CUB_200_2011.tgz"
    with pytest.raises(DataError, match="no CUB-200-2011 at"):
        cub.find_cub(cub_data / "split")


def test_split_class_not_in_classes_txt(cub_data: Path, tmp_path: Path) -> None:
    write_split(tmp_path / "s", {**SPLIT, "val": ["200.Common_Yellowthroat"]})
    with pytest.raises(DataError, match=r"class 200.Common_Yellowthroat of CUB val .*val.json"):
        prepare(cub.source(cub_data / "folder", split_dir=tmp_path / "s"), None, progress=False)


@pytest.mark.parametrize("archive", [False, True])
def test_listed_image_missing(tmp_path: Path, archive: bool) -> None:
    folder = write_cub(tmp_path / "f", NAMES, per_class=2)
    victim = sorted((folder / "images" / NAMES[3]).iterdir())[1]
    victim.unlink()
    src = folder
    if archive:
        src = tmp_path / "CUB_200_2011.tgz"
        with tarfile.open(src, "w:gz") as tar:
            tar.add(folder, arcname="CUB_200_2011")
    write_split(tmp_path / "s", SPLIT)
    with pytest.raises(DataError) as err:
        prepare(cub.source(src, split_dir=tmp_path / "s"), tmp_path / "c", progress=False)
    assert f"names images/{NAMES[3]}/{victim.name}" in str(err.value)
    assert not list((tmp_path / "c").glob("*px")) and not list((tmp_path / "c").glob("*.partial"))


def test_truncated_jpeg_in_the_archive_names_the_member(tmp_path: Path) -> None:
    folder = write_cub(tmp_path / "f", NAMES, per_class=2)
    victim = sorted((folder / "images" / NAMES[5]).iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:200])
    tgz = tmp_path / "CUB_200_2011.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(folder, arcname="CUB_200_2011")
    write_split(tmp_path / "s", SPLIT)
    with pytest.raises(DataError) as err:
        prepare(cub.source(tgz, split_dir=tmp_path / "s"), tmp_path / "c", progress=False)
    assert str(err.value).startswith(
        f"cannot decode image {tgz}:CUB_200_2011/images/{NAMES[5]}/{victim.name}: ")

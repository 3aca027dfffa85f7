"""miniImageNet from generated ILSVRC-2012 train archives (three forms) and from the pickle format.

The committed Ravi CSVs name real wnids and images: these tests pass tiny split files in the same
format (``split_dir``); test_data_splits.py checks the committed files themselves.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from fsbench.data import miniimagenet as mini
from fsbench.data.base import DataError
from fsbench.data.images import decode_image
from fsbench.data.prepare import prepare
from fsbench.data.safe_pickle import UnsafePickleError

try:
    from datagen import write_ilsvrc_train, write_mini_pickles, write_ravi_csvs
except ImportError:  # tests/ imported as a package
    from tests.datagen import write_ilsvrc_train, write_mini_pickles, write_ravi_csvs

CLASSES = {"n01532829": 12, "n01558993": 10, "n01704323": 11, "n02110063": 9, "n03924679": 12}
RANKS = {"train": {"n01704323": [1, 4, 11], "n01532829": [2, 3, 12]},
         "val": {"n02110063": [9, 5]},
         "test": {"n03924679": [7, 1], "n01558993": [10, 6]}}


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same ILSVRC images in the three forms, plus tiny Ravi split files."""
    base = tmp_path_factory.mktemp("ilsvrc")
    for form in ("tar", "tars", "folder"):
        write_ilsvrc_train(base / form, CLASSES, form=form, seed=3)
    write_ravi_csvs(base / "splits", RANKS)
    return {"tar": base / "tar" / "ILSVRC2012_img_train.tar", "tars": base / "tars",
            "folder": base / "folder", "splits": base / "splits"}


def _expected(folder_form: Path, wnid: str, rank: int) -> np.ndarray:
    """The rank-th image of the class, its files sorted by number, resized as the loader does."""
    files = sorted((folder_form / "train" / wnid).iterdir(), key=lambda p: int(p.stem.split("_")[1]))
    arr, _, _ = decode_image(files[rank - 1].read_bytes(), "x", 84, "area")
    return arr


def test_number_order_is_not_text_order(archives: dict[str, Path]) -> None:
    names = [p.name for p in (archives["folder"] / "train" / "n01532829").iterdir()]
    by_number = sorted(names, key=lambda n: int(n.split("_")[1].split(".")[0]))
    assert by_number != sorted(names)  # the generated classes exercise the numeric sort


@pytest.mark.parametrize("form", ["tar", "tars", "folder"])
def test_ilsvrc_forms_select_the_ranked_images(archives: dict[str, Path], form: str) -> None:
    src = mini.source(archives[form], split_dir=archives["splits"])
    assert "ILSVRC-2012" in src.kind
    ds = prepare(src, None, progress=False)
    assert ds.name == "miniimagenet" and ds.mean == (120.1, 114.8, 103.4)
    for split, classes in RANKS.items():
        s = ds.split(split)
        assert s.class_names == tuple(sorted(classes))
        assert s.images.shape == (sum(map(len, classes.values())), 3, 84, 84)
        row = 0
        for wnid in sorted(classes):  # classes by wnid, images in CSV row order
            for rank in classes[wnid]:
                assert int(s.labels[row]) == s.class_names.index(wnid)
                assert np.array_equal(s.images[row].numpy(), _expected(archives["folder"], wnid, rank))
                row += 1


def test_checksums_of_the_class_archives(archives: dict[str, Path], tmp_path: Path) -> None:
    prepare(mini.source(archives["tar"], split_dir=archives["splits"]), tmp_path, progress=False)
    (entry,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    sums = json.loads((entry / "meta.json").read_text())["checksums"]
    with tarfile.open(archives["tar"]) as outer:
        inner = outer.extractfile("n01532829.tar").read()  # type: ignore[union-attr]
    assert sums["ILSVRC2012_img_train.tar:n01532829.tar"] == hashlib.sha256(inner).hexdigest()
    assert sums["splits/miniimagenet/val.csv"] == hashlib.sha256(
        (archives["splits"] / "val.csv").read_bytes()).hexdigest()
    assert len([k for k in sums if k.endswith(".tar")]) == 5


def test_missing_class_names_the_split_row(archives: dict[str, Path], tmp_path: Path) -> None:
    write_ravi_csvs(tmp_path / "s", {**RANKS, "val": {"n09999999": [1]}})
    with pytest.raises(DataError) as err:
        mini.source(archives["tar"], split_dir=tmp_path / "s")
    msg = str(err.value)
    assert "n09999999.tar not found" in msg and "val.csv line 2" in msg and "\n" not in msg


def test_missing_image_leaves_nothing_behind(archives: dict[str, Path], tmp_path: Path) -> None:
    write_ravi_csvs(tmp_path / "s", {**RANKS, "test": {"n03924679": [7, 13]}})  # the class has 12
    src = mini.source(archives["tars"], split_dir=tmp_path / "s")
    with pytest.raises(DataError) as err:
        prepare(src, tmp_path / "cache", progress=False)
    assert str(err.value) == (
        f"{tmp_path / 's' / 'test.csv'} line 3: n0392467900000013.jpg is image 13 of n03924679, "
        f"but {archives['tars'] / 'n03924679.tar'} holds 12 images")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"{src.key_base}.lock"]


def test_truncated_jpeg_inside_the_tar_names_the_member(tmp_path: Path) -> None:
    numbers = write_ilsvrc_train(tmp_path / "a", {"n01532829": 4}, seed=1)  # to learn the names
    bad = f"n01532829_{numbers['n01532829'][2]}.JPEG"
    write_ilsvrc_train(tmp_path / "b", {"n01532829": 4}, seed=1, truncate=(bad,))
    write_ravi_csvs(tmp_path / "s", {"train": {"n01532829": [1, 2, 3, 4]}})
    src = mini.source(tmp_path / "b" / "ILSVRC2012_img_train.tar", split_dir=tmp_path / "s")
    with pytest.raises(DataError) as err:
        prepare(src, tmp_path / "cache", progress=False)
    msg = str(err.value)
    assert msg.startswith(f"cannot decode image {tmp_path / 'b' / 'ILSVRC2012_img_train.tar'}:"
                          f"n01532829.tar:{bad}: ")
    assert "\n" not in msg and not list((tmp_path / "cache").glob("*px"))


def test_truncated_class_tar_names_it(tmp_path: Path) -> None:
    write_ilsvrc_train(tmp_path, {"n01532829": 6}, form="tars", seed=2)
    tar = tmp_path / "n01532829.tar"
    write_ravi_csvs(tmp_path / "s", {"train": {"n01532829": [1, 6]}})
    plan = mini.source(tmp_path, split_dir=tmp_path / "s").plan()  # listed while intact
    tar.write_bytes(tar.read_bytes()[:3000])  # then cut
    with pytest.raises(DataError, match=f"cannot read {tar}: "):
        list(plan.produce((), lambda n: None))


# --------------------------------------------------------------------------- pickles


def _pickle_data(counts: dict[str, dict[str, int]]) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(5)
    return {s: {w: rng.integers(0, 256, (n, 84, 84, 3), dtype=np.uint8) for w, n in cs.items()}
            for s, cs in counts.items()}


PICKLED = {"train": {"n01704323": 3, "n01532829": 4}, "val": {"n02110063": 2}}


@pytest.mark.parametrize("protocol,py2", [(2, True), (4, False), (5, False)])
def test_pickles_follow_class_dict(tmp_path: Path, protocol: int, py2: bool) -> None:
    data = _pickle_data(PICKLED)
    write_mini_pickles(tmp_path / "p", data, protocol=protocol, py2_style=py2)
    write_ravi_csvs(tmp_path / "s", {s: {w: list(range(1, n + 1)) for w, n in cs.items()}
                                     for s, cs in PICKLED.items()})
    src = mini.source(tmp_path / "p", split_dir=tmp_path / "s")
    assert src.kind == "mini-imagenet-cache pickles"
    ds = prepare(src, tmp_path / "cache", progress=False)
    assert set(ds.splits) == {"train", "val"}  # no test pickle: no test split
    train = ds.split("train")
    assert train.class_names == ("n01532829", "n01704323")
    want = np.concatenate([data["train"]["n01532829"], data["train"]["n01704323"]]).transpose(0, 3, 1, 2)
    assert np.array_equal(train.images.numpy(), want)
    assert train.labels.tolist() == [0, 0, 0, 0, 1, 1, 1]


def _write_split_for(tmp_path: Path, counts: dict[str, dict[str, int]]) -> Path:
    write_ravi_csvs(tmp_path / "s", {s: {w: list(range(1, n + 1)) for w, n in cs.items()}
                                     for s, cs in counts.items()})
    return tmp_path / "s"


def test_pickle_missing_a_split_class(tmp_path: Path) -> None:
    write_mini_pickles(tmp_path / "p", _pickle_data({"val": {"n02110063": 2}}))
    split_dir = _write_split_for(tmp_path, {"val": {"n02110063": 2, "n02219486": 2}})
    with pytest.raises(DataError) as err:
        prepare(mini.source(tmp_path / "p", split_dir=split_dir), tmp_path / "c", progress=False)
    assert "mini-imagenet-cache-val.pkl: no class n02219486" in str(err.value)
    assert "val.csv line 4" in str(err.value)


def test_pickle_class_of_another_size(tmp_path: Path) -> None:
    write_mini_pickles(tmp_path / "p", _pickle_data({"val": {"n02110063": 3}}))
    split_dir = _write_split_for(tmp_path, {"val": {"n02110063": 2}})
    with pytest.raises(DataError, match="class n02110063 has 3 images, the split has 2"):
        prepare(mini.source(tmp_path / "p", split_dir=split_dir), None, progress=False)


@pytest.mark.parametrize("edit,match", [
    (lambda d: d.pop("class_dict"), "missing key 'class_dict'"),
    (lambda d: d.__setitem__("image_data", d["image_data"][:, :80]), "uint8 N x 84 x 84 x 3"),
    (lambda d: d["class_dict"]["n02110063"].__setitem__(0, 1), "each of the 2 rows exactly once"),
    (lambda d: d["class_dict"]["n02110063"].__setitem__(0, 7), r"row indices 0\.\.1"),
], ids=["no-class-dict", "wrong-size", "row-twice", "row-out-of-range"])
def test_malformed_pickle(tmp_path: Path, edit, match: str) -> None:
    data = {"image_data": np.zeros((2, 84, 84, 3), np.uint8), "class_dict": {"n02110063": [0, 1]}}
    edit(data)
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "mini-imagenet-cache-val.pkl").write_bytes(pickle.dumps(data, protocol=4))
    split_dir = _write_split_for(tmp_path, {"val": {"n02110063": 2}})
    with pytest.raises(DataError, match=match):
        prepare(mini.source(tmp_path / "p", split_dir=split_dir), None, progress=False)


class _Shell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "mini-imagenet-cache-val.pkl").write_bytes(
        pickle.dumps({"image_data": _Shell(marker), "class_dict": {}}, protocol=4))
    split_dir = _write_split_for(tmp_path, {"val": {"n02110063": 2}})
    with pytest.raises(UnsafePickleError, match="system"):
        prepare(mini.source(tmp_path / "p", split_dir=split_dir), None, progress=False)
    assert not marker.exists()


def test_pickle_checksum_recorded_once(tmp_path: Path) -> None:
    write_mini_pickles(tmp_path / "p", _pickle_data(PICKLED))
    split_dir = _write_split_for(tmp_path, PICKLED)
    prepare(mini.source(tmp_path / "p", split_dir=split_dir), tmp_path / "c", progress=False)
    (meta,) = (tmp_path / "c").glob("*/meta.json")
    sums = json.loads(meta.read_text())["checksums"]
    for s in PICKLED:
        pkl = tmp_path / "p" / f"mini-imagenet-cache-{s}.pkl"
        assert sums[pkl.name] == hashlib.sha256(pkl.read_bytes()).hexdigest()


def test_pickle_and_folder_of_the_same_images_agree(tmp_path: Path) -> None:
    """The folder layout and a pickle made from its decoded images give the same tensors."""
    try:
        from datagen import write_miniimagenet_folders
    except ImportError:  # pragma: no cover
        from tests.datagen import write_miniimagenet_folders
    wnids = write_miniimagenet_folders(tmp_path / "f", {"val": 2}, per_class=3)
    folder = prepare(mini.source(tmp_path / "f"), None, progress=False).split("val")
    per_class = {w: folder.images[folder.labels == i].numpy().transpose(0, 2, 3, 1)
                 for i, w in enumerate(folder.class_names)}
    write_mini_pickles(tmp_path / "p", {"val": per_class}, py2_style=True)
    split_dir = _write_split_for(tmp_path, {"val": {w: 3 for w in wnids["val"]}})
    pickled = prepare(mini.source(tmp_path / "p", split_dir=split_dir), None, progress=False)
    assert torch.equal(pickled.split("val").images, folder.images)
    assert torch.equal(pickled.split("val").labels, folder.labels)

"""fsbench.data.miniimagenet on generated image folders in both layouts (+ the real val split if present).

The ILSVRC-2012 and pickle sources are tested in test_data_ravi.py.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fsbench.data import images as image_codec
from fsbench.data import miniimagenet as mini
from fsbench.data.base import DataError
from fsbench.data.prepare import prepare

try:
    from datagen import fake_image, write_miniimagenet_csv, write_miniimagenet_folders
except ImportError:  # tests/ imported as a package
    from tests.datagen import fake_image, write_miniimagenet_csv, write_miniimagenet_folders

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SMALL = {"train": 3, "val": 2, "test": 2}


def load_miniimagenet(root: Path, cache_dir: Path | None, progress: bool = True, *,
                      splits: list[str] | None = None):
    return prepare(mini.source(root, splits=splits), cache_dir, progress)


@pytest.fixture
def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = image_codec.decode_image

    def counting(source, name, *args):
        calls.append(name)
        return real(source, name, *args)

    monkeypatch.setattr(image_codec, "decode_image", counting)
    return calls


def _check(ds, wnids: dict[str, list[str]], per_class: int) -> None:
    assert ds.name == "miniimagenet"
    assert ds.mean == (120.1, 114.8, 103.4) and ds.std == (69.3, 67.5, 71.0)
    assert set(ds.splits) == set(wnids)
    for name, ids in wnids.items():
        s = ds.split(name)
        assert s.images.dtype == torch.uint8
        assert s.images.shape == (len(ids) * per_class, 3, 84, 84)
        assert s.labels.dtype == torch.int64
        assert s.class_names == tuple(sorted(ids))
        assert torch.bincount(s.labels).tolist() == [per_class] * len(ids)
    assert ds.image_size == 84


def test_folder_layout(tmp_path: Path) -> None:
    wnids = write_miniimagenet_folders(tmp_path / "mini", SMALL, per_class=4)
    ds = load_miniimagenet(tmp_path / "mini", cache_dir=None, progress=False)
    _check(ds, wnids, 4)
    assert "folder-per-class layout" in ds.notes[0]
    # pixels are the decoded JPEG, in C x H x W order
    first = sorted((tmp_path / "mini" / "train" / wnids["train"][0]).iterdir())[0]
    ref = np.asarray(Image.open(first).convert("RGB")).transpose(2, 0, 1)
    assert np.array_equal(ds.split("train").images[0].numpy(), ref)


def test_folder_layout_partial_splits_and_parent_root(tmp_path: Path) -> None:
    wnids = write_miniimagenet_folders(
        tmp_path / "miniimagenet", {"train": 2, "val": 2}, per_class=3
    )
    ds = load_miniimagenet(tmp_path, cache_dir=None, progress=False)  # parent of miniimagenet/
    _check(ds, wnids, 3)
    assert set(ds.splits) == {"train", "val"}
    with pytest.raises(DataError, match="no split 'test'"):
        ds.split("test")


def test_only_requested_splits(tmp_path: Path, count_decodes: list[str]) -> None:
    write_miniimagenet_folders(tmp_path, SMALL, per_class=3)
    ds = load_miniimagenet(tmp_path, cache_dir=None, progress=False, splits=["val"])
    assert list(ds.splits) == ["val"]
    assert len(count_decodes) == 2 * 3
    with pytest.raises(DataError, match="no split 'nope'"):
        load_miniimagenet(tmp_path, cache_dir=None, progress=False, splits=["nope"])


def test_csv_layout(tmp_path: Path) -> None:
    wnids = write_miniimagenet_csv(tmp_path, SMALL, per_class=4)
    ds = load_miniimagenet(tmp_path, cache_dir=None, progress=False)
    _check(ds, wnids, 4)
    assert "CSV" in ds.notes[0]


def test_layout_detection_failure_names_both_layouts(tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(DataError) as err:
        load_miniimagenet(tmp_path, cache_dir=None, progress=False)
    msg = str(err.value)
    assert "\n" not in msg
    assert "ILSVRC2012_img_train.tar" in msg and "mini-imagenet-cache-" in msg  # archives
    assert "{train,val,test}/<wnid>/*.jpg" in msg  # folder layout
    assert "images/*.jpg" in msg and ".csv" in msg  # CSV layout
    assert "readme.txt" in msg and "stuff/" in msg  # what was found
    with pytest.raises(DataError, match="does not exist"):
        load_miniimagenet(tmp_path / "missing", cache_dir=None, progress=False)


def test_progress_bar_runs(tmp_path: Path) -> None:
    write_miniimagenet_folders(tmp_path, {"val": 2}, per_class=3)
    ds = load_miniimagenet(tmp_path, cache_dir=None, progress=True)
    assert len(ds.split("val")) == 6


def test_resize_and_mode_conversion_reported(tmp_path: Path) -> None:
    wnids = write_miniimagenet_folders(tmp_path, {"train": 2}, per_class=3)
    cdir = tmp_path / "train" / wnids["train"][0]
    rng = np.random.default_rng(1)
    Image.fromarray(fake_image(rng, (100, 90), 0)).save(cdir / "big.jpg")  # RGB, 100x90
    Image.fromarray(fake_image(rng, 84, 0)[..., 0], "L").save(cdir / "gray.jpg")  # grayscale
    rgba = np.dstack([fake_image(rng, 60, 0), np.full((60, 60), 200, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(cdir / "alpha.png")  # RGBA and 60x60
    ds = load_miniimagenet(tmp_path, cache_dir=None, progress=False)
    train = ds.split("train")
    assert train.images.shape == (9, 3, 84, 84)
    assert torch.bincount(train.labels).tolist() == [6, 3]
    notes = " | ".join(ds.notes)
    assert "converted 2 image(s) to RGB (L: 1, RGBA: 1)" in notes
    assert "resized 2 image(s) to 84x84" in notes and "100x90: 1" in notes and "60x60: 1" in notes
    # a grayscale image becomes three equal channels
    gray_idx = sorted(p.name for p in cdir.iterdir()).index("gray.jpg")
    g = train.images[gray_idx]
    assert torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])


def test_notes_survive_the_cache(tmp_path: Path, count_decodes: list[str]) -> None:
    wnids = write_miniimagenet_folders(tmp_path / "d", {"train": 2}, per_class=2)
    Image.fromarray(np.zeros((50, 50), np.uint8), "L").save(
        tmp_path / "d" / "train" / wnids["train"][1] / "small.png"
    )
    first = load_miniimagenet(tmp_path / "d", cache_dir=tmp_path / "c", progress=False)
    second = load_miniimagenet(tmp_path / "d", cache_dir=tmp_path / "c", progress=False)
    assert len(count_decodes) == 5
    assert first.notes == second.notes
    assert any("resized 1 image(s)" in n for n in second.notes)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_jpeg_names_the_file(tmp_path: Path, damage: str) -> None:
    wnids = write_miniimagenet_folders(tmp_path, {"val": 2}, per_class=3)
    bad = sorted((tmp_path / "val" / wnids["val"][1]).iterdir())[1]
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x00garbage" * 50)
    with pytest.raises(DataError) as err:
        load_miniimagenet(tmp_path, cache_dir=tmp_path / "cache", progress=False)
    assert str(bad) in str(err.value)
    assert "\n" not in str(err.value)


def test_empty_class_folder(tmp_path: Path) -> None:
    write_miniimagenet_folders(tmp_path, {"train": 2}, per_class=2)
    empty = tmp_path / "train" / "n09999999"
    empty.mkdir()
    with pytest.raises(DataError, match="n09999999 holds no images"):
        load_miniimagenet(tmp_path, cache_dir=None, progress=False)


def test_empty_split_folder(tmp_path: Path) -> None:
    write_miniimagenet_folders(tmp_path, {"train": 2}, per_class=2)
    (tmp_path / "val").mkdir()
    with pytest.raises(DataError, match="has no class folders"):
        load_miniimagenet(tmp_path, cache_dir=None, progress=False)


def test_csv_missing_file(tmp_path: Path) -> None:
    write_miniimagenet_csv(tmp_path, {"train": 2}, per_class=2)
    with (tmp_path / "train.csv").open("a") as f:
        f.write("n0100000099999999.jpg,n01000000\n")
    with pytest.raises(DataError) as err:
        load_miniimagenet(tmp_path, cache_dir=None, progress=False)
    msg = str(err.value)
    assert "train.csv line 6" in msg and "n0100000099999999.jpg does not exist" in msg


@pytest.mark.parametrize("header", ["file,label", "filename;label", "", "filename,label,extra"])
def test_csv_malformed_header(tmp_path: Path, header: str) -> None:
    write_miniimagenet_csv(tmp_path, {"train": 2}, per_class=2)
    csv_path = tmp_path / "train.csv"
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join([header, *lines[1:]]) + "\n")
    with pytest.raises(DataError, match="malformed header in .*train.csv"):
        load_miniimagenet(tmp_path, cache_dir=None, progress=False)


def test_csv_malformed_row(tmp_path: Path) -> None:
    write_miniimagenet_csv(tmp_path, {"train": 2}, per_class=2)
    with (tmp_path / "train.csv").open("a") as f:
        f.write("only_one_field\n")
    with pytest.raises(DataError, match="train.csv line 6"):
        load_miniimagenet(tmp_path, cache_dir=None, progress=False)


def test_cache_hit_on_second_load(tmp_path: Path, count_decodes: list[str]) -> None:
    wnids = write_miniimagenet_folders(tmp_path / "d", {"train": 2, "val": 2}, per_class=3)
    first = load_miniimagenet(tmp_path / "d", cache_dir=tmp_path / "c", progress=False)
    assert len(count_decodes) == 12
    second = load_miniimagenet(tmp_path / "d", cache_dir=tmp_path / "c", progress=False)
    assert len(count_decodes) == 12  # nothing decoded again
    _check(second, wnids, 3)
    for s in ("train", "val"):
        assert torch.equal(first.split(s).images, second.split(s).images)
        assert torch.equal(first.split(s).labels, second.split(s).labels)
    (entry,) = (p for p in (tmp_path / "c").iterdir() if p.is_dir())  # one entry, both splits
    assert sorted(p.name for p in entry.glob("*.npy")) == [
        "train.images.npy", "train.labels.npy", "val.images.npy", "val.labels.npy"]


def test_cache_invalidated_when_a_source_changes(tmp_path: Path, count_decodes: list[str]) -> None:
    wnids = write_miniimagenet_csv(tmp_path / "d", {"train": 2}, per_class=3)
    load_miniimagenet(tmp_path / "d", cache_dir=tmp_path / "c", progress=False)
    assert len(count_decodes) == 6
    # touch one image: new mtime -> new fingerprint -> decoded again
    img = tmp_path / "d" / "images" / f"{wnids['train'][0]}00000001.jpg"
    st = img.stat()
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    load_miniimagenet(tmp_path / "d", cache_dir=tmp_path / "c", progress=False)
    assert len(count_decodes) == 12
    # rewrite one image with other pixels: the cached tensor follows
    Image.fromarray(np.full((84, 84, 3), 7, np.uint8)).save(img, format="JPEG", quality=100)
    ds = load_miniimagenet(tmp_path / "d", cache_dir=tmp_path / "c", progress=False)
    assert len(count_decodes) == 18
    assert abs(int(ds.split("train").images[0].float().mean()) - 7) <= 1
    # editing the split CSV (drop a row) also invalidates
    csv_path = tmp_path / "d" / "train.csv"
    csv_path.write_text("\n".join(csv_path.read_text().splitlines()[:-1]) + "\n")
    ds = load_miniimagenet(tmp_path / "d", cache_dir=tmp_path / "c", progress=False)
    assert len(ds.split("train")) == 5


def test_corrupt_cache_file_is_rebuilt(tmp_path: Path, count_decodes: list[str]) -> None:
    write_miniimagenet_folders(tmp_path / "d", {"train": 2}, per_class=3)
    first = load_miniimagenet(tmp_path / "d", cache_dir=tmp_path / "c", progress=False)
    expected = first.split("train").images.clone()
    del first  # its memory map: reading a truncated mapped file is a bus error
    (npy,) = (tmp_path / "c").glob("*/train.images.npy")
    npy.write_bytes(npy.read_bytes()[:1000])  # truncated cache file
    again = load_miniimagenet(tmp_path / "d", cache_dir=tmp_path / "c", progress=False)
    assert len(count_decodes) == 12
    assert torch.equal(expected, again.split("train").images)


@pytest.mark.realdata
def test_real_val_split(tmp_path: Path) -> None:
    root = SHARED_DATA / "miniimagenet"
    if not (root / "val").is_dir():
        pytest.skip(f"real miniImageNet not found at {root} (shared data is absent here)")
    t0 = time.perf_counter()
    ds = load_miniimagenet(root, cache_dir=tmp_path / "cache", progress=False, splits=["val"])
    decode_s = time.perf_counter() - t0
    val = ds.split("val")
    assert val.images.shape == (9600, 3, 84, 84)
    assert val.images.dtype == torch.uint8
    assert val.num_classes == 16
    assert torch.bincount(val.labels).tolist() == [600] * 16
    assert all(c.startswith("n") and len(c) == 9 for c in val.class_names)
    assert list(val.class_names) == sorted(val.class_names)
    t0 = time.perf_counter()
    again = load_miniimagenet(root, cache_dir=tmp_path / "cache", progress=False, splits=["val"])
    cached_s = time.perf_counter() - t0
    assert torch.equal(again.split("val").labels, val.labels)
    assert torch.equal(again.split("val").images[::997], val.images[::997])
    assert cached_s < decode_s


@pytest.mark.realdata
def test_real_folder_and_pickle_give_identical_tensors(tmp_path: Path) -> None:
    """The real val split prepared from its folder, and from mini-imagenet-cache-val.pkl written
    from it as Ren et al.'s script writes it, gives identical tensors (benchmarks/
    prepare_miniimagenet.py; run it alone for train and val, with times and peak memory)."""
    import json
    import subprocess
    import sys

    root = SHARED_DATA / "miniimagenet"
    if not (root / "val").is_dir():
        pytest.skip(f"real miniImageNet not found at {root} (shared data is absent here)")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "prepare_miniimagenet.py"
    proc = subprocess.run([sys.executable, str(script), "--data-root", str(root), "--splits", "val",
                           "--work", str(tmp_path), "--json", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["equal"] == {"val": {"images": 9600, "identical": True}}
    assert result["folder"]["kind"] == "folder-per-class layout"
    assert result["pickle"]["kind"] == "mini-imagenet-cache pickles"

"""fsbench.data.cache and fsbench.data.prepare: entries, resume, staleness, corruption, locking."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fsbench.data import cache
from fsbench.data.base import DataError
from fsbench.data.cache import default_cache_dir, fingerprint_files
from fsbench.data.prepare import ClassImages, ClassSpec, Plan, Source, channel_sums, prepare

CLASSES = {"train": [("a", 3), ("b", 2), ("c", 4)], "val": [("d", 2)]}


class Toy:
    """A Source whose classes are deterministic arrays; records what it produced."""

    def __init__(self, fingerprint: str = "fp1", fail_after: int | None = None,
                 counts: dict[str, list[tuple[str, int]]] | None = None) -> None:
        self.fingerprint, self.fail_after = fingerprint, fail_after
        self.counts = counts or CLASSES
        self.produced: list[str] = []
        self.plans = 0

    @staticmethod
    def images(name: str, count: int) -> np.ndarray:
        seed = sum(map(ord, name))
        return np.random.default_rng(seed).integers(0, 256, (count, 3, 8, 8), dtype=np.uint8)

    def source(self, root: Path) -> Source:
        def produce(done, advance) -> Iterator[ClassImages]:
            for split, classes in self.counts.items():
                for name, count in classes:
                    if (split, name) in done:
                        continue
                    if self.fail_after is not None and len(self.produced) == self.fail_after:
                        raise KeyboardInterrupt  # a kill between two classes
                    self.produced.append(name)
                    advance(count)
                    yield ClassImages(split, name, self.images(name, count), {f"{name}.tar": "ab" * 32})

        def plan() -> Plan:
            self.plans += 1
            return Plan({s: tuple(ClassSpec(n, c) for n, c in cs) for s, cs in self.counts.items()},
                        produce, {"split.csv": "cd" * 32}, ("a toy",))

        return Source("toy", "toy archive", root, self.fingerprint, plan, 8)


def _expected(split: str, counts=CLASSES) -> np.ndarray:
    return np.concatenate([Toy.images(n, c) for n, c in counts[split]])


def test_prepare_writes_a_memory_mapped_entry(tmp_path: Path) -> None:
    toy = Toy()
    ds = prepare(toy.source(tmp_path / "src"), tmp_path / "c", progress=False)
    (entry,) = [p for p in (tmp_path / "c").iterdir() if p.is_dir()]
    assert not entry.name.endswith(".partial") and not list(tmp_path.rglob("*.tmp"))
    assert not (entry / "progress.json").exists()
    train = ds.split("train")
    assert np.array_equal(train.images.numpy(), _expected("train"))
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2]
    assert train.class_names == ("a", "b", "c") and ds.split("val").class_names == ("d",)
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["checksums"] == {"a.tar": "ab" * 32, "b.tar": "ab" * 32, "c.tar": "ab" * 32,
                                 "d.tar": "ab" * 32, "split.csv": "cd" * 32}
    assert meta["fingerprint"] == "fp1" and meta["format_version"] == cache.FORMAT_VERSION
    # mean/std computed from train (the toy gives none)
    x = _expected("train").astype(np.float64)
    assert ds.mean == pytest.approx(tuple(x.mean(axis=(0, 2, 3))), abs=0.01)
    assert ds.std == pytest.approx(tuple(x.std(axis=(0, 2, 3))), abs=0.01)


def test_second_prepare_is_a_hit(tmp_path: Path) -> None:
    toy = Toy()
    prepare(toy.source(tmp_path / "src"), tmp_path / "c", progress=False)
    again = prepare(toy.source(tmp_path / "src"), tmp_path / "c", progress=False)
    assert toy.plans == 1 and toy.produced == ["a", "b", "c", "d"]
    assert np.array_equal(again.split("val").images.numpy(), _expected("val"))


def test_killed_preparation_resumes_at_the_first_class_not_written(tmp_path: Path) -> None:
    crashed = Toy(fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        prepare(crashed.source(tmp_path / "src"), tmp_path / "c", progress=False)
    (partial,) = (tmp_path / "c").glob("*.partial")
    progress = json.loads((partial / "progress.json").read_text())
    assert sorted(progress["done"]) == ["train/a", "train/b"]
    assert not [p for p in (tmp_path / "c").iterdir() if p.is_dir() and p != partial]
    resumed = Toy()
    ds = prepare(resumed.source(tmp_path / "src"), tmp_path / "c", progress=False)
    assert resumed.produced == ["c", "d"]  # a and b were kept
    assert np.array_equal(ds.split("train").images.numpy(), _expected("train"))
    assert not list((tmp_path / "c").glob("*.partial"))


def test_partial_of_another_source_is_discarded(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        prepare(Toy(fail_after=2).source(tmp_path / "src"), tmp_path / "c", progress=False)
    changed = Toy(fingerprint="fp2")
    prepare(changed.source(tmp_path / "src"), tmp_path / "c", progress=False)
    assert changed.produced == ["a", "b", "c", "d"]


def test_stale_entry_is_replaced(tmp_path: Path) -> None:
    prepare(Toy().source(tmp_path / "src"), tmp_path / "c", progress=False)
    counts = {"train": [("a", 2), ("z", 3)], "val": [("d", 2)]}
    new = Toy(fingerprint="fp2", counts=counts)
    ds = prepare(new.source(tmp_path / "src"), tmp_path / "c", progress=False)
    assert new.produced == ["a", "z", "d"]
    assert ds.split("train").class_names == ("a", "z")
    assert np.array_equal(ds.split("train").images.numpy(), _expected("train", counts))
    assert len([p for p in (tmp_path / "c").iterdir() if p.is_dir()]) == 1


@pytest.mark.parametrize("damage", ["garbage_meta", "no_meta", "old_format", "short_npy", "no_labels"])
def test_damaged_entry_is_prepared_again(tmp_path: Path, damage: str) -> None:
    prepare(Toy().source(tmp_path / "src"), tmp_path / "c", progress=False)
    (entry,) = [p for p in (tmp_path / "c").iterdir() if p.is_dir()]
    if damage == "garbage_meta":
        (entry / "meta.json").write_text("{not json")
    elif damage == "no_meta":
        (entry / "meta.json").unlink()
    elif damage == "old_format":
        meta = json.loads((entry / "meta.json").read_text())
        (entry / "meta.json").write_text(json.dumps({**meta, "format_version": 1}))
    elif damage == "short_npy":
        npy = entry / "train.images.npy"
        npy.write_bytes(npy.read_bytes()[:300])
    else:
        (entry / "val.labels.npy").unlink()
    again = Toy()
    ds = prepare(again.source(tmp_path / "src"), tmp_path / "c", progress=False)
    assert again.produced == ["a", "b", "c", "d"]
    assert np.array_equal(ds.split("train").images.numpy(), _expected("train"))


def test_a_class_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    toy = Toy()
    src = toy.source(tmp_path / "src")
    plan = src.plan

    def lying_plan() -> Plan:
        p = plan()
        p.splits["val"] = (ClassSpec("d", 5),)  # the source yields 2
        return p

    src.plan = lying_plan
    with pytest.raises(DataError, match="class d of val gave 2 images, the split says 5"):
        prepare(src, tmp_path / "c", progress=False)
    assert not [p for p in (tmp_path / "c").iterdir() if p.is_dir() and not p.name.endswith(".partial")]


def test_not_enough_disk_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache.shutil, "disk_usage", lambda p: SimpleNamespace(free=100))
    with pytest.raises(DataError, match=r"needs 0\.0 GB in .* which has 0\.0 GB free"):
        prepare(Toy().source(tmp_path / "src"), tmp_path / "c", progress=False)


def test_no_cache_dir_decodes_in_memory(tmp_path: Path) -> None:
    toy = Toy()
    a = prepare(toy.source(tmp_path / "src"), None, progress=True)
    b = prepare(toy.source(tmp_path / "src"), None, progress=False)
    assert toy.plans == 2
    assert torch.equal(a.split("train").images, b.split("train").images)
    assert a.notes == b.notes and "a toy" in a.notes


def test_unusable_cache_dir_decodes_in_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where the cache directory should be
    ds = prepare(Toy().source(tmp_path / "src"), blocker / "sub", progress=False)
    assert np.array_equal(ds.split("val").images.numpy(), _expected("val"))


def test_concurrent_prepares_decode_once(tmp_path: Path) -> None:
    # Separate FileLock objects on one path exclude each other like separate processes do.
    toy = Toy()
    results, errors = [], []

    def run() -> None:
        try:
            results.append(prepare(toy.source(tmp_path / "src"), tmp_path / "c", progress=False))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 3
    assert toy.plans == 1 and toy.produced == ["a", "b", "c", "d"]


def test_channel_sums_are_exact() -> None:
    x = np.random.default_rng(0).integers(0, 256, (5, 3, 7, 6), dtype=np.uint8)
    sums = channel_sums(x)
    for c in range(3):
        v = x[:, c].astype(np.int64)
        assert sums[c] == [v.size, int(v.sum()), int((v * v).sum())]


def test_fingerprint_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    a.write_bytes(b"aaaa")
    b.write_bytes(b"bb")
    fp = fingerprint_files([a, b], root=tmp_path)
    assert fp == fingerprint_files([b, a], root=tmp_path)  # order-independent
    st = a.stat()
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    fp_touched = fingerprint_files([a, b], root=tmp_path)
    assert fp_touched != fp
    b.write_bytes(b"bbb")
    os.utime(b, ns=(b.stat().st_atime_ns, b.stat().st_mtime_ns))
    assert fingerprint_files([a, b], root=tmp_path) != fp_touched
    assert fingerprint_files([a], root=tmp_path) != fingerprint_files([a, b], root=tmp_path)
    with pytest.raises(FileNotFoundError):
        fingerprint_files([tmp_path / "missing.jpg"])


def test_fingerprint_uses_relative_paths(tmp_path: Path) -> None:
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        f = tmp_path / d / "img.jpg"
        f.write_bytes(b"data")
        os.utime(f, ns=(0, 1_000_000_000))
    fx = fingerprint_files([tmp_path / "x" / "img.jpg"], root=tmp_path / "x")
    fy = fingerprint_files([tmp_path / "y" / "img.jpg"], root=tmp_path / "y")
    assert fx == fy


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FSBENCH_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("FSBENCH_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "fsbench"

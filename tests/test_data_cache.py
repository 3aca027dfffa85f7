"""fsbench.data.cache: hits, invalidation, corruption recovery, locking, fingerprints."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
import torch

from fsbench.data import cache
from fsbench.data.cache import default_cache_dir, fingerprint_files, load_or_build


class CountingBuild:
    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay
        self._lock = threading.Lock()

    def __call__(self) -> dict:
        with self._lock:
            self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        return {
            "images": torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).reshape(2, 3, 4, 4),
            "labels": torch.tensor([0, 1]),
            "class_names": ["a", "b"],
        }


def _entry_files(cache_dir: Path) -> tuple[Path, Path]:
    (pt,) = cache_dir.glob("*.pt")
    (js,) = cache_dir.glob("*.json")
    return pt, js


def test_hit_returns_same_content_memory_mapped(tmp_path: Path) -> None:
    build = CountingBuild()
    first = load_or_build(tmp_path, "k", "fp1", build)
    second = load_or_build(tmp_path, "k", "fp1", build)
    assert build.calls == 1
    assert list(second) == ["images", "labels", "class_names"]
    assert torch.equal(first["images"], second["images"])
    assert second["labels"].dtype == torch.int64
    assert second["class_names"] == ["a", "b"]
    pt, js = _entry_files(tmp_path)
    meta = json.loads(js.read_text())
    assert meta["fingerprint"] == "fp1"
    assert meta["format_version"] == cache.FORMAT_VERSION
    assert meta["strings"]["class_names"] == ["a", "b"]
    assert not list(tmp_path.glob("*.tmp"))  # no leftover temporary files


def test_fingerprint_change_rebuilds(tmp_path: Path) -> None:
    build = CountingBuild()
    load_or_build(tmp_path, "k", "fp1", build)
    load_or_build(tmp_path, "k", "fp2", build)
    load_or_build(tmp_path, "k", "fp2", build)
    assert build.calls == 2


def test_keys_are_separate_entries(tmp_path: Path) -> None:
    build = CountingBuild()
    load_or_build(tmp_path, "a/b c", "fp", build)  # unsafe characters are sanitised
    load_or_build(tmp_path, "other", "fp", build)
    assert build.calls == 2
    assert len(list(tmp_path.glob("*.pt"))) == 2


@pytest.mark.parametrize(
    "damage", ["garbage_pt", "truncated_pt", "garbage_json", "no_json", "old_format"]
)
def test_corrupt_entry_is_rebuilt(tmp_path: Path, damage: str) -> None:
    build = CountingBuild()
    load_or_build(tmp_path, "k", "fp", build)
    pt, js = _entry_files(tmp_path)
    if damage == "garbage_pt":
        pt.write_bytes(b"not a torch file at all" * 10)
        # keep the recorded size consistent so the torch.load path itself must fail
        meta = json.loads(js.read_text())
        meta["pt_bytes"] = pt.stat().st_size
        js.write_text(json.dumps(meta))
    elif damage == "truncated_pt":
        pt.write_bytes(pt.read_bytes()[: pt.stat().st_size // 2])
    elif damage == "garbage_json":
        js.write_text("{not json")
    elif damage == "no_json":
        js.unlink()
    elif damage == "old_format":
        meta = json.loads(js.read_text())
        meta["format_version"] = -1
        js.write_text(json.dumps(meta))
    again = load_or_build(tmp_path, "k", "fp", build)
    assert build.calls == 2
    assert again["class_names"] == ["a", "b"]
    # and the repaired entry is a hit again
    load_or_build(tmp_path, "k", "fp", build)
    assert build.calls == 2


def test_no_cache_dir_always_builds(tmp_path: Path) -> None:
    build = CountingBuild()
    load_or_build(None, "k", "fp", build)
    load_or_build(None, "k", "fp", build)
    assert build.calls == 2


def test_bad_build_value_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="'x'"):
        load_or_build(tmp_path, "k", "fp", lambda: {"x": 3})


def test_view_tensor_saved_compactly(tmp_path: Path) -> None:
    big = torch.zeros(1000, 100, dtype=torch.uint8)
    load_or_build(tmp_path, "k", "fp", lambda: {"t": big[:2]})
    out = load_or_build(tmp_path, "k", "fp", lambda: pytest.fail("rebuilt"))
    assert out["t"].shape == (2, 100)
    pt, _ = _entry_files(tmp_path)
    assert pt.stat().st_size < 50_000


def test_concurrent_loads_build_once(tmp_path: Path) -> None:
    # Separate FileLock objects on one path exclude each other like separate processes do.
    build = CountingBuild(delay=0.5)
    results: list[dict] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(load_or_build(tmp_path, "k", "fp", build))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert build.calls == 1
    assert all(r["class_names"] == ["a", "b"] for r in results)


def test_unwritable_cache_dir_still_builds(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where the cache directory should be
    out = load_or_build(blocker / "sub", "k", "fp", CountingBuild())
    assert out["class_names"] == ["a", "b"]


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

"""fsbench.data.fc100 (and fsbench.data.cifar) on generated cifar-100-python files, and
fsbench.data.safe_pickle."""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from fsbench.data import cifar, fc100
from fsbench.data.base import DataError
from fsbench.data.fc100 import COARSE_SPLITS, TEST_COARSE, TRAIN_COARSE, VAL_COARSE
from fsbench.data.prepare import prepare
from fsbench.data.safe_pickle import UnsafePickleError, safe_load

try:
    from datagen import fake_fine_to_coarse, write_cifar100_python
except ImportError:  # tests/ imported as a package
    from tests.datagen import fake_fine_to_coarse, write_cifar100_python

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TRAIN_N, TEST_N = 4, 2  # images per fine class in the fake train / test pickles


def load_fc100(root: Path, cache_dir: Path | None, progress: bool = True):
    return prepare(fc100.source(root), cache_dir, progress)


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    """A fake CIFAR-100 python-version folder; returns the parent of cifar-100-python/."""
    write_cifar100_python(tmp_path / "data", per_class_train=TRAIN_N, per_class_test=TEST_N)
    return tmp_path / "data"


# --------------------------------------------------------------------------- split definition


def test_split_constants_partition_the_superclasses() -> None:
    ids = [*TRAIN_COARSE, *VAL_COARSE, *TEST_COARSE]
    assert sorted(ids) == list(range(20))
    assert (len(TRAIN_COARSE), len(VAL_COARSE), len(TEST_COARSE)) == (12, 4, 4)
    assert COARSE_SPLITS == {"train": TRAIN_COARSE, "val": VAL_COARSE, "test": TEST_COARSE}


def test_split_constants_match_shared_split_file() -> None:
    path = SHARED_DATA / "splits" / "fc100_split.json"
    if not path.is_file():
        pytest.skip(f"{path} not found (shared data is absent here)")
    spec = json.loads(path.read_text())
    for split, coarse in COARSE_SPLITS.items():
        assert sorted(spec[split]["coarse_ids"]) == sorted(coarse), split
    # with CIFAR-100's real fine->coarse map, the split holds the recorded fine classes
    f2c = spec["fine_to_coarse"]
    for split, coarse in COARSE_SPLITS.items():
        fine = [f for f in range(100) if f2c[f] in coarse]
        assert fine == spec[split]["fine_label_ids"], split


# --------------------------------------------------------------------------- loading


def test_split_sizes_and_labels(cifar_root: Path) -> None:
    ds = load_fc100(cifar_root, cache_dir=None, progress=False)
    assert ds.name == "fc100"
    assert ds.mean == (129.3, 124.1, 112.4) and ds.std == (68.2, 65.4, 70.4)
    assert ds.image_size == 32
    f2c = fake_fine_to_coarse()
    expect_classes = {"train": 60, "val": 20, "test": 20}
    for name, split in ds.splits.items():
        assert split.num_classes == expect_classes[name]
        assert split.images.shape == (expect_classes[name] * (TRAIN_N + TEST_N), 3, 32, 32)
        assert split.images.dtype == torch.uint8
        assert split.labels.dtype == torch.int64
        # labels 0..C-1, each class holds train + test images
        assert torch.bincount(split.labels).tolist() == [TRAIN_N + TEST_N] * split.num_classes
        # classes: the fine classes of the split's superclasses, in fine-label order
        fine_ids = [int(n[4:]) for n in split.class_names]
        assert fine_ids == sorted(fine_ids)
        assert {f2c[f] for f in fine_ids} == set(COARSE_SPLITS[name])
        assert fine_ids == [f for f in range(100) if f2c[f] in COARSE_SPLITS[name]]
        # datagen writes each image's fine label into its first red value
        assert torch.equal(split.images[:, 0, 0, 0].long(), torch.tensor(fine_ids)[split.labels])
    assert any("split by superclass" in n for n in ds.notes)


def test_root_may_be_the_cifar_folder_itself(cifar_root: Path) -> None:
    ds = load_fc100(cifar_root / "cifar-100-python", cache_dir=None, progress=True)
    assert len(ds.split("val")) == 20 * (TRAIN_N + TEST_N)


def test_pixel_layout_is_rgb_planes(tmp_path: Path) -> None:
    out = write_cifar100_python(tmp_path, per_class_train=1, per_class_test=1)
    with (out / "train").open("rb") as f:
        d = pickle.load(f, encoding="bytes")
    row = np.arange(3072, dtype=np.int64) % 251
    row[0] = d[b"fine_labels"][0]
    d[b"data"][0] = row.astype(np.uint8)
    with (out / "train").open("wb") as f:
        pickle.dump(d, f, protocol=2)
    ds = load_fc100(tmp_path, cache_dir=None, progress=False)
    fine0 = d[b"fine_labels"][0]
    split = next(s for s in ds.splits.values() if f"fine{fine0:02d}" in s.class_names)
    flat = split.images.reshape(len(split), -1)
    (match,) = torch.nonzero((flat[:, 1:200] == torch.from_numpy(row[1:200])).all(dim=1))
    img = split.images[int(match)]
    assert torch.equal(img.reshape(-1), torch.from_numpy(row.astype(np.uint8)))
    assert int(img[1, 0, 0]) == 1024 % 251  # green plane starts at 1024
    assert int(img[2, 0, 0]) == 2048 % 251  # blue plane at 2048
    assert int(img[0, 1, 0]) == 32 % 251  # rows are 32 wide


def test_str_keys_are_accepted(tmp_path: Path) -> None:
    write_cifar100_python(tmp_path, per_class_train=2, per_class_test=1, bytes_keys=False)
    ds = load_fc100(tmp_path, cache_dir=None, progress=False)
    assert ds.split("train").num_classes == 60
    assert ds.split("test").class_names[0].startswith("fine")


def test_python2_style_pickles(tmp_path: Path) -> None:
    out = write_cifar100_python(tmp_path, per_class_train=2, per_class_test=1, py2_style=True)
    raw = (out / "train").read_bytes()
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in raw and b"_codecs" not in raw
    with (out / "train").open("rb") as f:
        d = pickle.load(f, encoding="bytes")
    assert isinstance(d[b"data"], np.ndarray) and d[b"data"].shape == (200, 3072)
    ds = load_fc100(tmp_path, cache_dir=None, progress=False)
    assert [ds.split(s).num_classes for s in ("train", "val", "test")] == [60, 20, 20]
    assert torch.bincount(ds.split("val").labels).tolist() == [3] * 20


def test_cache_hit_and_invalidation(cifar_root: Path, tmp_path: Path, monkeypatch) -> None:
    calls = []
    real = cifar.read_cifar
    monkeypatch.setattr(cifar, "read_cifar", lambda d: calls.append(d) or real(d))
    a = load_fc100(cifar_root, cache_dir=tmp_path / "c", progress=False)
    b = load_fc100(cifar_root, cache_dir=tmp_path / "c", progress=False)
    assert len(calls) == 1
    for s in ("train", "val", "test"):
        assert torch.equal(a.split(s).images, b.split(s).images)
        assert a.split(s).class_names == b.split(s).class_names
    assert a.notes == b.notes
    meta = cifar_root / "cifar-100-python" / "meta"
    st = meta.stat()
    os.utime(meta, ns=(st.st_atime_ns, st.st_mtime_ns + 3_000_000_000))
    load_fc100(cifar_root, cache_dir=tmp_path / "c", progress=False)
    assert len(calls) == 2


# --------------------------------------------------------------------------- errors


def test_missing_files(tmp_path: Path, cifar_root: Path) -> None:
    with pytest.raises(DataError, match="not a folder"):
        load_fc100(tmp_path / "nowhere", cache_dir=None, progress=False)
    (cifar_root / "cifar-100-python" / "meta").unlink()
    with pytest.raises(DataError, match=r"missing: .*cifar-100-python/meta"):
        load_fc100(cifar_root, cache_dir=None, progress=False)


def test_truncated_pickle(cifar_root: Path) -> None:
    path = cifar_root / "cifar-100-python" / "train"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError) as err:
        load_fc100(cifar_root, cache_dir=None, progress=False)
    assert str(path) in str(err.value) and "truncated" in str(err.value)


def test_garbage_pickle(cifar_root: Path) -> None:
    path = cifar_root / "cifar-100-python" / "test"
    path.write_bytes(b"this is not a pickle")
    with pytest.raises(DataError, match=f"{path}.*not a readable pickle"):
        load_fc100(cifar_root, cache_dir=None, progress=False)


def _rewrite(path: Path, edit) -> None:
    with path.open("rb") as f:
        d = pickle.load(f, encoding="bytes")
    edit(d)
    with path.open("wb") as f:
        pickle.dump(d, f, protocol=2)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.pop(b"fine_labels"), "missing key.*fine_labels"),
        (lambda d: d.__setitem__(b"data", d[b"data"][:, :3000]), "N x 3072"),
        (lambda d: d.__setitem__(b"data", d[b"data"].astype(np.float32)), "uint8"),
        (lambda d: d.__setitem__(b"coarse_labels", d[b"coarse_labels"][:-1]), "lengths must match"),
        (lambda d: d.__setitem__(b"fine_labels", [100] * len(d[b"fine_labels"])), "out of range"),
        (
            lambda d: d[b"coarse_labels"].__setitem__(0, (d[b"coarse_labels"][0] + 1) % 20),
            "inconsistent",
        ),
    ],
    ids=["missing-key", "short-rows", "float-data", "short-labels", "bad-fine", "fine-coarse"],
)
def test_bad_contents(cifar_root: Path, edit, match: str) -> None:
    _rewrite(cifar_root / "cifar-100-python" / "train", edit)
    with pytest.raises(DataError, match=match) as err:
        load_fc100(cifar_root, cache_dir=None, progress=False)
    assert "\n" not in str(err.value)


def test_bad_meta(cifar_root: Path) -> None:
    _rewrite(cifar_root / "cifar-100-python" / "meta", lambda d: d[b"fine_label_names"].pop())
    with pytest.raises(DataError, match="fine_label_names must list 100 names"):
        load_fc100(cifar_root, cache_dir=None, progress=False)


# --------------------------------------------------------------------------- safe_pickle


class _SystemCall:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Eval:
    def __reduce__(self):
        return (eval, ("1 + 1",))


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = {b"data": np.zeros(3, np.uint8), b"x": _SystemCall(f"touch {marker}")}
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(UnsafePickleError) as err:
        safe_load(path, encoding="bytes")
    assert "posix.system" in str(err.value) or "os.system" in str(err.value)
    assert str(path) in str(err.value)
    assert not marker.exists()
    # the same file, loaded as CIFAR data, is a DataError too (UnsafePickleError subclasses it)
    cifar_dir = tmp_path / "cifar-100-python"
    cifar_dir.mkdir()
    for name in ("train", "test", "meta"):
        (cifar_dir / name).write_bytes(path.read_bytes())
    with pytest.raises(DataError):
        load_fc100(tmp_path, cache_dir=None, progress=False)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_other_globals_are_refused(protocol: int) -> None:
    with pytest.raises(UnsafePickleError, match=r"(builtins|__builtin__)\.eval"):
        safe_load(io.BytesIO(pickle.dumps(_Eval(), protocol=protocol)))
    # a numpy function that is not needed to rebuild an array
    with pytest.raises(UnsafePickleError, match="numpy.*load"):
        safe_load(io.BytesIO(pickle.dumps(np.load, protocol=protocol)))


def test_codecs_encode_only_latin1() -> None:
    import _codecs

    class Sneaky:
        def __reduce__(self):
            return (_codecs.encode, ("abc", "rot13"))

    with pytest.raises(UnsafePickleError, match="rot13"):
        safe_load(io.BytesIO(pickle.dumps(Sneaky(), protocol=2)))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_legit_numpy_dict_loads(protocol: int) -> None:
    arr = np.arange(3 * 4, dtype=np.uint8).reshape(3, 4)
    obj = {
        b"data": arr,
        "f": np.linspace(0, 1, 5, dtype=np.float32),
        b"labels": [1, 2, 3],
        "names": (b"a", "b"),
        "misc": {"n": None, "t": True, "x": 1.5, "big": 2**70},
    }
    out = safe_load(io.BytesIO(pickle.dumps(obj, protocol=protocol)), encoding="bytes")
    assert np.array_equal(out[b"data"], arr) and out[b"data"].dtype == np.uint8
    assert np.array_equal(out["f"], obj["f"])
    assert out[b"labels"] == [1, 2, 3] and out["names"] == (b"a", "b")
    assert out["misc"] == obj["misc"]


def test_py2_style_strings_with_bytes_and_latin1() -> None:
    # Protocol-2 opcodes as Python 2 writes a str: SHORT_BINSTRING (b'U').
    raw = b"\x80\x02}q\x00U\x04dataq\x01U\x03\xe9t\xe9q\x02s."
    assert safe_load(io.BytesIO(raw), encoding="bytes") == {b"data": b"\xe9t\xe9"}
    assert safe_load(io.BytesIO(raw), encoding="latin1") == {"data": "\xe9t\xe9"}


def test_safe_load_path_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read"):
        safe_load(tmp_path / "nope.pkl")
    trunc = tmp_path / "t.pkl"
    trunc.write_bytes(pickle.dumps({"a": np.zeros(1000)}, protocol=2)[:-50])
    with pytest.raises(DataError, match=r"t\.pkl is truncated"):
        safe_load(trunc)

"""CIFAR-FS on generated cifar-100-python files with CIFAR-100's real class names."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest
import torch

from fsbench.data import cifar_fs
from fsbench.data.base import DataError
from fsbench.data.prepare import prepare

try:
    from datagen import cifar100_fine_names, write_cifar100_python
except ImportError:  # tests/ imported as a package
    from tests.datagen import cifar100_fine_names, write_cifar100_python

SPLIT_DIR = Path(__file__).resolve().parents[1] / "fsbench" / "data" / "splits" / "cifar_fs"


@pytest.fixture(scope="module")
def cifar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    folder = write_cifar100_python(root, per_class_train=2, per_class_test=1,
                                   fine_names=cifar100_fine_names())
    with tarfile.open(root / "cifar-100-python.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="cifar-100-python")
    return root


def test_bertinetto_split(cifar: Path) -> None:
    ds = prepare(cifar_fs.source(cifar / "cifar-100-python"), None, progress=False)
    names = cifar100_fine_names()
    for split, n in {"train": 64, "val": 16, "test": 20}.items():
        s = ds.split(split)
        wanted = {c for _, c in json.loads((SPLIT_DIR / f"{split}.json").read_text())}
        assert set(s.class_names) == wanted and s.num_classes == n
        fine = [names.index(c) for c in s.class_names]
        assert fine == sorted(fine)  # fine-label order
        assert s.labels.bincount().tolist() == [3] * n  # train + test merged
        # datagen writes each image's fine label into its first red value
        assert torch.equal(s.images[:, 0, 0, 0].long(), torch.tensor(fine)[s.labels])
    assert ds.image_size == 32 and ds.mean == (129.3, 124.1, 112.4)


def test_archive_in_place(cifar: Path, tmp_path: Path) -> None:
    a = prepare(cifar_fs.source(cifar), None, progress=False)  # the folder, found in the parent
    tgz = cifar / "cifar-100-python.tar.gz"
    b = prepare(cifar_fs.source(tgz), tmp_path, progress=False)
    for s in ("train", "val", "test"):
        assert torch.equal(a.split(s).images, b.split(s).images)
    (meta,) = tmp_path.glob("*/meta.json")
    assert json.loads(meta.read_text())["checksums"] == {
        tgz.name: hashlib.sha256(tgz.read_bytes()).hexdigest()}


def test_unknown_class_name(cifar: Path, tmp_path: Path) -> None:
    for s in ("train", "val", "test"):
        (tmp_path / f"{s}.json").write_text(json.dumps([["fish", "nemo"]] if s == "val" else []))
    with pytest.raises(DataError, match=r"val.json: class 'nemo' is not a CIFAR-100 fine label name"):
        prepare(cifar_fs.source(cifar, split_dir=tmp_path), None, progress=False)


def test_fake_names_are_refused(tmp_path: Path) -> None:
    write_cifar100_python(tmp_path, per_class_train=1, per_class_test=1)  # fine00, fine01, ...
    with pytest.raises(DataError, match="class 'dolphin' is not a CIFAR-100 fine label name"):
        prepare(cifar_fs.source(tmp_path), None, progress=False)

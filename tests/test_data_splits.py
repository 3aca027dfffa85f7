"""The committed split files: their sources (README table, sha256), counts and disjointness."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

from fsbench.data import cub, ravi, tieredimagenet

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ROOT / "fsbench" / "data" / "splits"
SHARED_SPLITS = ROOT.parent / "shared" / "data" / "splits"


def _readme_table() -> dict[str, str]:
    rows = re.findall(r"^\| `([^`]+)` \|.*\| `([0-9a-f]{64})` \|$", (SPLITS / "README.md").read_text(),
                      flags=re.M)
    return dict(rows)


def test_every_split_file_is_sourced_with_its_sha256() -> None:
    table = _readme_table()
    files = sorted(p.relative_to(SPLITS).as_posix() for p in SPLITS.rglob("*") if p.is_file()
                   and p.name != "README.md")
    assert sorted(table) == files
    for name, sha in table.items():
        assert hashlib.sha256((SPLITS / name).read_bytes()).hexdigest() == sha, name
    text = (SPLITS / "README.md").read_text()
    for source in ("twitter-research/meta-learning-lstm", "renmengye/few-shot-ssl-public",
                   "tristandeleu/pytorch-meta", "wyharveychen/CloserLookFewShot"):
        assert source in text


def test_package_data_ships_every_split_file() -> None:
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    globs = setup["package-data"]["fsbench.data"]
    for p in SPLITS.rglob("*"):
        if p.is_file():
            rel = p.relative_to(SPLITS.parent).as_posix()
            assert any(fnmatch(rel, g) for g in globs), rel


def test_miniimagenet_ravi_csvs() -> None:
    classes = {}
    for split in ("train", "val", "test"):
        rows = ravi.read_split(SPLITS / "miniimagenet" / f"{split}.csv")
        assert all(len(r) == 600 for r in rows.values())
        assert all(1 <= r.number <= 1300 for rs in rows.values() for r in rs)
        classes[split] = set(rows)
    assert [len(classes[s]) for s in ("train", "val", "test")] == [64, 16, 20]
    assert not (classes["train"] & classes["val"] or classes["train"] & classes["test"]
                or classes["val"] & classes["test"])


@pytest.mark.realdata
def test_miniimagenet_csvs_match_the_shared_copies() -> None:
    if not SHARED_SPLITS.is_dir():
        pytest.skip(f"{SHARED_SPLITS} not found (shared data is absent here)")
    for split in ("train", "val", "test"):
        ours = (SPLITS / "miniimagenet" / f"{split}.csv").read_bytes()
        assert ours == (SHARED_SPLITS / "miniimagenet" / f"{split}.csv").read_bytes()


def test_tieredimagenet_split() -> None:
    sizes = {}
    seen: set[str] = set()
    for split in ("train", "val", "test"):
        rows = tieredimagenet.read_split(SPLITS / "tieredimagenet" / f"{split}.csv")
        assert not seen & set(rows) and not seen & set(rows.values())
        seen |= set(rows) | set(rows.values())
        sizes[split] = (len(rows), len(set(rows.values())))
    assert sizes == {"train": (351, 20), "val": (97, 6), "test": (160, 8)}
    assert sum(tieredimagenet.IMAGES.values()) == 779_165


def test_cifar_fs_split() -> None:
    names = {s: [c for _, c in json.loads((SPLITS / "cifar_fs" / f"{s}.json").read_text())]
             for s in ("train", "val", "test")}
    assert [len(names[s]) for s in ("train", "val", "test")] == [64, 16, 20]
    assert len(set().union(*map(set, names.values()))) == 100


def test_fc100_names_match_cifar_fs_union() -> None:
    shared = SHARED_SPLITS / "fc100_split.json"
    if not shared.is_file():
        pytest.skip(f"{shared} not found (shared data is absent here)")
    in_label_order = json.loads(shared.read_text())["fine_label_names_cifar100_order"]
    union = sorted(c for s in ("train", "val", "test")
                   for _, c in json.loads((SPLITS / "cifar_fs" / f"{s}.json").read_text()))
    assert in_label_order == union  # the same 100 names, and CIFAR-100 labels them alphabetically


def test_cub_split_is_closerlook_rule() -> None:
    names = {s: cub.read_split(SPLITS / "cub" / f"{s}.json") for s in ("train", "val", "test")}
    everything = sorted(sum(names.values(), []))
    assert len(everything) == len(set(everything)) == 200
    assert sorted(names["train"]) == [c for i, c in enumerate(everything) if i % 2 == 0]
    assert sorted(names["val"]) == [c for i, c in enumerate(everything) if i % 4 == 1]
    assert sorted(names["test"]) == [c for i, c in enumerate(everything) if i % 4 == 3]


def test_csv_rows_name_their_class() -> None:
    with (SPLITS / "miniimagenet" / "val.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["filename", "label"]
    assert all(r[0].startswith(r[1]) and r[0].endswith(".jpg") and len(r[0]) == 21 for r in rows[1:])

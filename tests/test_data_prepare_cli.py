"""``fsbench datasets`` and ``fsbench data prepare``: listing, preparing, one-line errors, and a
preparation killed mid-way (a real subprocess, SIGKILL) that resumes where it stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from fsbench import config
from fsbench.cli import main
from fsbench.data import images as image_codec
from fsbench.data import miniimagenet as mini
from fsbench.data import registry
from fsbench.data.commands import datasets_table
from fsbench.data.prepare import prepare

try:
    from datagen import write_ilsvrc_train, write_ravi_csvs
    from test_data_folder import write_classes
except ImportError:  # tests/ imported as a package
    from tests.datagen import write_ilsvrc_train, write_ravi_csvs
    from tests.test_data_folder import write_classes

ROOT = Path(__file__).resolve().parents[1]


def _table_text(cache_root: Path) -> str:
    console = Console(width=400, record=True)
    console.print(datasets_table(cache_root))
    return console.export_text()


def test_config_names_the_registry_datasets() -> None:
    assert config.DATASETS == tuple(registry.DATASETS)
    assert config.BUILT_IN == tuple(n for n, d in registry.DATASETS.items() if d.source is None)


def test_datasets_lists_every_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["datasets", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in registry.DATASETS:
        assert name in out
    for fact in ("351/97/160", "100/50/50", "ILSVRC2012_img_train.tar", "CUB_200_2011.tgz",
                 "cifar-100-python.tar.gz", "split.csv"):
        assert fact in out


def test_prepare_then_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_classes(tmp_path / "mine" / "train", {"a": 2, "b": 2})
    write_classes(tmp_path / "mine" / "val", {"c": 2})
    args = ["data", "prepare", "folder", "--source", str(tmp_path / "mine"),
            "--cache-dir", str(tmp_path / "cache"), "--image-size", "32", "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("folder: prepared in ") and "train 2 classes / 4 images" in out[0]
    assert "32x32" in out[0] and out[1].startswith(f"cache entry: {tmp_path / 'cache' / 'datasets'}")
    assert main(args) == 0
    assert "already prepared" in capsys.readouterr().out
    listed = _table_text(tmp_path / "cache")
    assert "yes, 2/1 classes, 32px:" in listed and str(tmp_path / "mine") in listed


def test_prepare_error_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_classes(tmp_path / "mine", {"a": 1, "b": 1})
    (tmp_path / "mine" / "split.csv").write_text("class,split\na,train\nzebra,val\n")
    rc = main(["data", "prepare", "folder", "--source", str(tmp_path / "mine"),
               "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err == (f"fsbench: error: {tmp_path / 'mine' / 'split.csv'} line 3: class folder "
                   f"{tmp_path / 'mine' / 'zebra'} does not exist\n")
    assert not (tmp_path / "cache" / "datasets").exists() or not any(
        p.is_dir() for p in (tmp_path / "cache" / "datasets").iterdir())


def test_unknown_dataset_and_builtin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["data", "prepare", "synthetic", "--source", str(tmp_path)])
    assert "invalid choice: 'synthetic'" in capsys.readouterr().err


KILLED = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from fsbench.data import images, miniimagenet
    from fsbench.data.prepare import prepare

    real = images.decode_image
    def slow(*args):
        time.sleep(0.05)  # slow enough to be killed between two classes
        return real(*args)
    images.decode_image = slow
    prepare(miniimagenet.source(Path(sys.argv[1]), split_dir=Path(sys.argv[2])), Path(sys.argv[3]),
            progress=False)
""")


def test_killed_preparation_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    classes = {f"n0{1000000 + 37 * i:07d}": 6 for i in range(8)}
    write_ilsvrc_train(tmp_path / "ilsvrc", classes, seed=4)
    ranks = {"train": {w: [1, 3, 4, 6] for w in list(classes)[:5]},
             "val": {w: [2, 5, 6, 1] for w in list(classes)[5:]}}
    write_ravi_csvs(tmp_path / "split", ranks)
    tar, cache = tmp_path / "ilsvrc" / "ILSVRC2012_img_train.tar", tmp_path / "root" / "datasets"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(tar), str(tmp_path / "split"), str(cache)],
                            env=env, stderr=subprocess.PIPE)
    done: dict = {}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        progress = list(cache.glob("*.partial/progress.json"))
        if progress:
            try:
                done = json.loads(progress[0].read_text())["done"]
            except ValueError:  # pragma: no cover - replaced atomically, never half-written
                done = {}
            if len(done) >= 2:
                break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert 2 <= len(done) < 8, f"not caught mid-way: {len(done)} classes done; {err.decode()[-500:]}"
    assert not [p for p in cache.iterdir() if p.is_dir() and not p.name.endswith(".partial")]
    assert f"partial, {len(done)}/8 classes" in _table_text(tmp_path / "root")

    decoded: list[str] = []
    real = image_codec.decode_image
    monkeypatch.setattr(image_codec, "decode_image",
                        lambda *a: decoded.append(a[1]) or real(*a))
    src = mini.source(tar, split_dir=tmp_path / "split")
    resumed = prepare(src, cache, progress=False)
    assert len(decoded) == 4 * (8 - len(done))  # only the classes not written before the kill
    fresh = prepare(src, None, progress=False)
    for s in ("train", "val"):
        assert np.array_equal(resumed.split(s).images.numpy(), fresh.split(s).images.numpy())
        assert resumed.split(s).labels.tolist() == fresh.split(s).labels.tolist()
    assert not list(cache.glob("*.partial")) and "yes, 5/3 classes, 84px:" in _table_text(tmp_path / "root")

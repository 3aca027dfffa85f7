"""Fault injection, permanent errors: said once, before any work, for ``run`` and ``sweep``.

A read-only or file ``--output``, a cache path that is a file, a cache file with the wrong keys,
impossible executor options, an unknown executor and an unknown or path-like backbone: each is
one line (exit 2) naming the option or file, given before data is loaded or a job starts, for
``fsbench run``, ``fsbench sweep`` and ``fsbench sweep --dry-run`` alike; and no run ever
writes outside ``--output``.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fsbench.cli import main
from fsbench.config import RunConfig
from fsbench.runner import Run
from fsbench.sweep import plan as plan_module

COMMON = ["--method", "protonet", "--preset", "smoke", "--episodes", "4", "--device", "cpu",
          "--quiet"]
FINETUNE = ["--method", "finetune", "--preset", "smoke", "--episodes", "4", "--device", "cpu",
            "--quiet"]


def _commands(output: Path, cache: Path, base=COMMON) -> dict[str, list[str]]:
    where = ["--output", str(output), "--cache-dir", str(cache)]
    return {"run": ["run", *base, *where], "sweep": ["sweep", *base, *where],
            "dry-run": ["sweep", *base, *where, "--dry-run"]}


def _fails_in_one_line(capsys, argv: list[str], *needles: str) -> str:
    plan_module._load_dataset.cache_clear()
    assert main(argv) == 2, capsys.readouterr()
    captured = capsys.readouterr()
    err = captured.err.splitlines()[-1] + "\n"  # after notes such as "built-in synthetic data"
    assert captured.err.count("fsbench: error: ") == 1 and err.startswith("fsbench: error: "), err
    assert "re-run" not in err and "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture
def read_only(tmp_path):
    """A folder this process cannot write: chmod for a user, a read-only tmpfs for root."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "fsbench-ro", str(folder)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"root cannot mount a read-only tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.mark.parametrize("command", ["run", "sweep", "dry-run"])
def test_a_read_only_output_is_said_before_any_work(tmp_path, capsys, read_only, command):
    argv = _commands(read_only / "out", tmp_path / "cache")[command]
    _fails_in_one_line(capsys, argv, "--output", "cannot be created in", str(read_only))
    assert not (tmp_path / "cache").exists()  # nothing loaded, nothing cached


@pytest.mark.parametrize("command", ["run", "sweep", "dry-run"])
def test_an_output_that_is_a_file(tmp_path, capsys, command):
    (tmp_path / "out").write_text("not a folder")
    _fails_in_one_line(capsys, _commands(tmp_path / "out", tmp_path / "c")[command],
                       f"--output {tmp_path / 'out'} is a file; give a folder")
    _fails_in_one_line(capsys, _commands(tmp_path / "out" / "sub", tmp_path / "c")[command],
                       "cannot be created", "is a file")


@pytest.mark.parametrize("command", ["run", "sweep", "dry-run"])
@pytest.mark.parametrize("which", ["", "pretrained", "datasets"])
def test_a_cache_path_that_is_a_file(tmp_path, capsys, command, which):
    cache = tmp_path / "cache"
    if which:
        cache.mkdir()
    (cache / which if which else cache).write_text("not a folder")
    _fails_in_one_line(capsys, _commands(tmp_path / "out", cache)[command],
                       "--cache-dir", "is a file; give a folder")
    assert not (tmp_path / "out").exists()


def _pretrain_path(tmp_path: Path) -> Path:
    from fsbench.data import load_dataset

    cfg = RunConfig(method="finetune", preset="smoke", episodes=4, device="cpu",
                    output=tmp_path / "out", cache_dir=tmp_path / "cache")
    run = Run(cfg, show_progress=False)
    return run.pretrain_path(load_dataset(cfg.dataset, None, tmp_path / "cache" / "datasets", False))


@pytest.mark.parametrize("command", ["run", "sweep", "dry-run"])
def test_a_pretrained_cache_file_with_the_wrong_keys(tmp_path, capsys, command):
    path = _pretrain_path(tmp_path)
    path.parent.mkdir(parents=True)
    torch.save({"weights": torch.zeros(2)}, path)
    _fails_in_one_line(capsys, _commands(tmp_path / "out", tmp_path / "cache", FINETUNE)[command],
                       str(path), "bad or missing state, history, best_accuracy, best_epoch",
                       "delete it to pre-train again")
    assert not list((tmp_path / "out").glob("*/config.json"))  # no run started


@pytest.mark.parametrize("command", ["run", "dry-run"])
def test_a_read_only_cache_that_must_take_a_pretraining(tmp_path, capsys, read_only, command):
    _fails_in_one_line(capsys, _commands(tmp_path / "out", read_only / "cache", FINETUNE)[command],
                       "--cache-dir", "cannot be created in", str(read_only))


@pytest.fixture
def mini(tmp_path):
    from datagen import write_miniimagenet_folders

    root = tmp_path / "mini"
    write_miniimagenet_folders(root, classes_per_split={"train": 3, "val": 3, "test": 3},
                               per_class=6, size=84)
    return root


def test_a_data_cache_entry_with_the_wrong_keys(mini, tmp_path, capsys):
    from fsbench.atomic import atomic_write_json
    from fsbench.strictjson import read_json

    mini_args = ["--method", "protonet", "--dataset", "miniimagenet", "--data-root", str(mini),
                 "--preset", "smoke", "--way", "3", "--query", "2", "--episodes", "4", "--quiet"]
    commands = _commands(tmp_path / "out", tmp_path / "cache", mini_args)
    plan_module._load_dataset.cache_clear()
    assert main(commands["dry-run"]) == 0  # decodes and caches the splits
    (meta_path,) = (tmp_path / "cache" / "datasets").glob("*/meta.json")
    meta = read_json(meta_path, 1 << 20)
    del meta["classes"]  # still its format and fingerprint: found, but not a dataset
    atomic_write_json(meta_path, meta)
    for command in ("run", "sweep", "dry-run"):
        plan_module._load_dataset.cache_clear()
        _fails_in_one_line(capsys, commands[command], str(meta_path.parent),
                           "does not hold a dataset fsbench can read", "to prepare it again")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(("flags", "message"), [
    (("--cpus-per-job", "0"), "--cpus-per-job must be at least 1, got 0"),
    (("--workers", "0"), "--workers must be at least 1, got 0"),
    (("--retries", "-1"), "--retries must be at least 0, got -1"),
    (("--gpus-per-job", "-1"), "--gpus-per-job must be at least 0, got -1"),
    (("--executor", "slurm", "--slurm-time", "0"), "--slurm-time must be at least 1, got 0"),
    (("--slurm-time", "5"), "--slurm-time: option(s) of the slurm executor; this sweep runs on "
                            "--executor local"),
    (("--executor", "nope"), "unknown executor 'nope'; available: local"),
])
def test_impossible_executor_options_fail_at_planning(tmp_path, capsys, flags, message):
    argv = [*_commands(tmp_path / "out", tmp_path / "c")["dry-run"], *flags]
    _fails_in_one_line(capsys, argv, message)


@pytest.mark.parametrize("backbone", ["../../x", "/tmp/x", "local-dir:/tmp/x", "no_such_net",
                                      "hf-hub:../x", "conv4/../../x"])
@pytest.mark.parametrize("command", ["run", "dry-run"])
def test_unknown_or_path_like_backbones_fail_at_planning(tmp_path, capsys, backbone, command):
    before = set(tmp_path.rglob("*"))
    argv = [*_commands(tmp_path / "out", tmp_path / "c")[command], "--backbone", backbone]
    _fails_in_one_line(capsys, argv, f"unknown backbone {backbone!r}", "paths are not backbones")
    assert set(tmp_path.rglob("*")) == before  # nothing written anywhere


def test_run_names_are_one_path_component_under_output(tmp_path):
    cfg = RunConfig(method="protonet", preset="smoke", episodes=4, device="cpu",
                    output=tmp_path / "out", backbone="hf-hub:timm/resnet10t.a1_in1k")
    run = Run(cfg, show_progress=False)  # a hub id is a name, not a path
    assert run.name.startswith("protonet_synthetic_hf-hub_timm_resnet10t.a1_in1k_5w1s_smoke_")
    for method in ("../../evil", "/etc/evil", "a\\b", "x\x00y"):
        run.cfg = replace(cfg, method=method)  # as a third-party plugin could name itself
        assert os.sep not in run.name and "/" not in run.name and "\x00" not in run.name
        path, lock = run.claim_dir()
        lock.release()
        assert path.parent == tmp_path / "out"

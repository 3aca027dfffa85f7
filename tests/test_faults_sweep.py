"""Fault injection, sweeps: killed workers, a killed driver, two sweeps on one output, failed
jobs under ``--quiet``, damaged runs. Real processes (``fsbench sweep`` in a subprocess,
``os.kill``), smoke preset, synthetic data, a few episodes.

A test plugin, ``stall``, is ProtoNets that stops in its first classification (while its run
directory is locked) until a release file appears, writing its pid to a marker file: the fault
is injected at a known point of a real job, without timing guesses. A retried job finds the
marker and does not stall again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import filelock
import pytest
from test_plugins import write_dist

from fsbench.cli import main
from fsbench.config import RunConfig
from fsbench.results import load_run
from fsbench.runner import run

STALL = """
    import os, time
    from pathlib import Path
    from fsbench import hookimpl
    from fsbench.hookspecs import MethodRecord
    from fsbench_plugins.protonet import PRESETS, ProtoNet

    class Stall(ProtoNet):
        def classify(self, support, support_y, query, way):
            marker = os.environ.get("FSBENCH_TEST_STALLED")
            release = Path(os.environ.get("FSBENCH_TEST_RELEASE", "/nonexistent"))
            if marker and not Path(marker).exists():
                Path(marker).write_text(str(os.getpid()))
                while not release.exists():
                    time.sleep(0.05)
            return super().classify(support, support_y, query, way)

    @hookimpl
    def fsbench_methods():
        return [MethodRecord("stall", Stall, "protonet that stalls once", PRESETS)]
"""


@pytest.fixture
def stall(tmp_path):
    """(environment with the plugin and its marker/release files, marker, release)."""
    site = tmp_path / "site"
    site.mkdir()
    write_dist(site, "ext-stall", "ext_stall", STALL)
    marker, release = tmp_path / "stalled", tmp_path / "release"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0",
           "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "FSBENCH_TEST_STALLED": str(marker), "FSBENCH_TEST_RELEASE": str(release)}
    return env, marker, release


SHORT = ("--set", "episodic.iterations=4", "--set", "episodic.val_every=2",
         "--set", "episodic.val_episodes=2")


def _sweep_argv(out: Path, cache: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "fsbench", "sweep", "--method", "stall", "--preset", "smoke",
            "--episodes", "4", "--device", "cpu", "--output", str(out), "--cache-dir", str(cache),
            "--workers", "1", *SHORT, *extra]


def _start(argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"ended before the fault was injected (rc {proc.returncode}): {out}{err}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail("the fault point was never reached")
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _finished_runs(out: Path) -> list[Path]:
    return sorted(p.parent for p in out.glob("*/summary.json"))


def test_a_killed_worker_is_replaced_and_its_job_retried(tmp_path, stall):
    env, marker, _ = stall
    out = tmp_path / "out"
    sweep = _start(_sweep_argv(out, tmp_path / "cache", "--retries", "1"), env)
    _wait_for(marker.exists, sweep)
    worker = int(marker.read_text())
    os.kill(worker, signal.SIGKILL)
    stdout, stderr = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, stdout + stderr
    assert "BrokenProcessPool" not in stdout + stderr
    (run_dir,) = _finished_runs(out)
    assert load_run(run_dir)["episodes"] == 4  # a valid, complete run


def test_workers_die_with_a_killed_driver(tmp_path, stall):
    env, marker, _ = stall
    out = tmp_path / "out"
    sweep = _start(_sweep_argv(out, tmp_path / "cache"), env)
    _wait_for(marker.exists, sweep)
    worker = int(marker.read_text())
    sweep.send_signal(signal.SIGKILL)
    sweep.communicate()
    deadline = time.time() + 10
    while _alive(worker) and time.time() < deadline:
        time.sleep(0.05)
    assert not _alive(worker), "the worker outlived its driver"
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    filelock.FileLock(str(run_dir / ".lock")).acquire(timeout=0)  # no orphan holds the run


@pytest.mark.parametrize("how", ["prctl", "watchdog"])
def test_die_with_parent_ends_an_orphan(tmp_path, how):
    """The worker initializer's guard, both ways (the watchdog is the non-Linux fallback)."""
    child = (
        "import os, sys, time\n"
        "from fsbench_plugins.executors.local import die_with_parent\n"
        f"sys.platform = {'linux' if how == 'prctl' else 'darwin'!r}\n"
        "how = die_with_parent(os.getppid())\n"
        "print(os.getpid(), how, flush=True)\n"
        "time.sleep(60)\n"
    )
    middle = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {child!r}])\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", middle], stdout=subprocess.PIPE, text=True)
    pid, used = proc.stdout.readline().split()
    assert used == how
    proc.kill()
    proc.wait()
    deadline = time.time() + 10
    while _alive(int(pid)) and time.time() < deadline:
        time.sleep(0.05)
    assert not _alive(int(pid))


def _workers_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.split(")")[-1].split()[1]) == pid and b"spawn_main" in cmdline:
                found.append(int(entry.name))
    return found


def test_a_second_sweep_on_the_same_output_waits_instead_of_running_twice(tmp_path, stall):
    env, marker, release = stall
    out, cache = tmp_path / "out", tmp_path / "cache"
    first = _start(_sweep_argv(out, cache), env)
    _wait_for(marker.exists, first)
    second = _start(_sweep_argv(out, cache), env)
    _wait_for(lambda: _workers_of(second.pid), second)  # planned: the run is not done yet
    time.sleep(3)
    release.touch()
    results = [p.communicate(timeout=300) for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], results
    assert [p.name for p in out.iterdir() if p.is_dir()] == [_finished_runs(out)[0].name]
    log = results[1][0] + results[1][1]
    assert "1 jobs: 1 done, 0 running, 0 queued, 0 failed" in log and "Traceback" not in log


def test_failed_jobs_are_listed_under_quiet_even_when_the_report_fails(tmp_path, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text(  # finetune's pre-training fails in its worker; it is the --paired default
        f'output = "{tmp_path / "out"}"\ncache_dir = "{tmp_path / "cache"}"\n'
        'preset = "smoke"\nepisodes = 4\ndevice = "cpu"\n'
        '[[grid]]\nmethod = "finetune"\n[grid.pretrain]\nlr = -1.0\n'
        '[[grid]]\nmethod = "protonet"\n'
    )
    assert main(["sweep", str(grid), "--quiet"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("fsbench: report: ") and "finetune" in err[0]
    assert err[1].startswith("fsbench: 2 job(s) failed")
    assert any("pretrain.lr must be positive" in line for line in err[2:])
    assert any("its pre-training" in line for line in err[2:]) and len(err) == 4


def _damage(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["accuracy"] = 95.0
    (run_dir / "summary.json").write_text(json.dumps(summary))


def test_a_damaged_run_is_set_aside_and_run_again(tmp_path, capsys):
    cfg = RunConfig(method="protonet", preset="smoke", episodes=4, device="cpu",
                    output=tmp_path / "out", cache_dir=tmp_path / "cache")
    first = run(cfg, show_progress=False)
    good = (first.run_dir / "episodes.jsonl").read_text()
    _damage(first.run_dir)
    again = run(cfg, show_progress=False)  # `fsbench run`: same name, not name-2
    assert again.run_dir == first.run_dir and load_run(again.run_dir)["accuracy"] < 95
    (aside,) = (tmp_path / "out").glob("*.damaged-*")
    assert json.loads((aside / "summary.json").read_text())["accuracy"] == 95.0  # kept

    _damage(first.run_dir)
    argv = ["sweep", "--method", "protonet", "--preset", "smoke", "--episodes", "4", "--device",
            "cpu", "--output", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    assert main([*argv, "--dry-run"]) == 0
    assert "[   damaged] run " in capsys.readouterr().out
    assert main([*argv, "--quiet"]) == 0
    assert (first.run_dir / "episodes.jsonl").read_text() == good
    assert len(list((tmp_path / "out").glob("*.damaged-*"))) == 2
    assert main(["report", str(tmp_path / "out"), "--format", "csv"]) == 0  # skips the set-aside

"""Fault injection: killed runs, concurrent runs, bad inputs, untrusted files, failing plugins.

Each test drives the real command line in a subprocess (smoke preset, synthetic data, CPU) and
checks what a user would see: a one-line error with exit code 2, nothing half-written under a
finished name, and an interrupted run that completes to the same results as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_plugins import write_dist

# Timing-independent parts of a summary: what must match between a resumed and a clean run.
STABLE = ("method", "dataset", "backbone", "way", "shot", "query", "episodes", "seed", "preset",
          "eval_split", "hard_tasks", "hard_tasks_used", "accuracy", "ci95", "best_val_accuracy",
          "best_iteration")


def env(**extra: str) -> dict[str, str]:
    out = dict(os.environ)
    out.update({"OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}, **extra)
    return out


def fsbench(*argv: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fsbench", *argv], capture_output=True, text=True,
                          env=kw.pop("env", env()), timeout=kw.pop("timeout", 300), **kw)


def run_args(out: Path, cache: Path, method: str = "protonet", *extra: str) -> list[str]:
    return ["run", "--method", method, "--preset", "smoke", "--episodes", "40", "--output", str(out),
            "--cache-dir", str(cache), "--quiet", "--device", "cpu", *extra]


def one_run(out: Path) -> Path:
    (summary,) = list(out.glob("*/summary.json"))
    return summary.parent


def stable(run_dir: Path) -> tuple[dict, str]:
    summary = json.loads((run_dir / "summary.json").read_text())
    return {k: summary[k] for k in STABLE}, (run_dir / "episodes.jsonl").read_text()


def kill_when(cmd: list[str], ready, env_=None, timeout: float = 240) -> None:
    """Start ``cmd``, SIGKILL it as soon as ``ready()`` is true, and make sure it died."""
    proc = subprocess.Popen([sys.executable, "-m", "fsbench", *cmd], env=env_ or env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"run ended before the fault was injected: {proc.stderr.read().decode()[-2000:]}")
            if time.time() > deadline:
                pytest.fail("the fault point was never reached")
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()


def assert_no_partial_files(root: Path) -> None:
    for path in root.rglob("*.json"):
        json.loads(path.read_text())  # every finished name parses
    for path in root.rglob("*.jsonl"):
        for line in path.read_text().splitlines():
            json.loads(line)


# -- interrupted runs -------------------------------------------------------------------------

LONGER = ("--set", "episodic.iterations=60", "--set", "episodic.val_every=10")


def test_kill_during_meta_training_then_rerun_matches_clean_run(tmp_path):
    clean, killed, cache = tmp_path / "clean", tmp_path / "killed", tmp_path / "cache"
    assert fsbench(*run_args(clean, cache, "protonet", *LONGER)).returncode == 0
    kill_when(run_args(killed, cache, "protonet", *LONGER), lambda: list(killed.glob("*/checkpoint.pt")))
    assert not list(killed.glob("*/summary.json"))
    assert_no_partial_files(killed)
    again = fsbench(*run_args(killed, cache, "protonet", *LONGER))  # the same command resumes
    assert again.returncode == 0, again.stderr
    assert stable(one_run(killed)) == stable(one_run(clean))


def test_kill_during_pretraining_then_resume_matches_clean_run(tmp_path):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    more = ("--set", "pretrain.epochs=6")
    assert fsbench(*run_args(clean, tmp_path / "c1", "finetune", *more)).returncode == 0
    cache = tmp_path / "c2"
    kill_when(run_args(killed, cache, "finetune", *more),
              lambda: bool(list(cache.glob("pretrained/*.ckpt.pt"))))
    again = fsbench(*run_args(killed, cache, "finetune", *more), "--resume")
    assert again.returncode == 0, again.stderr
    assert stable(one_run(killed)) == stable(one_run(clean))


SLOW_EVAL = """
    import os, time
    from pathlib import Path
    from fsbench import hookimpl
    from fsbench.hookspecs import MethodRecord
    from fsbench_plugins.protonet import PRESETS, ProtoNet

    class SlowEval(ProtoNet):
        evaluations = 0

        def classify(self, support, support_y, query, way):
            marker = os.environ.get("FSBENCH_TEST_EVAL_MARKER")
            SlowEval.evaluations += 1
            if marker and SlowEval.evaluations == 2:  # 1: the final val point, 2: the test episodes
                Path(marker).touch()
                time.sleep(30)
            return super().classify(support, support_y, query, way)

    @hookimpl
    def fsbench_methods():
        return [MethodRecord("slow_eval", SlowEval, "protonet that stalls in evaluation", PRESETS)]
"""


def test_kill_during_evaluation_then_rerun_matches_clean_run(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    write_dist(site, "ext-slow", "ext_slow", SLOW_EVAL)
    base_env = env(PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    killed, cache = tmp_path / "killed", tmp_path / "cache"
    marker = tmp_path / "in-eval"
    kill_when(run_args(killed, cache, "slow_eval", "--set", "episodic.val_every=1000"),
              marker.exists, env_={**base_env, "FSBENCH_TEST_EVAL_MARKER": str(marker)})
    assert not list(killed.glob("*/summary.json"))
    again = fsbench(*run_args(killed, cache, "slow_eval", "--set", "episodic.val_every=1000"), env=base_env)
    assert again.returncode == 0, again.stderr
    clean_again = fsbench(*run_args(tmp_path / "clean2", cache, "slow_eval", "--set", "episodic.val_every=1000"),
                          env=base_env)
    assert clean_again.returncode == 0
    assert stable(one_run(killed)) == stable(one_run(tmp_path / "clean2"))


# -- concurrency ------------------------------------------------------------------------------

def test_two_concurrent_runs_same_root_do_not_collide(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-m", "fsbench", *run_args(out, cache, "finetune")],
                              env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    dirs = sorted(p.parent for p in out.glob("*/summary.json"))
    assert len(dirs) == 2 and dirs[0].name + "-2" == dirs[1].name
    assert stable(dirs[0]) == stable(dirs[1])
    # one pre-trained backbone, trained once: the other run reused it
    assert len([p for p in (cache / "pretrained").glob("*.pt") if ".ckpt" not in p.name]) == 1
    logs = "".join(err for _, err in results)
    assert logs.count("reusing pre-trained backbone") == 1, logs


# -- bad inputs -------------------------------------------------------------------------------

def assert_one_line_failure(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("fsbench: error:")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def mini_args(root: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["run", "--method", "protonet", "--dataset", "miniimagenet", "--data-root", str(root),
            "--preset", "smoke", "--way", "3", "--shot", "1", "--query", "2", "--episodes", "5",
            "--output", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--quiet", *extra]


@pytest.fixture
def mini(tmp_path):
    from datagen import write_miniimagenet_folders

    root = tmp_path / "mini"
    write_miniimagenet_folders(root, classes_per_split={"train": 3, "val": 3, "test": 3}, per_class=6, size=84)
    return root


def test_corrupt_jpeg_named(mini, tmp_path):
    victim = sorted((mini / "train").rglob("*.jpg"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    proc = fsbench(*mini_args(mini, tmp_path))
    assert_one_line_failure(proc, victim.name)
    assert not list((tmp_path / "out").glob("*/summary.json"))


def test_empty_class_folder_named(mini, tmp_path):
    folder = sorted((mini / "val").iterdir())[0]
    for f in folder.iterdir():
        f.unlink()
    assert_one_line_failure(fsbench(*mini_args(mini, tmp_path)), folder.name)


def test_class_smaller_than_shot_plus_query(mini, tmp_path):
    proc = fsbench(*mini_args(mini, tmp_path, "--shot", "5", "--query", "5"))
    assert_one_line_failure(proc, "shot + query = 5 + 5 = 10", "6 images")


def test_truncated_cifar_pickle(tmp_path):
    from datagen import write_cifar100_python

    root = write_cifar100_python(tmp_path / "c")
    train = Path(root) / "train"
    train.write_bytes(train.read_bytes()[:1000])
    proc = fsbench("run", "--method", "protonet", "--dataset", "fc100", "--data-root", str(root),
                   "--preset", "smoke", "--output", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "k"))
    assert_one_line_failure(proc, "train")


@pytest.mark.parametrize("argv, needle", [
    (("--preset", "huge"), "invalid choice: 'huge'"),
    (("--method", "nope"), "unknown method 'nope'"),
    (("--backbone", "no_such_net"), "no_such_net"),
])
def test_unknown_names(tmp_path, argv, needle):
    args = run_args(tmp_path / "o", tmp_path / "c")
    for flag, value in zip(argv[::2], argv[1::2], strict=False):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    proc = fsbench(*args)
    assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr


DIVERGING = """
    import torch
    from fsbench import hookimpl
    from fsbench.hookspecs import MethodRecord
    from fsbench_plugins.protonet import PRESETS, ProtoNet

    class Diverging(ProtoNet):
        def meta_train_step(self, *args):
            out = super().meta_train_step(*args)
            out.loss = out.loss * float("nan")  # what an exploding update reports
            return out

    @hookimpl
    def fsbench_methods():
        return [MethodRecord("diverging", Diverging, "reports a NaN loss", PRESETS)]
"""


def test_diverging_run_stops_with_message(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    write_dist(site, "ext-div", "ext_div", DIVERGING)
    proc = fsbench(*run_args(tmp_path / "o", tmp_path / "c", "diverging"), env=env(PYTHONPATH=str(site)))
    assert_one_line_failure(proc, "diverged", "not finite")
    assert not list((tmp_path / "o").glob("*/summary.json"))


# -- untrusted files --------------------------------------------------------------------------

class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_refused_without_executing(tmp_path):
    out, cache, marker = tmp_path / "o", tmp_path / "c", tmp_path / "pwned"
    kill_when(run_args(out, cache, "protonet", *LONGER), lambda: list(out.glob("*/checkpoint.pt")))
    (ckpt,) = list(out.glob("*/checkpoint.pt"))
    torch.save({"iteration": Evil(marker)}, ckpt)
    proc = fsbench(*run_args(out, cache, "protonet", *LONGER))
    assert_one_line_failure(proc, "refusing to load", "checkpoint.pt")
    assert not marker.exists()


def test_malicious_pretrained_cache_refused_without_executing(tmp_path):
    out, cache, marker = tmp_path / "o", tmp_path / "c", tmp_path / "pwned"
    assert fsbench(*run_args(out, cache, "finetune")).returncode == 0
    weights = [p for p in (cache / "pretrained").glob("*.pt") if "ckpt" not in p.name]
    assert weights
    for path in weights:
        with open(path, "wb") as fh:
            pickle.dump({"state": Evil(marker)}, fh)
    proc = fsbench(*run_args(tmp_path / "o2", cache, "finetune"))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not marker.exists()


# -- failing plugins --------------------------------------------------------------------------

RAISING = """
    from fsbench import hookimpl
    from fsbench.hookspecs import MethodRecord
    from fsbench_plugins.protonet import PRESETS, ProtoNet

    class Raising(ProtoNet):
        def meta_train_step(self, *args, **kwargs):
            raise RuntimeError("exploded on purpose")

    @hookimpl
    def fsbench_methods():
        return [MethodRecord("raising", Raising, "fails in training", PRESETS)]
"""


def test_plugin_raising_during_training_is_named(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    write_dist(site, "ext-raise", "ext_raise", RAISING)
    proc = fsbench(*run_args(tmp_path / "o", tmp_path / "c", "raising"),
                   env=env(PYTHONPATH=str(site)))
    assert_one_line_failure(proc, "ext_raise", "raising", "exploded on purpose")


def test_broken_plugin_does_not_stop_fsbench(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    write_dist(site, "ext-broken2", "ext_broken2", "raise SyntaxError('oops')\n")
    proc = fsbench("methods", env=env(PYTHONPATH=str(site)))
    assert proc.returncode == 0
    assert "protonet" in proc.stdout and "ext_broken2" in proc.stdout

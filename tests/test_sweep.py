"""`fsbench sweep`: grid -> plan -> executors (local pool, a real local Ray cluster, submitit's
local executor), checked against the same runs made one by one with the runner.

Every sweep here is the smoke preset on the synthetic data with 20 test episodes; the
reference runs are made once per module, in this process, with one torch thread (the thread
count each sweep worker gets here), so accuracies must match episode by episode.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

import pytest
import torch

from fsbench.cli import build_parser, main
from fsbench.config import RunConfig
from fsbench.errors import ConfigError, FsbenchError, PluginError
from fsbench.hookspecs import ExecutorRecord, hookimpl
from fsbench.options import options_of
from fsbench.plugins import load_registry
from fsbench.results import EPISODES, SUMMARY, read_jsonl
from fsbench.sweep.cli import configs_from_args
from fsbench.sweep.driver import run_sweep
from fsbench.sweep.executor import ExecutorOptions
from fsbench.sweep.plan import build_plan
from fsbench_plugins.executors.local import LocalExecutor, LocalOptions

EPISODES_N = 20
METHODS = ("mtl", "finetune")
SEEDS = (0, 1)


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["sweep", *argv])


def _smoke(output: Path, cache: Path, methods=METHODS, seeds=SEEDS) -> list[RunConfig]:
    return [RunConfig(method=m, preset="smoke", episodes=EPISODES_N, seed=s, device="cpu",
                      output=output, cache_dir=cache) for m in methods for s in seeds]


def _episodes(run_dir: Path) -> list[float]:
    return [r["accuracy"] for r in read_jsonl(run_dir / EPISODES)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The smoke runs made one by one with the runner (`fsbench run`'s code path)."""
    from fsbench.runner import run

    root = tmp_path_factory.mktemp("reference")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = {}
        for cfg in _smoke(root / "out", root / "cache"):
            result = run(cfg, show_progress=False)
            out[result.run_dir.name] = [float(a) for a in result.accuracies.tolist()]
    finally:
        torch.set_num_threads(threads)
    return {"runs": out, "cache": root / "cache"}


def _check_equal(outcome, plan, reference) -> None:
    assert outcome.ok, outcome.failed
    assert len(outcome.run_dirs) == len(plan.runs)
    for run_dir in outcome.run_dirs:
        assert run_dir.name in reference["runs"], run_dir.name
        assert _episodes(run_dir) == reference["runs"][run_dir.name], run_dir.name
        summary = json.loads((run_dir / SUMMARY).read_text())
        assert summary["run_id"] == run_dir.name


# -- grid ----------------------------------------------------------------------------------------


def test_grid_from_flags_is_the_cartesian_product(tmp_path):
    cfgs = configs_from_args(_args("--method", "mtl,mtl_ht,finetune", "--shot", "1,5",
                                   "--seed", "0,1,2", "--output", str(tmp_path)))
    assert len(cfgs) == 18
    assert {(c.method, c.shot, c.seed) for c in cfgs} == {
        (m, s, r) for m in ("mtl", "mtl_ht", "finetune") for s in (1, 5) for r in (0, 1, 2)}
    assert all(c.output == tmp_path for c in cfgs)


def test_grid_toml_products_overrides_and_command_line(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(
        'output = "OUT"\nepisodes = 50\nseed = [0, 1]\n'
        '[[grid]]\nmethod = ["finetune", "mtl"]\nshot = [1, 5]\n'
        '[[grid]]\nmethod = "maml"\nshot = 1\n[grid.episodic]\niterations = 7\n'.replace(
            "OUT", str(tmp_path / "o"))
    )
    cfgs = configs_from_args(_args(str(grid)))
    assert len(cfgs) == 2 * 2 * 2 + 2
    maml = [c for c in cfgs if c.method == "maml"]
    assert all(c.overrides == {"episodic": {"iterations": 7}} for c in maml)
    assert all(c.episodes == 50 and c.output == tmp_path / "o" for c in cfgs)
    # options on the command line replace the file's values in every grid
    cfgs = configs_from_args(_args(str(grid), "--seed", "3", "--set", "hparams.x=1"))
    assert {c.seed for c in cfgs} == {3} and len(cfgs) == 5
    assert all(c.overrides.get("hparams") == {"x": 1} for c in cfgs)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--method", "mtl,nosuchmethod"], "unknown method 'nosuchmethod'"),
        (["--method", "mtl", "--shot", ""], "--shot is an empty list"),
        (["--method", "mtl", "--seed", "0,x"], "--seed value 'x' is invalid"),
        (["--method", "finetune", "--shot", "1,500", "--preset", "smoke"], "shot + query = 500 + 15"),
        (["--method", "mtl", "--executor", "nosuchexecutor"], "unknown executor 'nosuchexecutor'"),
    ],
)
def test_a_bad_grid_fails_before_any_job_with_one_line(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    code = main(["sweep", *argv, "--output", str(out), "--cache-dir", str(tmp_path / "cache"),
                 "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()  # nothing ran
    assert not (tmp_path / "cache" / "pretrained").exists()


def test_a_bad_grid_file_names_the_key(tmp_path, capsys):
    grid = tmp_path / "g.toml"
    grid.write_text('[[grid]]\nmethod = []\n')
    assert main(["sweep", str(grid)]) == 2
    assert "grid[0].method is an empty list" in capsys.readouterr().err
    grid.write_text('method = "mtl"\nshots = [1]\n')
    assert main(["sweep", str(grid)]) == 2
    assert "unknown key 'shots'" in capsys.readouterr().err


# -- plan ----------------------------------------------------------------------------------------


def test_dry_run_prints_the_dag_and_what_is_done(tmp_path, capsys, reference):
    argv = ["sweep", "--method", "mtl,finetune,protonet", "--seed", "0,1", "--preset", "smoke",
            "--episodes", str(EPISODES_N), "--device", "cpu", "--output", str(tmp_path / "out"),
            "--cache-dir", str(reference["cache"]), "--dry-run"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "6 run(s) (0 done, 6 to run), 2 pre-training(s) (2 cached, 0 to run)" in text
    assert text.count("after pretrain:synthetic_conv4_smoke_s0_") == 2  # mtl and finetune, seed 0
    assert "protonet_synthetic" in text
    assert not (tmp_path / "out").exists()
    plan = build_plan(_smoke(tmp_path / "out", tmp_path / "fresh"))
    assert len(plan.pretrains) == 2 and all(len(p.runs) == 2 for p in plan.pretrains.values())
    assert {r.pretrain for r in plan.runs.values()} == set(plan.pretrains)


def test_plan_of_a_large_grid_is_quick(tmp_path):
    cfgs = [RunConfig(method=m, preset="smoke", seed=s, shot=k, device="cpu", output=tmp_path)
            for m in ("mtl", "finetune", "protonet", "maml") for s in range(50) for k in (1, 5)]
    plan = build_plan(cfgs)
    assert len(plan.runs) == 400 and len(plan.pretrains) == 50
    assert plan.seconds < 30


# -- executors -----------------------------------------------------------------------------------


def test_bundled_executors_register_through_the_hook_and_a_third_party_can_add_one():
    registry = load_registry()
    assert {"local", "ray", "slurm"} <= set(registry.executors)
    assert registry.executors["ray"].requires == 'pip install "fsbench[ray]"'
    assert registry.executors["local"].plugin == "executors"

    class Plugin:
        @hookimpl
        def fsbench_executors(self):
            return [ExecutorRecord("mine", lambda options: None, "a third party's")]

    assert "mine" in load_registry(extra={"thirdparty": Plugin()}).executors

    class Clash:
        @hookimpl
        def fsbench_executors(self):
            return [ExecutorRecord("local", lambda options: None, "a clash")]

    with pytest.raises(PluginError, match="'executors' and 'clash'"):
        load_registry(extra={"clash": Clash()})


def _flag_names(options: type) -> set[str]:
    return {d.flag for d in options_of(options)}


def test_the_core_defines_no_executor_flag():
    """The executors' flags come from their plugins: no module of fsbench/ holds one, and the
    modules that wire the sweep (its command line, the hook, the registry) read no executor's
    option by name."""
    import ast

    import fsbench

    records = load_registry().executors
    flags = {f for r in records.values() if r.options for f in _flag_names(r.options)}
    assert {"--workers", "--ray-address", "--slurm-partition", "--no-shared-fs-check"} <= flags
    names = {d.name for r in records.values() if r.options for d in options_of(r.options)}
    core = Path(fsbench.__file__).parent
    wiring = {core / "cli.py", core / "hookspecs.py", core / "plugins.py", *core.glob("sweep/*.py")}
    for path in sorted(core.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant):
                assert node.value not in flags, f"{path.relative_to(core.parent)} holds {node.value!r}"
            word = (node.attr if isinstance(node, ast.Attribute) else node.arg
                    if isinstance(node, ast.keyword) else None)
            if path in wiring:
                assert word not in names, f"{path.relative_to(core.parent)} reads {word!r}"
    sweep = build_parser(executor_flags=False)._subparsers._group_actions[0].choices["sweep"]
    assert not flags & set(sweep._option_string_actions)


def test_the_sweep_takes_keys_and_checks_from_the_run_not_the_engine():
    """No module of fsbench/sweep/ imports fsbench.engine: names, pre-training keys and episode
    checks come from fsbench.runner.Run."""
    import ast

    import fsbench.sweep

    for path in sorted(Path(fsbench.sweep.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.startswith("fsbench.engine") for n in names), (path.name, names)


def test_sweep_help_lists_each_executors_flags_under_its_name(capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    group, where = "", {}  # flag -> the --help group it is listed in
    for line in capsys.readouterr().out.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            group = line[:-1]
        elif line.startswith("  --"):
            where[line.split()[0].rstrip(",")] = group
    for name, record in load_registry().executors.items():
        for flag in _flag_names(record.options) if record.options else ():
            assert where.get(flag) == f"{name} executor", (flag, where.get(flag))
    assert where["--cpus-per-job"] == where["--executor"] == "execution"


def test_a_third_party_executor_declares_its_options_and_receives_them_typed(tmp_path):
    from dataclasses import dataclass

    from fsbench.options import option, parse_int
    from fsbench.sweep.cli import add_sweep_arguments, build_executor, sweep_options

    @dataclass(frozen=True)
    class MineOptions:
        mine_speed: int = option(1, parse=parse_int, least=1, help="how fast")

    built = []

    class Plugin:
        @hookimpl
        def fsbench_executors(self):
            return [ExecutorRecord("mine", lambda common, own: built.append((common, own)),
                                   "a third party's", options=MineOptions),
                    ExecutorRecord("greedy", lambda common, own: None, "clashes",
                                   options=LocalOptions)]

    executors = load_registry(extra={"thirdparty": Plugin()}).executors
    parser = add_sweep_arguments(argparse.ArgumentParser(), executors)
    assert "--mine-speed" in parser.format_help()
    options = sweep_options(parser.parse_args(["--executor", "mine", "--mine-speed", "3",
                                               "--retries", "1"]), executors)
    assert options.options == MineOptions(mine_speed=3) and options.common.retries == 1
    build_executor(options, executors)
    assert built == [(ExecutorOptions(retries=1), MineOptions(mine_speed=3))]
    with pytest.raises(ConfigError, match="--mine-speed must be at least 1, got 0"):
        sweep_options(parser.parse_args(["--executor", "mine", "--mine-speed", "0"]), executors)
    with pytest.raises(ConfigError, match="--mine-speed: option.s. of the mine executor; this "
                                          "sweep runs on --executor local"):
        sweep_options(parser.parse_args(["--mine-speed", "2"]), executors)
    with pytest.raises(ConfigError, match="executor 'greedy' .thirdparty. declares --workers"):
        sweep_options(parser.parse_args(["--executor", "greedy"]), executors)


@pytest.mark.parametrize(("module", "extra"), [("ray", "ray"), ("submitit", "slurm")])
def test_a_missing_extra_names_the_install_command(monkeypatch, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # import fails
    record = load_registry().executors[extra]
    with pytest.raises(FsbenchError, match=rf'pip install "fsbench\[{extra}\]"'):
        record.factory(ExecutorOptions(), None)


def test_local_sweep_equals_single_runs_resumes_and_is_idempotent(tmp_path, reference, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cfgs = _smoke(tmp_path / "out", tmp_path / "cache", seeds=(0,))
    plan = build_plan(cfgs)
    assert len(plan.todo_pretrains) == 1
    outcome = run_sweep(plan, LocalExecutor(options=LocalOptions(workers=1)), show=False)
    _check_equal(outcome, plan, reference)
    assert len(outcome.pretrained) == 1  # trained once, for both runs

    again = build_plan(cfgs)  # everything done: nothing is handed to the executor
    assert not again.todo_runs and not again.todo_pretrains
    states = run_sweep(again, LocalExecutor(options=LocalOptions(workers=1)), show=False).states
    assert {s.state for s in states.values()} == {"skipped"}

    lost = next(iter(plan.runs.values()))
    (lost.run_dir / SUMMARY).unlink()  # as if the sweep had crashed during this run
    resumed = build_plan(cfgs)
    assert [r.id for r in resumed.todo_runs] == [lost.id] and not resumed.todo_pretrains
    outcome = run_sweep(resumed, LocalExecutor(options=LocalOptions(workers=2)), show=False)  # 1 job
    _check_equal(outcome, resumed, reference)
    assert [s.id for s in outcome.states.values() if s.state == "done"] == [lost.id]


def test_the_cli_sweep_reports_a_failing_job_goes_on_and_ends_with_the_report(
        tmp_path, reference, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out, report = tmp_path / "out", tmp_path / "report.md"
    grid = tmp_path / "grid.toml"
    grid.write_text(  # the second grid's pre-training fails in its worker, not in the plan
        f'output = "{out}"\ncache_dir = "{reference["cache"]}"\n'
        f'preset = "smoke"\nepisodes = {EPISODES_N}\ndevice = "cpu"\nseed = 0\n'
        '[[grid]]\nmethod = ["mtl", "finetune"]\n'
        '[[grid]]\nmethod = "finetune"\n[grid.pretrain]\nlr = -1.0\n'
    )
    assert main(["sweep", str(grid), "--quiet", "--report", str(report)]) == 1
    assert "2 job(s) failed" in capsys.readouterr().err
    text = report.read_text()  # the report of the runs that finished
    assert "mtl" in text and "finetune" in text and "Paired comparison against mtl" in text
    runs = sorted(p for p in out.iterdir() if (p / SUMMARY).exists())
    assert len(runs) == 2
    for run_dir in runs:
        assert _episodes(run_dir) == reference["runs"][run_dir.name]

    assert main(["sweep", str(grid), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "3 run(s) (2 done, 1 to run)" in text and "(1 cached, 1 to run)" in text

    plan = build_plan(configs_from_args(_args(str(grid))))  # again: only the failed jobs run
    outcome = run_sweep(plan, LocalExecutor(options=LocalOptions(workers=1)), show=False)
    bad_pre, = (p.id for p in plan.todo_pretrains)
    assert "pretrain.lr must be positive" in outcome.failed[bad_pre]
    assert all(len(e.splitlines()) == 1 for e in outcome.failed.values())
    assert len(outcome.failed) == 2 and len(outcome.run_dirs) == 2


# -- Ray -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


def test_ray_sweep_pretrains_once_and_equals_single_runs(tmp_path, reference, ray_cluster):
    from fsbench_plugins.executors.ray import RayExecutor

    plan = build_plan(_smoke(tmp_path / "out", tmp_path / "cache"))
    assert len(plan.todo_pretrains) == 2 and len(plan.todo_runs) == 4
    outcome = run_sweep(plan, RayExecutor(), show=False)
    _check_equal(outcome, plan, reference)
    assert sorted(outcome.pretrained) == sorted(p.key for p in plan.pretrains.values())
    assert all(outcome.states[p].attempts == 1 for p in plan.pretrains)
    for p in plan.pretrains.values():  # the driver cached what the workers trained
        assert p.path.exists()


def test_ray_worker_killed_mid_run_is_retried_with_the_same_results(tmp_path, reference, ray_cluster):
    """The worker running a job is killed at the job's first event; Ray retries the job.

    The kill races the job (a smoke run takes seconds, and a loaded machine delivers events late):
    when the job has already finished, the scenario is tried again on a fresh output.
    """
    from fsbench_plugins.executors.ray import RayExecutor

    for attempt in range(4):
        cfgs = _smoke(tmp_path / f"out{attempt}", reference["cache"], seeds=(0,))
        plan = build_plan(cfgs)
        victim = next(r.id for r in plan.runs.values() if r.cfg.method == "mtl")
        killed: list[int] = []

        def kill(event, victim=victim, killed=killed):
            if event.get("job") == victim and event.get("state") in ("running", "phase") and not killed:
                killed.append(event["pid"])
                os.kill(event["pid"], signal.SIGKILL)

        outcome = run_sweep(plan, RayExecutor(ExecutorOptions(retries=2)), show=False, on_event=kill)
        assert killed
        _check_equal(outcome, plan, reference)
        if outcome.states[victim].attempts >= 2:
            break
    assert outcome.states[victim].attempts >= 2, "the kill never landed before the job ended"


# -- submitit ----------------------------------------------------------------------------------


def test_submitit_local_executor_equals_single_runs(tmp_path, reference, monkeypatch):
    pytest.importorskip("submitit")
    from fsbench_plugins.executors.slurm import SlurmExecutor, SlurmOptions

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    plan = build_plan(_smoke(tmp_path / "out", tmp_path / "cache", methods=("mtl",), seeds=(1,)))
    assert len(plan.todo_pretrains) == 1
    executor = SlurmExecutor(ExecutorOptions(output=tmp_path / "out"),
                             SlurmOptions(slurm_cluster="local"))
    outcome = run_sweep(plan, executor, show=False)
    _check_equal(outcome, plan, reference)
    assert len(outcome.pretrained) == 1


def test_slurm_needs_a_shared_filesystem(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    from fsbench.sweep.executor import Work
    from fsbench_plugins.executors import slurm

    plan = build_plan(_smoke(tmp_path / "out", tmp_path / "cache", methods=("protonet",), seeds=(0,)))
    executor = slurm.SlurmExecutor(ExecutorOptions(output=tmp_path / "out"))
    work = Work([], plan.todo_runs, {})
    monkeypatch.setattr(slurm, "filesystem_type", lambda path: "ext4")
    with pytest.raises(ConfigError, match="--output on a filesystem shared .* is on ext4"):
        executor.check(work)
    monkeypatch.setattr(slurm, "filesystem_type", lambda path: "nfs4")
    executor.check(work)


def test_live_view_shows_each_job_its_phase_result_error_and_totals():
    from rich.console import Console

    from fsbench.sweep.driver import JobState, _render

    states = {
        "a": JobState("a", "pretrain", "pretrain k", state="done", detail="val probe 31.0% (trained)"),
        "b": JobState("b", "run", "mtl_run", state="running", phase="meta-train", attempts=2),
        "c": JobState("c", "run", "maml_run", state="failed", detail="ConfigError: bad"),
        "d": JobState("d", "run", "finetune_run"),
    }
    console = Console(width=200, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(_render(states, began=0.0))
    text = console.export_text()
    assert "meta-train (attempt 2)" in text and "ConfigError: bad" in text
    assert "val probe 31.0%" in text and "queued" in text
    assert "4 jobs: 1 done, 1 running, 1 queued, 1 failed, 0 skipped; elapsed" in text


def test_local_executor_gives_each_worker_its_gpu_and_share_of_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "16")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    assert LocalExecutor().layout() == (4, 4, ["0", "1", "2", "3"])
    assert LocalExecutor(options=LocalOptions(workers=2)).layout() == (2, 8, ["0", "1"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert LocalExecutor().layout() == (1, 16, None)
    assert LocalExecutor(options=LocalOptions(workers=3)).layout() == (3, 5, None)
    assert LocalExecutor(ExecutorOptions(cpus_per_job=3), LocalOptions(workers=2)).layout() == (2, 3, None)


class _FakeSlurmJob:
    def __init__(self, job_id: str, args: tuple) -> None:
        kind, job_id_, _cfg, status, _threads = args
        self.job_id, self.state = job_id, "COMPLETED"
        result = ({"ok": True, "key": "k", "cached": False, "best_accuracy": 30.0}
                  if kind == "pretrain" else {"ok": True, "summary": {"accuracy": 30.0, "ci95": 1.0}})
        Path(status).write_text(json.dumps({"job": job_id_, "state": "result", "result": result}))

    def done(self) -> bool:
        return True


class _FakeAutoExecutor:
    """Records what the slurm executor submits, with which parameters (no Slurm here)."""

    log: list = []

    def __init__(self, folder, cluster=None) -> None:
        self.cluster, self.params, self.in_batch = cluster, {}, False

    def update_parameters(self, **kwargs) -> None:
        self.params.update(kwargs)

    def submit(self, fn, *args):
        job = _FakeSlurmJob(str(100 + len(self.log)), args)
        extra = self.params.get("slurm_additional_parameters", {})
        self.log.append((args[0], job.job_id, extra.get("dependency"), self.in_batch, dict(self.params)))
        return job

    def batch(self):
        import contextlib

        @contextlib.contextmanager
        def ctx():
            self.in_batch = True
            yield
            self.in_batch = False

        return ctx()


@pytest.mark.parametrize("array", [False, True])
def test_slurm_submits_runs_afterok_their_pretraining(tmp_path, monkeypatch, array):
    pytest.importorskip("submitit")
    import types

    from fsbench_plugins.executors import slurm

    _FakeAutoExecutor.log = []
    monkeypatch.setattr(slurm, "_import_submitit", lambda: types.SimpleNamespace(AutoExecutor=_FakeAutoExecutor))
    plan = build_plan(_smoke(tmp_path / "out", tmp_path / "cache", seeds=(0,)))
    common = ExecutorOptions(output=tmp_path / "out", gpus_per_job=1)
    options = slurm.SlurmOptions(slurm_partition="gpu", slurm_time=90, skip_shared_fs_check=True,
                                 slurm_array=array)
    outcome = run_sweep(plan, slurm.SlurmExecutor(common, options), show=False)
    assert outcome.ok and len(outcome.states) == 3
    (kind, pre_id, dep, _, params), *runs = _FakeAutoExecutor.log
    assert kind == "pretrain" and not dep
    assert params["slurm_partition"] == "gpu" and params["timeout_min"] == 90 and params["gpus_per_node"] == 1
    assert [(k, d, b) for k, _, d, b, _ in runs] == [("run", f"afterok:{pre_id}", array)] * 2

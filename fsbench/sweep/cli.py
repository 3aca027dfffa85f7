"""The ``fsbench sweep`` command's options and its work up to the report.

``fsbench.cli`` registers the subcommand with :func:`add_sweep_arguments` and calls
:func:`execute_sweep`; the report at the end is ``fsbench report``'s own.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.text import Text

from fsbench.errors import ConfigError, FsbenchError
from fsbench.sweep.grid import AXES, GridSpec, grid_configs, load_grid_file, parse_list

__all__ = ["add_sweep_arguments", "check_options", "execute_sweep", "sweep_options"]

SWEEP_EXAMPLES = """\
examples:
  fsbench sweep --method finetune,mtl,mtl_ht --shot 1,5 --seed 0,1,2 --dry-run
  fsbench sweep --method mtl,mtl_ht --preset smoke --episodes 20 --workers 2
  fsbench sweep grid.toml --executor ray --ray-address auto --report ablation.md
  fsbench sweep grid.toml --executor slurm --slurm-partition gpu --slurm-time 240 --gpus-per-job 1
"""


def add_sweep_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of ``fsbench sweep``: every ``fsbench run`` option as a list, plus the executor's."""
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = SWEEP_EXAMPLES
    p.add_argument("grid", nargs="?", type=Path,
                   help="a grid TOML file (see the README, Sweeps); options given here replace its values")
    runs = p.add_argument_group("the grid (comma-separated lists; the sweep is their cartesian product)")
    for axis in AXES:
        runs.add_argument(axis.flag, dest=f"grid_{axis.field}", metavar="A,B", help=axis.help)
    runs.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                      help="override one setting in every run, as in `fsbench run` (repeatable)")
    p.add_argument("--output", type=Path, help="output root of the runs (default: the grid file's, or results/)")
    p.add_argument("--cache-dir", type=Path,
                   help="decoded datasets and pre-trained backbones (default $FSBENCH_CACHE or ~/.cache/fsbench)")
    ex = p.add_argument_group("execution")
    ex.add_argument("--executor", default="local",
                    help="local (default: worker processes here), ray, slurm, or a plugin's")
    ex.add_argument("--workers", type=int, help="local: worker processes (default 1, or one per GPU)")
    ex.add_argument("--cpus-per-job", type=int,
                    help="CPUs (torch threads) per job (default: local, its share of the threads; ray / slurm, 1)")
    ex.add_argument("--gpus-per-job", type=int,
                    help="ray / slurm: GPUs per job (default: 1 where the cluster has GPUs, else 0)")
    ex.add_argument("--retries", type=int, default=3,
                    help="local / ray: retries of a job lost with its worker process (killed, out "
                         "of memory); a job's own error is not retried (default 3)")
    ex.add_argument("--ray-address", help="ray: auto, or HOST:PORT of a running cluster (default: start a local one)")
    ex.add_argument("--ray-shared-cache", action="store_true",
                    help="ray: every node sees --cache-dir; pre-trained weights pass through it, not the object store")
    ex.add_argument("--slurm-partition", help="slurm: partition")
    ex.add_argument("--slurm-time", type=int, default=60, help="slurm: minutes per job (default 60)")
    ex.add_argument("--slurm-array", action="store_true",
                    help="slurm: submit the runs of each pre-training as one job array")
    ex.add_argument("--slurm-cluster", choices=["slurm", "local"],
                    help="slurm: 'local' runs the jobs through submitit's local executor (testing)")
    ex.add_argument("--slurm-folder", type=Path, help="slurm: submitit's job folder (default OUTPUT/.sweep/slurm)")
    ex.add_argument("--no-shared-fs-check", dest="check_shared_fs", action="store_false",
                    help="slurm: trust that --output and --cache-dir are on a shared filesystem")
    out = p.add_argument_group("plan and report")
    out.add_argument("--dry-run", action="store_true",
                     help="print the plan (jobs, dependencies, what is already done) and exit")
    out.add_argument("--report", type=Path, metavar="FILE",
                     help="write the final report to FILE (markdown; .csv/.tex/.html by suffix)")
    out.add_argument("--paired", metavar="METHOD",
                     help="paired per-episode differences against METHOD (default: the grid's first method)")
    out.add_argument("--ablation", action="store_true", help="report the paper's ablation rows")
    out.add_argument("--quiet", action="store_true", help="no live progress")
    return p


def sweep_options(args: argparse.Namespace, output: Path):
    from fsbench.sweep.executors import ExecutorOptions

    return ExecutorOptions(
        workers=args.workers, cpus_per_job=args.cpus_per_job, gpus_per_job=args.gpus_per_job,
        retries=args.retries, ray_address=args.ray_address, ray_shared_cache=args.ray_shared_cache,
        slurm_partition=args.slurm_partition, slurm_time=args.slurm_time,
        slurm_cluster=args.slurm_cluster, slurm_folder=args.slurm_folder,
        slurm_array=args.slurm_array, check_shared_fs=args.check_shared_fs, output=output,
    )


def configs_from_args(args: argparse.Namespace):
    """The grid's runs: the TOML file (if any) with the command line's lists replacing its own."""
    from fsbench.config import parse_set

    spec = load_grid_file(args.grid) if args.grid is not None else GridSpec([({}, {})], {})
    cli_axes = {}
    for axis in AXES:
        raw = getattr(args, f"grid_{axis.field}")
        if raw is not None:
            cli_axes[axis.field] = parse_list(axis.flag, raw, axis)
    return grid_configs(spec, cli_axes, parse_set(args.set), args.output, args.cache_dir)


def build_executor(args: argparse.Namespace, output: Path):
    from fsbench.plugins import default_registry

    record = default_registry().executor(args.executor)
    try:
        return record.factory(sweep_options(args, output))
    except ImportError as exc:  # an executor whose optional dependency is missing
        hint = f": {record.requires}" if record.requires else ""
        raise FsbenchError(f"executor {args.executor!r} cannot start ({exc}){hint}") from None


#: Executor options and the least value each takes.
MINIMUMS = {"workers": 1, "cpus_per_job": 1, "gpus_per_job": 0, "retries": 0, "slurm_time": 1}


def check_options(args: argparse.Namespace) -> None:
    """The executor options' values and the executor's name, before anything is planned."""
    from fsbench.plugins import default_registry

    for name, least in MINIMUMS.items():
        value = getattr(args, name)
        if value is not None and value < least:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least {least}, got {value}")
    default_registry().executor(args.executor)  # an unknown name: one line listing the known


def execute_sweep(args: argparse.Namespace):
    """Plan, then (unless ``--dry-run``) run; returns the plan and the outcome (None if dry)."""
    from fsbench.progress import console
    from fsbench.sweep.driver import run_sweep
    from fsbench.sweep.plan import build_plan

    check_options(args)
    configs = configs_from_args(args)
    plan = build_plan(configs)
    output = Path(configs[0].output)
    if args.dry_run:
        print(plan.describe())
        return plan, None
    executor = build_executor(args, output)
    if not args.quiet:
        console.print(Text(plan.describe(limit=10)))
    outcome = run_sweep(plan, executor, show=not args.quiet)
    return plan, outcome

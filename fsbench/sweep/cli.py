"""The ``fsbench sweep`` command: its options, parsed into typed values, and its work.

``fsbench.cli`` registers the subcommand with :func:`add_sweep_arguments`, turns the parsed
flags into the grid's runs (:func:`configs_from_args`), the :class:`SweepOptions`
(:func:`sweep_options`) and the report's options (:func:`report_options`), then calls
:func:`execute_sweep` and :func:`fsbench.report.build.make_report`. The grid's flags are the run
options (:data:`fsbench.sweep.grid.AXES`); the execution flags are the generic ones
(:class:`fsbench.sweep.executor.ExecutorOptions`) and each installed executor's own, declared
by its plugin (:class:`fsbench.hookspecs.ExecutorRecord`) and listed under its name.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.text import Text

from fsbench.config import RunConfig
from fsbench.errors import ConfigError, FsbenchError
from fsbench.options import (
    SET_HELP,
    SET_METAVAR,
    add_arguments,
    check_fields,
    from_namespace,
    given,
)
from fsbench.sweep.executor import EXECUTION, ExecutorOptions
from fsbench.sweep.grid import (
    AXES,
    SINGLE_OPTIONS,
    GridSpec,
    grid_configs,
    load_grid_file,
    parse_list,
)

__all__ = ["SweepOptions", "add_sweep_arguments", "configs_from_args", "execute_sweep",
           "report_options", "sweep_options"]

SWEEP_EXAMPLES = """\
examples:
  fsbench sweep --method finetune,mtl,mtl_ht --shot 1,5 --seed 0,1,2 --dry-run
  fsbench sweep --method mtl,mtl_ht --preset smoke --episodes 20 --workers 2
  fsbench sweep grid.toml --executor ray --ray-address auto --report ablation.md
  fsbench sweep grid.toml --executor slurm --slurm-partition gpu --slurm-time 240 --gpus-per-job 1
"""


@dataclass(frozen=True)
class SweepOptions:
    """How a sweep executes: the executor, its options, and whether to run at all."""

    executor: str = "local"
    common: ExecutorOptions = field(default_factory=ExecutorOptions)
    options: Any = None  # an instance of the executor's own options dataclass, or None
    dry_run: bool = False  # print the plan and stop
    show: bool = True  # live progress


def _prefix(executor: str) -> str:
    """Where an executor's options land in the parsed namespace (apart from every other flag)."""
    return f"executor[{executor}]."


def add_sweep_arguments(p: argparse.ArgumentParser, executors: dict[str, Any] | None = None
                        ) -> argparse.ArgumentParser:
    """Options of ``fsbench sweep``: every run option as a list, the generic execution options
    and those of each executor in ``executors`` (name -> its record), one group each."""
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = SWEEP_EXAMPLES
    p.add_argument("grid", nargs="?", type=Path,
                   help="a grid TOML file (see the README, Sweeps); options given here replace its values")
    runs = p.add_argument_group("the grid (comma-separated lists; the sweep is their cartesian product)")
    for axis in AXES:
        runs.add_argument(axis.flag, dest=f"grid_{axis.field}", metavar="A,B", help=axis.help)
    runs.add_argument("--set", action="append", default=[], metavar=SET_METAVAR,
                      help=SET_HELP.replace("override one setting", "override one setting in every run"))
    for d in SINGLE_OPTIONS:
        p.add_argument(d.flag, dest=d.name, type=d.option.argtype(), metavar=d.option.metavar,
                       help=f"{d.option.help}; one for the whole sweep (default: the grid "
                            "file's, else the run's)")
    ex = p.add_argument_group(EXECUTION)
    names = ", ".join(sorted(executors)) if executors else "local, or a plugin's"
    ex.add_argument("--executor", default="local", help=f"where jobs run: {names} (default local)")
    add_arguments(p, ExecutorOptions, groups={EXECUTION: ex})
    _add_executor_arguments(p, executors or {})
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


def _add_executor_arguments(p: argparse.ArgumentParser, executors: dict[str, Any]) -> None:
    """Each executor's own options, in a group named after it: fsbench's own first, then the
    others by name. An executor whose flag another option already has gets no flags; choosing it
    is then a one-line error naming the flag."""
    clashes: dict[str, str] = {}
    for name, record in sorted(executors.items(), key=lambda item: (item[1].origin != "fsbench", item[0])):
        if record.options is None:
            continue
        probe = argparse.ArgumentParser(add_help=False)
        add_arguments(probe, record.options)
        flags = {s for action in probe._actions for s in action.option_strings}
        taken = flags & set(p._option_string_actions)
        if taken:
            clashes[name] = (f"executor {name!r} ({record.plugin}) declares {', '.join(sorted(taken))}, "
                             "which another option already has")
            continue
        group = p.add_argument_group(f"{name} executor", record.description)
        add_arguments(group, record.options, prefix=_prefix(name))
    p.set_defaults(executor_clashes=clashes)


def configs_from_args(args: argparse.Namespace) -> list[RunConfig]:
    """The grid's runs: the TOML file (if any) with the command line's lists replacing its own."""
    from fsbench.config import parse_set

    spec = load_grid_file(args.grid) if args.grid is not None else GridSpec([({}, {})], {})
    cli_axes = {}
    for axis in AXES:
        raw = getattr(args, f"grid_{axis.field}")
        if raw is not None:
            cli_axes[axis.field] = parse_list(axis.flag, raw, axis)
    return grid_configs(spec, cli_axes, parse_set(args.set), args.output, args.cache_dir)


def _executors() -> dict[str, Any]:
    from fsbench.plugins import default_registry

    return default_registry().executors


def _record(name: str, executors: dict[str, Any]) -> Any:
    if name not in executors:
        raise ConfigError(f"unknown executor {name!r}; available: {', '.join(sorted(executors)) or 'none'}")
    return executors[name]


def sweep_options(args: argparse.Namespace, executors: dict[str, Any] | None = None) -> SweepOptions:
    """The execution flags, typed and checked (one-line errors) before anything is planned;
    ``executors``: name -> record (default: the installed ones)."""
    executors = _executors() if executors is None else executors
    record = _record(args.executor, executors)  # an unknown name: one line listing the known
    clash = getattr(args, "executor_clashes", {}).get(args.executor)
    if clash:
        raise ConfigError(clash)
    for name, other in executors.items():
        if name != args.executor and other.options is not None:
            flags = given(other.options, args, _prefix(name))
            if flags:
                raise ConfigError(f"{', '.join(flags)}: option(s) of the {name} executor; this sweep "
                                  f"runs on --executor {args.executor}")
    common = from_namespace(ExecutorOptions, args)
    own = from_namespace(record.options, args, _prefix(args.executor)) if record.options else None
    check_fields(common)
    if own is not None:
        check_fields(own)
    return SweepOptions(args.executor, common, own, dry_run=args.dry_run, show=not args.quiet)


def report_options(args: argparse.Namespace, plan: Any):
    """The report at the end of a sweep: ``--report FILE`` (format by suffix) or the terminal,
    paired against ``--paired`` or, with several methods, the grid's first."""
    from fsbench.report.build import ReportOptions

    methods = list(dict.fromkeys(r.cfg.method for r in plan.runs.values()))
    suffix = args.report.suffix if args.report else ""
    fmt = {".csv": "csv", ".tex": "latex", ".html": "html"}.get(
        suffix, "markdown" if args.report else "rich")
    paired = args.paired or (methods[0] if len(methods) > 1 else None)
    return ReportOptions(ablation=args.ablation, paired=paired, format=fmt, output=args.report)


def build_executor(options: SweepOptions, executors: dict[str, Any] | None = None):
    """The executor ``options`` names, built by its plugin's factory."""
    record = _record(options.executor, _executors() if executors is None else executors)
    try:
        return record.factory(options.common, options.options)
    except ImportError as exc:  # an executor whose optional dependency is missing
        hint = f": {record.requires}" if record.requires else ""
        raise FsbenchError(f"executor {options.executor!r} cannot start ({exc}){hint}") from None


def execute_sweep(configs: list[RunConfig], options: SweepOptions):
    """Plan, then (unless ``dry_run``) run; returns the plan and the outcome (None if dry)."""
    from fsbench.progress import console
    from fsbench.sweep.driver import run_sweep
    from fsbench.sweep.plan import build_plan

    plan = build_plan(configs)
    if options.dry_run:
        print(plan.describe())
        return plan, None
    options = replace(options, common=replace(options.common, output=Path(configs[0].output)))
    executor = build_executor(options)
    if options.show:
        console.print(Text(plan.describe(limit=10)))
    outcome = run_sweep(plan, executor, show=options.show)
    return plan, outcome

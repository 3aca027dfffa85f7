"""The `fsbench` command line: thin parsing into typed configs, one-line errors (exit 2)."""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fsbench.config import RunConfig, run_overrides
from fsbench.data.commands import add_data_parsers
from fsbench.errors import DivergenceError, FsbenchError, PluginError
from fsbench.options import EACH, OVERRIDES, add_arguments, given, options_of, parse_int
from fsbench.sweep.cli import add_sweep_arguments

EXAMPLES = """\
examples:
  fsbench run --method mtl_ht                       built-in synthetic data, a few CPU minutes
  fsbench run --method protonet --dataset miniimagenet --data-root DIR --shot 5 --eval-split val
  fsbench run --method maml --dataset fc100 --data-root DIR/cifar-100-python --shot 5
  fsbench run --method protonet --dataset miniimagenet --data-root ILSVRC2012_img_train.tar \
      --eval-dataset cub --eval-data-root CUB_200_2011.tgz     cross-domain: train mini, test CUB
  fsbench methods                                   methods, their plugin and presets
  fsbench datasets                                  datasets: what to download, splits, prepared?
  fsbench data prepare tieredimagenet --source ILSVRC2012_img_train.tar   decode once into the cache
  fsbench report results/ --ablation                the paper's tables, mean +- 95% CI
  fsbench compare reference/ci results/new          non-zero exit on a regression
"""

ENVIRONMENT = """environment:
  OMP_NUM_THREADS=N        torch threads (default: PyTorch's, one per core; 1 on a shared machine)
  FSBENCH_CACHE=DIR        the default --cache-dir
  FSBENCH_ALLOCATOR=system keep glibc's default allocator (default keep: freed memory is reused
                           instead of mapped afresh: x1.35-1.47 per CPU training step; README)
"""


def _positive(text: str) -> int:
    """argparse ``type``: an integer of at least 1."""
    try:
        value = parse_int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_run_arguments(p: argparse.ArgumentParser, method_required: bool = True) -> None:
    """Every run option (declared once, on :class:`fsbench.config.RunConfig`), and ``--quiet``."""
    add_arguments(p, RunConfig, required=("method",) if method_required else ())
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run_configs(args: argparse.Namespace) -> list[RunConfig]:
    """The runs of ``args``: one per value of each option that takes several (``--seed 0,1,2``),
    in order, repeats dropped; the overrides of ``--config`` and ``--set``."""
    fixed: dict[str, Any] = {}
    each: dict[str, list[Any]] = {}
    for d in options_of(RunConfig):
        if d.option.kind == OVERRIDES:
            fixed[d.name] = run_overrides(args.config, args.set)
        elif d.option.kind == EACH:
            each[d.name] = list(dict.fromkeys(getattr(args, d.name) or [d.default]))
        else:
            fixed[d.name] = getattr(args, d.name)
    return [RunConfig(**fixed, **dict(zip(each, values, strict=True)))
            for values in itertools.product(*each.values())]


def cmd_run(args: argparse.Namespace) -> int:
    from fsbench.runner import run
    from fsbench.summary import print_summary

    if getattr(args, "suite", None):
        return _run_suite(args)
    if args.method is None:
        raise FsbenchError("--method is required (or --suite ci|real); see `fsbench methods`")
    results = [run(cfg, show_progress=not args.quiet) for cfg in run_configs(args)]
    print_summary([r.summary for r in results],
                  results[0].run_dir if len(results) == 1 else Path(args.output))
    if args.plots is not None:
        write_plots([r.run_dir for r in results], args.plots)
    return 0


#: The run options a suite takes; it pins the others.
SUITE_OPTIONS = ("output", "cache_dir", "data_root")


def _run_suite(args: argparse.Namespace) -> int:
    from fsbench.suite import run_suite

    pinned = [flag for flag in given(RunConfig, args)
              if flag not in {d.flag for d in options_of(RunConfig) if d.name in SUITE_OPTIONS}]
    if pinned:
        raise FsbenchError(f"--suite {args.suite} pins {', '.join(pinned)} (its runs are fixed); "
                           "it takes only --output, --cache-dir and --data-root")
    run_suite(args.suite, args.output, args.cache_dir, args.data_root, show_progress=not args.quiet)
    return 0


def write_plots(run_dirs: list[Path], out_dir: Path) -> None:
    from fsbench.progress import console
    from fsbench.report.build import write_plots as plots
    from fsbench.results import load_runs

    for path in plots(load_runs(run_dirs), out_dir):
        console.print(f"plot: {path}")


def cmd_methods(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from fsbench.plugins import default_registry

    registry = default_registry()
    if args.presets:
        from fsbench.provenance import presets_markdown

        sys.stdout.write(presets_markdown(registry.methods))
        return 0
    out = Console()
    table = Table(title="fsbench methods")
    wide = out.size.width >= 110
    columns = ("method", "description", "plugin (origin)", "presets", "backbone (paper)",
               "hard tasks") if wide else ("method", "what, plugin, presets, paper backbone")
    for col in columns:
        table.add_column(col, no_wrap=col == "method")
    for name, rec in sorted(registry.methods.items()):
        paper = rec.presets.get("paper")
        cells = (f"{rec.plugin} ({rec.origin})", ", ".join(rec.presets),
                 paper.backbone if paper else "-",
                 "on" if rec.hard_tasks else "option" if rec.episodic else "-")
        if wide:
            table.add_row(name, rec.description, *cells)
        else:  # at 80 columns: one stacked cell, nothing cut
            table.add_row(name, f"{rec.description}\n[dim]plugin {cells[0]}; presets {cells[1]}; "
                                f"paper backbone {cells[2]}; hard tasks {cells[3]}[/]")
    out.print(table)
    for problem in registry.problems:
        out.print(f"[yellow]warning:[/] {problem}")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    """``fsbench pretrain``: pre-train and cache the backbone that ``--method`` needs, alone."""
    for cfg in run_configs(args):
        _pretrain_one(cfg, show_progress=not args.quiet)
    return 0


def _pretrain_one(cfg: RunConfig, show_progress: bool) -> None:
    from fsbench.engine import distributed
    from fsbench.progress import console
    from fsbench.runner import Run

    run = Run(cfg, show_progress)
    result = run.pretrain()
    if not distributed.is_main():  # under torchrun: rank 0 reports for all
        return
    console.print(
        f"pre-trained weights for {cfg.method!r} ({run.preset.backbone}, preset {run.preset_name}, "
        f"best val probe {result.best_accuracy:.1f}%):"
    )
    print(result.path)


def add_report_parser(subparsers: Any) -> argparse.ArgumentParser:
    """The ``report`` command: tables from run directories."""
    from fsbench.report.render import FORMATS

    parser = subparsers.add_parser(
        "report",
        help="tables of mean accuracy ± 95%% CI from run directories",
        description=(
            "Tables of mean accuracy ± 95% CI per method from run directories (or folders "
            "containing them). Runs differing only in seed are aggregated."
        ),
    )
    parser.add_argument(
        "results",
        nargs="+",
        type=Path,
        metavar="RESULTS",
        help="run directories or folders of runs",
    )
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="the paper's ablation rows: scratch, finetune, mtl, mtl_ht (those present)",
    )
    parser.add_argument(
        "--paper",
        action="store_true",
        help="the paper's comparison table: its rows and settings, its number beside ours, ours - paper on the paper's protocol",
    )
    parser.add_argument(
        "--paired",
        metavar="METHOD",
        help="also tables of paired differences against METHOD: per training seed on shared "
        "episodes and, with several seeds, across seeds (t-interval) "
        "(with --format csv, only these tables)",
    )
    parser.add_argument(
        "--format", choices=FORMATS, default="rich", help="output format (default: rich)"
    )
    parser.add_argument(
        "--output", type=Path, metavar="FILE", help="write to FILE instead of stdout"
    )
    parser.add_argument(
        "--plots",
        type=Path,
        metavar="DIR",
        help="also write validation-curve and accuracy-vs-shot plots to DIR",
    )
    parser.set_defaults(func=cmd_report)
    return parser


def cmd_report(args: argparse.Namespace) -> int:
    """``fsbench report``; bad input raises :class:`fsbench.results.ResultsError`."""
    from fsbench.report.build import ReportOptions, make_report

    make_report(args.results, ReportOptions(ablation=args.ablation, paper=args.paper,
                                            paired=args.paired, format=args.format,
                                            output=args.output, plots=args.plots))
    return 0


def add_compare_parser(subparsers: Any) -> argparse.ArgumentParser:
    """The ``compare`` command: the regression gate."""
    from fsbench.report.compare import (
        DEFAULT_MIN_DROP,
        DEFAULT_TIME_FLOOR,
        DEFAULT_TIME_RATIO,
        DEFAULT_TOLERANCE,
    )

    parser = subparsers.add_parser(
        "compare",
        help="regression gate: compare new results with baseline results (exit 1 on regression)",
        description=(
            "Compare NEW results with BASELINE results (run directories or folders of runs). "
            "Exit status 1 when a configuration regresses or is missing from NEW, else 0. "
            "Same-seed runs are compared episode by episode (paired 95% CI)."
        ),
    )
    parser.add_argument("baseline", type=Path, metavar="BASELINE", help="reference results")
    parser.add_argument("new", type=Path, metavar="NEW", help="results to check")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        metavar="PTS",
        help="largest allowed accuracy drop in points when runs share no episodes "
        f"(default {DEFAULT_TOLERANCE:g})",
    )
    parser.add_argument(
        "--min-drop",
        type=float,
        default=DEFAULT_MIN_DROP,
        metavar="PTS",
        help="a significant paired drop fails only above this many points "
        f"(default {DEFAULT_MIN_DROP:g})",
    )
    parser.add_argument(
        "--time-ratio",
        type=float,
        default=DEFAULT_TIME_RATIO,
        metavar="R",
        help=f"largest allowed ratio new/baseline train or eval time (default {DEFAULT_TIME_RATIO:g})",
    )
    parser.add_argument(
        "--time-floor",
        type=float,
        default=DEFAULT_TIME_FLOOR,
        metavar="S",
        help=f"baseline times below S seconds count as S (default {DEFAULT_TIME_FLOOR:g})",
    )
    parser.add_argument(
        "--json", action="store_true", help="print a JSON object instead of a table"
    )
    parser.set_defaults(func=cmd_compare)
    return parser


def cmd_compare(args: argparse.Namespace) -> int:
    """``fsbench compare``: 1 on regression or missing configuration, 0 otherwise."""
    from fsbench.report.compare import compare_runs
    from fsbench.report.gate_table import compare_table

    report = compare_runs(
        args.baseline,
        args.new,
        tolerance=args.tolerance,
        time_ratio=args.time_ratio,
        min_drop=args.min_drop,
        time_floor=args.time_floor,
    )
    if args.json:
        from fsbench.strictjson import dumps

        sys.stdout.write(dumps(report.to_dict(), indent=2) + "\n")
    else:
        from rich.console import Console
        from rich.text import Text

        from fsbench.safetext import text

        console = Console(width=None if sys.stdout.isatty() else 200)
        console.print(compare_table(report))
        if report.failed:
            for row in report.failures:
                console.print(
                    Text("FAIL ", style="bold red")
                    + text(f"{row.describe()}: {'; '.join(row.reasons)}")
                )
        else:
            console.print(f"[green]OK[/]: {len(report.rows)} configuration(s), no regression")
    return 1 if report.failed else 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """``fsbench sweep``: plan, run on the executor, then the report of the sweep's runs.

    Failed jobs are listed last, each with its error (``--quiet`` too), after the report; a
    report that cannot be made (e.g. the ``--paired`` method's runs all failed) is said in one
    line and never hides them.
    """
    from fsbench.report.build import make_report
    from fsbench.safetext import printable
    from fsbench.sweep.cli import configs_from_args, execute_sweep, report_options, sweep_options

    options = sweep_options(args)  # checked before the grid is expanded or planned
    plan, outcome = execute_sweep(configs_from_args(args), options)
    if outcome is None:  # --dry-run
        return 0
    report_error = None
    if outcome.run_dirs:
        try:
            make_report(outcome.run_dirs, report_options(args, plan))
        except FsbenchError as exc:
            report_error = str(exc)
            print(f"fsbench: report: {printable(exc)}", file=sys.stderr)
    if outcome.failed:
        print(f"fsbench: {len(outcome.failed)} job(s) failed (finished runs are kept; the same "
              "command runs only what is missing):", file=sys.stderr)
        for job, error in outcome.failed.items():
            print(f"  {printable(job)}: {printable(error)}", file=sys.stderr)
        return 1
    return 2 if report_error else 0


def build_parser(executor_flags: bool = True) -> argparse.ArgumentParser:
    """Every command's parser; ``executor_flags``: ``fsbench sweep`` lists the installed
    executors' own options (loading the plugins, which only that command needs)."""
    parser = argparse.ArgumentParser(
        prog="fsbench", description="Benchmark few-shot image classification methods on seeded episodes.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p_run = sub.add_parser("run", help="train (if needed) and evaluate one method", epilog=EXAMPLES + "\n" + ENVIRONMENT,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p_run, method_required=False)
    from fsbench.suite import SUITES

    p_run.add_argument("--suite", choices=list(SUITES),
                       help="run a named suite instead of one method (the regression gate's runs; "
                            "it takes --output, --cache-dir and --data-root and pins the rest): "
                            + "; ".join(f"{s.name}: {s.help}" for s in SUITES.values()))
    p_run.add_argument("--plots", type=Path, metavar="DIR", help="also write validation-curve plots to DIR")
    p_run.set_defaults(func=cmd_run)
    p_pre = sub.add_parser("pretrain", help="pre-train (and cache) the backbone a method needs, alone")
    add_run_arguments(p_pre)
    p_pre.set_defaults(func=cmd_pretrain)
    p_methods = sub.add_parser("methods", help="list the methods with their plugin and presets")
    p_methods.add_argument("--presets", action="store_true",
                           help="print every preset's settings with their sources (markdown; "
                                "docs/presets.md is this output)")
    p_methods.set_defaults(func=cmd_methods)
    executors = None
    if executor_flags:
        from fsbench.plugins import default_registry

        executors = default_registry().executors
    p_sweep = sub.add_parser("sweep", help="a grid of runs, planned and run in parallel")
    add_sweep_arguments(p_sweep, executors).set_defaults(func=cmd_sweep)
    add_report_parser(sub)
    add_compare_parser(sub)
    add_data_parsers(sub, positive=_positive)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from fsbench.safetext import printable

    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        args = build_parser(executor_flags=command == "sweep").parse_args(argv)
        return int(args.func(args) or 0)
    except (FsbenchError, PluginError, DivergenceError) as exc:
        print(f"fsbench: error: {printable(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file that cannot be read or written: one line naming it
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"fsbench: error: {printable(where)}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fsbench: interrupted; re-run the same command (or add --resume) to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The `fsbench` command line: thin parsing into typed configs, one-line errors (exit 2)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fsbench.config import (
    DATASETS,
    EVAL_SPLITS,
    HT_FILL_RULES,
    HT_MODES,
    PRECISIONS,
    PRESETS,
    RunConfig,
    load_config_file,
    parse_set,
)
from fsbench.data.commands import add_data_parsers
from fsbench.errors import DivergenceError, FsbenchError, PluginError
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
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    return value


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("expected at least one seed")
    if any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(f"seeds must be non-negative, got {text!r}")
    return seeds


def training_seeds(args: argparse.Namespace) -> list[int]:
    """The ``--seed`` values in order, duplicates dropped (default ``[0]``)."""
    return list(dict.fromkeys(args.seed or [0]))


def add_run_arguments(p: argparse.ArgumentParser, method_required: bool = True) -> None:
    p.add_argument("--method", required=method_required, help="method name (see `fsbench methods`)")
    p.add_argument("--dataset", default="synthetic", choices=DATASETS,
                   help="dataset (default: synthetic, built in; real datasets need --data-root)")
    p.add_argument("--data-root", type=Path, help="the dataset's archive or folder (see `fsbench datasets`); prepared into the cache on first use")
    p.add_argument("--backbone", help="backbone: conv4, conv4_32, resnet12, resnet12_mtl, resnet12_tiny or any timm model (default: the preset's)")
    p.add_argument("--way", type=_positive, default=5, help="classes per episode (default 5)")
    p.add_argument("--shot", type=_positive, default=1, help="support images per class (default 1)")
    p.add_argument("--query", type=_positive, default=15, help="query images per class (default 15)")
    p.add_argument("--episodes", type=_positive, default=600, help="test episodes (default 600)")
    p.add_argument("--seed", type=_seed_list, action="extend", metavar="SEED[,SEED...]",
                   help="training seed(s): initialisation, training tasks, pre-training (default 0); "
                        "several (--seed 0,1,2 or repeated) make one run each, on the same test episodes")
    p.add_argument("--episode-seed", type=_positive, default=0,
                   help="seed of the test and validation episodes, shared by every training seed and "
                        "method so results pair up (default 0)")
    p.add_argument("--preset", choices=PRESETS,
                   help="paper (the paper's protocol), quick (~15 CPU minutes on miniImageNet) or smoke "
                        "(under a minute); default: paper on real data, quick on synthetic")
    p.add_argument("--eval-split", default="test", choices=EVAL_SPLITS,
                   help="split the test episodes come from (default test; use val while developing)")
    p.add_argument("--eval-dataset", choices=DATASETS,
                   help="cross-domain: draw the test episodes from this dataset's --eval-split "
                        "(e.g. train on miniimagenet, test on cub); default: --dataset")
    p.add_argument("--eval-data-root", type=Path, help="the --eval-dataset's archive or folder")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto (bf16 autocast + channels_last on CUDA and on CPUs with native bf16, "
                        "else fp32), fp32 or bf16 (default auto)")
    p.add_argument("--output", type=Path, default=Path("results"), help="output root (default results/)")
    p.add_argument("--cache-dir", type=Path, help="decoded datasets and pre-trained backbones (default $FSBENCH_CACHE or ~/.cache/fsbench)")
    ht = p.add_argument_group("hard-task meta-batch (any episodic method)")
    ht.add_argument("--hard-tasks", action=argparse.BooleanOptionalAction, default=None,
                    help="train on hard-task meta-batches (default: on for *_ht methods)")
    ht.add_argument("--ht-every", type=_positive,
                    help="a hard meta-batch after every N regular ones (hard ones are not counted; default 1)")
    ht.add_argument("--ht-count", type=_positive, help="hard tasks per hard meta-batch (default: the meta-batch size)")
    ht.add_argument("--ht-mode", choices=HT_MODES,
                    help="extra: each hard meta-batch is trained in addition, right after the "
                         "N-th regular one, and the lr schedule counts regular meta-iterations only "
                         "(the paper); replace: compute-matched, it takes the place of the next "
                         "regular one, so each cycle is N regular + 1 hard (default extra)")
    ht.add_argument("--ht-fill", choices=HT_FILL_RULES,
                    help="how to complete a hard task with fewer failure classes than --way (default confused)")
    p.add_argument("--config", type=Path, help="TOML/JSON file of overrides: [hparams], [episodic], [pretrain] tables")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override one setting, e.g. --set episodic.iterations=200 (repeatable)")
    p.add_argument("--resume", action="store_true",
                   help="resume an interrupted run (re-running the same command does too); show a finished one")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run_config(args: argparse.Namespace, seed: int | None = None) -> RunConfig:
    """The run of ``args`` for one training seed (default: the first ``--seed``)."""
    seed = training_seeds(args)[0] if seed is None else seed
    overrides: dict = {}
    if args.config is not None:
        overrides.update(load_config_file(args.config))
    for section, values in parse_set(args.set).items():
        overrides.setdefault(section, {}).update(values)
    return RunConfig(
        method=args.method, dataset=args.dataset, data_root=args.data_root, backbone=args.backbone,
        way=args.way, shot=args.shot, query=args.query, episodes=args.episodes, seed=seed,
        episode_seed=args.episode_seed,
        preset=args.preset, eval_split=args.eval_split, device=args.device,
        precision=args.precision, output=args.output,
        hard_tasks=args.hard_tasks, ht_every=args.ht_every, ht_count=args.ht_count,
        ht_fill=args.ht_fill, ht_mode=args.ht_mode, resume=args.resume, cache_dir=args.cache_dir,
        overrides=overrides, eval_dataset=args.eval_dataset, eval_data_root=args.eval_data_root,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from fsbench.runner import run
    from fsbench.summary import print_summary

    if getattr(args, "suite", None):
        from fsbench.suite import run_suite

        run_suite(args.suite, args.output, args.cache_dir, args.data_root, show_progress=not args.quiet)
        return 0
    if args.method is None:
        raise FsbenchError("--method is required (or --suite ci|real); see `fsbench methods`")
    results = [run(run_config(args, seed), show_progress=not args.quiet)
               for seed in training_seeds(args)]
    print_summary([r.summary for r in results],
                  results[0].run_dir if len(results) == 1 else Path(args.output))
    if args.plots is not None:
        write_plots([r.run_dir for r in results], args.plots)
    return 0


def write_plots(run_dirs: list[Path], out_dir: Path) -> None:
    from fsbench.progress import console
    from fsbench.report.plots import plot_accuracy_vs_shot, plot_val_curves
    from fsbench.results import load_runs

    df = load_runs(run_dirs)
    for path in plot_val_curves(df, out_dir) + plot_accuracy_vs_shot(df, out_dir):
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
    for seed in training_seeds(args):
        _pretrain_one(run_config(args, seed), show_progress=not args.quiet)
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
    from fsbench.atomic import atomic_write_text
    from fsbench.report.aggregate import paired_table, seed_paired_table
    from fsbench.report.render import render, to_rich
    from fsbench.report.tables import accuracy_table, paired_view, seed_paired_view
    from fsbench.results import load_runs

    df = load_runs(args.results)
    views = [accuracy_table(df, ablation=args.ablation, paper=args.paper)]
    if args.paired:
        per_seed = paired_table(df, args.paired)
        paired = [paired_view(per_seed)]
        across = seed_paired_table(per_seed)
        if (across["n_seeds"] > 1).any():
            paired.append(seed_paired_view(across))
        views = paired if args.format == "csv" else views + paired

    if args.format == "rich" and args.output is None:
        from rich.console import Console

        console = Console(width=None if sys.stdout.isatty() else 200)
        for view in views:
            console.print(to_rich(view))
    else:
        text = "\n".join(render(view, args.format) for view in views)
        if args.output is None:
            sys.stdout.write(text)
        else:
            if not args.output.parent.is_dir():
                raise FsbenchError(f"--output {args.output}: folder {args.output.parent} does not exist")
            atomic_write_text(args.output, text)
            print(f"wrote {args.output}", file=sys.stderr)

    if args.plots is not None:
        from fsbench.report.plots import plot_accuracy_vs_shot, plot_val_curves

        written = plot_val_curves(df, args.plots) + plot_accuracy_vs_shot(df, args.plots)
        for path in written:
            print(f"wrote {path}", file=sys.stderr)
        if not any("val_curves" in p.name for p in written):
            print("no validation history in these runs; no validation-curve plot", file=sys.stderr)
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
    """``fsbench sweep``: plan, run on the executor, then ``fsbench report`` of the sweep's runs.

    Failed jobs are listed last, each with its error (``--quiet`` too), after the report; a
    report that cannot be made (e.g. the ``--paired`` method's runs all failed) is said in one
    line and never hides them.
    """
    from fsbench.safetext import printable
    from fsbench.sweep.cli import execute_sweep

    plan, outcome = execute_sweep(args)
    if outcome is None:  # --dry-run
        return 0
    report_error = None
    if outcome.run_dirs:
        try:
            _sweep_report(args, plan, outcome.run_dirs)
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


def _sweep_report(args: argparse.Namespace, plan: Any, run_dirs: list[Path]) -> None:
    methods = list(dict.fromkeys(r.cfg.method for r in plan.runs.values()))
    fmt = {".csv": "csv", ".tex": "latex", ".html": "html"}.get(
        args.report.suffix if args.report else "", "markdown" if args.report else "rich")
    paired = args.paired or (methods[0] if len(methods) > 1 else None)
    cmd_report(argparse.Namespace(results=run_dirs, ablation=args.ablation, paper=False,
                                  paired=paired, format=fmt, output=args.report, plots=None))


def build_parser() -> argparse.ArgumentParser:
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
                            "--output, --cache-dir and --data-root apply, other options do not): "
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
    add_sweep_arguments(sub.add_parser("sweep", help="a grid of runs, planned and run in parallel")).set_defaults(func=cmd_sweep)
    add_report_parser(sub)
    add_compare_parser(sub)
    add_data_parsers(sub, positive=_positive)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from fsbench.safetext import printable

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
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

"""Named suites: several runs from one command.

``ci``: every first-party method (and any installed plugin's) with the smoke preset on the
built-in ``synthetic_easy`` data (a task every method learns within seconds, so that a broken
method falls visibly to chance), on the CPU, 5-way 1-shot, 200 test episodes, seed 0. Its reference
results live in ``reference/ci/`` and ``.ci/run`` compares a fresh suite run against them
with ``fsbench compare`` (see the README for refreshing the reference deliberately).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from fsbench.config import RunConfig
from fsbench.plugins import default_registry
from fsbench.progress import console
from fsbench.runner import run
from fsbench.summary import print_summary

CI_EPISODES = 200
CI_DATASET = "synthetic_easy"


def ci_configs(output: Path, cache_dir: Path | None = None) -> list[RunConfig]:
    registry = default_registry()
    base = RunConfig(method="", dataset=CI_DATASET, preset="smoke", episodes=CI_EPISODES, seed=0,
                     device="cpu", output=output, cache_dir=cache_dir)
    names = sorted(n for n, rec in registry.methods.items() if "smoke" in rec.presets)
    return [replace(base, method=name) for name in names]


def run_suite(args: argparse.Namespace) -> int:
    if args.suite != "ci":
        raise ValueError(f"unknown suite {args.suite!r}")
    configs = ci_configs(Path(args.output), args.cache_dir)
    began = time.perf_counter()
    summaries = []
    for i, cfg in enumerate(configs, 1):
        console.print(f"[bold]suite ci[/] {i}/{len(configs)}: {cfg.method}")
        summaries.append(run(cfg, show_progress=not args.quiet).summary)
    print_summary(summaries, Path(args.output))
    console.print(f"suite ci: {len(configs)} runs in {time.perf_counter() - began:.0f} s")
    return 0

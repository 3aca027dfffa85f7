"""Named suites: several runs from one command, each the configuration a regression gate compares.

``ci``: every installed method with a ``smoke`` preset on the built-in ``synthetic_easy`` data (a
task every method learns within seconds, so a broken method falls visibly to chance), 5-way
1-shot, 200 test episodes, seed 0. Its reference results live in ``reference/ci/``.

``real``: every installed method with a ``quick`` preset on real miniImageNet (``--data-root``:
train for training, val for the test episodes), 5-way 5-shot, 15 queries, :data:`REAL_EPISODES`
val episodes, seed 0, with the training budgets of :data:`REAL_BUDGET` applied on top of the
``quick`` preset (every method's, in one place: a third-party method gets them too; the few
methods that train another number of tasks are in :data:`REAL_TASKS`, the hyperparameters the
suite changes in :data:`REAL_HPARAMS`, each with the reason), so that the whole suite runs within
20 minutes on 2 CPU cores (one cold run, decoding and both pre-trainings included: 1,024 s) and
every method still learns well above chance. The pre-training overrides are the same for every
method, so finetune, MTL, MTL+HT and the others that start from the standard pre-trained
backbone share one cache entry. Its reference lives in ``reference/real/``.

Both suites pin the device (CPU) and the precision (fp32): fp32 is the path every CPU computes
the same way, so the references reproduce on a machine without native bf16 as on one with it.
``.ci/run`` runs both and gates each with ``fsbench compare`` against its reference (see the
README for refreshing a reference deliberately).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fsbench.config import RunConfig
from fsbench.errors import ConfigError

CI_EPISODES = 200
CI_DATASET = "synthetic_easy"

REAL_DATASET = "miniimagenet"
REAL_SHOT = 5
REAL_EPISODES = 50

#: The real suite's budget on top of each method's ``quick`` preset: section -> setting -> value.
#: ``episodic.tasks`` is not a setting: it is the number of training tasks, turned into
#: ``episodic.iterations = tasks // meta_batch`` for each method (at least one meta-batch).
REAL_BUDGET: dict[str, dict[str, Any]] = {
    "pretrain": {"epochs": 4, "images_per_epoch": 2560, "val_episodes": 20},
    "episodic": {"tasks": 32, "val_episodes": 5},
}

#: Methods that train another number of tasks than ``REAL_BUDGET["episodic"]["tasks"]``, and why.
#: ProtoNets' lost ten points (issue 22) show only after about a hundred episodes: at 32 tasks the
#: previous and the current preset score alike (both near a random Conv-4's nearest-centroid accuracy), at 200
#: they part (validation 39.3% against 42.9%). ProtoNets is cheap (about 0.9 s a 5-shot task).
#: MAML's second-order 5-shot tasks are the dearest (about 2.5 s each): 16 tasks each.
REAL_TASKS: dict[str, int] = {"protonet": 200, "maml": 16, "maml_ht": 16}

#: Methods whose ``quick`` hyperparameters the real suite changes too, and why. MAML adapts 10
#: steps at test (the paper's number) against 5 in training; at test those steps made its
#: evaluation the suite's dearest (about 1.4 s a 5-shot episode): the suite adapts as it trains.
REAL_HPARAMS: dict[str, dict[str, Any]] = {
    "maml": {"test_inner_steps": 5},
    "maml_ht": {"test_inner_steps": 5},
}


@dataclass(frozen=True)
class SuiteSpec:
    """A suite: its runs, built from the output folder, the cache and the data root."""

    name: str
    help: str
    configs: Callable[[Path, Path | None, Path | None], list[RunConfig]]
    needs_data_root: bool = False


def ci_configs(output: Path, cache_dir: Path | None = None, data_root: Path | None = None) -> list[RunConfig]:
    """The ``ci`` suite: every method's smoke preset on synthetic_easy."""
    from fsbench.plugins import default_registry

    registry = default_registry()
    base = RunConfig(method="", dataset=CI_DATASET, preset="smoke", episodes=CI_EPISODES, seed=0,
                     device="cpu", precision="fp32", output=output, cache_dir=cache_dir)
    names = sorted(n for n, rec in registry.methods.items() if "smoke" in rec.presets)
    return [replace(base, method=name) for name in names]


def real_budget(preset, method: str) -> dict[str, dict[str, Any]]:
    """The overrides :data:`REAL_BUDGET` (and :data:`REAL_TASKS`, :data:`REAL_HPARAMS`) give
    ``method``'s ``quick`` preset."""
    overrides: dict[str, dict[str, Any]] = {}
    if preset.pretrain is not None:
        overrides["pretrain"] = dict(REAL_BUDGET["pretrain"])
    if preset.episodic is not None:
        episodic = {k: v for k, v in REAL_BUDGET["episodic"].items() if k != "tasks"}
        tasks = REAL_TASKS.get(method, REAL_BUDGET["episodic"]["tasks"])
        iterations = max(1, tasks // preset.episodic.meta_batch)
        overrides["episodic"] = {**episodic, "iterations": iterations, "val_every": iterations}
    if method in REAL_HPARAMS:
        overrides["hparams"] = dict(REAL_HPARAMS[method])
    return overrides


def real_configs(output: Path, cache_dir: Path | None, data_root: Path | None) -> list[RunConfig]:
    """The ``real`` suite: every method's quick preset, cut to :data:`REAL_BUDGET`, on miniImageNet."""
    if data_root is None:
        raise ConfigError("--suite real needs --data-root: the miniImageNet folder (train/ and val/)")
    if not Path(data_root).is_dir():
        raise ConfigError(f"--suite real: no miniImageNet at {data_root} (a folder with train/ and "
                          "val/); the real-data gate cannot run here")
    from fsbench.plugins import default_registry

    registry = default_registry()
    configs = []
    for name, rec in sorted(registry.methods.items()):
        if "quick" not in rec.presets:
            continue
        configs.append(RunConfig(
            method=name, dataset=REAL_DATASET, data_root=Path(data_root), preset="quick",
            shot=REAL_SHOT, episodes=REAL_EPISODES, eval_split="val", seed=0, device="cpu",
            precision="fp32", output=output, cache_dir=cache_dir,
            overrides=real_budget(rec.presets["quick"], name),
        ))
    return configs


SUITES: dict[str, SuiteSpec] = {
    "ci": SuiteSpec("ci", "every method's smoke preset on synthetic data (about a minute)", ci_configs),
    "real": SuiteSpec("real", "every method's quick preset, cut to a CI budget, on real miniImageNet "
                              "val (about 17 minutes cold on 2 cores; needs --data-root)", real_configs,
                      needs_data_root=True),
}


def run_suite(name: str, output: Path, cache_dir: Path | None = None, data_root: Path | None = None,
              show_progress: bool = True) -> list[dict[str, Any]]:
    """Run every configuration of suite ``name`` in order; returns their summaries."""
    from fsbench.progress import console
    from fsbench.runner import run
    from fsbench.summary import print_summary

    if name not in SUITES:
        raise ConfigError(f"unknown suite {name!r}; choose from {', '.join(SUITES)}")
    configs = SUITES[name].configs(Path(output), cache_dir, data_root)
    began = time.perf_counter()
    summaries = []
    for i, cfg in enumerate(configs, 1):
        console.print(f"[bold]suite {name}[/] {i}/{len(configs)}: {cfg.method}")
        summaries.append(run(cfg, show_progress=show_progress).summary)
    print_summary(summaries, Path(output))
    console.print(f"suite {name}: {len(configs)} runs in {time.perf_counter() - began:.0f} s")
    return summaries

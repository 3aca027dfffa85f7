"""The plan of a sweep: a DAG of pre-training jobs and run jobs.

Each distinct pre-training, named by its cache key (:func:`fsbench.engine.pretrain.cache_key`,
the same key ``fsbench run`` files it under), is one job; every run that needs it depends on it.
Runs that need no pre-training, or different ones, share nothing and may run in parallel.

Identity comes from the runner: a run's directory is ``OUTPUT/<Run.name>`` (method, dataset,
backbone, shot, preset, split, seed and a hash of the resolved config), and a run whose
``summary.json`` is there is done. A pre-training whose cache file exists is done. Planning
loads each distinct dataset once (decoded and cached, as a run would) to check every run's
episodes against its splits and to compute the exact cache keys.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from fsbench.config import RunConfig
from fsbench.errors import ConfigError, FsbenchError
from fsbench.results import SUMMARY

__all__ = ["Plan", "PretrainJob", "RunJob", "build_plan"]


@dataclass
class PretrainJob:
    """One pre-training: ``cfg`` is the first run that needs it (any of them would do)."""

    id: str
    key: str
    cfg: RunConfig
    path: Path  # the cache file it writes
    done: bool
    runs: list[str] = field(default_factory=list)  # ids of the runs that need it

    @property
    def label(self) -> str:
        return f"pretrain {self.key}"


@dataclass
class RunJob:
    id: str  # the run's directory name
    cfg: RunConfig
    run_dir: Path
    pretrain: str | None  # id of the PretrainJob it needs
    done: bool

    @property
    def label(self) -> str:
        return self.id


@dataclass
class Plan:
    pretrains: dict[str, PretrainJob]
    runs: dict[str, RunJob]
    seconds: float = 0.0  # time spent planning
    notes: list[str] = field(default_factory=list)

    @property
    def todo_runs(self) -> list[RunJob]:
        return [r for r in self.runs.values() if not r.done]

    @property
    def todo_pretrains(self) -> list[PretrainJob]:
        """Pre-trainings not cached yet that an unfinished run needs."""
        needed = {r.pretrain for r in self.todo_runs if r.pretrain is not None}
        return [p for p in self.pretrains.values() if not p.done and p.id in needed]

    def describe(self, limit: int | None = None) -> str:
        """The plan as text: jobs, what each depends on, what is already done."""
        lines = [
            f"plan: {len(self.runs)} run(s) ({len(self.runs) - len(self.todo_runs)} done, "
            f"{len(self.todo_runs)} to run), {len(self.pretrains)} pre-training(s) "
            f"({sum(p.done for p in self.pretrains.values())} cached, "
            f"{len(self.todo_pretrains)} to run); planned in {self.seconds:.2f} s"
        ]
        pre_lines = []
        todo = {p.id for p in self.todo_pretrains}
        for p in self.pretrains.values():
            state = "cached" if p.done else ("to run" if p.id in todo else "not needed")
            pre_lines.append(f"  [{state:>10}] {p.id}  <- needed by {len(p.runs)} run(s)  ({p.path})")
        run_lines = []
        for r in self.runs.values():
            state = "done" if r.done else "to run"
            after = f"  after {r.pretrain}" if r.pretrain else ""
            run_lines.append(f"  [{state:>10}] run {r.id}{after}")
        for title, block in (("pre-training jobs", pre_lines), ("run jobs", run_lines)):
            lines.append(f"{title}:")
            shown = block if limit is None else block[:limit]
            lines.extend(shown)
            if len(shown) < len(block):
                lines.append(f"  ... and {len(block) - len(shown)} more")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


@lru_cache(maxsize=4)
def _load_dataset(name: str, root: Path | None, cache_dir: Path):
    """Datasets the planner has loaded in this process (synthetic data takes seconds to make)."""
    from fsbench.data import load_dataset

    return load_dataset(name, root, cache_dir / "datasets", False)


def _dataset_loader():
    def load(cfg: RunConfig, cache_dir: Path):
        return _load_dataset(cfg.dataset, cfg.data_root, Path(cache_dir))

    return load


def build_plan(configs: Iterable[RunConfig]) -> Plan:
    """Resolve and check every run, then group them by the pre-training they need.

    Raises :class:`ConfigError` (one line, naming the run) before anything runs when a run is
    invalid: unknown method or preset, bad override, episodes its dataset cannot supply.
    """
    from fsbench.engine.pretrain import cache_key, probe_spec
    from fsbench.episodes import EpisodeSpec
    from fsbench.runner import Run

    began = time.perf_counter()
    load = _dataset_loader()
    pretrains: dict[str, PretrainJob] = {}
    runs: dict[str, RunJob] = {}
    checked: set[tuple[Any, ...]] = set()
    pre_memo: dict[tuple[Any, ...], tuple[str, Path]] = {}
    notes: list[str] = []
    for cfg in configs:
        where = f"run {cfg.method} (dataset {cfg.dataset}, shot {cfg.shot}, seed {cfg.seed})"
        try:
            run = Run(cfg, show_progress=False)
        except FsbenchError as exc:
            if not (cfg.device.startswith("cuda") and "CUDA" in str(exc)):
                raise ConfigError(f"grid: {where}: {exc}") from None
            # A driver without the GPUs its workers have: plan with the CPU's resolution of the
            # precision policy (it names runs and pre-trainings only when not fp32).
            run = Run(replace(cfg, device="cpu"), show_progress=False)
            note = ("device cuda is not available where the sweep is planned: names and cache keys "
                    "assume --precision resolves as on this CPU; pass --precision explicitly if not")
            if note not in notes:
                notes.append(note)
        name = run.name
        if name in runs:
            continue
        preset = run.preset
        try:
            dataset = load(cfg, run.cache_dir)
        except FsbenchError as exc:
            raise ConfigError(f"grid: {where}: {exc}") from None
        spec = EpisodeSpec(cfg.way, cfg.shot, cfg.query)
        shape_key = (id(dataset), cfg.way, cfg.shot, cfg.query, cfg.eval_split,
                     repr(preset.episodic),
                     preset.episodic is not None or preset.pretrain is not None)
        if shape_key not in checked:
            try:  # the same checks as the runner, before any job starts
                spec.check(dataset.split(cfg.eval_split), "eval")
                if preset.episodic is not None:
                    train_way = getattr(preset.episodic, "train_way", None) or cfg.way
                    EpisodeSpec(train_way, cfg.shot, preset.episodic.train_query).check(
                        dataset.split("train"), "train")
                if preset.episodic is not None or preset.pretrain is not None:
                    spec.check(dataset.split("val"), "val")
            except FsbenchError as exc:
                raise ConfigError(f"grid: {where}: {exc}") from None
            checked.add(shape_key)
        pre_id = None
        if preset.pretrain is not None:
            memo = (id(dataset), preset.backbone, repr(sorted(preset.backbone_kwargs.items())),
                    preset.pretrain, run.preset_name, cfg.seed, cfg.way, str(run.cache_dir),
                    _precision(run))
            if memo not in pre_memo:
                probe = probe_spec(spec, dataset.split("val"))
                key = cache_key(dataset, preset.backbone, preset.backbone_kwargs, preset.pretrain,
                                run.preset_name, cfg.seed, probe, *_precision(run))
                pre_memo[memo] = (key, run.cache_dir / "pretrained" / f"{key}.pt")
            key, path = pre_memo[memo]
            pre_id = f"pretrain:{key}"
            if pre_id not in pretrains:
                pretrains[pre_id] = PretrainJob(pre_id, key, cfg, path, path.exists())
            pretrains[pre_id].runs.append(name)
        run_dir = Path(cfg.output) / name
        runs[name] = RunJob(name, cfg, run_dir, pre_id, (run_dir / SUMMARY).exists())
    return Plan(pretrains, runs, seconds=time.perf_counter() - began, notes=notes)


def _precision(run: Any) -> tuple[str, ...]:
    """The resolved precision the pre-training's cache key includes (as the runner passes it)."""
    precision = getattr(run, "precision", None)
    dtype = getattr(precision, "dtype", None)
    return (dtype,) if isinstance(dtype, str) else ()

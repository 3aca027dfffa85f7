"""The plan of a sweep: a DAG of pre-training jobs and run jobs.

Each distinct pre-training, named by its cache key (:meth:`fsbench.runner.Run.pretrain_key`,
the key ``fsbench run`` files it under), is one job; every run that needs it depends on it.
Runs that need no pre-training, or different ones, share nothing and may run in parallel.

Identity and checks come from the runner's :class:`~fsbench.runner.Run`: a run's directory is
``OUTPUT/<Run.name>`` (method, dataset, backbone, shot, preset, split, seed and a hash of the
resolved config), and a run whose ``summary.json`` is there and validates
(:func:`fsbench.results.load_run`) is done; one that does not validate is *damaged*: it runs
again, its files moved aside first. A pre-training whose cache file exists is done (and that
file must be a pre-trained backbone fsbench wrote). Planning calls each run's preflight
(``--output`` and the cache folder) and loads each distinct dataset once (decoded and cached,
as a run would) for the run's own episode checks (:meth:`~fsbench.runner.Run.check`) and its
exact pre-training key; every problem is a one-line error before any job.
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
from fsbench.preflight import check_pretrained_cache
from fsbench.results import SUMMARY, run_damage

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
    damage: str | None = None  # why its finished results do not validate (it runs again)

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
            state = "done" if r.done else "damaged" if r.damage else "to run"
            after = f"  after {r.pretrain}" if r.pretrain else ""
            why = f"  ({r.damage}; moved aside when it runs)" if r.damage else ""
            run_lines.append(f"  [{state:>10}] run {r.id}{after}{why}")
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


def build_plan(configs: Iterable[RunConfig]) -> Plan:
    """Resolve and check every run, then group them by the pre-training they need.

    Raises :class:`ConfigError` (one line, naming the run) before anything runs when a run is
    invalid: unknown method, preset or backbone, bad override, episodes its dataset cannot
    supply, an output or cache folder that cannot be used, a cached pre-training that is not one.
    """
    began = time.perf_counter()
    planner = _Planner()
    for cfg in configs:
        where = f"run {cfg.method} (dataset {cfg.dataset}, shot {cfg.shot}, seed {cfg.seed})"
        try:
            planner.add(cfg)
        except FsbenchError as exc:
            raise ConfigError(f"grid: {where}: {exc}") from None
    return Plan(planner.pretrains, planner.runs, seconds=time.perf_counter() - began,
                notes=planner.notes)


class _Planner:
    """The jobs of a plan, added one run at a time (folder and cache-file checks once each)."""

    def __init__(self) -> None:
        self.pretrains: dict[str, PretrainJob] = {}
        self.runs: dict[str, RunJob] = {}
        self.notes: list[str] = []
        self.checked: set[tuple[Any, ...]] = set()

    def add(self, cfg: RunConfig) -> None:
        run = self._resolve(cfg)
        name = run.name
        if name in self.runs:
            return
        if ("folders", cfg.output, run.cache_dir) not in self.checked:
            run.preflight()
            self.checked.add(("folders", cfg.output, run.cache_dir))
        dataset = _load_dataset(cfg.dataset, cfg.data_root, Path(run.cache_dir))
        eval_data = (dataset if cfg.eval_dataset is None else
                     _load_dataset(cfg.eval_dataset, cfg.eval_data_root, Path(run.cache_dir)))
        run.check(dataset, eval_data)
        pre_id = self._pretrain(run, dataset) if run.preset.pretrain is not None else None
        run_dir = Path(cfg.output) / name
        finished = (run_dir / SUMMARY).exists()
        damage = run_damage(run_dir) if finished else None
        self.runs[name] = RunJob(name, cfg, run_dir, pre_id, finished and not damage, damage)

    def _resolve(self, cfg: RunConfig) -> Any:
        from fsbench.runner import Run

        try:
            return Run(cfg, show_progress=False)
        except FsbenchError as exc:
            if not (cfg.device.startswith("cuda") and "CUDA" in str(exc)):
                raise
        # A driver without the GPUs its workers have: plan with the CPU's resolution of the
        # precision policy (it names runs and pre-trainings only when not fp32).
        note = ("device cuda is not available where the sweep is planned: names and cache keys "
                "assume --precision resolves as on this CPU; pass --precision explicitly if not")
        if note not in self.notes:
            self.notes.append(note)
        return Run(replace(cfg, device="cpu"), show_progress=False)

    def _pretrain(self, run: Any, dataset: Any) -> str:
        """The id of the pre-training job ``run`` needs (added, and its cache file checked, once)."""
        path = run.pretrain_path(dataset)
        pre_id = f"pretrain:{path.stem}"
        if pre_id not in self.pretrains:
            check_pretrained_cache(path)
            self.pretrains[pre_id] = PretrainJob(pre_id, path.stem, run.cfg, path, path.exists())
        self.pretrains[pre_id].runs.append(run.name)
        return pre_id

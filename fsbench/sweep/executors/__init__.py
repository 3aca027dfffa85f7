"""Sweep executors: where a plan's jobs execute.

An executor receives the :class:`Work` of a plan (pre-trainings to run, runs to run, the
pre-trainings already cached) and a ``report`` callback, runs every job respecting the
dependencies (a run after the pre-training it needs), and calls ``report`` from the driver's
thread with plain-data events::

    {"job": ID, "state": "running" | "phase", "phase": "...", "pid": ..., "host": ...}
    {"job": ID, "state": "done", "result": {...}}           # execute_job's dict, "ok": True
    {"job": ID, "state": "failed", "error": "one line"}

A failing job is reported and the rest of the sweep goes on (runs needing a failed
pre-training are reported failed too). The driver writes results; an executor returns when
every job is done or failed.

Executors are plugins: a package's ``fsbench_executors`` hook returns :class:`ExecutorRecord` s
(see :mod:`fsbench.hookspecs`); fsbench's own (``local``, ``ray``, ``slurm``) register through the
same entry-point group, from ``fsbench_plugins.executors``.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fsbench.sweep.plan import PretrainJob, RunJob

__all__ = ["Executor", "ExecutorOptions", "Report", "Work", "cpu_threads"]

Report = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class ExecutorOptions:
    """Every executor's options (each reads its own), from ``fsbench sweep``'s flags."""

    workers: int | None = None  # local: worker processes (default 1, or one per GPU)
    cpus_per_job: int | None = None  # ray / slurm: CPUs per job (default 1 / local threads)
    gpus_per_job: int | None = None  # ray / slurm: None: 1 when the cluster has GPUs
    retries: int = 3  # ray: retries of a task lost with its worker
    ray_address: str | None = None  # None: a local cluster started for the sweep
    ray_shared_cache: bool = False  # the cache directory is shared by every Ray node
    slurm_partition: str | None = None
    slurm_time: int = 60  # minutes per job
    slurm_cluster: str | None = None  # None: Slurm; "local": submitit's local executor (tests)
    slurm_folder: Path | None = None  # submitit's logs; default OUTPUT/.sweep/slurm
    slurm_array: bool = False  # submit dependent runs as job arrays (one per pre-training)
    check_shared_fs: bool = True
    output: Path = Path("results")
    extra: dict[str, Any] = field(default_factory=dict)  # a third-party executor's options


@dataclass
class Work:
    """What an executor must do."""

    pretrains: list[PretrainJob]
    runs: list[RunJob]
    cached: dict[str, Path]  # pre-training id -> its cache file, for runs whose pre-training is done

    def dependents(self, pretrain_id: str) -> list[RunJob]:
        if not hasattr(self, "_by_pretrain"):
            self._by_pretrain: dict[str, list[RunJob]] = {}
            for r in self.runs:
                if r.pretrain is not None:
                    self._by_pretrain.setdefault(r.pretrain, []).append(r)
        return self._by_pretrain.get(pretrain_id, [])

    @property
    def pending_pretrain_ids(self) -> set[str]:
        return {p.id for p in self.pretrains}


class Executor(ABC):
    """Runs a sweep's jobs; see the module docstring."""

    name: str = ""

    @abstractmethod
    def run(self, work: Work, report: Report) -> None:
        """Run every job of ``work``, calling ``report`` with its events; return when all ended."""

    def check(self, work: Work) -> None:  # noqa: B027 - optional hook
        """Fail before any job starts if this executor cannot run ``work`` (one-line error)."""


def cpu_threads() -> int:
    """Threads this machine offers: ``OMP_NUM_THREADS`` when set, else the CPU count."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def missing_extra(package: str, extra: str) -> str:
    return f'the {extra} executor needs {package}, which is not installed: pip install "fsbench[{extra}]"'

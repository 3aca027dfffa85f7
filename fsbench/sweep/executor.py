"""Sweep executors: where a plan's jobs execute, and the options every executor may read.

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

Executors are plugins: a package's ``fsbench_executors`` hook returns
:class:`fsbench.hookspecs.ExecutorRecord` s, each with its factory and the dataclass of its own
``fsbench sweep`` options (declared with :func:`fsbench.options.option`, as the run options are);
fsbench's own (``local``, ``ray``, ``slurm``) live in ``fsbench_plugins.executors`` and register
through the same entry-point group. The core declares only the options more than one executor
reads (:class:`ExecutorOptions`).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsbench.options import option, parse_int
from fsbench.sweep.plan import PretrainJob, RunJob

__all__ = ["EXECUTION", "Executor", "ExecutorOptions", "Report", "Work", "cpu_threads",
           "missing_extra"]

Report = Callable[[dict[str, Any]], None]


EXECUTION = "execution"  # the --help group of the executor options below


@dataclass(frozen=True)
class ExecutorOptions:
    """The ``fsbench sweep`` options every executor may read (each reads those it uses).

    Generic because more than one bundled executor reads each: ``--cpus-per-job`` (local, ray,
    slurm), ``--gpus-per-job`` (ray, slurm), ``--retries`` (local, ray). ``output`` is the sweep's
    ``--output`` (where an executor may put its own files), not a flag of its own.
    """

    cpus_per_job: int | None = option(None, parse=parse_int, least=1, group=EXECUTION,
                                      help="CPUs (torch threads) per job (default: the executor's; "
                                           "local: its share of the threads, ray / slurm: 1)")
    gpus_per_job: int | None = option(None, parse=parse_int, least=0, group=EXECUTION,
                                      help="GPUs per job, for executors that reserve them (default: "
                                           "1 where the cluster has GPUs, else 0)")
    retries: int = option(3, parse=parse_int, least=0, group=EXECUTION,
                          help="retries of a job lost with its worker process (killed, out of "
                               "memory); a job's own error is not retried")
    output: Path = Path("results")


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

"""The ``local`` executor: worker processes on this machine (the default).

``--workers N`` processes (default 1; with several visible GPUs, one per GPU, each seeing its
own through ``CUDA_VISIBLE_DEVICES``), started with ``spawn``; each gets its share of the CPU
threads (``OMP_NUM_THREADS`` or the core count, divided by N; ``--cpus-per-job`` sets it). On
the CPU a run's numbers depend on its torch thread count (float reductions are split
differently), so a sweep's runs equal ``OMP_NUM_THREADS=T fsbench run ...`` with T the threads
per job (recorded in each summary's ``device_name``). Pre-trainings are submitted
first; a run is submitted when the pre-training it needs has finished, so N workers keep N
independent jobs busy. Jobs read and write the sweep's output and cache directories directly
(the same machine), exactly as ``fsbench run`` would, so an interrupted run resumes from its
checkpoint when the sweep is run again; a run another process holds (a second sweep on the same
``--output``) is waited for, never run twice.

Faults:

* Each worker is a one-process pool of its own (a *slot*), so a worker that dies (killed,
  out of memory) loses only its own job: that slot's pool is restarted and the job retried, up
  to ``--retries`` times, as Ray retries a task lost with its worker. A job's own error (an
  exception, reported as a failed result) is not retried.
* Workers die with the driver: on Linux each asks the kernel for SIGKILL when its parent dies
  (``prctl(PR_SET_PDEATHSIG)``); elsewhere a watchdog thread exits when the parent pid changes.
  A ``kill -9`` of the driver leaves no worker holding locks or memory.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from fsbench.options import option, parse_int
from fsbench.sweep.executor import Executor, ExecutorOptions, Report, Work, cpu_threads

__all__ = ["LocalExecutor", "LocalOptions", "die_with_parent", "visible_gpus"]

_events: Any = None
_threads: int | None = None

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCHDOG_SECONDS = 1.0  # how often a worker without prctl looks for its parent


def _init_worker(events: Any, threads: int, gpu: str | None, parent: int) -> None:
    global _events, _threads
    _events, _threads = events, threads
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    die_with_parent(parent)


def die_with_parent(parent: int) -> str:
    """Make this process end when process ``parent`` (its parent) does; returns how."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                if os.getppid() != parent:  # the parent died before prctl took effect
                    os._exit(1)
                return "prctl"
        except (OSError, AttributeError):
            pass
    threading.Thread(target=_watch_parent, args=(parent,), name="fsbench-watchdog",
                     daemon=True).start()
    return "watchdog"


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCHDOG_SECONDS)
    os._exit(1)


def _work(kind: str, job_id: str, cfg: Any) -> dict[str, Any]:
    from fsbench.sweep.jobs import execute_job

    return execute_job(kind, job_id, cfg, emit=_events.put, threads=_threads)


def visible_gpus() -> list[str]:
    """The GPUs this machine shows (ids as CUDA_VISIBLE_DEVICES names them)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:
        return []


class _Slot:
    """One worker: a one-process pool with its own event queue, both replaced when it dies.

    Nothing is shared between workers, so a worker killed in the middle of a write (holding a
    queue's lock) cannot stall the others.
    """

    def __init__(self, ctx: Any, threads: int, gpu: str | None) -> None:
        self.ctx, self.threads, self.gpu = ctx, threads, gpu
        self.pool: ProcessPoolExecutor | None = None
        self.events: Any = None
        self.future: Future | None = None
        self.job: tuple[str, Any] | None = None

    def submit(self, kind: str, job: Any) -> None:
        if self.pool is None:
            self.events = self.ctx.Queue()
            self.pool = ProcessPoolExecutor(
                1, mp_context=self.ctx, initializer=_init_worker,
                initargs=(self.events, self.threads, self.gpu, os.getpid()))
        self.job, self.future = (kind, job), self.pool.submit(_work, kind, job.id, job.cfg)

    def drain(self, report: Report) -> None:
        """Report the events its worker has sent (a dead worker's last one may be torn)."""
        while self.events is not None:
            try:
                event = self.events.get_nowait()
            except Exception:  # queue.Empty, or a message cut short by a killed worker
                return
            report(event)

    def take(self) -> tuple[str, Any, dict[str, Any] | None]:
        """The finished job and its result; None when its worker died (the pool is dropped)."""
        assert self.job is not None and self.future is not None
        (kind, job), future = self.job, self.future
        self.job = self.future = None
        try:
            return kind, job, future.result()
        except BrokenProcessPool:
            self.close()
            return kind, job, None
        except Exception as exc:  # the job's result could not come back (not a lost worker)
            return kind, job, {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.events.close()
            self.pool = self.events = None


@dataclass(frozen=True)
class LocalOptions:
    """The local executor's own ``fsbench sweep`` options."""

    workers: int | None = option(None, parse=parse_int, least=1,
                                 help="worker processes (default 1, or one per visible GPU)")


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, common: ExecutorOptions | None = None,
                 options: LocalOptions | None = None) -> None:
        self.common = common or ExecutorOptions()
        self.options = options or LocalOptions()

    def layout(self) -> tuple[int, int, list[str] | None]:
        """(workers, threads per worker, GPU of each worker slot or None)."""
        gpus = visible_gpus()
        workers = self.options.workers or (len(gpus) if len(gpus) > 1 else 1)
        threads = self.common.cpus_per_job or max(1, cpu_threads() // workers)
        slots = [gpus[i % len(gpus)] for i in range(workers)] if len(gpus) > 1 else None
        return workers, threads, slots

    def run(self, work: Work, report: Report) -> None:
        workers, threads, gpus = self.layout()
        ctx = mp.get_context("spawn")
        slots = [_Slot(ctx, threads, gpus[i] if gpus else None) for i in range(workers)]
        try:
            _Schedule(work, report, slots, self.common.retries).run()
        finally:
            for slot in slots:
                slot.close()


class _Schedule:
    """Jobs to slots in dependency order; lost jobs retried; every job ends done or failed."""

    def __init__(self, work: Work, report: Report, slots: list[_Slot], retries: int) -> None:
        self.work, self.report, self.slots = work, report, slots
        self.retries = retries
        self.ready: deque[tuple[str, Any]] = deque(("pretrain", p) for p in work.pretrains)
        pending = work.pending_pretrain_ids
        self.ready.extend(("run", r) for r in work.runs if r.pretrain not in pending)
        self.lost: dict[str, int] = {}

    def run(self) -> None:
        while self.ready or any(slot.job for slot in self.slots):
            for slot in self.slots:
                if slot.job is None and self.ready:
                    slot.submit(*self.ready.popleft())
            busy = [slot.future for slot in self.slots if slot.future is not None]
            done, _ = wait(busy, timeout=0.25, return_when=FIRST_COMPLETED)
            for slot in self.slots:
                slot.drain(self.report)
                if slot.future is not None and slot.future in done:
                    self.finish(*slot.take())

    def finish(self, kind: str, job: Any, result: dict[str, Any] | None) -> None:
        if result is None:  # the worker died with the job
            lost = self.lost[job.id] = self.lost.get(job.id, 0) + 1
            if lost <= self.retries:
                self.report({"job": job.id, "state": "phase",
                             "phase": f"worker lost; retry {lost} of {self.retries}"})
                self.ready.appendleft((kind, job))
                return
            result = {"ok": False, "error": (
                f"its worker process died {lost} time(s) (killed, or out of memory?); "
                f"gave up after --retries {self.retries}")}
        if result.get("ok"):
            self.report({"job": job.id, "state": "done", "result": result})
        else:
            self.report({"job": job.id, "state": "failed", "error": result.get("error", "?")})
        if kind != "pretrain":
            return
        for r in self.work.dependents(job.id):
            if result.get("ok"):
                self.ready.append(("run", r))
            else:
                self.report({"job": r.id, "state": "failed",
                             "error": f"its pre-training {job.key} failed"})

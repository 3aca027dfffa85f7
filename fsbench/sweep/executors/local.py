"""The ``local`` executor: a pool of worker processes on this machine (the default).

``--workers N`` processes (default 1; with several visible GPUs, one per GPU, each seeing its
own through ``CUDA_VISIBLE_DEVICES``), started with ``spawn``; each gets its share of the CPU
threads (``OMP_NUM_THREADS`` or the core count, divided by N; ``--cpus-per-job`` sets it). On
the CPU a run's numbers depend on its torch thread count (float reductions are split
differently), so a sweep's runs equal ``OMP_NUM_THREADS=T fsbench run ...`` with T the threads
per job (recorded in each summary's ``device_name``). Pre-trainings are submitted
first; a run is submitted when the pre-training it needs has finished, so a pool of N keeps N
independent jobs busy. Jobs read and write the sweep's output and cache directories directly
(the same machine), exactly as ``fsbench run`` would, so an interrupted run resumes from its
checkpoint when the sweep is run again.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_mod
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from fsbench.errors import ConfigError
from fsbench.sweep.executors import Executor, ExecutorOptions, Report, Work, cpu_threads

_events: Any = None
_threads: int | None = None


def _init_worker(events: Any, threads: int, gpu_slots: Any) -> None:
    global _events, _threads
    _events, _threads = events, threads
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if gpu_slots is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_slots.get())


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


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, options: ExecutorOptions) -> None:
        if options.workers is not None and options.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {options.workers}")
        self.options = options

    def layout(self) -> tuple[int, int, list[str] | None]:
        """(workers, threads per worker, GPU of each worker slot or None)."""
        gpus = visible_gpus()
        workers = self.options.workers or (len(gpus) if len(gpus) > 1 else 1)
        threads = self.options.cpus_per_job or max(1, cpu_threads() // workers)
        slots = [gpus[i % len(gpus)] for i in range(workers)] if len(gpus) > 1 else None
        return workers, threads, slots

    def run(self, work: Work, report: Report) -> None:
        workers, threads, slots = self.layout()
        ctx = mp.get_context("spawn")
        events = ctx.Queue()
        gpu_slots = None
        if slots is not None:
            gpu_slots = ctx.Queue()
            for s in slots:
                gpu_slots.put(s)
        futures: dict[Future, tuple[str, Any]] = {}

        def drain() -> None:
            while True:
                try:
                    report(events.get_nowait())
                except queue_mod.Empty:
                    return

        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(events, threads, gpu_slots)) as pool:

            def submit(kind: str, job: Any) -> None:
                try:
                    futures[pool.submit(_work, kind, job.id, job.cfg)] = (kind, job)
                except Exception as exc:  # a broken pool (a worker was killed)
                    report({"job": job.id, "state": "failed",
                            "error": f"could not start: {type(exc).__name__}: {exc}"})

            for p in work.pretrains:
                submit("pretrain", p)
            pending = work.pending_pretrain_ids
            for r in work.runs:
                if r.pretrain not in pending:
                    submit("run", r)
            while futures:
                done, _ = wait(list(futures), timeout=0.25, return_when=FIRST_COMPLETED)
                drain()
                for fut in done:
                    kind, job = futures.pop(fut)
                    try:
                        result = fut.result()
                    except Exception as exc:  # the worker process died
                        result = {"ok": False, "error": f"worker process died ({type(exc).__name__}: {exc})"}
                    if result.get("ok"):
                        report({"job": job.id, "state": "done", "result": result})
                    else:
                        report({"job": job.id, "state": "failed", "error": result.get("error", "?")})
                    if kind != "pretrain":
                        continue
                    for r in work.dependents(job.id):
                        if result.get("ok"):
                            submit("run", r)
                        else:
                            report({"job": r.id, "state": "failed",
                                    "error": f"its pre-training {job.key} failed"})
            drain()

"""The ``ray`` executor: each job is a Ray core task (``pip install "fsbench[ray]"``).

Its own options (:class:`RayOptions`): ``--ray-address`` and ``--ray-shared-cache``; it also reads
the generic ``--cpus-per-job``, ``--gpus-per-job`` and ``--retries``.

* Cluster: ``--ray-address auto`` or ``HOST:PORT`` joins a running cluster; without it a local
  cluster is started for the sweep (and stopped after). A driver that already called
  ``ray.init`` keeps its cluster.
* Dependencies are Ray's: a run task takes its pre-training task's result (an ``ObjectRef``) as
  an argument, so Ray starts it once the pre-training has finished, wherever it is.
* The pre-trained backbone travels in that result, through the object store (the cache entry's
  bytes), and is installed in the run worker's cache directory; with ``--ray-shared-cache`` it
  is read from the shared cache directory instead.
* Runs execute in a scratch directory on their worker; their files come back as data and the
  driver writes them under ``--output``: workers need no shared filesystem.
* Resources per task: ``--cpus-per-job`` CPUs (and as many torch threads), ``num_gpus=1`` for
  runs on a GPU when the cluster has GPUs (``--gpus-per-job`` overrides).
* A task lost with its worker (process killed, node gone) is retried by Ray (``--retries``);
  a job failing for its own reasons returns its error as data, is reported, and the rest of the
  sweep goes on (runs that needed a failed pre-training report that).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fsbench.errors import FsbenchError
from fsbench.options import SWITCH, option
from fsbench.sweep.executor import Executor, ExecutorOptions, Report, Work, missing_extra
from fsbench.sweep.jobs import one_line, read_cache_entry

__all__ = ["RayExecutor", "RayOptions"]


@dataclass(frozen=True)
class RayOptions:
    """The ray executor's own ``fsbench sweep`` options."""

    ray_address: str | None = option(None, help="auto, or HOST:PORT of a running cluster "
                                                "(default: start a local one)")
    ray_shared_cache: bool = option(False, kind=SWITCH,
                                    help="every node sees --cache-dir: pre-trained weights pass "
                                         "through it, not the object store")


def _import_ray():
    try:
        import ray
    except ImportError:
        raise FsbenchError(missing_extra("Ray", "ray")) from None
    return ray


def _job(kind: str, job_id: str, cfg: Any, pretrain: dict[str, Any] | None, sink: Any,
         threads: int, return_files: bool, scratch: bool) -> dict[str, Any]:
    """The body of every task (runs on a Ray worker)."""
    from fsbench.sweep.jobs import execute_job

    def emit(event: dict[str, Any]) -> None:
        sink.put.remote(event)

    return execute_job(kind, job_id, cfg, emit=emit, pretrain=pretrain, scratch=scratch,
                       return_files=return_files, threads=threads)


class _EventSink:
    """A tiny actor collecting workers' progress events for the driver to poll."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def put(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def drain(self) -> list[dict[str, Any]]:
        out, self.events = self.events, []
        return out


@lru_cache(maxsize=1)
def _remotes():
    ray = _import_ray()
    return ray.remote(_job), ray.remote(num_cpus=0)(_EventSink)


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, common: ExecutorOptions | None = None,
                 options: RayOptions | None = None) -> None:
        _import_ray()
        self.common = common or ExecutorOptions()
        self.options = options or RayOptions()

    def run(self, work: Work, report: Report) -> None:
        ray = _import_ray()
        started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.options.ray_address:
                kwargs["address"] = self.options.ray_address
            try:
                ray.init(**kwargs)
            except Exception as exc:
                raise FsbenchError(f"cannot start or join the Ray cluster "
                                   f"({self.options.ray_address or 'local'}): {one_line(exc)}") from None
            started = True
        try:
            self._run(ray, work, report)
        finally:
            if started:
                ray.shutdown()

    def _resources(self, ray: Any, cfg: Any) -> dict[str, Any]:
        cpus = self.common.cpus_per_job or 1
        gpus = self.common.gpus_per_job
        if gpus is None:
            has_gpus = ray.cluster_resources().get("GPU", 0) > 0
            gpus = 1 if has_gpus and cfg.device != "cpu" else 0
        return {"num_cpus": cpus, "num_gpus": gpus, "max_retries": self.common.retries,
                "retry_exceptions": False}

    def _run(self, ray: Any, work: Work, report: Report) -> None:
        job_fn, sink_cls = _remotes()
        sink = sink_cls.remote()
        shared = self.options.ray_shared_cache
        threads = self.common.cpus_per_job or 1
        refs: dict[Any, Any] = {}
        pre_refs: dict[str, Any] = {}
        for p in work.pretrains:
            ref = job_fn.options(**self._resources(ray, p.cfg), name=p.label).remote(
                "pretrain", p.id, p.cfg, None, sink, threads, not shared, False)
            pre_refs[p.id] = ref
            refs[ref] = p
        needed = {r.pretrain for r in work.runs if r.pretrain is not None}
        for pid, path in work.cached.items():
            if pid in needed:  # done before: its weights travel from the driver's cache
                pre_refs[pid] = ray.put({"ok": True} if shared else {"ok": True, "files": read_cache_entry(path)})
        for r in work.runs:
            ref = job_fn.options(**self._resources(ray, r.cfg), name=r.label).remote(
                "run", r.id, r.cfg, pre_refs.get(r.pretrain) if r.pretrain else None, sink,
                threads, False, True)
            refs[ref] = r

        def drain() -> None:
            for event in ray.get(sink.drain.remote()):
                report(event)

        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=0.2)
            drain()
            for ref in ready:
                job = refs.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as exc:  # lost beyond its retries, or cancelled
                    result = {"ok": False, "error": f"Ray task lost: {one_line(exc)}"}
                if result.get("ok"):
                    report({"job": job.id, "state": "done", "result": result})
                else:
                    report({"job": job.id, "state": "failed", "error": result.get("error", "?")})
        drain()
        ray.kill(sink)

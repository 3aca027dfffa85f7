"""The ``slurm`` executor: each job is a Slurm job submitted with submitit
(``pip install "fsbench[slurm]"``).

* Pre-training jobs are submitted first; each run is submitted with an ``afterok`` dependency
  on the pre-training it needs (``--slurm-array``: the runs of one pre-training as one job
  array), so Slurm orders them; a run whose pre-training failed never starts and is reported.
* Its own options (:class:`SlurmOptions`): ``--slurm-partition``, ``--slurm-time`` (minutes),
  ``--slurm-array``, ``--slurm-cluster``, ``--slurm-folder``, ``--no-shared-fs-check``; it also
  reads the generic ``--cpus-per-job`` and ``--gpus-per-job``.
* Jobs write their run directories and the pre-training cache directly, so ``--output`` and the
  cache directory must be on a filesystem every node sees (NFS, Lustre, GPFS, BeeGFS, CephFS...):
  checked before anything is submitted (``--no-shared-fs-check`` to skip the check).
* Progress and results come back as small JSON status files in submitit's folder (the driver
  never unpickles a job's output); a job that ends without one (killed, timed out) is reported
  with its state and log path.
* ``--slurm-cluster local`` runs the same jobs through submitit's local executor (no Slurm;
  the driver then releases each run when its pre-training has finished). Tests use it.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsbench import strictjson
from fsbench.errors import ConfigError, FsbenchError
from fsbench.options import SWITCH, option, parse_int, parse_path
from fsbench.sweep.executor import Executor, ExecutorOptions, Report, Work, missing_extra


@dataclass(frozen=True)
class SlurmOptions:
    """The slurm executor's own ``fsbench sweep`` options."""

    slurm_partition: str | None = option(None, help="partition")
    slurm_time: int = option(60, parse=parse_int, least=1, help="minutes per job")
    slurm_array: bool = option(False, kind=SWITCH,
                               help="submit the runs of each pre-training as one job array")
    slurm_cluster: str | None = option(None, choices=("slurm", "local"),
                                       help="'local' runs the jobs through submitit's local "
                                            "executor (testing)")
    slurm_folder: Path | None = option(None, parse=parse_path, metavar="DIR",
                                       help="submitit's job folder (default OUTPUT/.sweep/slurm)")
    skip_shared_fs_check: bool = option(False, kind=SWITCH, flag="--no-shared-fs-check",
                                        help="trust that --output and --cache-dir are on a shared "
                                             "filesystem")

#: Filesystem types that live on one machine: output there is invisible to other nodes.
LOCAL_FILESYSTEMS = frozenset({
    "ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "ramfs", "overlay", "f2fs", "zfs",
    "devtmpfs", "squashfs", "vfat", "exfat", "ntfs", "apfs", "hfs",
})


def _import_submitit():
    try:
        import submitit
    except ImportError:
        raise FsbenchError(missing_extra("submitit", "slurm")) from None
    return submitit


def filesystem_type(path: Path) -> str:
    """The type of the filesystem holding ``path`` (from /proc/mounts; "" if unknown)."""
    path = Path(path).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    best, kind = "", ""
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount = parts[1].replace("\\040", " ")
        if (str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
            best, kind = mount, parts[2]
    return kind


def check_shared(paths: dict[str, Path]) -> None:
    for flag, path in paths.items():
        kind = filesystem_type(path)
        if kind in LOCAL_FILESYSTEMS:
            raise ConfigError(
                f"--executor slurm needs {flag} on a filesystem shared by the cluster's nodes "
                f"(NFS, Lustre, GPFS, ...); {path} is on {kind}, local to this machine. Use a shared "
                f"folder, or --no-shared-fs-check if this {kind} is shared"
            )


def _status_name(job_id: str) -> str:
    return hashlib.sha1(job_id.encode()).hexdigest()[:16] + ".json"


def _slurm_job(kind: str, job_id: str, cfg: Any, status: str, threads: int) -> None:
    """The body of every Slurm job: run it, leave events and the result as JSON in ``status``."""
    from fsbench.atomic import atomic_write_json
    from fsbench.sweep.jobs import execute_job

    def emit(event: dict[str, Any]) -> None:
        atomic_write_json(status, event)

    result = execute_job(kind, job_id, cfg, emit=emit, threads=threads)
    atomic_write_json(status, {"job": job_id, "state": "result", "result": result})


class SlurmExecutor(Executor):
    name = "slurm"

    def __init__(self, common: ExecutorOptions | None = None,
                 options: SlurmOptions | None = None) -> None:
        _import_submitit()
        self.common = common or ExecutorOptions()
        self.options = options or SlurmOptions()
        self.local = self.options.slurm_cluster == "local"

    def check(self, work: Work) -> None:
        if self.local or self.options.skip_shared_fs_check:
            return
        from fsbench.data.cache import default_cache_dir

        paths = {"--output": Path(self.common.output)}
        for job in [*work.pretrains, *work.runs]:
            paths.setdefault("--cache-dir", Path(job.cfg.cache_dir or default_cache_dir()))
        paths["the submitit folder (--slurm-folder)"] = self._folder()
        check_shared(paths)

    def _folder(self) -> Path:
        return Path(self.options.slurm_folder or Path(self.common.output) / ".sweep" / "slurm")

    def _executor(self):
        submitit = _import_submitit()
        folder = self._folder() / "%j"
        ex = submitit.AutoExecutor(folder=folder, cluster="local" if self.local else "slurm")
        params: dict[str, Any] = {
            "timeout_min": self.options.slurm_time,
            "cpus_per_task": self.common.cpus_per_job or 1,
            "gpus_per_node": self.common.gpus_per_job or 0,
            "name": "fsbench-sweep",
        }
        if self.options.slurm_partition and not self.local:
            params["slurm_partition"] = self.options.slurm_partition
        ex.update_parameters(**params)
        return ex

    def run(self, work: Work, report: Report) -> None:
        ex = self._executor()
        status_dir = self._folder() / "status"
        status_dir.mkdir(parents=True, exist_ok=True)
        threads = self.common.cpus_per_job or 1
        active: dict[str, tuple[Any, Any, Path]] = {}  # job id -> (submitit job, plan job, status)
        seen: dict[str, str] = {}

        def submit(kind: str, job: Any, after: Any = None) -> Any:
            status = status_dir / _status_name(job.id)
            status.unlink(missing_ok=True)
            if not self.local:
                dep = {"dependency": f"afterok:{after.job_id}"} if after is not None else {}
                ex.update_parameters(slurm_additional_parameters=dep)
            sjob = ex.submit(_slurm_job, kind, job.id, job.cfg, str(status), threads)
            active[job.id] = (sjob, job, status)
            return sjob

        pre_jobs: dict[str, Any] = {}
        for p in work.pretrains:
            pre_jobs[p.id] = submit("pretrain", p)
        waiting: dict[str, list[Any]] = {}
        for r in work.runs:
            if r.pretrain in pre_jobs and self.local:
                waiting.setdefault(r.pretrain, []).append(r)  # released when it has finished
            elif r.pretrain in pre_jobs and self.options.slurm_array:
                waiting.setdefault(r.pretrain, []).append(r)
            else:
                submit("run", r, pre_jobs.get(r.pretrain))
        if not self.local and self.options.slurm_array:
            for pid, runs in list(waiting.items()):
                ex.update_parameters(slurm_additional_parameters={"dependency": f"afterok:{pre_jobs[pid].job_id}"})
                with ex.batch():
                    batch = [(r, ex.submit(_slurm_job, "run", r.id, r.cfg,
                                           str(status_dir / _status_name(r.id)), threads)) for r in runs]
                for r, sjob in batch:
                    active[r.id] = (sjob, r, status_dir / _status_name(r.id))
            waiting.clear()

        while active:
            time.sleep(0.5)
            for job_id, (sjob, job, status) in list(active.items()):
                event = _read_status(status)
                if event is not None and event.get("state") in ("running", "phase"):
                    key = json.dumps(event, sort_keys=True)
                    if seen.get(job_id) != key:
                        seen[job_id] = key
                        report(event)
                if not sjob.done():
                    continue
                del active[job_id]
                event = _read_status(status)
                result = event.get("result") if event and event.get("state") == "result" else None
                if result is None:
                    result = {"ok": False, "error": (
                        f"slurm job {sjob.job_id} ended without a result (state {sjob.state}); "
                        f"log: {sjob.paths.stderr}")}
                if result.get("ok"):
                    report({"job": job_id, "state": "done", "result": result})
                else:
                    report({"job": job_id, "state": "failed", "error": result.get("error", "?")})
                for r in waiting.pop(job_id, []):
                    if result.get("ok"):
                        submit("run", r)
                    else:
                        report({"job": r.id, "state": "failed", "error": f"its pre-training {job.key} failed"})
                if not result.get("ok") and not self.local:
                    for other_id, (other, other_job, _) in list(active.items()):
                        if getattr(other_job, "pretrain", None) == job_id:  # afterok never satisfied
                            other.cancel(check=False)
                            del active[other_id]
                            report({"job": other_id, "state": "failed",
                                    "error": f"its pre-training {job.key} failed"})


MAX_STATUS_BYTES = 16 << 20  # a status holds one event: a phase, or a result with its summary


def _read_status(path: Path) -> dict[str, Any] | None:
    try:
        return strictjson.read_json(path, MAX_STATUS_BYTES)
    except strictjson.JSONError:  # not written yet, half-written, or refused
        return None


__all__ = ["LOCAL_FILESYSTEMS", "SlurmExecutor", "SlurmOptions", "check_shared", "filesystem_type"]

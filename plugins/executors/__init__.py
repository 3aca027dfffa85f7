"""fsbench's bundled sweep executors, registered like any third-party executor.

``local`` (a process pool on this machine, needs nothing), ``ray`` (Ray core tasks; ``pip install
"fsbench[ray]"``) and ``slurm`` (submitit; ``pip install "fsbench[slurm]"``). The executors live
in :mod:`fsbench.sweep.executors`; this module only offers them through the ``fsbench_executors``
hook, so that a third-party package adds one the same way (see the README, "Sweeps").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fsbench.hookspecs import ExecutorRecord, hookimpl

if TYPE_CHECKING:  # loading the registry imports no executor code
    from fsbench.sweep.executors import ExecutorOptions


def _local(options: ExecutorOptions):
    from fsbench.sweep.executors.local import LocalExecutor

    return LocalExecutor(options)


def _ray(options: ExecutorOptions):
    from fsbench.sweep.executors.ray import RayExecutor

    return RayExecutor(options)


def _slurm(options: ExecutorOptions):
    from fsbench.sweep.executors.slurm import SlurmExecutor

    return SlurmExecutor(options)


@hookimpl
def fsbench_executors() -> list[ExecutorRecord]:
    return [
        ExecutorRecord("local", _local, "worker processes on this machine (--workers N; one per GPU)"),
        ExecutorRecord("ray", _ray, "Ray core tasks on a Ray cluster (--ray-address)",
                       requires='pip install "fsbench[ray]"'),
        ExecutorRecord("slurm", _slurm, "Slurm jobs through submitit (afterok dependencies)",
                       requires='pip install "fsbench[slurm]"'),
    ]

"""fsbench's bundled sweep executors, registered like any third-party executor.

Each lives in one module here, with its options and its class: ``local`` (a process pool on this
machine, needs nothing; :mod:`.local`), ``ray`` (Ray core tasks; ``pip install "fsbench[ray]"``;
:mod:`.ray`) and ``slurm`` (submitit; ``pip install "fsbench[slurm]"``; :mod:`.slurm`). This
module offers them through the ``fsbench_executors`` hook, as a third-party package would (see the
README, "Sweeps"): each record names the dataclass of the executor's own ``fsbench sweep``
options, which the command line lists under the executor's name and parses for it. Importing
these modules imports neither Ray nor submitit; an executor imports its engine when built.
"""

from __future__ import annotations

from fsbench.hookspecs import ExecutorRecord, hookimpl
from fsbench_plugins.executors.local import LocalExecutor, LocalOptions
from fsbench_plugins.executors.ray import RayExecutor, RayOptions
from fsbench_plugins.executors.slurm import SlurmExecutor, SlurmOptions


@hookimpl
def fsbench_executors() -> list[ExecutorRecord]:
    return [
        ExecutorRecord("local", LocalExecutor, "worker processes on this machine (--workers N; "
                       "one per GPU)", options=LocalOptions),
        ExecutorRecord("ray", RayExecutor, "Ray core tasks on a Ray cluster (--ray-address)",
                       requires='pip install "fsbench[ray]"', options=RayOptions),
        ExecutorRecord("slurm", SlurmExecutor, "Slurm jobs through submitit (afterok dependencies)",
                       requires='pip install "fsbench[slurm]"', options=SlurmOptions),
    ]

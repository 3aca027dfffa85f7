"""`fsbench sweep`: a grid of runs -> a plan of jobs -> an executor -> the runs' results.

* :mod:`~fsbench.sweep.grid`: command-line lists or a TOML file -> validated :class:`RunConfig` s
  (the axes are the run options :class:`~fsbench.config.RunConfig` declares);
* :mod:`~fsbench.sweep.plan`: the DAG: one job per distinct pre-training (by the run's
  pre-training key, :meth:`fsbench.runner.Run.pretrain_key`), one job per run, each run
  depending on the pre-training it needs; what is already done (cache file, ``summary.json``) is
  marked;
* :mod:`~fsbench.sweep.jobs`: what a worker executes for one job, returning plain data;
* :mod:`~fsbench.sweep.executor`: the executor interface and the options every executor may
  read; the executors themselves are plugins (``fsbench_executors`` hook): fsbench's ``local``
  process pool, ``ray`` and ``slurm`` (submitit) live in ``plugins/executors/``;
* :mod:`~fsbench.sweep.driver`: runs a plan on an executor, writes results, shows progress;
* :mod:`~fsbench.sweep.cli`: the ``sweep`` command's options, typed.

fsbench owns only the plan and the results: scheduling, retries and resources belong to the
process pool, Ray or Slurm.
"""

from __future__ import annotations

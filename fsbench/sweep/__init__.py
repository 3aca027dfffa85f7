"""`fsbench sweep`: a grid of runs -> a plan of jobs -> an executor -> the runs' results.

* :mod:`~fsbench.sweep.grid`: command-line lists or a TOML file -> validated :class:`RunConfig` s;
* :mod:`~fsbench.sweep.plan`: the DAG: one job per distinct pre-training (by its cache key,
  :func:`fsbench.engine.pretrain.cache_key`), one job per run, each run depending on the
  pre-training it needs; what is already done (cache file, ``summary.json``) is marked;
* :mod:`~fsbench.sweep.jobs`: what a worker executes for one job, returning plain data;
* :mod:`~fsbench.sweep.executors`: where jobs execute (``local`` process pool, ``ray``,
  ``slurm`` via submitit; more through the ``fsbench_executors`` hook);
* :mod:`~fsbench.sweep.driver`: runs a plan on an executor, writes results, shows progress;
* :mod:`~fsbench.sweep.cli`: the ``sweep`` command's options.

fsbench owns only the plan and the results: scheduling, retries and resources belong to the
process pool, Ray or Slurm.
"""

from __future__ import annotations

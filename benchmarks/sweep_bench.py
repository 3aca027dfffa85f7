"""Sweep scale-out benchmark: one smoke sweep of 8 runs on three executors, and the planner's
overhead on a 10,000-run grid.

    nice -n 5 python benchmarks/sweep_bench.py [--json out.json] [--skip-ray] [--grid-runs 10000]

Sweep: mtl, mtl_ht, finetune, protonet x seeds 0, 1 (smoke preset, synthetic data, 20 test
episodes, CPU): 8 runs and 2 pre-trainings (mtl, mtl_ht and finetune of a seed share one).
Each executor starts from empty output and cache directories; wall time covers planning,
pre-training, the runs and writing results (for Ray, also starting its local cluster). Every
executor's per-episode accuracies are checked equal to the first one's.

Planner: a grid of methods x shots x seeds with 10,000 runs on the synthetic data; time to
expand and plan it (every run resolved, named and grouped under its pre-training) and the
memory it takes (tracemalloc peak; the process's max RSS). Loading the dataset (once per
dataset, shared by every run; seconds for the synthetic data) is timed apart.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

METHODS = ("mtl", "mtl_ht", "finetune", "protonet")
SEEDS = (0, 1)


def smoke_configs(root: Path):
    from fsbench.config import RunConfig

    return [RunConfig(method=m, preset="smoke", episodes=20, seed=s, device="cpu",
                      output=root / "out", cache_dir=root / "cache") for m in METHODS for s in SEEDS]


def episodes_of(run_dirs) -> dict[str, list[float]]:
    from fsbench.results import read_jsonl

    return {d.name: [r["accuracy"] for r in read_jsonl(d / "episodes.jsonl")] for d in run_dirs}


def time_sweep(label: str, make_executor) -> dict:
    from fsbench.sweep.driver import run_sweep
    from fsbench.sweep.plan import build_plan

    with tempfile.TemporaryDirectory(prefix="fsbench-sweep-bench-") as tmp:
        began = time.perf_counter()
        plan = build_plan(smoke_configs(Path(tmp)))
        outcome = run_sweep(plan, make_executor(), show=False)
        wall = time.perf_counter() - began
        assert outcome.ok, outcome.failed
        result = {"label": label, "wall_s": round(wall, 1), "runs": len(outcome.run_dirs),
                  "pretrainings": len(outcome.pretrained), "episodes": episodes_of(outcome.run_dirs)}
    print(f"{label}: {wall:.1f} s ({result['runs']} runs, {result['pretrainings']} pre-trainings)",
          file=sys.stderr)
    return result


def plan_overhead(n_runs: int) -> dict:
    """Plan a grid of ``n_runs`` twice: timed alone, then under tracemalloc for its peak memory."""
    from fsbench.config import RunConfig
    from fsbench.data.cache import default_cache_dir
    from fsbench.sweep.plan import _load_dataset, build_plan

    methods = ("mtl", "mtl_ht", "finetune", "protonet", "maml")
    shots = (1, 5)
    seeds = range(-(-n_runs // (len(methods) * len(shots))))
    out = Path(tempfile.mkdtemp(prefix="fsbench-plan-bench-"))

    def grid():
        return [RunConfig(method=m, preset="smoke", shot=k, seed=s, device="cpu", output=out)
                for s in seeds for k in shots for m in methods][:n_runs]

    began = time.perf_counter()
    _load_dataset("synthetic", None, default_cache_dir())  # the planner's own (cached) load
    load_s = time.perf_counter() - began  # once per dataset and process, reported apart
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    began = time.perf_counter()
    plan = build_plan(grid())
    seconds = time.perf_counter() - began
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    del plan
    tracemalloc.start()
    plan = build_plan(grid())
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"runs": len(plan.runs), "pretrainings": len(plan.pretrains),
            "dataset_load_s": round(load_s, 2), "plan_s": round(seconds, 2),
            "per_run_ms": round(1000 * seconds / len(plan.runs), 3),
            "python_heap_peak_mib": round(peak / 2**20, 1),
            "plan_held_mib": round(current / 2**20, 1),
            "max_rss_growth_mib": round(max(0, rss1 - rss0) / 1024, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--grid-runs", type=int, default=10_000)
    parser.add_argument("--planner-only", action="store_true")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds of the sweeps (median)")
    parser.add_argument("--executors", default="w1,w2,ray",
                        help="which of w1 (local, 1 worker), w1t1 (1 worker, 1 thread), w2, ray (default w1,w2,ray)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    from fsbench.sweep.executor import ExecutorOptions, cpu_threads
    from fsbench_plugins.executors.local import LocalExecutor, LocalOptions

    report: dict = {"machine": f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}",
                    "threads": cpu_threads()}
    report["planner"] = plan_overhead(args.grid_runs)
    print(f"planner: {report['planner']}", file=sys.stderr)
    if args.planner_only:
        print(json.dumps(report, indent=2))
        return 0
    choices = {
        "w1": ("local, --workers 1", lambda: LocalExecutor(options=LocalOptions(workers=1))),
        "w1t1": ("local, --workers 1 --cpus-per-job 1",
                 lambda: LocalExecutor(ExecutorOptions(cpus_per_job=1), LocalOptions(workers=1))),
        "w2": ("local, --workers 2", lambda: LocalExecutor(options=LocalOptions(workers=2))),
    }
    if not args.skip_ray:
        from fsbench_plugins.executors.ray import RayExecutor

        choices["ray"] = ("ray, local cluster (2 CPUs, 1 per task)",
                          lambda: RayExecutor(ExecutorOptions(cpus_per_job=1)))
    executors = [choices[k] for k in args.executors.split(",") if k in choices]
    rounds = [[time_sweep(label, make) for label, make in executors] for _ in range(args.rounds)]
    sweeps = []
    for i in range(len(executors)):  # interleaved rounds: the (lower) median of each
        times = sorted(r[i]["wall_s"] for r in rounds)
        sweeps.append({**rounds[0][i], "wall_s": times[(len(times) - 1) // 2], "all_wall_s": times,
                       "same_in_every_round": all(r[i]["episodes"] == rounds[0][i]["episodes"]
                                                  for r in rounds)})
    base = sweeps[0]
    for s in sweeps:
        s["ratio_vs_first"] = round(base["wall_s"] / s["wall_s"], 2)
        s["same_accuracies_as_first"] = s["episodes"] == base["episodes"]
    report["sweeps"] = [{k: v for k, v in s.items() if k != "episodes"} for s in sweeps]
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

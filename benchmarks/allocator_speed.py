"""The CPU allocator setting (fsbench.engine.allocator) on and off: steps per second, alternating.

Each sample is a child process (the setting is per process): ``FSBENCH_ALLOCATOR=keep`` (what
every fsbench run does) or ``system`` (glibc's default: a fresh mmap for every block above
32 MiB), alternating ``--repeats`` times, so that both see the same load on a shared machine.
Measured per child, after warm-up steps: a Conv-4 pre-training step (batch 64, crop + flip) and
a ProtoNets meta-train step (5-way 1-shot, 15 queries, 80 images), fp32 and ``auto``; process
CPU time per step and minor page faults per step.

    python benchmarks/allocator_speed.py --repeats 3 --json runs/allocator.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {bench!r})
import torch
torch.set_num_threads(1)
from fsbench.engine.allocator import keep_freed_memory
state = keep_freed_memory()
from precision_speed import load_splits, meta_step, pretrain_step, DEFAULT_DATA
from fsbench.data.base import Normalizer
from fsbench.precision import resolve_precision
train, _, mean, std, _ = load_splits(DEFAULT_DATA)
normalize = Normalizer(mean, std, torch.device("cpu"))
out = {{"state": state}}
for pname in ("fp32", "auto"):
    prec = resolve_precision(pname, "cpu")
    for what, make, steps in (("pretrain", lambda: pretrain_step("conv4", prec, train, normalize, 64), {steps}),
                              ("protonet", lambda: meta_step("conv4", prec, train, normalize), 2 * {steps})):
        step = make()
        step(); step()
        f0, c0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time()
        for _ in range(steps):
            step()
        out[f"{{what}} {{pname}}"] = {{"cpu_s": (time.process_time() - c0) / steps,
            "faults": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / steps}}
print(json.dumps(out))
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=4, help="timed pre-training steps per child (ProtoNets: twice)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    code = _CHILD.format(bench=str(ROOT / "benchmarks"), steps=args.steps)
    samples: dict[str, list[dict]] = {"keep": [], "system": []}
    for r in range(args.repeats):
        for setting in samples:
            env = {**os.environ, "FSBENCH_ALLOCATOR": setting}
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            samples[setting].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"repeat {r + 1}, {setting}: done", flush=True)
    rows = []
    for key in (k for k in samples["keep"][0] if k != "state"):
        med = {s: statistics.median(x[key]["cpu_s"] for x in samples[s]) for s in samples}
        flt = {s: statistics.median(x[key]["faults"] for x in samples[s]) for s in samples}
        rows.append({"what": key, "system_cpu_s": med["system"], "keep_cpu_s": med["keep"],
                     "speedup": med["system"] / med["keep"], "system_faults": flt["system"], "keep_faults": flt["keep"]})
        print(f"{key:<16} system {med['system']:.3f} CPU-s/step ({flt['system']:.0f} faults)  "
              f"keep {med['keep']:.3f} ({flt['keep']:.0f} faults)  x{med['system'] / med['keep']:.2f}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"states": [x["state"] for x in samples["keep"]], "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

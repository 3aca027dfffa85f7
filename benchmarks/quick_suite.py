"""The real-data quick suite end to end, before (fp32) and after (``--precision auto``) (issue 12).

protonet, finetune, scratch, mtl, mtl_ht and maml with ``--preset quick`` on miniImageNet,
5-way 1-shot, 600 val episodes, seed 0; the pre-trained backbone of finetune / mtl / mtl_ht is
trained once per precision (the first method that needs it pays for it) and shared.

* ``run --precision fp32 --before``: today's path. fp32 on the CPU is bit for bit the code path
  before ``--precision`` existed (tests/test_precision.py); ``--before`` also restores the old
  ``quick`` preset of protonet (pooled 64-d Conv-4, 1,200 episodes, lr halved every 400).
* ``run --precision auto``: the new default (bf16 + channels_last on a CPU with native bf16).
* ``compare A.json B.json``: wall time and accuracy per method, ratios, and the paired
  accuracy difference B - A per method, episode by episode.

The two chains can run at the same time (``--threads 1`` each on a 2-core machine) so that
they see the same load from other jobs; each writes its JSON after every method, with the wall
time and the process CPU time (``time.process_time``: what a shared machine's load does not
inflate much) of each method.

    python benchmarks/quick_suite.py run --precision fp32 --before --threads 1 --json runs/issue12/suite_fp32.json
    python benchmarks/quick_suite.py run --precision auto --threads 1 --json runs/issue12/suite_auto.json
    python benchmarks/quick_suite.py compare runs/issue12/suite_fp32.json runs/issue12/suite_auto.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "miniimagenet"
METHODS = ("finetune", "mtl", "protonet", "maml", "mtl_ht", "scratch")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    r.add_argument("--before", action="store_true", help="protonet with its quick preset before issue 12")
    r.add_argument("--pretrain-epochs", type=int, default=None,
                   help="pre-training epochs of the methods that pre-train (default: the quick preset's; "
                        "6 was the preset before issue 12)")
    r.add_argument("--methods", default=",".join(METHODS))
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    r.add_argument("--output", type=Path, default=ROOT / "runs" / "issue12" / "suite")
    r.add_argument("--cache-dir", type=Path, default=None, help="a fresh one times the pre-training too")
    r.add_argument("--json", type=Path, required=True)
    c = sub.add_parser("compare")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    return p.parse_args(argv)


def old_protonet_quick():
    """protonet's quick preset before issue 12: pooled Conv-4, 1,200 episodes, lr halved every 400."""
    from fsbench.config import EpisodicConfig, MethodPreset
    from fsbench_plugins.protonet import ProtoNetHparams

    return MethodPreset(
        backbone="conv4", hparams=ProtoNetHparams(lr_decay_every=400),
        episodic=EpisodicConfig(iterations=1200, meta_batch=1, val_every=200, val_episodes=100),
    )


def cmd_run(args: argparse.Namespace) -> int:
    import torch

    from fsbench.config import RunConfig
    from fsbench.plugins import default_registry
    from fsbench.runner import run

    torch.set_num_threads(args.threads)
    if args.before:
        from fsbench_plugins.protonet import PRESETS

        PRESETS["quick"] = old_protonet_quick()  # the registry's record holds this dict
    out: dict = {"precision": args.precision, "before": args.before, "threads": args.threads, "methods": {}}
    began = time.perf_counter()
    for method in args.methods.split(","):
        pretrains = default_registry().get(method).presets["quick"].pretrain is not None
        overrides = ({"pretrain": {"epochs": args.pretrain_epochs}}
                     if pretrains and args.pretrain_epochs is not None else {})
        cfg = RunConfig(method=method, dataset="miniimagenet", data_root=args.data_root, preset="quick",
                        way=5, shot=1, query=15, episodes=600, eval_split="val", seed=0, device="cpu",
                        precision=args.precision, output=args.output / args.precision, cache_dir=args.cache_dir,
                        overrides=overrides)
        t0, c0 = time.perf_counter(), time.process_time()
        result = run(cfg, show_progress=False)
        s = result.summary
        out["allocator"] = s.get("allocator")
        out["methods"][method] = {
            "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
            "accuracy": s["accuracy"], "ci95": s["ci95"],
            "pretrain_s": s["pretrain_seconds"], "train_s": s["train_seconds"], "eval_s": s["eval_seconds"],
            "precision": s["precision"], "run_dir": str(result.run_dir),
            "accuracies": result.accuracies.tolist(),
        }
        out["total_s"] = time.perf_counter() - began
        print(f"{method}: {out['methods'][method]['wall_s']:.0f} s, {s['accuracy']:.2f} ± {s['ci95']:.2f} "
              f"({s['precision']})", flush=True)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))
    return 0


def paired(a: list[float], b: list[float]) -> tuple[float, float]:
    d = [100 * (y - x) for x, y in zip(a, b, strict=True)]
    m = sum(d) / len(d)
    sd = math.sqrt(sum((v - m) ** 2 for v in d) / (len(d) - 1))
    return m, 1.96 * sd / math.sqrt(len(d))


def cmd_compare(args: argparse.Namespace) -> int:
    a, b = json.loads(args.before.read_text()), json.loads(args.after.read_text())
    print(f"| method | wall before ({a['precision']}) | wall after ({b['precision']}) | speed-up | "
          "CPU s before | CPU s after | CPU speed-up | acc before | acc after | paired after − before |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    tot = {"wall_a": 0.0, "wall_b": 0.0, "cpu_a": 0.0, "cpu_b": 0.0}
    for method, ra in a["methods"].items():
        rb = b["methods"].get(method)
        if rb is None:
            continue
        tot["wall_a"] += ra["wall_s"]
        tot["wall_b"] += rb["wall_s"]
        cpu = ("cpu_s" in ra and "cpu_s" in rb)
        if cpu:
            tot["cpu_a"] += ra["cpu_s"]
            tot["cpu_b"] += rb["cpu_s"]
        cells = (f"{ra['cpu_s']:.0f} | {rb['cpu_s']:.0f} | x{ra['cpu_s'] / rb['cpu_s']:.2f}" if cpu
                 else "– | – | –")
        d, ci = paired(ra["accuracies"], rb["accuracies"])
        print(f"| {method} | {ra['wall_s']:.0f} s | {rb['wall_s']:.0f} s | x{ra['wall_s'] / rb['wall_s']:.2f} | "
              f"{cells} | {ra['accuracy']:.2f} ± {ra['ci95']:.2f} | {rb['accuracy']:.2f} ± {rb['ci95']:.2f} | "
              f"{d:+.2f} ± {ci:.2f} |")
    if tot["wall_b"]:
        cpu_total = (f"{tot['cpu_a']:.0f} | {tot['cpu_b']:.0f} | x{tot['cpu_a'] / tot['cpu_b']:.2f}"
                     if tot["cpu_b"] else "– | – | –")
        print(f"| all compared | {tot['wall_a']:.0f} s | {tot['wall_b']:.0f} s | "
              f"x{tot['wall_a'] / tot['wall_b']:.2f} | {cpu_total} | | | |")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return cmd_run(args) if args.cmd == "run" else cmd_compare(args)


if __name__ == "__main__":
    raise SystemExit(main())

"""The GPU check of MTL in one script: the CUDA path, bf16, and throughput on real data.

Run it on a CUDA machine from the repository root, after ``benchmarks/gpu_subset.py`` has copied
a subset of real miniImageNet into the git-ignored ``gpu_data/`` (carried with the checkout); on
a machine with PyTorch, timm, pluggy, pandas, rich and filelock but no network::

    python3 -m pip install -q --no-deps --no-index --no-build-isolation -e . &&
    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --data-root gpu_data/miniimagenet \
        --out /tmp/gc --json "$OUT/gpu_check.json" 2>&1 | tee "$OUT/gpu_check.log"

(``--out`` holds runs and caches, hundreds of MiB; ``--json`` puts the figures where they are
collected.)

Three parts, each printed as it finishes and collected in ``<out>/gpu_check.json``:

1. **precision**: one MTL meta-train step on ResNet-12 with forward hooks on every convolution;
   it fails unless each ran under bf16 autocast (bf16 outputs) and counts channels_last inputs.
2. **targets**: ``benchmarks/mtl_throughput.py`` on ResNet-12 (64-160-320-640), 84x84, 5-way
   1-shot, 15 queries, 100 inner steps: meta-train episodes/s and the 600-episode evaluation time
   (targets: 100+ episodes/s, under 3 s).
3. **real data**: ``fsbench run --method mtl_ht`` on the subset, on the GPU end to end
   (pre-training of ResNet-12, MTL+HT meta-training, 600 val episodes), then ``finetune`` and
   ``mtl`` from the same cached pre-trained backbone on the same episodes, and the paired report.
   The runs' summaries give pre-training images/s and meta-training episodes/s.

``--dry-run`` shrinks every part to seconds on the CPU (the test suite runs it that way), so the
script is known to work before a GPU is spent on it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

import torch
from mtl_throughput import build_mtl
from mtl_throughput import main as throughput_main
from torch import nn

from fsbench import cli
from fsbench_plugins.mtl.method import MTLHparams
from fsbench_plugins.mtl.scaleshift import SSConv2d

#: Per scale: the backbone, `fsbench run` arguments and ``--set`` overrides (``sets`` for every
#: run, ``meta_sets`` for the meta-trained MTL runs only) and throughput-benchmark arguments.
SCALES = {
    "gpu": {
        "backbone": "resnet12",
        "image_size": 84,
        "episodes": 600,
        "run_args": [],
        "sets": [
            "pretrain.epochs=20", "pretrain.batch_size=128", "pretrain.schedule=cosine",
            "pretrain.val_episodes=200",
        ],
        "meta_sets": ["episodic.iterations=500", "episodic.val_every=250", "episodic.val_episodes=200"],
        "throughput": [],  # the benchmark's defaults are the targets
    },
    "dry-run": {
        "backbone": "resnet12_tiny",
        "image_size": 32,
        "episodes": 10,
        "run_args": ["--query", "3"],
        "sets": [
            "pretrain.epochs=1", "pretrain.batch_size=16", "pretrain.images_per_epoch=32",
            "pretrain.val_episodes=4",
        ],
        "meta_sets": ["episodic.iterations=2", "episodic.val_every=2", "episodic.val_episodes=4",
                      "episodic.train_query=2",
                      "hparams.test_steps=5", "hparams.train_steps=2"],
        "throughput": ["--steps", "2", "--test-steps", "2", "--meta-batch", "2", "--episodes", "10",
                       "--image-size", "32", "--iters", "1", "--classes", "5", "--per-class", "20"],
    },
}


def check_precision(backbone: str, image_size: int, device: torch.device) -> dict:
    """One MTL meta-train step with hooks on every convolution: output dtypes, input layouts."""
    method = build_mtl(backbone, MTLHparams(train_steps=5), (3, image_size, image_size), device)
    seen: list[tuple[torch.dtype, bool]] = []

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        x = inputs[0]
        seen.append((output.dtype, x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)))

    convs = [m for m in method.backbone.modules() if isinstance(m, (nn.Conv2d, SSConv2d))]
    handles = [m.register_forward_hook(hook) for m in convs]
    way, shot, query = 5, 1, 15
    g = torch.Generator().manual_seed(0)
    support = torch.randn(2, way * shot, 3, image_size, image_size, generator=g).to(device)
    query_x = torch.randn(2, way * query, 3, image_size, image_size, generator=g).to(device)
    sy = torch.arange(way, device=device).repeat_interleave(shot).expand(2, -1)
    qy = torch.arange(way, device=device).repeat_interleave(query).expand(2, -1)
    out = method.meta_train_step(support, sy, query_x, qy, way)
    for h in handles:
        h.remove()
    dtypes = sorted({str(d) for d, _ in seen})
    result = {
        "convolutions": len(convs), "calls": len(seen), "output_dtypes": dtypes,
        "channels_last_inputs": sum(cl for _, cl in seen), "loss_finite": bool(torch.isfinite(out.loss)),
        "bf16": dtypes == [str(torch.bfloat16)],
    }
    if device.type == "cuda" and not result["bf16"]:  # layouts are reported, not required
        raise SystemExit(f"gpu_check: the CUDA path did not run every convolution in bf16: {result}")
    return result


def run_cli(argv: list[str]) -> None:
    print("$ fsbench " + " ".join(argv), flush=True)
    rc = cli.main(argv)
    if rc != 0:
        raise SystemExit(f"gpu_check: `fsbench {' '.join(argv)}` exited {rc}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, required=True, help="miniImageNet subset (gpu_subset.py)")
    p.add_argument("--out", type=Path, required=True, help="folder for runs, caches and gpu_check.json")
    p.add_argument("--json", type=Path, help="where to write the figures (default: <out>/gpu_check.json)")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--dry-run", action="store_true", help="seconds-long CPU rehearsal of every part")
    args = p.parse_args(argv)
    scale = SCALES["dry-run" if args.dry_run else "gpu"]
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: --device cuda but torch sees no CUDA device")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "backbone": scale["backbone"],
    }
    began = time.perf_counter()

    report["precision"] = check_precision(scale["backbone"], scale["image_size"], device)
    print(f"[1/3] precision ({time.perf_counter() - began:.0f} s): {report['precision']}", flush=True)

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        throughput_main(["--device", str(device), "--backbone", scale["backbone"], *scale["throughput"]])
    report["targets"] = buf.getvalue().strip().splitlines()
    print(f"[2/3] targets, random data ({time.perf_counter() - began:.0f} s):\n  "
          + "\n  ".join(report["targets"]), flush=True)

    common = [
        "--dataset", "miniimagenet", "--data-root", str(args.data_root), "--backbone", scale["backbone"],
        "--preset", "paper", "--eval-split", "val", "--episodes", str(scale["episodes"]),
        "--device", str(device), "--output", str(args.out / "runs"), "--cache-dir", str(args.out / "cache"),
        "--quiet", *scale["run_args"], *[x for s in scale["sets"] for x in ("--set", s)],
    ]
    runs = {}
    meta = [x for s in scale["meta_sets"] for x in ("--set", s)]
    for method in ("mtl_ht", "mtl", "finetune"):
        run_cli(["run", "--method", method, *common, *(meta if method.startswith("mtl") else [])])
        summary_path = max((args.out / "runs").glob(f"{method}_miniimagenet_*/summary.json"),
                           key=lambda q: q.stat().st_mtime)
        runs[method] = json.loads(summary_path.read_text())
    run_cli(["report", str(args.out / "runs"), "--paired", "finetune"])
    keys = ("accuracy", "ci95", "precision", "device_name", "pretrain_images_per_s",
            "meta_train_episodes", "meta_train_episodes_per_s", "hard_tasks_used",
            "pretrain_seconds", "train_seconds", "eval_seconds")
    report["runs"] = {m: {k: s.get(k) for k in keys} for m, s in runs.items()}
    report["seconds"] = time.perf_counter() - began
    print(f"[3/3] real data ({report['seconds']:.0f} s):", json.dumps(report["runs"], indent=1), flush=True)
    json_path = args.json or args.out / "gpu_check.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"gpu_check: done in {report['seconds']:.0f} s; figures in {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

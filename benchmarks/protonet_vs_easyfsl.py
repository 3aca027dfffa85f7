"""fsbench's ProtoNets against a plain PyTorch peer (easyfsl) at equal training time (issue 12).

Both learn Prototypical Networks (Snell et al. 2017) on the miniImageNet train split with the
flattened 1,600-d Conv-4-64 embedding and Adam 1e-3, 5-way ``--shot``-shot episodes with 15
queries, and are evaluated on the *same* 600 episodes of the val split (fsbench's seeded eval
episodes), so their per-episode accuracies pair up.

The two train *at the same time*, one thread each (``--threads``), so that they see the same
load from other jobs on a shared machine:

1. fsbench: ``fsbench run --method protonet --preset quick --dataset miniimagenet --shot 5
   --eval-split val`` in a subprocess (``--precision auto``);
2. easyfsl, in this process: ``PrototypicalNetworks`` over the same Conv-4 (Snell et al.'s
   encoder: conv with bias, BN, ReLU, max-pool, flatten), fp32, episodes from easyfsl's
   ``TaskSampler`` through a ``DataLoader`` (``num_workers=0``: a worker would take a core from
   the model), images from an in-memory uint8 tensor normalised per item (no JPEG decoding: that
   favours easyfsl), no augmentation, Adam 1e-3. It trains until the fsbench process exits, i.e.
   also during fsbench's final 600-episode evaluation: easyfsl gets *at least* fsbench's time.

Prints episodes/s of both, their ratio, the accuracy of each on the 600 val episodes (mean and
95% CI) and the paired difference fsbench - easyfsl. Needs easyfsl (``pip install easyfsl``; it is
not a dependency of fsbench) and the miniImageNet folders (``--data-root``).

    python benchmarks/protonet_vs_easyfsl.py --threads 1 --json runs/issue12/easyfsl.json
    python benchmarks/protonet_vs_easyfsl.py --alternate 4     # training-step episodes/s only
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "miniimagenet"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    p.add_argument("--threads", type=int, default=1, help="threads of each of the two")
    p.add_argument("--shot", type=int, default=5)
    p.add_argument("--episodes", type=int, default=600, help="val episodes both are evaluated on")
    p.add_argument("--iterations", type=int, default=None, help="fsbench meta-train episodes (default: the quick preset's)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument("--output", type=Path, default=ROOT / "runs" / "issue12" / "easyfsl")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--json", type=Path)
    p.add_argument("--alternate", type=int, metavar="N", default=0,
                   help="instead: time N training episodes of each, alternating in this process, 3 times "
                        "(episodes/s without validation; no accuracy)")
    return p.parse_args(argv)


def snell_conv4() -> nn.Module:
    """Snell et al.'s Conv-4-64 encoder, flattened (1,600-d at 84x84), as a peer writes it."""

    def block(cin: int, cout: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))

    return nn.Sequential(block(3, 64), block(64, 64), block(64, 64), block(64, 64), nn.Flatten())


class TensorFewShotSet(torch.utils.data.Dataset):
    """An easyfsl-compatible dataset over in-memory uint8 images, normalised per item."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean, std) -> None:
        self.images, self.labels = images, labels
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return (self.images[i].float() / 255 - self.mean) / self.std, int(self.labels[i])

    def get_labels(self) -> list[int]:
        return self.labels.tolist()


def mean_ci(values: list[float]) -> tuple[float, float]:
    n = len(values)
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return 100 * m, 100 * 1.96 * sd / math.sqrt(n)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from easyfsl.methods import PrototypicalNetworks
        from easyfsl.samplers import TaskSampler
    except ImportError:
        raise SystemExit("this benchmark needs easyfsl: pip install easyfsl (not an fsbench dependency)") from None
    from fsbench.data import load_dataset
    from fsbench.episodes import EpisodeSampler, EpisodeSpec
    from fsbench.runner import load_result

    torch.set_num_threads(args.threads)
    if not args.data_root.exists():
        raise SystemExit(f"miniImageNet not found at {args.data_root} (pass --data-root)")
    ds = load_dataset("miniimagenet", args.data_root, args.cache_dir / "datasets" if args.cache_dir else None, False)
    train, val = ds.split("train"), ds.split("val")
    train_set = TensorFewShotSet(train.images, train.labels, ds.mean, ds.std)
    if "data_source" not in inspect.signature(torch.utils.data.Sampler.__init__).parameters:
        # easyfsl 1.5.0's TaskSampler calls Sampler.__init__(data_source=None), an argument this
        # torch no longer takes (it was ignored anyway).
        torch.utils.data.Sampler.__init__ = lambda self, data_source=None: None
    sampler = TaskSampler(train_set, n_way=5, n_shot=args.shot, n_query=15, n_tasks=10**7)
    loader = torch.utils.data.DataLoader(train_set, batch_sampler=sampler, num_workers=0,
                                         collate_fn=sampler.episodic_collate_fn)
    torch.manual_seed(0)
    model = PrototypicalNetworks(snell_conv4())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    model.train()
    if args.alternate:
        return alternate(args, ds, loader, model, optimizer, criterion)

    # 1. fsbench in a subprocess, 2. easyfsl here until it exits.
    out = args.output / f"{args.precision}-{int(time.time())}"
    cmd = [sys.executable, "-m", "fsbench", "run", "--method", "protonet", "--preset", "quick",
           "--dataset", "miniimagenet", "--data-root", str(args.data_root), "--way", "5", "--shot", str(args.shot),
           "--query", "15", "--episodes", str(args.episodes), "--eval-split", "val", "--device", "cpu",
           "--precision", args.precision, "--output", str(out), "--quiet"]
    if args.iterations:
        cmd += ["--set", f"episodic.iterations={args.iterations}"]
    if args.cache_dir:
        cmd += ["--cache-dir", str(args.cache_dir)]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)},
                            stdout=subprocess.DEVNULL)
    done, began = 0, time.perf_counter()
    for support, support_y, query, query_y, _ in loader:
        optimizer.zero_grad()
        model.process_support_set(support, support_y)
        loss = criterion(model(query), query_y)
        loss.backward()
        optimizer.step()
        done += 1
        if proc.poll() is not None:
            break
    peer_s = time.perf_counter() - began
    if proc.returncode != 0:
        raise SystemExit(f"the fsbench run failed ({proc.returncode}): {' '.join(cmd)}")
    (run_dir,) = [p.parent for p in out.glob("*/summary.json")]
    fs = load_result(run_dir)
    budget = fs.summary["train_seconds"]
    fs_eps = fs.summary["meta_train_episodes"]
    print(f"fsbench: {fs_eps} episodes in {budget:.0f} s ({fs_eps / budget:.2f} episodes/s incl. validation, "
          f"{fs.summary['meta_train_episodes_per_s']:.2f} excl.), {fs.summary['precision']}; "
          f"val accuracy {fs.summary['accuracy']:.2f} ± {fs.summary['ci95']:.2f}", flush=True)
    print(f"easyfsl: {done} episodes in {peer_s:.0f} s ({done / peer_s:.2f} episodes/s)", flush=True)

    # The same val episodes fsbench was evaluated on.
    episodes = EpisodeSampler(val, EpisodeSpec(5, args.shot, 15), 0, ds.name, stream="eval").batch(
        range(args.episodes))
    # easyfsl's own feature path (compute_features, eval-mode BatchNorm: an image's features do not
    # depend on its batch), each val image once; then its prototypes and -cdist per episode.
    torch.set_num_threads(2 * args.threads)  # the fsbench process has finished
    model.eval()
    used, inverse = torch.unique(torch.cat([episodes.support_idx.flatten(), episodes.query_idx.flatten()]),
                                 return_inverse=True)
    mean, std = torch.tensor(ds.mean).view(1, 3, 1, 1), torch.tensor(ds.std).view(1, 3, 1, 1)
    with torch.no_grad():
        table = torch.cat([model.compute_features((val.images[used[i:i + 256]].float() / 255 - mean) / std)
                           for i in range(0, len(used), 256)])
        n_support = episodes.support_idx.numel()
        support_pos = inverse[:n_support].view_as(episodes.support_idx)
        query_pos = inverse[n_support:].view_as(episodes.query_idx)
        accs = []
        for t in range(episodes.num_tasks):
            sy = episodes.support_labels[t]
            feats = table[support_pos[t]]
            model.prototypes = torch.stack([feats[sy == c].mean(0) for c in range(5)])
            pred = model.l2_distance_to_prototypes(table[query_pos[t]]).argmax(-1)
            accs.append(float((pred == episodes.query_labels[t]).float().mean()))
    peer_acc, peer_ci = mean_ci(accs)
    fs_accs = fs.accuracies.tolist()
    diff, diff_ci = mean_ci([a - b for a, b in zip(fs_accs, accs, strict=True)])
    speed = (fs_eps / budget) / (done / peer_s)
    print(f"easyfsl: val accuracy {peer_acc:.2f} ± {peer_ci:.2f}", flush=True)
    print(f"episodes/s fsbench / easyfsl (wall, fsbench's validation included): x{speed:.2f}; "
          f"excluding fsbench's validation: x{fs.summary['meta_train_episodes_per_s'] / (done / peer_s):.2f}")
    print(f"paired accuracy difference fsbench - easyfsl over {args.episodes} val episodes: "
          f"{diff:+.2f} ± {diff_ci:.2f} points")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "budget_s": budget, "fsbench": {**fs.summary, "episodes_per_s_wall": fs_eps / budget},
            "easyfsl": {"episodes": done, "seconds": peer_s, "episodes_per_s": done / peer_s,
                        "accuracy": peer_acc, "ci95": peer_ci},
            "speed_ratio_wall": speed, "paired_diff": diff, "paired_diff_ci95": diff_ci,
            "threads": args.threads, "shot": args.shot,
        }, indent=2, default=str))
    return 0


def alternate(args, ds, loader, model, optimizer, criterion) -> int:
    """Episodes/s of one fsbench ProtoNets training step (the quick preset's learner, the
    core's gather + normalise) and of one easyfsl step, alternating, median of 3 rounds."""
    import statistics

    from fsbench.data.base import Normalizer
    from fsbench.engine.episodic import _step
    from fsbench.engine.precision import resolve_precision
    from fsbench.episodes import EpisodeSampler, EpisodeSpec
    from fsbench.method import MethodContext
    from fsbench_plugins.protonet import PRESETS, ProtoNet

    train = ds.split("train")
    preset = PRESETS["quick"]
    ctx = MethodContext(preset, preset.backbone, dict(preset.backbone_kwargs), train.num_classes,
                        train.image_shape, torch.device("cpu"), 0, 5, args.shot,
                        precision=resolve_precision(args.precision, "cpu"))
    ours = ProtoNet(ctx).train()
    normalize = Normalizer(ds.mean, ds.std, torch.device("cpu"))
    sampler = EpisodeSampler(train, EpisodeSpec(5, args.shot, 15), 0, ds.name, stream="train")
    batches = iter(loader)
    counter = iter(range(10**9))

    def fsbench_step() -> None:
        i = next(counter)
        _step(ours, sampler.batch(range(i, i + 1)), train, normalize)

    def easyfsl_step() -> None:
        support, support_y, query, query_y, _ = next(batches)
        optimizer.zero_grad()
        model.process_support_set(support, support_y)
        criterion(model(query), query_y).backward()
        optimizer.step()

    fsbench_step()
    easyfsl_step()
    rates: dict[str, list[float]] = {"fsbench": [], "easyfsl": []}
    for _ in range(3):
        for name, step in (("fsbench", fsbench_step), ("easyfsl", easyfsl_step)):
            began = time.perf_counter()
            for _ in range(args.alternate):
                step()
            rates[name].append(args.alternate / (time.perf_counter() - began))
    ratio = statistics.median(rates["fsbench"]) / statistics.median(rates["easyfsl"])
    print(f"episodes/s, {args.alternate} per round: fsbench {rates['fsbench']}, easyfsl {rates['easyfsl']}; "
          f"median ratio x{ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

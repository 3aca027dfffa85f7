"""fsbench's ProtoNets `quick` preset against a plain easyfsl ProtoNet at equal training time.

Both learn Prototypical Networks on the miniImageNet train split (5-way ``--shot``-shot
episodes, 15 queries) and are evaluated on the *same* 600 episodes of the val split (fsbench's
seeded eval episodes), so their per-episode accuracies pair up. They run **back to back**, each
alone on the machine with the same number of threads (``--threads``), and the load average is
recorded before each so that a busy machine shows in the JSON:

1. ``fsbench``: ``fsbench run --method protonet --preset quick --dataset miniimagenet
   --shot 5 --eval-split val`` in a subprocess (its validation passes count as training time:
   they are how it selects its model);
2. ``easyfsl``: easyfsl's ``PrototypicalNetworks`` over Snell et al.'s Conv-4-64 (conv with
   bias, BN, ReLU, max-pool, flattened: 1,600-d), as easyfsl's README trains it: its
   ``TaskSampler`` through a ``DataLoader`` (``num_workers=0``: a worker would take a core), Adam
   1e-3, no schedule, its own distance (``-torch.cdist``, Euclidean), fp32. The images are
   fsbench's decoded uint8 tensors of the same JPEGs, scaled to [0, 1] and normalised with
   easyfsl's ImageNet constants (``easyfsl.datasets.default_configs``), no augmentation (no
   per-image decoding: that favours easyfsl's speed). It trains for exactly fsbench's training
   wall time, then is evaluated with eval-mode BatchNorm, each val image embedded once.

``both`` runs 1 then 2 and writes one JSON per side plus the paired difference;
``fsbench`` / ``easyfsl`` run one side (``easyfsl --budget-from FSBENCH.json`` takes its time
budget and the episodes from an earlier fsbench JSON). Needs easyfsl (``pip install easyfsl``, not
an fsbench dependency) and the miniImageNet folders (``--data-root``).

    python benchmarks/protonet_vs_easyfsl.py both --threads 2 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "miniimagenet"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("side", choices=("both", "fsbench", "easyfsl"))
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    p.add_argument("--threads", type=int, default=2, help="torch threads of each side")
    p.add_argument("--shot", type=int, default=5)
    p.add_argument("--episodes", type=int, default=600, help="val episodes both are evaluated on")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"), help="fsbench's")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="an override passed to fsbench run (repeatable)")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "protonet_vs_easyfsl",
                   help="where fsbench writes its run directory")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results",
                   help="folder of the JSON files")
    p.add_argument("--budget-from", type=Path, help="easyfsl: an fsbench JSON written by this script")
    return p.parse_args(argv)


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "load_average_1_5_15": os.getloadavg(), "torch": torch.__version__,
            "date": datetime.now(UTC).isoformat(timespec="seconds")}


def git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return out.stdout.strip()


def run_fsbench(args: argparse.Namespace) -> dict:
    """fsbench's quick ProtoNets in a subprocess; its summary and per-episode accuracies."""
    from fsbench.runner import load_result

    out = args.runs / f"{args.precision}-{int(time.time())}"
    cmd = [sys.executable, "-m", "fsbench", "run", "--method", "protonet", "--preset", "quick",
           "--dataset", "miniimagenet", "--data-root", str(args.data_root), "--way", "5",
           "--shot", str(args.shot), "--query", "15", "--episodes", str(args.episodes),
           "--eval-split", "val", "--device", "cpu", "--precision", args.precision,
           "--output", str(out), "--quiet"]
    for item in args.set:
        cmd += ["--set", item]
    if args.cache_dir:
        cmd += ["--cache-dir", str(args.cache_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    before = machine()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    (run_dir,) = [p.parent for p in out.glob("*/summary.json")]
    result = load_result(run_dir)
    s = result.summary
    return {
        "side": "fsbench", "command": " ".join(cmd[1:]), "threads": args.threads, "machine": before,
        "commit": git_commit(), "run_id": s["run_id"], "precision": s["precision"],
        "train_seconds": s["train_seconds"], "episodes_trained": s["meta_train_episodes"],
        "episodes_per_s": s["meta_train_episodes"] / s["train_seconds"],
        "accuracy": s["accuracy"], "ci95": s["ci95"], "ci_formula": s["ci_formula"],
        "eval_seconds": s["eval_seconds"], "episode_bank": s["episode_bank"],
        "episode_accuracies": [float(a) for a in result.accuracies.tolist()],
    }


def snell_conv4() -> nn.Module:
    """Snell et al.'s Conv-4-64 encoder, flattened (1,600-d at 84x84), as a peer writes it."""

    def block(cin: int, cout: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                             nn.MaxPool2d(2))

    return nn.Sequential(block(3, 64), block(64, 64), block(64, 64), block(64, 64), nn.Flatten())


class TensorFewShotSet(torch.utils.data.Dataset):
    """An easyfsl dataset over in-memory uint8 images: [0, 1], then easyfsl's normalisation."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        from easyfsl.datasets.default_configs import IMAGENET_NORMALIZATION

        self.images, self.labels = images, labels
        self.mean = torch.tensor(IMAGENET_NORMALIZATION["mean"]).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_NORMALIZATION["std"]).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.normalize(self.images[i]), int(self.labels[i])

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() / 255 - self.mean) / self.std

    def get_labels(self) -> list[int]:
        return self.labels.tolist()


def run_easyfsl(args: argparse.Namespace, budget_s: float) -> tuple[dict, list[float]]:
    """easyfsl trained for ``budget_s`` seconds, evaluated on fsbench's val episodes."""
    try:
        from easyfsl.methods import PrototypicalNetworks
        from easyfsl.samplers import TaskSampler
    except ImportError:
        raise SystemExit("this benchmark needs easyfsl: pip install easyfsl (not an fsbench dependency)") from None
    from fsbench.data import load_dataset
    from fsbench.episodes import EpisodeSampler, EpisodeSpec

    torch.set_num_threads(args.threads)
    cache = args.cache_dir / "datasets" if args.cache_dir else None
    ds = load_dataset("miniimagenet", args.data_root, cache, False)
    train, val = ds.split("train"), ds.split("val")
    train_set = TensorFewShotSet(train.images, train.labels)
    if "data_source" not in inspect.signature(torch.utils.data.Sampler.__init__).parameters:
        # easyfsl 1.5.0's TaskSampler passes Sampler.__init__(data_source=None), an argument this
        # torch no longer takes (and that torch ignored).
        torch.utils.data.Sampler.__init__ = lambda self, data_source=None: None
    sampler = TaskSampler(train_set, n_way=5, n_shot=args.shot, n_query=15, n_tasks=10**7)
    loader = torch.utils.data.DataLoader(train_set, batch_sampler=sampler, num_workers=0,
                                         collate_fn=sampler.episodic_collate_fn)
    torch.manual_seed(0)
    model = PrototypicalNetworks(snell_conv4())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    before = machine()
    model.train()
    done, began = 0, time.perf_counter()
    for support, support_y, query, query_y, _ in loader:
        optimizer.zero_grad()
        model.process_support_set(support, support_y)
        loss = criterion(model(query), query_y)
        loss.backward()
        optimizer.step()
        done += 1
        if time.perf_counter() - began >= budget_s:
            break
    train_s = time.perf_counter() - began

    episodes = EpisodeSampler(val, EpisodeSpec(5, args.shot, 15), 0, ds.name, stream="eval").batch(
        range(args.episodes))
    eval_began = time.perf_counter()
    accs = _evaluate(model, TensorFewShotSet(val.images, val.labels), episodes, args.shot)
    acc, ci = mean_ci(accs)
    return {
        "side": "easyfsl", "threads": args.threads, "machine": before, "budget_s": budget_s,
        "train_seconds": train_s, "episodes_trained": done, "episodes_per_s": done / train_s,
        "accuracy": acc, "ci95": ci, "ci_formula": "t(0.975, n-1)*std(ddof=1)/sqrt(n)",
        "eval_seconds": time.perf_counter() - eval_began, "episode_bank": episodes.fingerprint(),
        "recipe": "easyfsl PrototypicalNetworks (-cdist), Snell Conv-4-64 flattened, Adam 1e-3, "
                  "no schedule, fp32, ImageNet normalisation, no augmentation, TaskSampler",
        "episode_accuracies": accs,
    }, accs


@torch.no_grad()
def _evaluate(model, val_set: TensorFewShotSet, episodes, shot: int) -> list[float]:
    """easyfsl's own feature path (``compute_features``, eval-mode BatchNorm), each val image once."""
    model.eval()
    used, inverse = torch.unique(torch.cat([episodes.support_idx.flatten(), episodes.query_idx.flatten()]),
                                 return_inverse=True)
    table = torch.cat([model.compute_features(val_set.normalize(val_set.images[used[i:i + 256]]))
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
    return accs


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and Student-t 95% half-width (n-1 df), in percent (fsbench's formula)."""
    from fsbench.stats import mean_ci95

    mean, ci = mean_ci95([100 * v for v in values])
    return mean, ci


def paired(fs: dict, peer: dict) -> dict:
    from fsbench.stats import paired_difference

    if fs["episode_bank"] != peer["episode_bank"]:
        raise SystemExit("the two sides were evaluated on different episodes")
    res = paired_difference([100 * a for a in peer["episode_accuracies"]],
                            [100 * a for a in fs["episode_accuracies"]])
    return {"fsbench_minus_easyfsl": res.mean_diff, "ci95": res.ci95, "verdict": res.verdict,
            "n": res.n, "speed_ratio_episodes_per_s": fs["episodes_per_s"] / peer["episodes_per_s"]}


def write(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1) + "\n")
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.data_root.exists():
        raise SystemExit(f"miniImageNet not found at {args.data_root} (pass --data-root)")
    stem = f"protonet_vs_easyfsl_{args.shot}shot"
    if args.side in ("both", "fsbench"):
        fs = run_fsbench(args)
        write(args.out / f"{stem}_fsbench.json", fs)
        print(f"fsbench: {fs['episodes_trained']} episodes in {fs['train_seconds']:.0f} s, "
              f"val {fs['accuracy']:.2f} ± {fs['ci95']:.2f}", flush=True)
        if args.side == "fsbench":
            return 0
    else:
        if args.budget_from is None:
            raise SystemExit("easyfsl needs --budget-from FSBENCH.json (or run 'both')")
        fs = json.loads(args.budget_from.read_text())
    peer, _ = run_easyfsl(args, fs["train_seconds"])
    print(f"easyfsl: {peer['episodes_trained']} episodes in {peer['train_seconds']:.0f} s, "
          f"val {peer['accuracy']:.2f} ± {peer['ci95']:.2f}", flush=True)
    peer["paired"] = paired(fs, peer)
    write(args.out / f"{stem}_easyfsl.json", peer)
    p = peer["paired"]
    print(f"paired fsbench - easyfsl over {p['n']} val episodes: {p['fsbench_minus_easyfsl']:+.2f} ± "
          f"{p['ci95']:.2f} ({p['verdict']}); episodes/s fsbench / easyfsl x{p['speed_ratio_episodes_per_s']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

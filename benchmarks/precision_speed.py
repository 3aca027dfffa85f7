"""fp32 vs ``--precision auto``: pre-training img/s, meta-train episodes/s, evaluation time.

Issue 12. Every figure is measured for both policies in the same process, alternating
(fp32, auto, fp32, auto, ...), and reported as the ratio auto / fp32 (or fp32 / auto for times),
so that a machine shared with other jobs still gives comparable numbers. On a CPU with native
bf16 (oneDNN: AVX-512 BF16 / AMX) ``auto`` is bf16 autocast + channels_last; elsewhere it is
fp32 and the ratios are ~1.

Measured (real miniImageNet 84x84 where ``--data-root`` exists, else random uint8 images):

1. pre-training: one SGD step of backbone + 64-way head on a batch of ``--batch`` images,
   gather + normalise + crop/flip augmentation included (fsbench.engine.pretrain's step);
2. meta-training: one ProtoNets step (5-way 1-shot, 15 queries: 80 images), gather and
   normalisation included (fsbench.engine.episodic's step);
   for conv4, resnet12_tiny and resnet12;
3. evaluation of ``--episodes`` val episodes (5-way 1-shot, 15 queries) with protonet
   (flattened Conv-4), finetune and mtl (Conv-4, 100-step FC heads) and maml (Conv-4-32
   flattened, 10 inner steps per episode; ``--maml-episodes`` of them, scaled to ``--episodes``).
4. extras (``--extras``): 1 vs 2 threads, the share of gather + augmentation in a pre-training
   step, torch.compile of the Conv-4 training step (compile time and steady-state speed),
   and the fp32+channels_last layout.

    python benchmarks/precision_speed.py --threads 2 --json runs/issue12/speed.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fsbench.backbones import create_backbone, feature_dim
from fsbench.config import EpisodicConfig, MethodPreset
from fsbench.data.base import Normalizer, Split
from fsbench.engine.augment import random_resized_crop_flip
from fsbench.engine.episodic import _step
from fsbench.engine.evaluate import evaluate_episodes
from fsbench.episodes import EpisodeSampler, EpisodeSpec
from fsbench.method import MethodContext
from fsbench.precision import Precision, resolve_precision

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "miniimagenet"
MEAN, STD = (0.471, 0.450, 0.405), (0.272, 0.265, 0.278)
BACKBONES = {"conv4": 1.0, "resnet12_tiny": 1.0, "resnet12": 0.25}  # relative step counts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (on a 2-core machine shared with other jobs 1 is faster than 2)")
    p.add_argument("--batch", type=int, default=64, help="pre-training batch")
    p.add_argument("--steps", type=int, default=8, help="timed steps per repeat (resnet12: a quarter)")
    p.add_argument("--repeats", type=int, default=2, help="alternating fp32/auto repeats")
    p.add_argument("--episodes", type=int, default=600)
    p.add_argument("--maml-episodes", type=int, default=30)
    p.add_argument("--backbones", default=",".join(BACKBONES))
    p.add_argument("--skip-eval", action="store_true")
    p.add_argument("--extras", action="store_true")
    p.add_argument("--json", type=Path)
    return p.parse_args(argv)


def load_splits(root: Path) -> tuple[Split, Split, tuple, tuple, str]:
    if root.exists():
        from fsbench.data import load_dataset

        ds = load_dataset("miniimagenet", root, None, False)
        return ds.split("train"), ds.split("val"), ds.mean, ds.std, f"miniImageNet ({root})"
    g = torch.Generator().manual_seed(0)

    def split(name, classes, per):
        images = torch.randint(0, 256, (classes * per, 3, 84, 84), dtype=torch.uint8, generator=g)
        return Split(name, images, torch.arange(classes).repeat_interleave(per), tuple(map(str, range(classes))))

    return split("train", 64, 100), split("val", 16, 600), MEAN, STD, "random uint8 84x84"


def timed(fn: Callable[[], object], steps: int) -> float:
    """Seconds per call of ``fn`` over ``steps`` calls, after one untimed warm-up call."""
    fn()
    began = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - began) / steps


def policies() -> dict[str, Precision]:
    return {"fp32": resolve_precision("fp32", "cpu"), "auto": resolve_precision("auto", "cpu")}


def pretrain_step(name: str, prec: Precision, train: Split, normalize: Normalizer, batch: int,
                  augment: bool = True, compiled: bool = False):
    torch.manual_seed(0)
    model = prec.prepare(create_backbone(name))
    head = nn.Linear(feature_dim(model), 64)
    opt = torch.optim.SGD(list(model.parameters()) + list(head.parameters()), lr=0.01, momentum=0.9)
    net = nn.Sequential(model, head)
    fwd = torch.compile(net) if compiled else net
    counter = iter(range(10**9))

    def step():
        b = next(counter)
        idx = torch.randint(0, len(train), (batch,), generator=torch.Generator().manual_seed(b))
        x = normalize(train.images[idx])
        if augment:
            x = random_resized_crop_flip(x, torch.Generator().manual_seed(b))
        with prec.autocast():
            logits = fwd(prec.input(x))
        loss = F.cross_entropy(logits.float(), train.labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def method_ctx(backbone: str, kwargs: dict, hparams, prec: Precision, episodic=True, pretrained=False,
               way: int = 5) -> MethodContext:
    preset = MethodPreset(backbone, hparams, kwargs, episodic=EpisodicConfig() if episodic else None)
    state = create_backbone(backbone, **kwargs).state_dict() if pretrained else None
    return MethodContext(preset, backbone, dict(kwargs), 64, (3, 84, 84), torch.device("cpu"), 0, way, 1,
                         precision=prec, pretrained=state)


def protonet(backbone: str, prec: Precision, kwargs: dict | None = None):
    from fsbench_plugins.protonet import ProtoNet, ProtoNetHparams

    torch.manual_seed(0)
    return ProtoNet(method_ctx(backbone, kwargs or {}, ProtoNetHparams(), prec)).train()


def meta_step(backbone: str, prec: Precision, train: Split, normalize: Normalizer):
    method = protonet(backbone, prec)
    sampler = EpisodeSampler(train, EpisodeSpec(5, 1, 15), 0, "bench", stream="train")
    counter = iter(range(10**9))

    def step():
        i = next(counter)
        return _step(method, sampler.batch(range(i, i + 1)), train, normalize)

    return step


def eval_methods(prec: Precision) -> dict[str, object]:
    from fsbench_plugins.baselines import Finetune, FinetuneHparams
    from fsbench_plugins.maml import MAML, MAMLHparams
    from fsbench_plugins.mtl import MTL, MTLHparams

    torch.manual_seed(0)
    mtl_hp = MTLHparams(fc_init="zero", feature_norm=10.0)
    return {
        "protonet": protonet("conv4", prec, {"pool": "flatten"}),
        "finetune": Finetune(method_ctx("conv4", {}, FinetuneHparams(), prec, episodic=False, pretrained=True)),
        "mtl": MTL(method_ctx("conv4", {}, mtl_hp, prec, pretrained=True)),
        "maml": MAML(method_ctx("conv4_32", {"pool": "flatten", "img_size": (84, 84)},
                                MAMLHparams(batched=False), prec)),
    }


def alternate(fn: Callable[[str, Precision], float], repeats: int) -> dict[str, float]:
    """``fn(name, policy)`` for fp32 and auto, alternating ``repeats`` times; median per policy."""
    out: dict[str, list[float]] = {"fp32": [], "auto": []}
    for _ in range(repeats):
        for name, prec in policies().items():
            out[name].append(fn(name, prec))
    return {k: statistics.median(v) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    train, val, mean, std, source = load_splits(args.data_root)
    normalize = Normalizer(mean, std, torch.device("cpu"))
    auto = resolve_precision("auto", "cpu")
    print(f"data: {source}; {args.threads} threads; auto = {auto.dtype}"
          f"{' + channels_last' if auto.channels_last else ''}", flush=True)
    report: dict = {"threads": args.threads, "auto": auto.label, "data": source, "rows": []}

    def row(what: str, fp32: float, auto_: float, unit: str, higher_better: bool = True) -> None:
        ratio = auto_ / fp32 if higher_better else fp32 / auto_
        report["rows"].append({"what": what, "fp32": fp32, "auto": auto_, "unit": unit, "speedup": ratio})
        print(f"{what:<44} fp32 {fp32:9.2f}  auto {auto_:9.2f} {unit:<12} x{ratio:.2f}", flush=True)

    for name in args.backbones.split(","):
        steps = max(1, round(args.steps * BACKBONES.get(name, 1.0)))
        res = alternate(lambda _n, p, name=name, steps=steps: args.batch / timed(
            pretrain_step(name, p, train, normalize, args.batch), steps), args.repeats)
        row(f"pre-train {name} (batch {args.batch}, aug)", res["fp32"], res["auto"], "img/s")
        res = alternate(lambda _n, p, name=name, steps=steps: 1 / timed(
            meta_step(name, p, train, normalize), 2 * steps), args.repeats)
        row(f"meta-train protonet {name} (5w1s15q)", res["fp32"], res["auto"], "episodes/s")

    if args.extras:
        extras(args, train, normalize, row, report)
    if not args.skip_eval:
        spec = EpisodeSpec(5, 1, 15)
        sampler = EpisodeSampler(val, spec, 0, "bench", stream="eval")
        episodes = sampler.batch(range(args.episodes))
        maml_eps = sampler.batch(range(args.maml_episodes))
        times: dict[str, dict[str, float]] = {}
        for pname, prec in policies().items():  # one pass each: an evaluation is long
            for mname, method in eval_methods(prec).items():
                eps = maml_eps if mname == "maml" else episodes
                began = time.perf_counter()
                evaluate_episodes(method, val, eps, normalize, batch=10 if mname == "maml" else 100)
                seconds = (time.perf_counter() - began) * args.episodes / eps.num_tasks
                times.setdefault(mname, {})[pname] = seconds
        for mname, t in times.items():
            scaled = f" (x{args.episodes // args.maml_episodes} of {args.maml_episodes})" if mname == "maml" else ""
            row(f"evaluate {mname}, {args.episodes} episodes{scaled}", t["fp32"], t["auto"], "s",
                higher_better=False)

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def extras(args, train: Split, normalize: Normalizer, row, report: dict) -> None:
    auto = resolve_precision("auto", "cpu")
    fp32 = resolve_precision("fp32", "cpu")
    steps = args.steps
    # fp32 + channels_last (not a policy: it changes fp32's results in the last bits).
    fp32_cl = replace(fp32, channels_last=True)
    res = {}
    for _ in range(args.repeats):
        for key, p in (("fp32", fp32), ("cl", fp32_cl)):
            res.setdefault(key, []).append(
                args.batch / timed(pretrain_step("conv4", p, train, normalize, args.batch), steps))
    row("extra: conv4 fp32 -> fp32+channels_last", statistics.median(res["fp32"]), statistics.median(res["cl"]),
        "img/s")
    # Threads: 1 vs the requested count, under auto.
    res = {}
    for _ in range(args.repeats):
        for n in (1, args.threads):
            torch.set_num_threads(n)
            res.setdefault(n, []).append(
                args.batch / timed(pretrain_step("conv4", auto, train, normalize, args.batch), steps))
    torch.set_num_threads(args.threads)
    row(f"extra: conv4 auto, 1 -> {args.threads} threads", statistics.median(res[1]),
        statistics.median(res[args.threads]), "img/s")
    # Gather + normalise + augmentation vs the whole step.
    idx = torch.randint(0, len(train), (args.batch,))

    def prep():
        random_resized_crop_flip(normalize(train.images[idx]), torch.Generator().manual_seed(0))

    prep_s = timed(prep, 10)
    step_s = timed(pretrain_step("conv4", auto, train, normalize, args.batch), steps)
    report["rows"].append({"what": "extra: gather+normalise+augment share of a conv4 auto step",
                           "share": prep_s / step_s, "prep_s": prep_s, "step_s": step_s})
    print(f"extra: gather+normalise+augment {prep_s * 1e3:.1f} ms of a {step_s * 1e3:.1f} ms conv4 auto step "
          f"({100 * prep_s / step_s:.1f}%)", flush=True)
    # torch.compile of the conv4 training step under auto: compile time and steady-state speed.
    began = time.perf_counter()
    step = pretrain_step("conv4", auto, train, normalize, args.batch, compiled=True)
    step()
    step()
    compile_s = time.perf_counter() - began
    eager = args.batch / timed(pretrain_step("conv4", auto, train, normalize, args.batch), steps)
    comp = args.batch / timed(step, steps)
    report["rows"].append({"what": "extra: torch.compile conv4 auto step", "compile_s": compile_s,
                           "eager": eager, "compiled": comp})
    print(f"extra: torch.compile conv4 auto: compile {compile_s:.0f} s, eager {eager:.1f} -> compiled "
          f"{comp:.1f} img/s (x{comp / eager:.2f})", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())

"""MTL throughput: meta-train episodes per second and the time of a 600-episode evaluation.

Meta-Transfer Learning (Sun et al., CVPR 2019) with the method fsbench runs (plugins/mtl): a
scale-shift-wrapped backbone, one forward over all tasks of a meta-batch, the batched FC inner
loop, Adam on SS and the FC init. Evaluation follows the core's frozen-at-test path: every image
the episodes use is embedded once, then the 100-step inner loop runs for ``--eval-batch`` episodes
at a time. Data is random (uint8 images of ``--image-size``) unless ``--data-root`` names a
miniImageNet folder, whose val split is then used.

    python benchmarks/mtl_throughput.py --device cuda --backbone resnet12          # H100 targets
    python benchmarks/mtl_throughput.py --device cpu --backbone conv4 --image-size 32 \\
        --steps 20 --meta-batch 2 --episodes 50 --iters 3                         # a CPU check

Targets (H100/H200, ResNet-12 64-160-320-640, 84x84, 5-way 1-shot, 15 queries): 100+ meta-train
episodes/s and a 600-episode evaluation under 3 s. On CUDA the timings synchronise only at the
end of each timed region.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from fsbench.backbones import create_backbone
from fsbench.config import EpisodicConfig, MethodPreset
from fsbench.data.base import Normalizer, Split
from fsbench.engine.evaluate import evaluate_episodes
from fsbench.episodes import EpisodeSampler, EpisodeSpec
from fsbench.method import MethodContext
from fsbench.precision import resolve_precision
from fsbench_plugins.mtl.method import MTL, MTLHparams


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--backbone", default="resnet12", help="fsbench/timm backbone name")
    p.add_argument("--steps", type=int, default=100, help="inner steps at meta-train (test: --test-steps)")
    p.add_argument("--test-steps", type=int, default=100, help="inner steps at evaluation")
    p.add_argument("--meta-batch", type=int, default=8, help="tasks per meta-train step")
    p.add_argument("--episodes", type=int, default=600, help="evaluation episodes")
    p.add_argument("--image-size", type=int, default=84)
    p.add_argument("--iters", type=int, default=20, help="timed meta-train steps (after 3 warm-up steps)")
    p.add_argument("--way", type=int, default=5)
    p.add_argument("--shot", type=int, default=1)
    p.add_argument("--query", type=int, default=15)
    p.add_argument("--eval-batch", type=int, default=100, help="episodes per inner-loop batch at evaluation")
    p.add_argument("--classes", type=int, default=16, help="classes of the random split")
    p.add_argument("--per-class", type=int, default=600, help="images per class of the random split")
    p.add_argument("--data-root", type=Path, help="miniImageNet root: use its val split instead")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    return p.parse_args(argv)


def random_split(classes: int, per_class: int, size: int) -> Split:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (classes * per_class, 3, size, size), dtype=torch.uint8, generator=g)
    labels = torch.arange(classes).repeat_interleave(per_class)
    return Split("val", images, labels, tuple(f"c{i}" for i in range(classes)))


def build_mtl(backbone: str, hp: MTLHparams, image_shape: tuple[int, int, int], device: torch.device,
              way: int = 5, shot: int = 1, backbone_kwargs: dict | None = None) -> MTL:
    """An MTL method in training mode on ``device``, from randomly initialised "pre-trained"
    weights (the weights do not matter for timing)."""
    kwargs = dict(backbone_kwargs or {})
    preset = MethodPreset(backbone=backbone, backbone_kwargs=kwargs, hparams=hp, episodic=EpisodicConfig())
    ctx = MethodContext(
        preset=preset, backbone=backbone, backbone_kwargs=kwargs, num_train_classes=64,
        image_shape=image_shape, device=device, seed=0, way=way, shot=shot,
        precision=resolve_precision("auto" if device.type == "cuda" else "fp32", device),
        pretrained=create_backbone(backbone, **kwargs).state_dict(),
    )
    return MTL(ctx).to(device).train()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.data_root is not None:
        from fsbench.data import load_dataset

        ds = load_dataset("miniimagenet", args.data_root, args.cache_dir, progress=False)
        split, mean, std = ds.split("val"), ds.mean, ds.std
    else:
        split = random_split(args.classes, args.per_class, args.image_size)
        mean, std = (127.5,) * 3, (64.0,) * 3
    normalize = Normalizer(mean, std, device)

    hp = MTLHparams(train_steps=args.steps, test_steps=args.test_steps)
    method = build_mtl(args.backbone, hp, split.image_shape, device, args.way, args.shot)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    spec = EpisodeSpec(args.way, args.shot, args.query)
    train_sampler = EpisodeSampler(split, spec, 0, "bench", stream="train")
    batches = []
    for i in range(3 + args.iters):
        ep = train_sampler.batch(range(i * args.meta_batch, (i + 1) * args.meta_batch))
        support, query = ep.images(split)
        batches.append((support.to(device), ep.support_labels.to(device), query.to(device),
                        ep.query_labels.to(device)))

    def step(b):
        s, sy, q, qy = b
        return method.meta_train_step(normalize(s), sy, normalize(q), qy, args.way)

    for b in batches[:3]:
        step(b)
    sync(device)
    began = time.perf_counter()
    for b in batches[3:]:
        out = step(b)
    sync(device)
    train_s = time.perf_counter() - began
    loss = float(out.loss)
    episodes_per_s = args.iters * args.meta_batch / train_s

    eval_sampler = EpisodeSampler(split, spec, 0, "bench", stream="eval")
    episodes = eval_sampler.batch(range(args.episodes))
    evaluate_episodes(method, split, episodes.select(slice(0, min(10, args.episodes))), normalize,
                      args.eval_batch)  # warm-up (cudnn autotuning, allocator)
    sync(device)
    began = time.perf_counter()
    accs = evaluate_episodes(method, split, episodes, normalize, args.eval_batch)
    sync(device)
    eval_s = time.perf_counter() - began
    unique = int(torch.unique(torch.cat([episodes.support_idx.flatten(), episodes.query_idx.flatten()])).numel())

    print(f"device            {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'})")
    print(f"backbone          {args.backbone}, {args.image_size}x{args.image_size}, "
          f"{args.way}-way {args.shot}-shot {args.query} queries")
    print(f"meta-train        {episodes_per_s:.2f} episodes/s  (meta-batch {args.meta_batch}, "
          f"{args.steps} inner steps, {args.iters} timed steps, {train_s / args.iters * 1000:.1f} ms/step, "
          f"loss {loss:.3f})")
    print(f"evaluation        {args.episodes} episodes in {eval_s:.2f} s  ({args.test_steps} inner steps, "
          f"{unique} distinct images embedded once, mean acc {accs.mean().item() * 100:.1f}%)")


if __name__ == "__main__":
    main()

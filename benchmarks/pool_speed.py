"""Max pooling without grad on a CPU: ``nn.MaxPool2d(2)`` against fsbench's ``MaxPool2x2``.

Alternating in one process (``--repeats`` rounds, the median of each), fp32, with the allocator
setting every run has: the first-block map of a 5-way 5-shot episode (100 x 64 x 84 x 84), and a
whole Conv-4 forward of its 100 images (what an evaluation or a probe does per episode), each
with the stock pooling and with fsbench's; and TADAM's FiLM on that map (a per-image scale and
shift) as a multiply then an add against one fused ``addcmul``. The outputs of each pair are
checked equal first (FiLM's to within rounding: the fused form rounds once).

    python benchmarks/pool_speed.py --threads 2 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics

import torch
from precision_speed import timed  # benchmarks/ is on the path when this script runs
from torch import nn

from fsbench.backbones import create_backbone
from fsbench.backbones.base import MaxPool2x2
from fsbench.engine.allocator import keep_freed_memory


def _swap_pools(model: nn.Module, make) -> None:
    for module in model.modules():
        for name, child in module.named_children():
            if isinstance(child, nn.MaxPool2d):
                setattr(module, name, make())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--calls", type=int, default=4, help="timed calls per sample")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"allocator: {keep_freed_memory()}; {args.threads} threads; torch {torch.__version__}")
    torch.manual_seed(0)
    fmap = torch.randn(100, 64, 84, 84)
    images = torch.randn(100, 3, 84, 84)
    stock_model = create_backbone("conv4").eval()
    fast_model = create_backbone("conv4").eval()
    fast_model.load_state_dict(stock_model.state_dict())
    _swap_pools(stock_model, lambda: nn.MaxPool2d(2))
    gamma, beta = torch.rand(100, 64, 1, 1), torch.rand(100, 64, 1, 1)
    cases = {
        "pool 100x64x84x84": (lambda: nn.functional.max_pool2d(fmap, 2), lambda: MaxPool2x2()(fmap)),
        "Conv-4 forward, 100 images": (lambda: stock_model(images), lambda: fast_model(images)),
        "FiLM on 100x64x84x84": (lambda: fmap * gamma + beta, lambda: torch.addcmul(beta, fmap, gamma)),
    }
    with torch.no_grad():
        for name, (stock, fast) in cases.items():
            a, b = stock(), fast()
            same = torch.allclose(a, b, rtol=1e-6, atol=1e-6) if name.startswith("FiLM") else torch.equal(a, b)
            if not same:
                raise SystemExit(f"{name}: the two forms disagree")
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
        for _ in range(args.repeats):
            for name, (stock, fast) in cases.items():
                times[name].append((timed(stock, args.calls), timed(fast, args.calls)))
    print(f"{'no grad, fp32':<28} {'stock':>13} {'fsbench':>11} {'speed-up':>9}")
    for name, pairs in times.items():
        stock = statistics.median(s for s, _ in pairs)
        fast = statistics.median(f for _, f in pairs)
        print(f"{name:<28} {stock * 1e3:>10.1f} ms {fast * 1e3:>8.1f} ms {stock / fast:>8.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

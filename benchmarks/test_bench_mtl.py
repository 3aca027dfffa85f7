"""pytest-benchmark: one MTL meta-train step and one batched MTL test inner loop (tiny backbone).

Run with ``tox -e bench`` (or ``pytest benchmarks --benchmark-only --benchmark-enable``).
"""

from __future__ import annotations

import pytest
import torch
from mtl_throughput import build_mtl

from fsbench_plugins.mtl.method import MTL, MTLHparams

WAY, SHOT, QUERY, TASKS, SIZE = 5, 1, 15, 2, 32
BACKBONE, KWARGS = "conv4", {"width": 16}


@pytest.fixture(scope="module")
def method() -> MTL:
    torch.manual_seed(0)
    hp = MTLHparams(train_steps=20, test_steps=100)
    return build_mtl(BACKBONE, hp, (3, SIZE, SIZE), torch.device("cpu"), WAY, SHOT, KWARGS)


def test_bench_mtl_meta_train_step(benchmark, method: MTL):
    g = torch.Generator().manual_seed(0)
    support = torch.randn(TASKS, WAY * SHOT, 3, SIZE, SIZE, generator=g)
    query = torch.randn(TASKS, WAY * QUERY, 3, SIZE, SIZE, generator=g)
    sy = torch.arange(WAY).repeat_interleave(SHOT).expand(TASKS, -1)
    qy = torch.arange(WAY).repeat_interleave(QUERY).expand(TASKS, -1)
    out = benchmark(method.meta_train_step, support, sy, query, qy, WAY)
    assert torch.isfinite(out.loss)


def test_bench_mtl_classify_50_episodes(benchmark, method: MTL):
    g = torch.Generator().manual_seed(1)
    dim = method.fc_weight.shape[1]
    support = torch.rand(50, WAY * SHOT, dim, generator=g)
    query = torch.rand(50, WAY * QUERY, dim, generator=g)
    sy = torch.arange(WAY).repeat_interleave(SHOT).expand(50, -1)
    with torch.no_grad():
        logits = benchmark(method.classify, support, sy, query, WAY)
    assert logits.shape == (50, WAY * QUERY, WAY)

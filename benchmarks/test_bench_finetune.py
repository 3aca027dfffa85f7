"""Finetune's per-episode FC heads: 600 episodes adapted in one batch vs one at a time.

The realistic shape of a miniImageNet meta-test (5-way 1-shot, 15 queries per class, 100
gradient steps per head, 640-d features as ResNet-12's) on random features: what
``Finetune.classify`` costs once the core has embedded every test image. Run with
``tox -e bench`` (or ``pytest benchmarks --benchmark-only``); the speed-up of batching is
printed and stored in the benchmark's ``extra_info``.

Both run on one CPU thread: the comparison is then about the work done (600 x 100 small
matrix products vs 100 large ones), not about how a shared machine schedules OpenMP threads
(on a busy 2-core host, two threads of tiny ops can be ten times slower than one).
"""

from __future__ import annotations

import pytest
import torch

from fsbench.backbones import create_backbone
from fsbench.method import MethodContext
from fsbench.precision import resolve_precision
from fsbench_plugins.baselines import FINETUNE_PRESETS, Finetune

EPISODES, WAY, SHOT, QUERY, DIM = 600, 5, 1, 15, 640
ROUNDS = 3
_means: dict[str, float] = {}


@pytest.fixture(scope="module")
def setup():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield _build()
    torch.set_num_threads(threads)


def _build():
    preset = FINETUNE_PRESETS["paper"]  # 100 steps, lr 0.01, features rescaled to norm 10
    small = FINETUNE_PRESETS["smoke"]  # the backbone is never run here: a small one will do
    ctx = MethodContext(
        preset=preset, backbone=small.backbone, backbone_kwargs=dict(small.backbone_kwargs),
        num_train_classes=64, image_shape=(3, 84, 84), device=torch.device("cpu"), seed=0,
        way=WAY, shot=SHOT, precision=resolve_precision("fp32", "cpu"),
        pretrained=create_backbone(small.backbone, **small.backbone_kwargs).state_dict(),
    )
    method = Finetune(ctx).eval()
    g = torch.Generator().manual_seed(0)
    support = torch.randn(EPISODES, WAY * SHOT, DIM, generator=g).relu()
    query = torch.randn(EPISODES, WAY * QUERY, DIM, generator=g).relu()
    support_y = torch.arange(WAY).repeat_interleave(SHOT).expand(EPISODES, -1)
    return method, support, support_y, query


def _record(name: str, benchmark) -> None:
    _means[name] = benchmark.stats.stats.mean
    if len(_means) == 2:
        ratio = _means["one_at_a_time"] / _means["batched"]
        benchmark.extra_info["speedup_of_batching"] = ratio
        print(f"\n{EPISODES} finetune episodes: batched {_means['batched']:.3f} s, "
              f"one at a time {_means['one_at_a_time']:.3f} s, speed-up x{ratio:.1f}")


@pytest.mark.benchmark(group="finetune-600-episodes")
def test_finetune_600_episodes_batched(benchmark, setup):
    method, support, support_y, query = setup

    def batched():
        with torch.no_grad():
            return method.classify(support, support_y, query, WAY)

    logits = benchmark.pedantic(batched, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert logits.shape == (EPISODES, WAY * QUERY, WAY)
    _record("batched", benchmark)


@pytest.mark.benchmark(group="finetune-600-episodes")
def test_finetune_600_episodes_one_at_a_time(benchmark, setup):
    method, support, support_y, query = setup

    def one_at_a_time():
        with torch.no_grad():
            return torch.cat([
                method.classify(support[i : i + 1], support_y[i : i + 1], query[i : i + 1], WAY)
                for i in range(EPISODES)
            ])

    logits = benchmark.pedantic(one_at_a_time, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    assert logits.shape == (EPISODES, WAY * QUERY, WAY)
    _record("one_at_a_time", benchmark)

"""pytest-benchmark: MAML with the tasks batched by ``torch.func.vmap`` against a per-task loop.

Two groups, each timing the same work on both paths (same model, same tasks):

* ``maml-meta-train-step``: one second-order meta-train step (Conv-4 with 32 filters on 32x32
  images, 5-way 1-shot, 5 queries per class, meta-batch 4, 5 inner steps);
* ``maml-test-adaptation``: adapting 6 test episodes (10 inner steps, 15 queries per class).

The vmap/loop ratio of each group is printed (``-s``) and stored in the loop entry's
``extra_info``. Run with ``tox -e bench`` (or ``pytest benchmarks/test_bench_maml.py
--benchmark-only --benchmark-enable -s``); about a minute on 2 CPU cores.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from fsbench.config import EpisodicConfig, MethodPreset
from fsbench.method import MethodContext
from fsbench.precision import resolve_precision
from fsbench_plugins.maml import MAML, MAMLHparams

WAY, SHOT, SIZE = 5, 1, 32
BACKBONE, KWARGS = "conv4_32", {"pool": "flatten"}
TRAIN_TASKS, TRAIN_QUERY = 4, 5
TEST_EPISODES, TEST_QUERY = 6, 15

_means: dict[str, dict[str, float]] = {}


def _tasks(tasks: int, query: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    support = torch.randn(tasks, WAY * SHOT, 3, SIZE, SIZE, generator=g)
    queries = torch.randn(tasks, WAY * query, 3, SIZE, SIZE, generator=g)
    sy = torch.arange(WAY).repeat_interleave(SHOT).expand(tasks, -1)
    qy = torch.arange(WAY).repeat_interleave(query).expand(tasks, -1)
    return support, sy, queries, qy


@pytest.fixture(scope="module")
def method() -> MAML:
    torch.manual_seed(0)
    preset = MethodPreset(backbone=BACKBONE, backbone_kwargs=KWARGS, hparams=MAMLHparams(),
                          episodic=EpisodicConfig(meta_batch=TRAIN_TASKS))
    ctx = MethodContext(
        preset=preset, backbone=BACKBONE, backbone_kwargs=KWARGS, num_train_classes=64,
        image_shape=(3, SIZE, SIZE), device=torch.device("cpu"), seed=0, way=WAY, shot=SHOT,
        precision=resolve_precision("fp32", "cpu"),
    )
    return MAML(ctx).train()


def _record(benchmark, group: str, path: str) -> None:
    mean = benchmark.stats.stats.mean
    _means.setdefault(group, {})[path] = mean
    paths = _means[group]
    if {"vmap", "loop"} <= set(paths):
        ratio = paths["loop"] / paths["vmap"]
        benchmark.extra_info["loop_over_vmap"] = ratio
        print(f"\n{group}: vmap {1 / paths['vmap']:.3f}/s, loop {1 / paths['loop']:.3f}/s "
              f"(calls per second); vmap is {ratio:.2f}x the speed of the loop")


@pytest.mark.benchmark(group="maml-meta-train-step")
@pytest.mark.parametrize("path", ["vmap", "loop"])
def test_bench_maml_meta_train_step(benchmark, method: MAML, path: str):
    method.hp = replace(method.hp, batched=path == "vmap")
    data = _tasks(TRAIN_TASKS, TRAIN_QUERY, 0)
    out = benchmark.pedantic(method.meta_train_step, args=(*data, WAY), rounds=4, warmup_rounds=1)
    assert torch.isfinite(out.loss) and method.vmap_failure is None
    _record(benchmark, "maml-meta-train-step", path)


@pytest.mark.benchmark(group="maml-test-adaptation")
@pytest.mark.parametrize("path", ["vmap", "loop"])
def test_bench_maml_adapt_6_episodes(benchmark, method: MAML, path: str):
    method.hp = replace(method.hp, batched=path == "vmap")
    support, sy, query, _ = _tasks(TEST_EPISODES, TEST_QUERY, 1)
    logits = benchmark.pedantic(method.adapt_and_predict, args=(support, sy, query, WAY),
                                rounds=3, warmup_rounds=1)
    assert logits.shape == (TEST_EPISODES, WAY * TEST_QUERY, WAY)
    _record(benchmark, "maml-test-adaptation", path)

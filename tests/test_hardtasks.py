"""The hard-task meta-batch (MTL, Sun et al., CVPR 2019, Alg. 1): fsbench.engine.hardtasks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fsbench.checkpoints import atomic_torch_save, safe_torch_load
from fsbench.config import HardTaskConfig, RunConfig
from fsbench.data.base import Split
from fsbench.engine.hardtasks import HardTaskMetaBatch, PlainMetaBatch, failure_classes
from fsbench.episodes import Episode, EpisodeSampler, EpisodeSpec, episode_labels

WAY, SHOT, QUERY = 5, 1, 3


def make_split(classes: int = 12, per_class: int = 40) -> Split:
    labels = torch.arange(classes).repeat_interleave(per_class)
    images = torch.zeros(len(labels), 3, 4, 4, dtype=torch.uint8)
    return Split("train", images, labels, tuple(f"c{i}" for i in range(classes)))


def sampler(split: Split, seed: int = 0, stream: str = "train") -> EpisodeSampler:
    return EpisodeSampler(split, EpisodeSpec(WAY, SHOT, QUERY), seed, "d", stream)


def strategy(split: Split, seed: int = 0, meta_batch: int = 2, **cfg) -> HardTaskMetaBatch:
    return HardTaskMetaBatch(HardTaskConfig(enabled=True, **cfg), sampler(split, seed, "hard"), meta_batch)


def logits_failing(failures: list[int], confusions: list[int], query: int = QUERY) -> torch.Tensor:
    """[T, way*query, way] logits: every query right except those of ``failures[t]``, which are
    all predicted as ``confusions[t]``."""
    labels = episode_labels(len(failures), WAY, query)
    pred = labels.clone()
    for t, (f, c) in enumerate(zip(failures, confusions, strict=True)):
        pred[t][labels[t] == f] = c
    return torch.nn.functional.one_hot(pred, WAY).float() * 4.0


def observe(s: HardTaskMetaBatch, batch: Episode, failures: list[int], confusions: list[int]) -> None:
    s.observe(batch, logits_failing(failures, confusions))


# -- failure class and confusion ------------------------------------------------------------------

def test_failure_is_the_class_with_the_lowest_query_accuracy():
    labels = episode_labels(2, WAY, QUERY)
    logits = logits_failing([3, 0], [1, 4])
    # one more mistake on class 2 of task 0 does not make it the worst (class 3 is 0/3)
    logits[0, 2 * QUERY] = torch.nn.functional.one_hot(torch.tensor(4), WAY) * 4.0
    failure, confused = failure_classes(logits, labels, WAY)
    assert failure.tolist() == [3, 0]
    assert confused.tolist() == [1, 4]


def test_accuracy_tie_goes_to_the_lower_true_class_probability():
    way, q = 3, 2
    labels = episode_labels(1, way, q)  # [0, 0, 1, 1, 2, 2]
    # classes 0 and 1 both 1/2 right; class 1's true-class probability is lower
    rows = [[3, 0, 0], [0, 1, 0],   # class 0: right (confident), wrong
            [0, 2, 0], [0, 0, 5],   # class 1: right (less confident), wrong (very)
            [0, 0, 3], [0, 0, 3]]   # class 2: all right
    logits = torch.tensor([rows], dtype=torch.float)
    failure, _ = failure_classes(logits, labels, way)
    assert failure.tolist() == [1]
    # swap the confidences: now class 0 is the failure
    rows2 = [[2, 0, 0], [0, 0, 5], [0, 3, 0], [1, 0, 0], [0, 0, 3], [0, 0, 3]]
    failure, _ = failure_classes(torch.tensor([rows2], dtype=torch.float), labels, way)
    assert failure.tolist() == [0]


def test_full_tie_goes_to_the_first_class_and_confusion_ties_to_the_first_other_class():
    way, q = 4, 2
    labels = episode_labels(1, way, q)
    uniform = torch.zeros(1, way * q, way)  # every class 1/4 prob; argmax 0 everywhere
    # accuracy: class 0 = 1, others 0 -> tie among 1,2,3 with equal probability -> class 1
    failure, confused = failure_classes(uniform, labels, way)
    assert failure.tolist() == [1]
    assert confused.tolist() == [0]  # its queries were all predicted as class 0
    # a failure whose queries split evenly between two wrong classes: the first of them
    rows = torch.eye(way)[[0, 0, 3, 2, 2, 2, 3, 3]] * 3  # class 1 -> predicted 3 and 2
    failure, confused = failure_classes(rows[None], labels, way)
    assert failure.tolist() == [1]
    assert confused.tolist() == [2]


def test_confusion_is_never_the_failure_class_itself():
    way, q = 3, 4
    labels = episode_labels(1, way, q)
    # class 2 is the worst (2/4 right); its queries are most often predicted as class 2 itself,
    # and its two errors go to classes 0 and 1 (tie -> the first)
    pred = torch.tensor([0, 0, 0, 0, 1, 1, 1, 0, 2, 2, 0, 1])
    failure, confused = failure_classes(torch.nn.functional.one_hot(pred, way)[None].float(), labels, way)
    assert failure.tolist() == [2] and confused.tolist() == [0]


# -- composing hard tasks ---------------------------------------------------------------------------

def episode_classes(ep: Episode) -> list[set[int]]:
    return [set(c) for c in ep.classes.tolist()]


def check_images_match_classes(split: Split, ep: Episode) -> None:
    for t in range(ep.num_tasks):
        assert torch.equal(split.labels[ep.support_idx[t]], ep.classes[t][ep.support_labels[t]])
        assert torch.equal(split.labels[ep.query_idx[t]], ep.classes[t][ep.query_labels[t]])
        used = torch.cat([ep.support_idx[t], ep.query_idx[t]]).tolist()
        assert len(set(used)) == len(used)


def test_enough_failure_classes_give_hard_tasks_of_failure_classes_only():
    split = make_split(classes=40)
    train = sampler(split)
    s = strategy(split, every=3, count=4)
    failures_seen: set[int] = set()
    for it in range(3):
        batch = train.batch(range(2 * it, 2 * it + 2))
        fails = [it % WAY, (it + 2) % WAY]
        observe(s, batch, fails, [(f + 1) % WAY for f in fails])
        failures_seen |= {int(batch.classes[t, f]) for t, f in enumerate(fails)}
        extra = s.extra_batches(it)
        if it < 2:
            assert extra == []
    assert len(failures_seen) >= WAY  # the test's premise
    [hard] = extra
    assert hard.num_tasks == 4
    for classes in episode_classes(hard):
        assert len(classes) == WAY and classes <= failures_seen
    check_images_match_classes(split, hard)


def _two_task_setup(split: Split, **cfg):
    batch = sampler(split).batch(range(2))
    s = strategy(split, **cfg)
    observe(s, batch, [0, 1], [2, 3])
    failures = {int(batch.classes[0, 0]), int(batch.classes[1, 1])}
    confusions = {int(batch.classes[0, 2]), int(batch.classes[1, 3])}
    return batch, s, failures, confusions


def test_confused_fill_adds_the_confusions_then_random_classes():
    split = make_split()
    batch, s, failures, confusions = _two_task_setup(split, fill="confused", count=6)
    assert len(failures) == 2 and not failures & confusions  # premise
    [hard] = s.extra_batches(0)
    fills = []
    for classes in episode_classes(hard):
        assert len(classes) == WAY
        assert failures | confusions <= classes
        fills.append(classes - failures - confusions)
    assert all(len(f) == 1 for f in fills)
    assert len({frozenset(f) for f in fills}) > 1  # the last slot is random, per task
    check_images_match_classes(split, hard)


def test_random_fill_adds_random_classes_not_the_confusions():
    split = make_split(classes=40)
    batch, s, failures, confusions = _two_task_setup(split, fill="random", count=8)
    [hard] = s.extra_batches(0)
    fills = [classes - failures for classes in episode_classes(hard)]
    for classes, fill in zip(episode_classes(hard), fills, strict=True):
        assert failures <= classes and len(fill) == WAY - 2
    # with 38 other classes, a rule that took the confusions would put both in every task
    assert not all(confusions <= f for f in fills)
    assert len({frozenset(f) for f in fills}) == len(fills)


def test_confused_fill_skips_a_confusion_that_is_already_a_failure():
    split = make_split()
    task = sampler(split).batch(range(1))
    # the same task twice: the second fails on the class the first's failure was confused with
    s = strategy(split, fill="confused", count=3)
    s.observe(Episode.cat([task, task]), logits_failing([0, 1], [1, 2]))
    f0, c0, c1 = (int(task.classes[0, k]) for k in (0, 1, 2))
    assert s.recorded == [(f0, c0), (c0, c1)]
    for classes in episode_classes(s.extra_batches(0)[0]):
        assert {f0, c0, c1} <= classes and len(classes) == WAY


def test_hard_task_images_are_drawn_afresh():
    split = make_split()
    batch, s, failures, _ = _two_task_setup(split, count=4)
    original = {int(batch.classes[t, k]): set(batch.support_idx[t, k * SHOT:(k + 1) * SHOT].tolist()
                                               + batch.query_idx[t, k * QUERY:(k + 1) * QUERY].tolist())
                for t in range(2) for k in range(WAY)}
    [hard] = s.extra_batches(0)
    for t in range(hard.num_tasks):
        for k, c in enumerate(hard.classes[t].tolist()):
            drawn = set(hard.support_idx[t, k * SHOT:(k + 1) * SHOT].tolist()
                        + hard.query_idx[t, k * QUERY:(k + 1) * QUERY].tolist())
            assert split.labels[list(drawn)].eq(c).all()
            if c in original:
                assert drawn != original[c]


def test_a_failure_class_repeated_across_tasks_counts_once():
    split = make_split()
    batch = sampler(split).batch(range(1))
    both = Episode.cat([batch, batch])  # the same task twice: the same failure class twice
    s = strategy(split, count=2)
    s.observe(both, logits_failing([2, 2], [4, 4]))
    assert s.recorded == [(int(batch.classes[0, 2]), int(batch.classes[0, 4]))] * 2
    for classes in episode_classes(s.extra_batches(0)[0]):
        assert {int(batch.classes[0, 2]), int(batch.classes[0, 4])} <= classes


# -- schedule, determinism, state -----------------------------------------------------------------

def test_every_and_count_are_respected_and_the_failure_set_is_emptied():
    split = make_split()
    train = sampler(split)
    s = strategy(split, every=3, count=5)
    extra_at = []
    for it in range(9):
        observe(s, train.batch(range(2 * it, 2 * it + 2)), [1, 3], [0, 0])
        extra = s.extra_batches(it)
        if extra:
            extra_at.append(it)
            assert [e.num_tasks for e in extra] == [5]
            assert s.recorded == []  # forgotten once used
        else:
            assert len(s.recorded) == 2 * (it % 3 + 1)
    assert extra_at == [2, 5, 8]
    assert s.hard_tasks_used == 15
    assert s.extra_batches(11) == []  # nothing recorded since: no hard batch


def test_count_defaults_to_the_meta_batch():
    split = make_split()
    batch, _, _, _ = _two_task_setup(split)
    s = strategy(split, meta_batch=3)
    observe(s, batch, [0, 1], [2, 3])
    assert s.extra_batches(0)[0].num_tasks == 3


def test_deterministic_under_the_seed():
    split = make_split()

    def hard(seed: int) -> Episode:
        batch = sampler(split).batch(range(2))
        s = strategy(split, seed=seed, count=4)
        observe(s, batch, [0, 1], [2, 3])
        return s.extra_batches(7)[0]

    a, b, c = hard(0), hard(0), hard(1)
    assert torch.equal(a.classes, b.classes) and torch.equal(a.support_idx, b.support_idx)
    assert torch.equal(a.query_idx, b.query_idx)
    assert not (torch.equal(a.classes, c.classes) and torch.equal(a.query_idx, c.query_idx))


def test_state_round_trips_through_a_weights_only_checkpoint(tmp_path: Path):
    split = make_split()
    train = sampler(split)
    a = strategy(split, every=2, count=3)
    observe(a, train.batch(range(2)), [0, 1], [2, 3])
    a.extra_batches(0)  # not due (every=2)
    observe(a, train.batch(range(2, 4)), [4, 0], [1, 1])
    a.extra_batches(1)  # due: used 3
    observe(a, train.batch(range(4, 6)), [3, 2], [0, 4])  # pending: one regular batch of two
    atomic_torch_save({"strategy": a.state()}, tmp_path / "ckpt.pt")
    b = strategy(split, every=2, count=3)
    b.load_state(safe_torch_load(tmp_path / "ckpt.pt")["strategy"])
    assert b.hard_tasks_used == a.hard_tasks_used == 3
    assert b.recorded == a.recorded and len(b.recorded) == 2
    assert a.regular_since_hard == b.regular_since_hard == 1
    assert a.extra_batches(2) == b.extra_batches(2) == []  # one regular batch since: not due
    for s in (a, b):
        observe(s, train.batch(range(6, 8)), [1, 2], [0, 0])
    ea, eb = a.extra_batches(3), b.extra_batches(3)
    assert torch.equal(ea[0].classes, eb[0].classes)
    assert torch.equal(ea[0].support_idx, eb[0].support_idx)
    # an empty state (nothing pending) round-trips too
    c = strategy(split, every=2, count=3)
    c.load_state(b.state())
    assert c.recorded == [] and c.extra_batches(5) == [] and c.hard_tasks_used == 6


def test_plain_meta_batch_adds_nothing():
    p = PlainMetaBatch()
    split = make_split()
    p.observe(sampler(split).batch(range(2)), logits_failing([0, 1], [2, 3]))
    assert p.extra_batches(0) == [] and p.hard_tasks_used == 0


# -- through the runner --------------------------------------------------------------------------

@pytest.mark.parametrize("every,count", [(2, 3)])
def test_runner_reports_hard_tasks_used(tmp_path: Path, every: int, count: int):
    from fsbench.runner import run

    iterations = 6
    cfg = RunConfig(
        method="protonet", preset="smoke", episodes=5, output=tmp_path / "out",
        cache_dir=tmp_path / "cache", hard_tasks=True, ht_every=every, ht_count=count,
        device="cpu",
        overrides={"episodic": {"iterations": iterations, "val_every": 3, "val_episodes": 4}},
    )
    result = run(cfg, show_progress=False)
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["hard_tasks"] is True
    assert summary["hard_tasks_used"] == (iterations // every) * count
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["hard_tasks"] == {"enabled": True, "every": every, "count": count,
                                    "fill": "confused", "mode": "extra"}
    # Algorithm 1: the hard meta-batches are extra outer updates.
    assert summary["outer_updates"] == iterations + iterations // every
    assert summary["hard_task_mode"] == "extra"


def _meta_train_protonet(mode: str, iterations: int = 6, every: int = 2, val_every: int | None = None,
                         checkpoint: Path | None = None):
    """ProtoNet (smoke) meta-trained with a hard meta-batch after every ``every`` regular ones,
    lr decay every 1."""
    from fsbench.config import resolve_preset
    from fsbench.data import load_dataset
    from fsbench.data.base import Normalizer
    from fsbench.engine.episodic import MetaTrainSpec, meta_train
    from fsbench.method import MethodContext
    from fsbench.precision import resolve_precision
    from fsbench_plugins.protonet import PRESETS, ProtoNet

    preset = resolve_preset(PRESETS["smoke"], {
        "hparams": {"lr_decay_every": 1},
        "episodic": {"iterations": iterations, "val_every": val_every or iterations, "val_episodes": 4}})
    data = load_dataset("synthetic", None, None, progress=False)
    train = data.split("train")
    torch.manual_seed(0)
    method = ProtoNet(MethodContext(
        preset=preset, backbone=preset.backbone, backbone_kwargs=dict(preset.backbone_kwargs),
        num_train_classes=train.num_classes, image_shape=train.image_shape, device="cpu", seed=0,
        way=5, shot=1, precision=resolve_precision("fp32", "cpu")))
    hard = HardTaskConfig(enabled=True, every=every, mode=mode)
    task = MetaTrainSpec(data.name, train, data.split("val"), EpisodeSpec(5, 1, 5), preset.episodic, hard,
                         seed=0, episode_seed=0)
    log = meta_train(method, task, Normalizer(data.mean, data.std, "cpu"), checkpoint=checkpoint,
                     show_progress=False)
    return method, log


def test_extra_hard_batches_leave_the_learning_rate_schedule_to_the_iterations():
    method, log = _meta_train_protonet("extra")
    assert log.hard_tasks_used == 3 * 2  # 3 hard meta-batches of meta_batch (2) tasks
    assert method.outer_updates == log.outer_updates == 6 + 3
    assert method.scheduler.last_epoch == 6  # counts meta-iterations, not the hard batches


def test_replace_mode_is_compute_matched():
    method, log = _meta_train_protonet("replace")
    # every=2: regular, regular, hard, regular, regular, hard (the 3rd and 6th iterations).
    assert method.outer_updates == log.outer_updates == 6
    assert method.scheduler.last_epoch == 6
    assert log.hard_tasks_used == 2 * 2
    assert log.tasks == 6 * 2  # as many tasks as a plain run


@pytest.mark.parametrize(("every", "replace_batches", "extra_batches"), [(1, 15, 30), (2, 10, 15), (3, 7, 10)])
def test_a_hard_batch_after_every_k_regular_ones_over_30_iterations(every, replace_batches, extra_batches):
    """The README's rule, exactly: the cycle is ``every`` regular meta-batches, then a hard one
    (replace: instead of the next regular one; extra: in addition). 30 iterations, meta-batch 2."""
    _, log = _meta_train_protonet("replace", iterations=30, every=every)
    assert log.hard_tasks_used == 2 * replace_batches  # 30, 20, 14 hard tasks
    assert log.outer_updates == 30 and log.tasks == 30 * 2
    _, log = _meta_train_protonet("extra", iterations=30, every=every)
    assert log.hard_tasks_used == 2 * extra_batches
    assert log.outer_updates == 30 + extra_batches


class _Interrupted(Exception):
    pass


@pytest.mark.parametrize("mode", ["replace", "extra"])
def test_a_resumed_run_keeps_the_cadence(tmp_path: Path, monkeypatch, mode: str):
    """Interrupted at its second validation (iteration 10; the checkpoint of iteration 5 on disk,
    mid-cycle: every=3), resumed: the same hard batches at the same iterations, the same weights."""
    import fsbench.engine.episodic as episodic

    full_method, full = _meta_train_protonet(mode, iterations=20, every=3, val_every=5)
    real, calls = episodic.evaluate_episodes, {"n": 0}

    def evaluate_then_interrupt(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise _Interrupted
        return real(*args, **kwargs)

    ckpt = tmp_path / "checkpoint.pt"
    with monkeypatch.context() as m:
        m.setattr(episodic, "evaluate_episodes", evaluate_then_interrupt)
        with pytest.raises(_Interrupted):
            _meta_train_protonet(mode, iterations=20, every=3, val_every=5, checkpoint=ckpt)
    assert safe_torch_load(ckpt)["iteration"] == 5
    method, log = _meta_train_protonet(mode, iterations=20, every=3, val_every=5, checkpoint=ckpt)
    assert (log.hard_tasks_used, log.outer_updates) == (full.hard_tasks_used, full.outer_updates)
    assert log.hard_tasks_used == 2 * (5 if mode == "replace" else 6)
    for (name, a), b in zip(full_method.state_dict().items(), method.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)

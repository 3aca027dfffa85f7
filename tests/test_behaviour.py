"""Core behaviour the other tests lean on: ProtoNets' parts, embed-once evaluation, best-state
restore, pre-training that learns; a slow real-data run and a CUDA run behind their markers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fsbench.config import HardTaskConfig, PretrainConfig, RunConfig, resolve_preset
from fsbench.data import load_dataset
from fsbench.data.base import Normalizer
from fsbench.engine import episodic
from fsbench.engine.evaluate import episode_accuracy, evaluate_episodes
from fsbench.engine.pretrain import PretrainSpec, ensure_pretrained
from fsbench.episodes import EpisodeSampler, EpisodeSpec
from fsbench.learners.prototypes import neg_sq_euclidean, prototypes
from fsbench.method import MethodContext
from fsbench.precision import resolve_precision
from fsbench_plugins.protonet import PRESETS, ProtoNet

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "miniimagenet"


@pytest.fixture(scope="module")
def synthetic():
    return load_dataset("synthetic", progress=False)


def protonet(data, overrides=None) -> ProtoNet:
    preset = resolve_preset(PRESETS["smoke"], overrides or {})
    train = data.split("train")
    torch.manual_seed(0)
    return ProtoNet(MethodContext(
        preset=preset, backbone=preset.backbone, backbone_kwargs=dict(preset.backbone_kwargs),
        num_train_classes=train.num_classes, image_shape=train.image_shape, device="cpu",
        seed=0, way=5, shot=2, precision=resolve_precision("fp32", "cpu")))


# -- ProtoNets ------------------------------------------------------------------------------------

def test_prototypes_are_the_class_means_of_the_support_features():
    feats = torch.randn(3, 10, 7)  # 3 tasks, 5-way 2-shot
    labels = torch.arange(5).repeat_interleave(2).expand(3, -1)
    protos = prototypes(feats, labels, 5)
    for c in range(5):
        torch.testing.assert_close(protos[:, c], feats[:, labels[0] == c].mean(1))


def test_logits_are_negative_squared_euclidean_distances():
    query, protos = torch.randn(2, 6, 4), torch.randn(2, 5, 4)
    expected = -torch.cdist(query, protos).pow(2)
    torch.testing.assert_close(neg_sq_euclidean(query, protos), expected, rtol=1e-4, atol=1e-4)
    # the nearest prototype wins
    assert torch.equal(neg_sq_euclidean(query, protos).argmax(-1), torch.cdist(query, protos).argmin(-1))


def test_one_protonet_step_lowers_its_loss_on_that_episode(synthetic):
    method = protonet(synthetic, {"hparams": {"lr": 1e-2}})
    train = synthetic.split("train")
    normalize = Normalizer(synthetic.mean, synthetic.std, "cpu")
    batch = EpisodeSampler(train, EpisodeSpec(5, 2, 5), 0, "synthetic", "train").batch(range(2))
    support, query = batch.images(train)
    args = (normalize(support), batch.support_labels, normalize(query), batch.query_labels, 5)

    def loss() -> float:
        method.eval()  # the same (batch-statistics-free) forward before and after the step
        with torch.no_grad():
            s = method.embed(args[0].flatten(0, 1)).view(2, 10, -1)
            q = method.embed(args[2].flatten(0, 1)).view(2, 25, -1)
            logits = method.classify(s, args[1], q, 5)
        return float(F.cross_entropy(logits.flatten(0, 1), args[3].flatten()))

    before = loss()
    method.train()
    method.meta_train_step(*args)
    assert loss() < before
    assert method.outer_updates == 1


# -- evaluation -----------------------------------------------------------------------------------

def test_embed_once_evaluation_equals_per_episode_evaluation(synthetic):
    method = protonet(synthetic)
    method.eval()
    val = synthetic.split("val")
    normalize = Normalizer(synthetic.mean, synthetic.std, "cpu")
    episodes = EpisodeSampler(val, EpisodeSpec(5, 1, 5), 3, "synthetic", "eval").batch(range(12))
    shared = evaluate_episodes(method, val, episodes, normalize, batch=5)
    assert method.frozen_at_test  # the path above embedded each image once
    per_episode = []
    for t in range(episodes.num_tasks):  # the direct way: embed this episode's images, classify
        part = episodes.select(slice(t, t + 1))
        support, query = part.images(val)
        with torch.no_grad():
            s = method.embed(normalize(support[0]))[None]
            q = method.embed(normalize(query[0]))[None]
            logits = method.classify(s, part.support_labels, q, 5)
        per_episode.append(episode_accuracy(logits, part.query_labels).double())
    torch.testing.assert_close(shared, torch.cat(per_episode))


def test_meta_train_restores_the_best_validation_state(synthetic, monkeypatch):
    method = protonet(synthetic, {"episodic": {"iterations": 6, "val_every": 2, "val_episodes": 4}})
    snapshots, scripted = [], iter([0.6, 0.9, 0.3])  # the 2nd validation is the best

    def scripted_validation(m, *args, **kwargs):
        snapshots.append({k: v.clone() for k, v in m.state_dict().items()})
        return torch.full((4,), next(scripted), dtype=torch.float64)

    monkeypatch.setattr(episodic, "evaluate_episodes", scripted_validation)
    task = episodic.MetaTrainSpec("synthetic", synthetic.split("train"), synthetic.split("val"),
                                  EpisodeSpec(5, 1, 5), method.ctx.preset.episodic, HardTaskConfig(),
                                  seed=0, episode_seed=0)
    log = episodic.meta_train(method, task, Normalizer(synthetic.mean, synthetic.std, "cpu"),
                              show_progress=False)
    assert log.best_iteration == 4 and log.best_accuracy == pytest.approx(90.0)
    final = method.state_dict()
    assert all(torch.equal(final[k], snapshots[1][k]) for k in final)
    assert not all(torch.equal(final[k], snapshots[2][k]) for k in final)  # not the last state


# -- pre-training ----------------------------------------------------------------------------------

def test_pretraining_lifts_the_val_probe_well_above_chance(tmp_path):
    easy = load_dataset("synthetic_easy", progress=False)
    cfg = PretrainConfig(epochs=3, batch_size=64, lr=0.05, images_per_epoch=640, val_episodes=100)
    spec = PretrainSpec(easy, "conv4", {"width": 16}, cfg, "test", 0, 5, resolve_precision("fp32", "cpu"),
                        torch.device("cpu"))
    result = ensure_pretrained(spec, tmp_path, show_progress=False)
    first = result.history[0]["val_accuracy"]
    assert result.best_accuracy >= 35.0, result.history  # 5-way: chance is 20%
    assert result.best_accuracy > first or first >= 35.0


# -- behind markers ---------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.skipif(not (REAL / "val").is_dir(), reason="real miniImageNet not present")
def test_protonet_learns_on_real_miniimagenet(tmp_path):
    from fsbench.runner import run

    result = run(RunConfig(
        method="protonet", dataset="miniimagenet", data_root=REAL, preset="quick",
        eval_split="val", episodes=200, output=tmp_path / "out", cache_dir=tmp_path / "cache",
        overrides={"episodic": {"iterations": 400, "val_every": 200, "val_episodes": 50}}),
        show_progress=False)
    assert result.summary["accuracy"] > 30.0  # 5-way 1-shot: chance is 20%


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_smoke_run_on_cuda_in_bf16(tmp_path):
    from fsbench.runner import run

    result = run(RunConfig(method="protonet", preset="smoke", episodes=50, device="cuda",
                           output=tmp_path / "out", cache_dir=tmp_path / "cache"), show_progress=False)
    summary = result.summary
    assert summary["device"].startswith("cuda") and "bf16" in summary["precision"]
    assert summary["accuracy"] > 25.0

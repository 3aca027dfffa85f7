"""Matching Networks (plugins/matchingnet): cosine attention read-out, FCE, smoke learning, resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datagen import random_tasks
from smoke_resume import assert_smoke_learns_and_resumes, assert_training_state_round_trips

from fsbench.config import EpisodicConfig, MethodPreset
from fsbench.errors import ConfigError
from fsbench.method import MethodContext
from fsbench.precision import resolve_precision
from fsbench_plugins.matchingnet import MatchingNet, MatchingNetHparams, attention_readout

WAY = 5


def make(hp: MatchingNetHparams | None = None, width: int = 8) -> MatchingNet:
    torch.manual_seed(0)
    kwargs = {"width": width}
    preset = MethodPreset(backbone="conv4", backbone_kwargs=kwargs, hparams=hp or MatchingNetHparams(lr=1e-3),
                          episodic=EpisodicConfig())
    ctx = MethodContext(preset=preset, backbone="conv4", backbone_kwargs=kwargs, num_train_classes=10,
                        image_shape=(3, 16, 16), device=torch.device("cpu"), seed=0, way=WAY, shot=1,
                        precision=resolve_precision("fp32", "cpu"))
    return MatchingNet(ctx)


def tasks(t: int = 2, shot: int = 1, query: int = 2, size: int = 16, seed: int = 0):
    return random_tasks(WAY, t, shot, query, size, seed)


def test_attention_readout_is_a_distribution_over_classes():
    g = torch.Generator().manual_seed(1)
    support, query = torch.randn(3, 10, 7, generator=g), torch.randn(3, 4, 7, generator=g)
    sy = torch.arange(WAY).repeat_interleave(2).expand(3, -1)
    attention, probs = attention_readout(query, support, sy, WAY, scale=10.0)
    torch.testing.assert_close(attention.sum(-1), torch.ones(3, 4))
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 4))
    # P(y = k | x) is the attention mass on class k's support images
    torch.testing.assert_close(probs[..., 2], attention[..., 4] + attention[..., 5])
    # a query equal to a support image attends to it most (cosine 1)
    _, p = attention_readout(support[:, 6:7], support, sy, WAY, scale=10.0)
    assert (p.argmax(-1) == 3).all()


def test_the_scale_sharpens_the_unscaled_cosine():
    support = torch.eye(WAY).unsqueeze(0)
    sy = torch.arange(WAY).unsqueeze(0)
    _, unscaled = attention_readout(support, support, sy, WAY, scale=1.0)
    _, scaled = attention_readout(support, support, sy, WAY, scale=10.0)
    assert unscaled.max() < 0.41  # e / (e + 4): the starved softmax
    assert scaled.max() > 0.99


def test_fce_changes_the_support_embedding_and_depends_on_the_whole_set():
    method = make()
    feats = torch.randn(2, WAY, method.fce.dim)
    g = method.fce.embed_support(feats)
    assert g.shape == feats.shape
    assert not torch.allclose(g, feats, atol=1e-4)
    # bidirectional: the first image's embedding depends on the last one's
    changed = feats.clone()
    changed[:, -1] += 1.0
    assert not torch.allclose(method.fce.embed_support(changed)[:, 0], g[:, 0], atol=1e-6)
    # the query embedding attends over the (contextual) support set
    q = torch.randn(2, 3, method.fce.dim)
    f = method.fce.embed_query(q, g)
    assert f.shape == q.shape and not torch.allclose(f, q, atol=1e-4)
    # without FCE the CNN embeddings are used as they are
    plain = make(MatchingNetHparams(fce=False))
    assert plain.fce is None
    s2, q2 = plain.contextual(feats, q)
    assert s2 is feats and q2 is q


def test_classify_returns_log_probabilities_and_batches_tasks():
    method = make().eval()
    support, sy, query, _ = tasks(t=3)
    with torch.no_grad():
        s = method.embed(support.flatten(0, 1)).view(3, WAY, -1)
        q = method.embed(query.flatten(0, 1)).view(3, WAY * 2, -1)
        logp = method.classify(s, sy, q, WAY)
        apart = torch.cat([method.classify(s[i:i + 1], sy[i:i + 1], q[i:i + 1], WAY) for i in range(3)])
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(3, WAY * 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(logp, apart, rtol=1e-5, atol=1e-5)


def test_meta_training_lowers_the_loss_and_learns_the_scale():
    method = make(MatchingNetHparams(lr=1e-2)).train()
    batch = tasks(t=2, query=3)
    scale0 = float(method.scale.detach())
    losses = [float(method.meta_train_step(*batch, WAY).loss) for _ in range(15)]
    assert losses[-1] < 0.7 * losses[0]
    assert float(method.scale.detach()) != scale0
    fixed = make(MatchingNetHparams(learn_scale=False))
    assert not any(p is fixed.scale for p in fixed.parameters())


def test_bad_hparams_are_rejected():
    for bad in (MatchingNetHparams(processing_steps=0), MatchingNetHparams(scale_init=0.0)):
        with pytest.raises(ConfigError, match="hparams"):
            make(bad)


def test_training_state_round_trips(tmp_path: Path):
    assert_training_state_round_trips(make, tasks(), WAY, tmp_path)


def test_smoke_preset_learns_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert_smoke_learns_and_resumes("matchingnet", tmp_path, monkeypatch)

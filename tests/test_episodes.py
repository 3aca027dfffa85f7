import pytest
import torch

from fsbench.data.base import Split
from fsbench.episodes import Episode, EpisodeSampler, EpisodeSpec, episode_labels
from fsbench.errors import ConfigError


def make_split(classes=10, per_class=30, name="test"):
    labels = torch.arange(classes).repeat_interleave(per_class)
    images = torch.arange(len(labels), dtype=torch.int64).remainder(256).to(torch.uint8)
    images = images.view(-1, 1, 1, 1).expand(-1, 3, 4, 4).contiguous()
    return Split(name, images, labels, tuple(f"c{i}" for i in range(classes)))


def test_same_seed_same_episodes_in_any_order():
    split = make_split()
    spec = EpisodeSpec(5, 1, 15)
    a = EpisodeSampler(split, spec, seed=3, dataset="d")
    b = EpisodeSampler(split, spec, seed=3, dataset="d")
    forward = a.batch(range(20))
    backward = Episode.cat([b.episode(i) for i in reversed(range(20))])
    assert torch.equal(forward.support_idx, backward.support_idx.flip(0))
    assert torch.equal(forward.query_idx, backward.query_idx.flip(0))
    assert torch.equal(forward.classes, backward.classes.flip(0))


def test_episode_depends_on_seed_shape_and_stream():
    split = make_split()
    base = EpisodeSampler(split, EpisodeSpec(5, 1, 15), 0, "d").episode(0)
    for other in (
        EpisodeSampler(split, EpisodeSpec(5, 1, 15), 1, "d"),
        EpisodeSampler(split, EpisodeSpec(5, 2, 15), 0, "d"),
        EpisodeSampler(split, EpisodeSpec(5, 1, 15), 0, "other"),
        EpisodeSampler(split, EpisodeSpec(5, 1, 15), 0, "d", stream="train"),
    ):
        ep = other.episode(0)
        assert not (torch.equal(ep.classes, base.classes) and torch.equal(ep.support_idx[:, :5], base.support_idx))


def test_support_query_disjoint_and_from_the_episode_classes():
    split = make_split()
    spec = EpisodeSpec(5, 5, 10)
    eps = EpisodeSampler(split, spec, 0, "d").batch(range(50))
    for t in range(eps.num_tasks):
        s, q = eps.support_idx[t], eps.query_idx[t]
        assert len(set(s.tolist()) | set(q.tolist())) == len(s) + len(q)
        assert len(set(eps.classes[t].tolist())) == 5
        # episode label k maps to original class classes[k], for support and query alike
        assert torch.equal(split.labels[s], eps.classes[t][eps.support_labels[t]])
        assert torch.equal(split.labels[q], eps.classes[t][eps.query_labels[t]])


def test_images_gathered_match_indices():
    split = make_split()
    ep = EpisodeSampler(split, EpisodeSpec(3, 2, 4), 0, "d").batch(range(4))
    support, query = ep.images(split)
    assert support.shape == (4, 6, 3, 4, 4) and query.shape == (4, 12, 3, 4, 4)
    assert torch.equal(support, split.images[ep.support_idx])


def test_labels_are_class_major():
    assert episode_labels(2, 3, 2).tolist() == [[0, 0, 1, 1, 2, 2]] * 2


@pytest.mark.parametrize(
    "spec, message",
    [
        (EpisodeSpec(11, 1, 15), "larger than the 10 classes"),
        (EpisodeSpec(5, 20, 15), "shot + query = 20 + 15 = 35 is more than class"),
        (EpisodeSpec(5, 0, 15), "--shot must be at least 1"),
    ],
)
def test_spec_checked_before_work(spec, message):
    with pytest.raises(ConfigError, match=message.replace("+", r"\+")):
        EpisodeSampler(make_split(), spec, 0, "d")

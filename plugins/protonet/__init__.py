"""Prototypical Networks (Snell, Swersky, Zemel, NeurIPS 2017).

Each class is represented by the mean of its support embeddings; a query is classified by a
softmax over negative squared Euclidean distances to the prototypes. The backbone is trained
episodically with Adam and frozen at test time.

Embedding: the paper's Conv-4 (64 filters) *flattens* its final 5x5 map at 84x84 into a 1600-d
embedding (``backbone_kwargs={"pool": "flatten"}``; the image size is taken from the dataset).
The ``paper`` and ``quick`` presets use it. On the ``quick`` CPU schedule a 1-shot run pools
instead (``hparams.pool_below_shot``), and the distance is Euclidean, not squared
(``hparams.metric``): on a 1,600-d embedding at initialisation the squared distances are in the
hundreds, the softmax saturates (training loss 17.5 after 200 episodes, ln 5 = 1.6) and a short
schedule never recovers (issue 22; the figures are in the preset's sources and the README).

Forward passes follow the run's precision policy (``ctx.precision``: bf16 autocast and
channels_last where the device runs them natively); distances, softmax and the loss are fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fsbench import hookimpl
from fsbench.backbones import create_backbone, with_image_size
from fsbench.config import EpisodicConfig, MethodPreset
from fsbench.errors import ConfigError
from fsbench.hookspecs import MethodRecord
from fsbench.learners.prototypes import METRICS, nearest_centroid_logits
from fsbench.learners.schedules import check_step_decay, step_decay
from fsbench.method import Method, MethodContext, StepOutput


@dataclass(frozen=True)
class ProtoNetHparams:
    lr: float = 1e-3
    lr_decay: float = 0.5  # multiply the learning rate by this ...
    lr_decay_every: int = 2000  # ... every this many meta-batches (0: never)
    #: The distance to the prototypes: ``sq_euclidean`` (Snell et al.) or ``euclidean``.
    metric: str = "sq_euclidean"
    #: The embedding is multiplied by this (1: Snell et al.'s). With the squared metric the
    #: logits scale with its square: a softmax temperature fixed at initialisation.
    feature_scale: float = 1.0
    #: Runs with fewer shots than this pool the backbone's map globally instead of flattening it
    #: (``backbone_kwargs={"pool": "flatten"}``); 0: never. The ``quick`` preset sets 2: on a
    #: CPU schedule a flattened 1-shot embedding lost to the pooled one (README, "Precision and CPU speed").
    pool_below_shot: int = 0

    def check(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError(f"hparams.metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if not self.lr > 0:
            raise ConfigError(f"hparams.lr must be positive, got {self.lr}")
        if self.pool_below_shot < 0:
            raise ConfigError(f"hparams.pool_below_shot must be >= 0, got {self.pool_below_shot}")
        if not self.feature_scale > 0:
            raise ConfigError(f"hparams.feature_scale must be positive, got {self.feature_scale}")
        check_step_decay(self)


def embedding_kwargs(kwargs: dict, shot: int, pool_below_shot: int) -> dict:
    """The backbone kwargs of a run with ``shot`` support images per class."""
    if shot < pool_below_shot and kwargs.get("pool") == "flatten":
        return {k: v for k, v in kwargs.items() if k != "pool"}
    return dict(kwargs)


class ProtoNet(Method):
    frozen_at_test = True
    hp: ProtoNetHparams

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        hp = self.hp
        kwargs = with_image_size(embedding_kwargs(ctx.backbone_kwargs, ctx.shot, hp.pool_below_shot),
                                 ctx.image_shape)
        self.backbone = ctx.precision.prepare(create_backbone(ctx.backbone, **kwargs))
        self.optimizer = torch.optim.Adam(self.backbone.parameters(), lr=hp.lr)
        self.scheduler = step_decay(self.optimizer, hp.lr_decay, hp.lr_decay_every)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        features = self.ctx.precision.forward(self.backbone, images)  # float32 features
        scale = self.hp.feature_scale
        return features if scale == 1.0 else features * scale

    def classify(self, support, support_y, query, way):
        return nearest_centroid_logits(support, support_y, query, way, self.hp.metric)

    def meta_train_step(self, support, support_y, query, query_y, way) -> StepOutput:
        logits = self.adapt_and_predict(support, support_y, query, way)
        loss = F.cross_entropy(logits.flatten(0, 1), query_y.flatten())
        self.outer_step(loss)
        return StepOutput(loss.detach(), logits.detach())


#: Snell et al.'s miniImageNet embedding: Conv-4-64 with the 5x5 map flattened (1600-d).
_FLAT = {"pool": "flatten"}
_SNELL = "Snell et al. 2017"
_CODE = "jakesnell/prototypical-networks"

PRESETS = {
    "paper": MethodPreset(
        backbone="conv4", backbone_kwargs=_FLAT, hparams=ProtoNetHparams(),
        episodic=EpisodicConfig(iterations=40_000, meta_batch=1, train_query=15, train_way=30,
                                val_every=1000, val_episodes=600),
        description="Snell et al. 2017 on miniImageNet (30-way 1-shot training); "
                    "5-shot: --set episodic.train_way=20",
        sources={
            "backbone": f"{_SNELL}, Sec. 3.2: four 3x3 conv-BN-ReLU-maxpool blocks of 64 filters, "
                        f"'1600-dimensional output space' on miniImageNet; {_CODE} "
                        "protonets/models/few_shot.py L62-82 (load_protonet_conv: conv blocks + Flatten)",
            "hparams.lr": f"{_SNELL}, Sec. 3.1 (Adam, initial lr 1e-3); {_CODE} "
                          "scripts/train/few_shot/run_train.py L50 (--train.learning_rate 0.001)",
            "hparams.lr_decay": f"{_SNELL}, Sec. 3.1 ('cut the learning rate in half every 2000 episodes')",
            "hparams.pool_below_shot": f"0: every shot flattens, {_SNELL}, Sec. 3.2",
            "hparams.feature_scale": f"{_SNELL}: the embedding as the network computes it (no scale; "
                                     f"{_CODE} protonets/models/few_shot.py L48-52)",
            "hparams.metric": f"{_SNELL}, Sec. 2.2 and Eq. 1 (squared Euclidean distance); {_CODE} "
                              "protonets/models/utils.py L3-14 (euclidean_dist sums squared differences)",
            "hparams.lr_decay_every": f"{_SNELL}, Sec. 3.1 (2000 episodes); {_CODE} run_train.py L52 "
                                      "(--train.decay_every 20 epochs x L26 --data.train_episodes 100)",
            "episodic.train_way": f"{_SNELL}, Sec. 3.2 ('30-way episodes for 1-shot classification "
                                  "and 20-way episodes for 5-shot'); pass --set episodic.train_way=20 for 5-shot",
            "episodic.train_query": f"{_SNELL}, Sec. 3.2 ('each class contains 15 query points per episode')",
            "episodic.meta_batch": f"{_SNELL}, Algorithm 1 (the loss of one episode per update)",
            "episodic.iterations": "DEVIATION: Snell et al. stop early on the val loss "
                                   f"({_CODE} run_train.py L46/L57: up to 10,000 epochs of 100 episodes, "
                                   "patience 200 epochs); fsbench trains a fixed 40,000 episodes and keeps "
                                   "the best val checkpoint (every 1,000 episodes)",
            "episodic.val_episodes": "DEVIATION: 600 val episodes per validation (the reference code "
                                     f"uses 100 per epoch, {_CODE} run_train.py L28) for a tighter model selection",
            "backbone_kwargs.pool": f"{_SNELL}, Sec. 3.2 ('1600-dimensional output space': the 5x5x64 "
                                    f"map flattened); {_CODE} protonets/models/few_shot.py L11-16 (Flatten)",
            "episodic.val_every": "DEVIATION: validate every 1,000 episodes (the reference code validates "
                                  f"after every epoch of 100 episodes, {_CODE} run_train.py L26)",
            "episodic.grad_clip": f"{_SNELL}: no gradient clipping (none in {_CODE} protonets/engine.py, the training loop)",
        },
    ),
    # CPU budget: the paper's embedding and optimiser on the schedule fsbench's quick preset
    # had (1,200 episodes, lr halved every 400), trained with the test way (a 30-way episode
    # costs ~5x the images of a 5-way one).
    "quick": MethodPreset(
        backbone="conv4", backbone_kwargs=_FLAT, hparams=ProtoNetHparams(lr_decay_every=400, pool_below_shot=2,
                                                                metric="euclidean"),
        episodic=EpisodicConfig(iterations=1200, meta_batch=1, train_query=15,
                                val_every=200, val_episodes=100),
        description="CPU budget: Snell et al.'s flattened Conv-4 (pooled in 1-shot), 1,200 episodes of the test way",
        sources={
            "backbone": f"{_SNELL}, Sec. 3.2 (flattened 1600-d Conv-4-64), as the paper preset",
            "hparams.pool_below_shot": "DEVIATION: 1-shot pools globally (64-d): at 1,200 5-way episodes the "
                                       "flattened 1-shot embedding peaked after 200 episodes and ended 2.79 ± 0.62 "
                                       "points below the pooled one on 600 val episodes, paired (README, Measured); "
                                       "5-shot keeps Snell et al.'s flattening",
            "hparams.metric": "DEVIATION: Euclidean distance (Snell et al.: squared; easyfsl's PrototypicalNetworks: "
                              "Euclidean, torch.cdist). Squared distances on the 1,600-d embedding saturate the "
                              "softmax at initialisation; on 600 miniImageNet val episodes, 5-shot, fp32, seed 0, "
                              "paired (issue 22): flattened + squared 40.33 ± 0.63, Euclidean 53.36 ± 0.73 "
                              "(+13.04 ± 0.55), pooled 64-d + squared 49.08 ± 0.70 (Euclidean flattened "
                              "+4.28 ± 0.48 over it). The 1-shot pooled embedding takes the same metric",
            "hparams.lr": f"{_SNELL}, Sec. 3.1 (Adam 1e-3)",
            "hparams.lr_decay_every": "DEVIATION: halved every 400 episodes (paper: 2,000) to fit "
                                      "the 1,200-episode CPU schedule. With the previous squared metric "
                                      "the halving cost 2.18 ± 0.34 points (42.51 ± 0.67 without it, 600 "
                                      "val episodes, paired; issue 22); not measured with the Euclidean one",
            "episodic.train_way": "DEVIATION: trained with the test way (paper: 30-way for 1-shot, "
                                  "20-way for 5-shot); more episodes per CPU-second",
            "episodic.iterations": "DEVIATION: 1,200 episodes for a CPU (paper: early stopping on val)",
            "episodic.train_query": f"{_SNELL}, Sec. 3.2 (15 queries per class)",
            "episodic.val_episodes": "DEVIATION: 100 val episodes every 200 (CPU budget)",
            "episodic.val_every": "DEVIATION: every 200 episodes (CPU budget), 6 validations in a run",
        },
    ),
    "smoke": MethodPreset(
        backbone="conv4", backbone_kwargs={"width": 16}, hparams=ProtoNetHparams(),
        episodic=EpisodicConfig(iterations=30, meta_batch=2, train_query=5, val_every=15, val_episodes=20),
        eval_batch=50,
        description="seconds: a tiny pooled Conv-4 for tests",
    ),
}


@hookimpl
def fsbench_methods() -> list[MethodRecord]:
    return [MethodRecord("protonet", ProtoNet, "Prototypical Networks: squared Euclidean distance to class means", PRESETS)]

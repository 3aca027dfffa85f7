"""Prototypical Networks (Snell, Swersky, Zemel, NeurIPS 2017).

Each class is represented by the mean of its support embeddings; a query is classified by a
softmax over negative squared Euclidean distances to the prototypes. The backbone is trained
episodically with Adam and frozen at test time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fsbench import hookimpl
from fsbench.backbones import create_backbone
from fsbench.config import EpisodicConfig, MethodPreset
from fsbench.engine.prototypes import nearest_centroid_logits
from fsbench.hookspecs import MethodRecord
from fsbench.method import Method, MethodContext, StepOutput


@dataclass(frozen=True)
class ProtoNetHparams:
    lr: float = 1e-3
    lr_decay: float = 0.5  # multiply the learning rate by this ...
    lr_decay_every: int = 2000  # ... every this many meta-batches


class ProtoNet(Method):
    frozen_at_test = True

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        hp: ProtoNetHparams = ctx.hparams
        self.backbone = create_backbone(ctx.backbone, **ctx.backbone_kwargs)
        self.optimizer = torch.optim.Adam(self.backbone.parameters(), lr=hp.lr)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, hp.lr_decay_every, hp.lr_decay)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        with self.ctx.autocast():
            return self.backbone(images).float()

    def classify(self, support, support_y, query, way):
        return nearest_centroid_logits(support, support_y, query, way)

    def meta_train_step(self, support, support_y, query, query_y, way) -> StepOutput:
        logits = self.adapt_and_predict(support, support_y, query, way)
        loss = F.cross_entropy(logits.flatten(0, 1), query_y.flatten())
        self.outer_step(loss)
        return StepOutput(loss.detach(), logits.detach())


PRESETS = {
    # Snell et al.: Conv4-64, Adam 1e-3 halved every 2000 episodes.
    "paper": MethodPreset(
        backbone="conv4", hparams=ProtoNetHparams(),
        episodic=EpisodicConfig(iterations=40_000, meta_batch=1, val_every=1000, val_episodes=600),
    ),
    "quick": MethodPreset(
        backbone="conv4", hparams=ProtoNetHparams(lr_decay_every=400),
        episodic=EpisodicConfig(iterations=1200, meta_batch=1, val_every=200, val_episodes=100),
    ),
    "smoke": MethodPreset(
        backbone="conv4", backbone_kwargs={"width": 16}, hparams=ProtoNetHparams(),
        episodic=EpisodicConfig(iterations=30, meta_batch=2, train_query=5, val_every=15, val_episodes=20),
        eval_batch=50,
    ),
}


@hookimpl
def fsbench_methods() -> list[MethodRecord]:
    return [MethodRecord("protonet", ProtoNet, "Prototypical Networks: squared Euclidean distance to class means", PRESETS)]

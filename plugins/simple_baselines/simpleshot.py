"""SimpleShot (Wang, Chao, Weinberger, van der Maaten: "SimpleShot: Revisiting Nearest-Neighbor
Classification for Few-Shot Learning", arXiv:1911.04623, 2019).

A backbone pre-trained by many-shot softmax classification (the core's pre-training) is frozen;
a query is assigned to the nearest class centroid (Euclidean) after one of three feature
transforms (Sec. 3; official code ``mileyan/simple_shot`` ``src/train.py:481-500``):

* ``UN``: the features as they are;
* ``L2N``: each feature L2-normalised;
* ``CL2N``: each feature centred on the mean feature of the *base* (train) classes, then
  L2-normalised. The mean is a statistic of the pre-training data (``src/train.py:371-378``: the
  train split without augmentation), never of the test episode: the core hands the train split
  to :meth:`SimpleShot.fit_base` once before the test (:meth:`fsbench.method.Method.fit_base`).

Centroids are the means of the transformed support features (``src/train.py:490``). There is no
training beyond the pre-training and no per-episode optimisation: the test costs one embedding
of the test images and a batched distance computation; CL2N adds one pass over (a subset of)
the train images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fsbench.backbones import feature_dim
from fsbench.config import MethodPreset, PretrainConfig
from fsbench.data.base import Normalizer, Split
from fsbench.engine.evaluate import embed_images
from fsbench.episodes import derive_seed
from fsbench.errors import ConfigError
from fsbench.learners.pretrained import FrozenPretrained
from fsbench.learners.prototypes import nearest_centroid_logits
from fsbench.method import MethodContext

from .common import shared_preset

TRANSFORMS = ("UN", "L2N", "CL2N")


@dataclass(frozen=True)
class SimpleShotHparams:
    """``transform``: ``UN``, ``L2N`` or ``CL2N`` (see the module docstring).

    ``base_images``: how many train images (a seeded random subset) the base-class mean is
    averaged over; ``None``: all of them, as the official code.
    """

    transform: str = "CL2N"
    base_images: int | None = None

    def check(self) -> None:
        if self.transform not in TRANSFORMS:
            raise ConfigError(f"hparams.transform must be one of {', '.join(TRANSFORMS)}, got {self.transform!r}")
        if self.base_images is not None and self.base_images < 1:
            raise ConfigError(f"hparams.base_images must be at least 1 or null, got {self.base_images}")


class SimpleShot(FrozenPretrained):
    """Nearest centroid on transformed frozen features; CL2N centres on the base classes' mean."""

    hp: SimpleShotHparams

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx, "simpleshot")
        # NaN until fit_base: a CL2N run that never saw its base classes fails loudly.
        self.register_buffer("base_mean", torch.full((feature_dim(self.backbone),), float("nan")))

    def fit_base(self, train: Split, normalize: Normalizer) -> None:
        """The mean feature of the base (train) classes, for CL2N (UN and L2N need nothing)."""
        if self.hp.transform != "CL2N":
            return
        indices = torch.arange(len(train.labels))
        if self.hp.base_images is not None and self.hp.base_images < len(indices):
            gen = torch.Generator().manual_seed(derive_seed("simpleshot-base", self.ctx.seed))
            indices = torch.randperm(len(indices), generator=gen)[: self.hp.base_images].sort().values
        was_training = self.training
        self.eval()
        self.base_mean.copy_(embed_images(self, train, indices, normalize).mean(0))
        self.train(was_training)

    def transform(self, features: torch.Tensor) -> torch.Tensor:
        """The features under ``hparams.transform``."""
        if self.hp.transform == "UN":
            return features
        if self.hp.transform == "CL2N":
            if torch.isnan(self.base_mean).any():
                raise ConfigError("SimpleShot's CL2N needs the base classes' mean feature: "
                                  "fit_base(train split) was not called")
            features = features - self.base_mean
        return F.normalize(features, dim=-1)

    def classify(self, support, support_y, query, way) -> torch.Tensor:
        return nearest_centroid_logits(self.transform(support.float()), support_y,
                                       self.transform(query.float()), way)


_SS = "Wang et al. 2019"
_CODE = "mileyan/simple_shot "
_CFG = f"{_CODE}configs/mini/softmax/conv4.config"

#: SimpleShot's own pre-training of its Conv-4 on miniImageNet (``conv4.config``).
PAPER_PRETRAIN = PretrainConfig(
    epochs=90, batch_size=256, lr=0.1, momentum=0.9, weight_decay=1e-4, schedule="step",
    val_episodes=500,
)

PAPER = MethodPreset(
    backbone="conv4", backbone_kwargs={"pool": "flatten"}, hparams=SimpleShotHparams(),
    pretrain=PAPER_PRETRAIN,
    description="SimpleShot's Conv-4 on miniImageNet (1600-d flattened features), CL2N. The official "
                "evaluation resizes to 96 px and centre-crops 84 (src/datasets/transform.py:5-15, --enlarge); "
                "fsbench evaluates the stored 84 px images",
    sources={
        "backbone": f"{_SS}, Sec. 4 (Conv-4); {_CODE}src/models/Conv4.py:6-31 (4 conv-BN-ReLU-maxpool "
                    f"blocks of 64 filters); {_CFG}:11 (arch=conv4)",
        "backbone_kwargs.pool": f"{_CODE}src/models/Conv4.py:33 (the 5x5x64 map flattened: 1600-d)",
        "hparams.transform": f"{_SS}, Sec. 3 (CL2N: centring on the base-class mean, then L2); "
                             f"{_CODE}src/train.py:466-467 (CL2N evaluated first)",
        "hparams.base_images": f"{_CODE}src/train.py:371-378 (the mean over every train image, without "
                               "augmentation: src/train.py:521)",
        "pretrain.optimizer": f"{_CFG}:7 (SGD); {_CODE}src/train.py:333-337",
        "pretrain.lr": f"{_CFG}:5 (0.1)",
        "pretrain.momentum": f"{_CODE}src/train.py:334 (0.9). DEVIATION: fsbench's SGD is Nesterov; "
                             f"the official default is plain momentum (src/utils/configuration.py:40)",
        "pretrain.weight_decay": f"{_CODE}src/utils/configuration.py:38 (1e-4; the config sets none)",
        "pretrain.batch_size": f"{_CFG}:3 (256)",
        "pretrain.epochs": f"{_CFG}:14 (90)",
        "pretrain.schedule": f"{_CFG}:13 (multi_step); {_CODE}src/train.py:326-329 (x0.1 at 50% and 75% "
                             "of the epochs)",
        "pretrain.step_every": f"0: the milestones at 50% and 75% ({_CODE}src/train.py:327)",
        "pretrain.step_gamma": f"{_CFG}:6 (lr-gamma 0.1)",
        "pretrain.images_per_epoch": f"every train image once per epoch ({_CODE}src/train.py:101)",
        "pretrain.augment": f"{_CODE}src/datasets/transform.py:27-32 (RandomResizedCrop(84), flip)",
        "pretrain.crop": f"{_CODE}src/datasets/transform.py:28 (RandomResizedCrop)",
        "pretrain.label_smoothing": f"none ({_CODE}src/train.py:54, CrossEntropyLoss)",
        "pretrain.val_episodes": f"{_CODE}src/utils/configuration.py:45-46 (500 1-shot val episodes). "
                                 f"DEVIATION: fsbench probes every epoch by nearest centroid and keeps "
                                 f"the best; the official code validates every 4 epochs ({_CFG}:8) with the "
                                 f"cosine metric ({_CFG}:10) and reports the last and the best model "
                                 "(src/train.py:520-550)",
        "pretrain.halve_every": "unused by the step schedule",
        "pretrain.lr_min": "unused by the step schedule",
        "pretrain.head": f"{_CODE}src/models/Conv4.py:25 (nn.Linear(1600, num_classes))",
        "pretrain.head_hidden": f"{_CODE}src/models/Conv4.py:25 (a single linear layer)",
        "pretrain.cosine_scale": "unused by the linear head",
        "pretrain.distill_generations": f"{_SS}, Sec. 3: plain softmax pre-training, no distillation",
        **{f"pretrain.distill_{k}": "unused without distillation"
           for k in ("ce_weight", "kl_weight", "temperature")},
    },
)

PRESETS: dict[str, MethodPreset] = {
    "paper": PAPER,
    "quick": shared_preset(
        "quick", PAPER, SimpleShotHparams(base_images=1280),
        "CPU budget: CL2N on the shared quick pre-trained Conv-4, base mean over 1,280 train images",
        {"backbone": "DEVIATION: the shared quick pre-trained Conv-4 (pooled 64-d), for a CPU",
         "hparams.base_images": "DEVIATION: CPU budget, the mean of 1,280 random train images (the "
                                "official code averages all 38,400; embedding them costs more than "
                                "the 600-episode test). Measured (real miniImageNet val, 200 1-shot "
                                "episodes, a 2-epoch quick backbone): 1,280 and 640 images give the "
                                "accuracy of 6,400 within 0.1 point, paired"},
    ),
    "smoke": shared_preset(
        "smoke", PAPER, SimpleShotHparams(), "seconds: CL2N on the shared smoke backbone",
        {},
    ),
}

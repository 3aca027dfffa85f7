"""RFS (Tian, Wang, Krishnan, Tenenbaum, Isola: "Rethinking Few-Shot Image Classification: a Good
Embedding Is All You Need?", ECCV 2020).

A backbone pre-trained by many-shot classification is frozen; per test episode, each feature is
L2-normalised and a multinomial logistic regression (L2 penalty, ``C = 1``) is fitted on the
support set only, then classifies the queries (Sec. 3; official code ``WangYueFt/rfs``
``eval/meta_eval.py:55-74``). The regression is solved for a whole batch of episodes at once in
torch (:func:`fsbench_plugins.simple_baselines.logreg.fit_logistic_regression`: Newton's method,
no scikit-learn).

RFS-distill, the paper's stronger variant, pre-trains born-again generations: generation ``k``
learns from generation ``k - 1`` with a KL term (Sec. 3.3). That is pre-training, so it lives in
the core's pre-training (``pretrain.distill_generations``, :mod:`fsbench.engine.distill`): each
generation is its own cache entry, and generation 0 is the plain pre-training every method shares.
The ``paper`` preset distils two generations; ``quick`` and ``smoke`` none.

Not reproduced: the official test augments each support image into 5 randomly cropped, jittered
and flipped copies (``eval_fewshot.py:48-49``, ``dataset/mini_imagenet.py:158-160``); fsbench
embeds each test image once, un-augmented, so that the test costs one embedding of the test
images (a frozen method's evaluation path).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fsbench.config import MethodPreset, PretrainConfig
from fsbench.errors import ConfigError
from fsbench.learners.pretrained import FrozenPretrained
from fsbench.method import MethodContext

from .common import shared_preset
from .logreg import fit_logistic_regression


@dataclass(frozen=True)
class RFSHparams:
    """The per-episode logistic regression: inverse L2 strength ``c`` (scikit-learn's ``C``),
    at most ``max_iter`` Newton iterations, stopping when every gradient entry is below ``tol``."""

    c: float = 1.0
    max_iter: int = 50
    tol: float = 1e-6
    normalize: bool = True  # L2-normalise support and query features first

    def check(self) -> None:
        if not self.c > 0 or not self.tol > 0:
            raise ConfigError("hparams.c and hparams.tol must be positive")
        if self.max_iter < 1:
            raise ConfigError(f"hparams.max_iter must be at least 1, got {self.max_iter}")


class RFS(FrozenPretrained):
    """Frozen features, L2-normalised; a logistic regression per episode on its support set only."""

    hp: RFSHparams

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx, "rfs")

    def _features(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(features.float(), dim=-1) if self.hp.normalize else features.float()

    def fit(self, support: torch.Tensor, support_y: torch.Tensor,
            way: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights [T, way, D] and intercepts [T, way] fitted on support features [T, S, D] alone."""
        return fit_logistic_regression(self._features(support), support_y, way, self.hp.c,
                                       self.hp.max_iter, self.hp.tol)

    def classify(self, support, support_y, query, way) -> torch.Tensor:
        weight, bias = self.fit(support, support_y, way)
        return self._features(query) @ weight.transpose(1, 2) + bias.unsqueeze(1)


_RFS = "Tian et al., ECCV 2020"
_CODE = "WangYueFt/rfs "
_EVAL = f"{_CODE}eval/meta_eval.py"
_TRAIN = f"{_CODE}train_supervised.py"
_DIST = f"{_CODE}train_distillation.py"

#: RFS's pre-training of its ResNet-12 on miniImageNet, then two born-again generations.
PAPER_PRETRAIN = PretrainConfig(
    epochs=100, batch_size=64, lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="step",
    val_episodes=600, distill_generations=2, distill_ce_weight=0.5, distill_kl_weight=0.5,
    distill_temperature=4.0,
)

PAPER = MethodPreset(
    backbone="resnet12", hparams=RFSHparams(), pretrain=PAPER_PRETRAIN,
    description="RFS-distill on miniImageNet: ResNet-12 (64-160-320-640), two born-again generations, "
                "a logistic regression per episode on normalised features (RFS-simple: "
                "--set pretrain.distill_generations=0)",
    sources={
        "backbone": f"DEVIATION: no DropBlock or dropout ({_CODE}models/util.py:16: drop_rate 0.1, "
                    f"DropBlock size 5); otherwise {_RFS}, Sec. 4 (ResNet-12), {_CODE}models/resnet.py:"
                    "151-167 (4 residual blocks of 64-160-320-640, global average pooling, 640-d)",
        "hparams.c": f"{_EVAL}:67-69 (LogisticRegression, penalty l2, C=1.0)",
        "hparams.max_iter": f"DEVIATION: Newton iterations on the same objective (logreg.py; 3 to 5 "
                            f"reach it), not the official L-BFGS's max_iter=1000 ({_EVAL}:70-71)",
        "hparams.tol": "DEVIATION: 1e-6 on the objective's gradient, tighter than scikit-learn's default "
                       "1e-4 (Newton converges quadratically to the same unique minimiser)",
        "hparams.normalize": f"{_EVAL}:33,55-57 (is_norm=True: support and query features L2-normalised)",
        "pretrain.optimizer": f"{_TRAIN}:218-221 (SGD)",
        "pretrain.lr": f"{_TRAIN}:42 (0.05)",
        "pretrain.momentum": f"{_TRAIN}:46 (0.9). DEVIATION: fsbench's SGD is Nesterov, the official "
                             "plain momentum",
        "pretrain.weight_decay": f"{_TRAIN}:45 (5e-4)",
        "pretrain.batch_size": f"{_TRAIN}:37 (64)",
        "pretrain.epochs": f"{_TRAIN}:39 (100)",
        "pretrain.schedule": f"{_TRAIN}:43-44 (x0.1 at epochs 60 and 80; util.py:61-67). DEVIATION: "
                             "fsbench's step schedule decays at 50% and 75% (epochs 50 and 75)",
        "pretrain.step_every": "0: the step schedule's 50%/75% milestones (see pretrain.schedule)",
        "pretrain.step_gamma": f"{_TRAIN}:44 (0.1)",
        "pretrain.halve_every": "unused by the step schedule",
        "pretrain.lr_min": "unused by the step schedule",
        "pretrain.images_per_epoch": f"every train image once per epoch ({_TRAIN}:136-138)",
        "pretrain.augment": f"{_CODE}dataset/transform_cfg.py:13-22 (random crop, colour jitter, flip). "
                            "DEVIATION: fsbench has no colour jitter",
        "pretrain.crop": f"DEVIATION: fsbench's crop is a random-resized crop; the official one "
                         f"RandomCrop(84, padding=8) ({_CODE}dataset/transform_cfg.py:16)",
        "pretrain.label_smoothing": f"none ({_TRAIN}:223)",
        "pretrain.val_episodes": f"DEVIATION: the official code keeps the last epoch ({_TRAIN}:273-279); "
                                 "fsbench keeps the epoch whose features score best on 600 val episodes",
        "pretrain.head": f"{_CODE}models/resnet.py:181-182 (nn.Linear(640, num_classes))",
        "pretrain.head_hidden": f"{_CODE}models/resnet.py:182 (a single linear layer)",
        "pretrain.cosine_scale": "unused by the linear head",
        "pretrain.distill_generations": f"{_RFS}, Sec. 3.3 and 4 (RFS-distill: sequential self-"
                                        "distillation, the second generation reported); "
                                        f"{_CODE}scripts/run.sh:8-10 (one generation per run, the previous "
                                        "one as --path_t)",
        "pretrain.distill_ce_weight": f"{_CODE}scripts/run.sh:10 (-r 0.5); {_DIST}:68,435",
        "pretrain.distill_kl_weight": f"{_CODE}scripts/run.sh:10 (-a 0.5); {_DIST}:69,435",
        "pretrain.distill_temperature": f"{_DIST}:73 (kd_T 4); {_CODE}distill/criterion.py:15-25",
    },
)

_NO_KD = "DEVIATION: CPU budget, no distillation (RFS-simple): generation 0 is the shared backbone"

PRESETS: dict[str, MethodPreset] = {
    "paper": PAPER,
    "quick": shared_preset(
        "quick", PAPER, RFSHparams(), "CPU budget: RFS-simple on the shared quick pre-trained Conv-4",
        {"backbone": "DEVIATION: the shared quick pre-trained Conv-4, for a CPU",
         "pretrain.distill_generations": _NO_KD},
    ),
    "smoke": shared_preset(
        "smoke", PAPER, RFSHparams(), "seconds: RFS-simple on the shared smoke backbone",
        {"pretrain.distill_generations": _NO_KD},
    ),
}

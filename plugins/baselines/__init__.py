"""The two baselines of the MTL paper's ablation (Sun, Liu, Chua, Schiele, CVPR 2019, Table 1/2).

* ``finetune`` -- "Finetune on pre-trained model": the backbone pre-trained by many-shot
  classification (:mod:`fsbench.engine.pretrain`, the same cached network MTL starts from) is
  frozen; each test episode trains a fresh linear (FC) head on its support features
  (:class:`fsbench_plugins.baselines.finetune.Finetune`). No meta-training.
* ``scratch`` -- "Train from scratch": the same backbone and the same FC-head base learner as
  MTL (an FC head trained per task by gradient descent from a meta-learned initialisation), but
  meta-trained episodically from a random initialisation with every backbone weight updated by
  the meta-gradient, no pre-training and no scale-and-shift
  (:class:`fsbench_plugins.baselines.scratch.Scratch`). Episodic, so ``--hard-tasks`` applies to it too.

Both are frozen at test time: the backbone is not adapted per episode, only the FC head, so the
core embeds every test image once and the heads of a whole batch of episodes are fitted at once.
"""

from __future__ import annotations

from fsbench import hookimpl
from fsbench.hookspecs import MethodRecord

from .finetune import FINETUNE_PRESETS, Finetune, FinetuneHparams
from .scratch import SCRATCH_PRESETS, Scratch, ScratchHparams

__all__ = [
    "FINETUNE_PRESETS",
    "SCRATCH_PRESETS",
    "Finetune",
    "FinetuneHparams",
    "Scratch",
    "ScratchHparams",
    "fsbench_methods",
]


@hookimpl
def fsbench_methods() -> list[MethodRecord]:
    return [
        MethodRecord(
            "finetune", Finetune,
            "Finetune on pre-trained model: frozen pre-trained backbone, a new FC head per episode",
            FINETUNE_PRESETS,
        ),
        MethodRecord(
            "scratch", Scratch,
            "Train from scratch: MTL's FC-head base learner, whole backbone meta-trained from random init",
            SCRATCH_PRESETS,
        ),
    ]

"""Meta-Transfer Learning and MTL + hard tasks (Sun, Liu, Chua, Schiele, CVPR 2019).

Two methods, one class (:class:`fsbench_plugins.mtl.method.MTL`):

* ``mtl``: scale-shift meta-training of a frozen pre-trained backbone with a meta-learned FC
  initialisation;
* ``mtl_ht``: the same with the hard-task (HT) meta-batch of the paper's Algorithm 1, which the
  core's episodic loop provides to any episodic method (:mod:`fsbench.engine.hardtasks`).

Presets share the pre-training schedule and backbone of the finetune baseline
(:data:`fsbench_plugins.mtl_protocol.PRETRAIN_PRESETS` / ``PRETRAIN_BACKBONES``), so both methods
start from the same cached pre-trained network and their results pair up.
"""

from __future__ import annotations

from fsbench import hookimpl
from fsbench.config import EpisodicConfig, MethodPreset
from fsbench.hookspecs import MethodRecord
from fsbench_plugins.mtl_protocol import (
    MTL_PAPER_SOURCES,
    PRETRAIN_BACKBONES,
    PRETRAIN_PRESETS,
    PRETRAIN_SOURCES,
)

from .method import MTL, MTLHparams

__all__ = ["MTL", "MTLHparams", "PRESETS", "fsbench_methods"]


def _preset(name: str, hparams: MTLHparams, episodic: EpisodicConfig, description: str,
            sources: dict[str, str], eval_batch: int = 50) -> MethodPreset:
    backbone, kwargs = PRETRAIN_BACKBONES[name]
    return MethodPreset(
        backbone=backbone, backbone_kwargs=dict(kwargs), hparams=hparams, episodic=episodic,
        pretrain=PRETRAIN_PRESETS[name], eval_batch=eval_batch, description=description,
        sources={**PRETRAIN_SOURCES[name], **sources},
    )


#: The FC base learner of the finetune baseline (plugins/baselines/finetune.py) in MTL's terms.
FINETUNE_BASE_LEARNER = {"fc_init": "zero", "feature_norm": 10.0, "inner_lr": 0.01, "test_steps": 100}

_CPU = "DEVIATION: CPU budget"
_FT = ("DEVIATION: finetune's base learner (zero FC init, features L2-normalised to 10), so that "
       "before meta-training MTL predicts exactly as finetune and MTL - finetune measures what "
       "meta-transfer adds; a CPU-length meta-training cannot undo a random init's noise")

_PT = "yaoyao-liu/meta-transfer-learning pytorch/"

#: The official PyTorch code, setting by setting (../shared/reference/mtl-settings.md).
OFFICIAL_PYTORCH_SOURCES = {
    "hparams.inner_lr": f"{_PT}main.py:37 (0.01)",
    "hparams.train_steps": f"{_PT}run_meta.py:36 (100 inner steps)",
    "hparams.test_steps": f"{_PT}run_meta.py:36 (100)",
    "hparams.first_order": f"{_PT}models/mtl.py:97,104 (no create_graph: first order; issue #59)",
    "hparams.ss_lr": f"{_PT}main.py:35; trainer/meta.py:61-62 (Adam 1e-4 for scale-shift and BatchNorm)",
    "hparams.fc_lr": f"{_PT}main.py:36; trainer/meta.py:61-62 (Adam 1e-3 for the FC)",
    "hparams.lr_decay": f"{_PT}trainer/meta.py:64 (x0.5)",
    "hparams.lr_decay_every": f"{_PT}trainer/meta.py:64 (every 1,000 tasks)",
    "hparams.lr_min": f"{_PT}trainer/meta.py:64 (no floor)",
    "hparams.bn_affine": f"{_PT}trainer/meta.py:61 (BatchNorm scale and bias meta-learned)",
    "hparams.bn_train": f"{_PT}trainer/meta.py:127,176,258 (train() while meta-training, eval() at "
                        "val and test)",
    "hparams.fc_init": f"{_PT}models/mtl.py:23-26 (kaiming_normal, bias 0)",
    "hparams.feature_norm": "none in the official PyTorch code",
    "episodic.iterations": f"{_PT}main.py:29-30 (10k tasks)",
    "episodic.meta_batch": f"{_PT}main.py:29-30 (one task per outer step)",
    "episodic.train_query": f"{_PT}main.py:33-34 (15 queries)",
    "episodic.train_way": f"{_PT}main.py (5-way)",
    "episodic.val_every": f"{_PT}trainer/meta.py:216-220,256 (600 val episodes after each epoch of "
                          "100 tasks, best kept as max_acc.pth)",
    "episodic.val_episodes": f"{_PT}trainer/meta.py:216-220 (600)",
    "episodic.grad_clip": "no clipping in the official PyTorch code",
}

PRESETS: dict[str, MethodPreset] = {
    "paper": _preset(
        "paper",
        MTLHparams(inner_lr=0.01, train_steps=20, test_steps=100, first_order=False,
                   ss_lr=1e-3, fc_lr=1e-3, lr_decay=0.5, lr_decay_every=1000, lr_min=1e-4,
                   fc_init="xavier", feature_norm=None),
        EpisodicConfig(iterations=20_000, meta_batch=2, train_query=15, val_every=100,
                       val_episodes=600),
        "MTL as in the paper (ResNet-12, Adam 1e-3 halved every 1k, second order, 20 inner "
        "steps; 5-shot: --set hparams.train_steps=60). The frozen backbone's BatchNorm uses its "
        "pre-trained statistics (the TF code normalises with batch statistics throughout)",
        MTL_PAPER_SOURCES,
    ),
    # About 15 minutes on 2 CPU cores on real miniImageNet (84x84) once the shared quick
    # pre-trained Conv-4 is cached.
    "quick": _preset(
        "quick",
        MTLHparams(train_steps=50, lr_decay_every=0, **FINETUNE_BASE_LEARNER),
        EpisodicConfig(iterations=120, meta_batch=2, train_query=6, val_every=60,
                       val_episodes=50),
        "CPU budget: Conv-4, 120 meta-batches of 2 tasks, finetune's base learner",
        {
            "hparams.fc_init": _FT, "hparams.feature_norm": _FT,
            "hparams.train_steps": f"{_CPU}: 50 inner steps (the official PyTorch code uses 100, "
                                   "the TF code 20)",
            "hparams.first_order": f"{_CPU}: first order, as the official PyTorch code "
                                   "(pytorch/models/mtl.py:97,104)",
            "hparams.ss_lr": "official PyTorch code: 1e-4 for scale-shift (pytorch/main.py:35)",
            "hparams.lr_decay_every": f"{_CPU}: no decay in a 120-iteration run",
            "hparams.lr_min": f"{_CPU}: no decay",
            "episodic.iterations": f"{_CPU}: 120 meta-batches",
            "episodic.train_query": f"{_CPU}: 6 queries per class in training tasks",
            "episodic.val_every": f"{_CPU}: validate twice",
            "episodic.val_episodes": f"{_CPU}: 50 val episodes",
        },
    ),
    # For side-by-side comparisons with the official PyTorch code (not the paper's model: its
    # "ResNet-25" at 80 px, 100 inner steps, BatchNorm meta-learned; mtl-settings.md).
    "official_pytorch": _preset(
        "official_pytorch",
        MTLHparams(inner_lr=0.01, train_steps=100, test_steps=100, first_order=True, ss_lr=1e-4,
                   fc_lr=1e-3, lr_decay=0.5, lr_decay_every=1000, lr_min=0.0, bn_affine=True,
                   bn_train=True, fc_init="kaiming", feature_norm=None),
        EpisodicConfig(iterations=10_000, meta_batch=1, train_query=15, val_every=100,
                       val_episodes=600),
        "MTL as the official PyTorch code runs it (its ResNet-25 at 80 px, 100 inner steps, "
        "first order, BatchNorm meta-learned); the scale-shift shift sits on every convolution "
        "(the official code has it on the stem only)",
        OFFICIAL_PYTORCH_SOURCES,
    ),
    "smoke": _preset(
        "smoke",
        MTLHparams(train_steps=5, lr_decay_every=0, ss_lr=3e-3, **FINETUNE_BASE_LEARNER),
        EpisodicConfig(iterations=12, meta_batch=2, train_query=4, val_every=6, val_episodes=10),
        "seconds: a tiny Conv-4, a dozen meta-batches, finetune's base learner",
        {
            "hparams.fc_init": _FT, "hparams.feature_norm": _FT,
            "hparams.ss_lr": "DEVIATION: tests: 3e-3, so that a dozen meta-batches move MTL "
                             "measurably away from finetune (the CI gate must see it)",
        },
    ),
}


@hookimpl
def fsbench_methods() -> list[MethodRecord]:
    return [
        MethodRecord(
            "mtl", MTL,
            "Meta-Transfer Learning: scale-shift of a frozen pre-trained backbone, meta-learned FC init",
            PRESETS,
        ),
        MethodRecord(
            "mtl_ht", MTL, "MTL with the hard-task meta-batch (Sun et al., CVPR 2019, Alg. 1)",
            PRESETS, hard_tasks=True,
        ),
    ]

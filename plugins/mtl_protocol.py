"""The MTL paper's protocol as data, shared by the bundled methods that follow it.

Sun, Liu, Chua, Schiele: "Meta-Transfer Learning for Few-Shot Learning", CVPR 2019 (TPAMI
extension). MTL, its ablation's baselines (scratch, finetune) and the simple baselines' CPU
presets take from here:

* :data:`PRETRAIN_PRESETS` / :data:`PRETRAIN_BACKBONES`: the pre-training each preset name trains
  (one cache entry for every method that needs it, so their results pair up), with
  :data:`PRETRAIN_SOURCES`, the source of every pre-training setting;
* :data:`MTL_PAPER_SOURCES`: where each setting of MTL's ``paper`` preset comes from, which the
  ablation's baselines share where they share the setting.

The core's pre-training (:mod:`fsbench.engine.pretrain`) knows none of this: it trains whatever
:class:`~fsbench.config.PretrainConfig` a preset gives it.
"""

from __future__ import annotations

from typing import Any

from fsbench.config import PretrainConfig

__all__ = ["MTL_PAPER_SOURCES", "PRETRAIN_BACKBONES", "PRETRAIN_PRESETS", "PRETRAIN_SOURCES"]

_C = "Sun et al., CVPR 2019"
_T = "Sun et al., TPAMI (in press), Sec. 5.2"
_TF = "yaoyao-liu/meta-transfer-learning tensorflow/"
_PT = "yaoyao-liu/meta-transfer-learning pytorch/"

#: The pre-training schedule of each preset, shared by every method that needs a pre-trained
#: backbone (finetune, MTL, the simple baselines): they take these so that they hit the same cache
#: entry and their results pair up.
#:
#: * ``paper``: the MTL paper's pre-training (TPAMI Sec. 5.2, the TensorFlow code that produced
#:   its numbers where the paper is silent): Adam 1e-3 halved every 5k iterations, batch 64,
#:   about 10k iterations, horizontal flips, a single FC head, on its ResNet-12 (64-128-256-512).
#: * ``quick``: a Conv-4 on real miniImageNet (84x84) for CPUs: 12 epochs of 6,400 images (two
#:   passes over the 38,400 train images) and a 100-episode val probe (README, "Precision and CPU
#:   speed" and "Measured", has its cost and what the 12 epochs gained over 6).
#: * ``smoke``: seconds on the synthetic data.
PRETRAIN_PRESETS: dict[str, PretrainConfig] = {
    "paper": PretrainConfig(
        epochs=17, batch_size=64, lr=1e-3, momentum=0.0, weight_decay=0.0, optimizer="adam",
        schedule="halve", halve_every=5000, lr_min=1e-4, crop=False, val_episodes=600,
    ),
    "quick": PretrainConfig(
        epochs=12, batch_size=64, lr=0.05, momentum=0.9, weight_decay=5e-4,
        schedule="cosine", images_per_epoch=6400, val_episodes=100,
    ),
    "smoke": PretrainConfig(
        epochs=3, batch_size=32, lr=0.05, momentum=0.9, weight_decay=5e-4,
        schedule="cosine", images_per_epoch=256, val_episodes=20,
    ),
    # The official MTL PyTorch code's pre-training, for side-by-side comparisons with that code.
    "official_pytorch": PretrainConfig(
        epochs=110, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="step",
        step_every=30, step_gamma=0.2, head_hidden=1000, val_episodes=600,
    ),
}

#: The backbone (timm name, kwargs) pre-trained under each preset.
PRETRAIN_BACKBONES: dict[str, tuple[str, dict[str, Any]]] = {
    "paper": ("resnet12_mtl", {}),
    "quick": ("conv4", {}),
    "smoke": ("conv4", {"width": 16}),
    "official_pytorch": ("resnet25_mtl", {}),
}

_CPU_PRE = "DEVIATION: CPU budget (a Conv-4 pre-trained in minutes on 2 cores) with the SGD recipe " \
           "that trains a Conv-4 fastest; the paper's Adam schedule is the paper preset's"

#: Provenance of every pre-training setting (and the backbone) per preset; methods that share
#: the pre-training merge these into their presets' ``sources``. A ``smoke`` preset names only
#: what the provenance rule for smoke presets (tests) does not say.
PRETRAIN_SOURCES: dict[str, dict[str, str]] = {
    "official_pytorch": {
        "backbone": f"{_PT}models/resnet_mtl.py:165-204 ('ResNet-25': stem 80, 3 stages of 4 basic "
                    f"blocks at 160/320/640, AvgPool(10), 640 features; 80-px inputs, "
                    f"{_PT}dataloader/dataset_loader.py:56-69)",
        "pretrain.optimizer": f"{_PT}trainer/pre.py:58-60 (SGD, Nesterov momentum)",
        "pretrain.lr": f"{_PT}main.py:48-52 (0.1)",
        "pretrain.momentum": f"{_PT}trainer/pre.py:58-60 (0.9)",
        "pretrain.weight_decay": f"{_PT}trainer/pre.py:58-60 (5e-4)",
        "pretrain.schedule": f"{_PT}trainer/pre.py (StepLR)",
        "pretrain.step_every": f"{_PT}main.py:48-52 (x0.2 every 30 epochs)",
        "pretrain.step_gamma": f"{_PT}main.py:48-52 (gamma 0.2)",
        "pretrain.epochs": f"{_PT}run_pre.py:14 (110 epochs)",
        "pretrain.batch_size": f"{_PT}main.py:48-52 (batch 128)",
        "pretrain.images_per_epoch": "every train image once per epoch",
        "pretrain.head_hidden": f"{_PT}models/mtl.py:55 (MLP 640-1000-ReLU-64 head)",
        "pretrain.augment": f"{_PT}dataloader/dataset_loader.py:55-64 (random crops and flips)",
        "pretrain.crop": "DEVIATION: the official Resize 92, RandomResizedCrop 88, CenterCrop 80 is "
                         "approximated by fsbench's random-resized crop of the 84-px image (the model "
                         "then sees its central 80 px)",
        "pretrain.label_smoothing": "none in the official PyTorch code",
        "pretrain.val_episodes": f"{_PT}trainer/pre.py:47-49,148-197 (best of 600 1-shot val episodes "
                                 "per epoch). DEVIATION: fsbench's probe is nearest-centroid; the "
                                 "official code fits an FC head 100 steps at lr 0.01",
        "pretrain.halve_every": "unused by the step schedule",
        "pretrain.lr_min": "unused by the step schedule",
    },
    "paper": {
        "backbone": f"Sun et al., CVPR 2019, Sec. 5.1 (ResNet-12, 4 residual blocks of 3 conv3x3, "
                    f"64 to 512 filters); {_TF}models/resnet12.py:58-75 (64-128-256-512)",
        "pretrain.optimizer": f"{_T} (Adam); {_TF}models/pre_model.py:52",
        "pretrain.lr": f"{_T} (1e-3); {_TF}run_experiment.py:32",
        "pretrain.schedule": f"{_T} (halved every 5k iterations); {_TF}trainer/pre.py:87-88",
        "pretrain.halve_every": f"{_T} (5k iterations); {_TF}run_experiment.py:33",
        "pretrain.lr_min": f"{_T} (until below 1e-4; never reached within 10k iterations)",
        "pretrain.step_every": "unused by the halving schedule",
        "pretrain.step_gamma": "unused by the halving schedule",
        "pretrain.head_hidden": "Sun et al., CVPR 2019, Sec. 4.1 (a single FC head, discarded after "
                                f"pre-training); {_TF}models/resnet12.py:159-162 (FC 512-64)",
        "pretrain.head": f"Sun et al., CVPR 2019, Sec. 4.1 (a linear FC head); {_TF}models/resnet12.py:159-162",
        "pretrain.cosine_scale": "unused by the linear head",
        "pretrain.distill_generations": f"{_T}: plain many-shot classification, no distillation",
        **{f"pretrain.distill_{k}": "unused without distillation"
           for k in ("ce_weight", "kl_weight", "temperature")},
        "pretrain.batch_size": f"{_T} (batch 64); {_TF} pre-train batch 64",
        "pretrain.epochs": f"{_T} (10k iterations): 17 epochs of 600 batches of 64 = 10,200 "
                           f"iterations; {_TF}run_experiment.py:40 uses the 10k checkpoint",
        "pretrain.images_per_epoch": "every train image once per epoch (38,400 on miniImageNet)",
        "pretrain.momentum": "unused with Adam",
        "pretrain.weight_decay": f"{_TF}: no weight decay (models/pre_model.py:52, plain Adam)",
        "pretrain.augment": f"{_T} (horizontal flip)",
        "pretrain.crop": f"{_T}: flips only, no crops ({_TF}data_generator/pre_data_generator.py:53-56 "
                         "has none at all)",
        "pretrain.label_smoothing": f"{_T}: none",
        "pretrain.val_episodes": "DEVIATION: the paper stops at a fixed 10k iterations "
                                 f"({_TF}run_experiment.py:40); fsbench keeps the epoch whose "
                                 "features score best on 600 val episodes (nearest-centroid probe), "
                                 "no dropout (the TF code keeps 0.9 after each block)",
    },
    "quick": {
        "backbone": "DEVIATION: Conv-4 (64 filters) instead of ResNet-12, for a CPU",
        **{f"pretrain.{k}": _CPU_PRE for k in (
            "optimizer", "lr", "schedule", "momentum", "weight_decay",
            "images_per_epoch", "crop", "lr_min")},
        "pretrain.epochs": "DEVIATION: CPU budget, 12 epochs of 6,400 images: +2.3 points for finetune "
                           "and MTL over 6 epochs on miniImageNet val, 1-shot (README, Measured)",
        "pretrain.step_every": "unused by the cosine schedule",
        "pretrain.step_gamma": "unused by the cosine schedule",
        "pretrain.val_episodes": "DEVIATION: 100 val episodes per probe, for a CPU",
    },
    "smoke": {
        "pretrain.step_every": "unused by the cosine schedule",
        "pretrain.step_gamma": "unused by the cosine schedule",
    },
}


#: Where each setting of MTL's ``paper`` preset comes from: the paper, and where it is silent the
#: TensorFlow code that produced its numbers (its maintainers say so, issue #32 of the official
#: repository). The ablation's baselines (scratch, finetune) share these settings where they
#: share the setting: one base learner and one meta-training protocol for the whole ablation.
MTL_PAPER_SOURCES: dict[str, str] = {
    "hparams.inner_lr": f"{_T} (base-learner gradient descent, lr 0.01). The TF code uses 1e-3 on "
                        f"a sum over shots ({_TF}run_experiment.py:46), about 5e-3 per mean loss",
    "hparams.train_steps": f"{_T} (20 inner steps for 1-shot miniImageNet; 60 for 5-shot: "
                           f"--set hparams.train_steps=60); {_TF}main.py:55",
    "hparams.test_steps": f"paper silent; {_TF}main.py:56 (100 at test)",
    "hparams.first_order": f"paper silent; {_TF}models/meta_model.py:88-103 (second order)",
    "hparams.ss_lr": f"{_T} (Adam, lr 1e-3, the same for scale-shift and the FC); "
                     f"{_TF}models/meta_model.py:137-138 (one Adam for both)",
    "hparams.fc_lr": f"{_T}; {_TF}models/meta_model.py:137-138",
    "hparams.lr_decay": f"{_T} (halved); {_TF}trainer/meta.py:260-264",
    "hparams.lr_decay_every": f"{_T} (every 1k iterations, counted in meta-iterations: the hard "
                              f"meta-batches do not advance it); {_TF}trainer/meta.py:260-264",
    "hparams.lr_min": f"{_T} (down to 1e-4); {_TF}trainer/meta.py:260-264 (floor 1e-4)",
    "hparams.fc_init": f"{_T}, Alg. 1 (random init, then meta-learned); {_TF}models/resnet12.py:164-165 "
                       "(Xavier)",
    "hparams.feature_norm": f"{_C}, Sec. 4 and both codes: none (raw features into the FC)",
    "hparams.bn_affine": f"{_C}, Sec. 4.2 (the pre-trained weights are frozen); the TF code trains "
                         "no BatchNorm parameter",
    "hparams.bn_train": "DEVIATION: the TF code normalises with batch statistics throughout "
                        "(utils/misc.py:268); fsbench keeps the frozen backbone's pre-trained "
                        "statistics, as the official PyTorch code does at test time",
    "episodic.iterations": f"{_TF}run_experiment.py:38-39 (20k iterations); {_C}, Sec. 5.3 chose "
                           "17k (1-shot) and 14k (5-shot) by meta-val accuracy, which the best-val "
                           "selection below reproduces",
    "episodic.meta_batch": f"{_C}, Sec. 5.1 (2 tasks per meta-batch); {_TF}run_experiment.py:38",
    "episodic.train_query": f"{_C}, Sec. 5.1 (15 queries per class in training tasks)",
    "episodic.train_way": f"{_C}, Sec. 5.1 (5-way tasks, as at test)",
    "episodic.val_every": f"{_TF}trainer/meta.py:232-257 (600 val episodes every 100 iterations)",
    "episodic.val_episodes": f"{_C}, Sec. 5.3 (600 val tasks); model selection on the best "
                             f"meta-val accuracy ({_C}, Sec. 5.3)",
    "episodic.grad_clip": "paper silent; neither official code clips the meta-gradient",
}

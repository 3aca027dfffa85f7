"""The simple baselines the field measures against since MTL: a well pre-trained backbone and
little else.

* ``simpleshot`` (Wang et al. 2019): nearest centroid on frozen features after the UN, L2N or
  CL2N transform; CL2N centres on the base classes' mean feature (``Method.fit_base``).
* ``baselinepp`` (Chen et al., ICLR 2019, "A Closer Look at Few-shot Classification"): a cosine
  classifier with learned per-class norms in pre-training (its own pre-training) and per episode.
* ``rfs`` (Tian et al., ECCV 2020): an L2-normalised logistic regression per episode on frozen
  features; born-again self-distillation generations in pre-training
  (``pretrain.distill_generations``).
* ``meta_baseline`` (Chen et al., ICCV 2021): the pre-trained backbone meta-trained whole as a
  cosine nearest-centroid classifier with a learned scale (episodic: ``--hard-tasks`` applies).

The first three are frozen at test and do no episodic training; their CPU presets share the
pre-trained backbone of finetune and MTL (Baseline++'s cosine head excepted), so their results
pair with finetune's on the same episodes and the same backbone.
"""

from __future__ import annotations

from fsbench import hookimpl
from fsbench.hookspecs import MethodRecord

from .baselinepp import PRESETS as BASELINEPP_PRESETS
from .baselinepp import BaselinePP, BaselinePPHparams
from .meta_baseline import PRESETS as META_BASELINE_PRESETS
from .meta_baseline import MetaBaseline, MetaBaselineHparams
from .rfs import PRESETS as RFS_PRESETS
from .rfs import RFS, RFSHparams
from .simpleshot import PRESETS as SIMPLESHOT_PRESETS
from .simpleshot import SimpleShot, SimpleShotHparams

__all__ = [
    "BASELINEPP_PRESETS",
    "META_BASELINE_PRESETS",
    "RFS",
    "RFS_PRESETS",
    "SIMPLESHOT_PRESETS",
    "BaselinePP",
    "BaselinePPHparams",
    "MetaBaseline",
    "MetaBaselineHparams",
    "RFSHparams",
    "SimpleShot",
    "SimpleShotHparams",
    "fsbench_methods",
]


@hookimpl
def fsbench_methods() -> list[MethodRecord]:
    return [
        MethodRecord("simpleshot", SimpleShot,
                     "SimpleShot: nearest centroid on frozen pre-trained features, UN / L2N / CL2N",
                     SIMPLESHOT_PRESETS),
        MethodRecord("baselinepp", BaselinePP,
                     "Baseline++: cosine-classifier pre-training, a cosine head fitted per episode",
                     BASELINEPP_PRESETS),
        MethodRecord("rfs", RFS,
                     "RFS: logistic regression per episode on frozen L2-normalised features, "
                     "optional self-distillation", RFS_PRESETS),
        MethodRecord("meta_baseline", MetaBaseline,
                     "Meta-Baseline: pre-training, then cosine nearest-centroid meta-training of the "
                     "whole backbone with a learned scale", META_BASELINE_PRESETS),
    ]

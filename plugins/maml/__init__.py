"""Model-Agnostic Meta-Learning (Finn, Abbeel, Levine, ICML 2017), and MAML + hard tasks.

MAML meta-learns an initialisation of the whole network such that a few gradient steps on a new
task's support set give a good classifier for its queries. Inner loop: ``inner_steps`` steps of
gradient descent (lr ``inner_lr``) on the support cross-entropy, from the shared initialisation;
outer loop: Adam on the query cross-entropy after adaptation, averaged over a meta-batch of
tasks, differentiated through the inner loop (second order) or not (``first_order``). At test
every episode is adapted from the meta-learned initialisation (``test_inner_steps`` steps).

Methods:

* ``maml``: MAML on any timm backbone (``--backbone``); paper preset: Conv-4 with 32 filters.
* ``maml_ht``: the same, with the hard-task meta-batch of Sun et al. (CVPR 2019), which the
  MTL paper reports as "MAML + HT" (the core's :mod:`fsbench.engine.hardtasks`).

Implementation (see :mod:`fsbench_plugins.maml.method` and :mod:`fsbench_plugins.maml.inner_loop`):

* ``torch.func``: ``functional_call`` + ``grad`` for the inner loop, ``vmap`` over the tasks of
  a meta-batch and over the episodes of an evaluation batch, with an automatic per-task-loop
  fallback (warned once) when vmap fails on a backbone; ``hparams.batched=false`` forces the loop.
* Head: ``create_backbone(backbone, num_classes=way)``, the backbone's own linear classifier;
  backbone and head are meta-learned and adapted together, as in the original.
* BatchNorm: batch statistics of the batch being processed, at meta-training and at test (the
  support set's in the inner loop, the query set's for the query logits), never running
  averages: running buffers are removed (``track_running_stats=False``), as in the original code.

Presets:

* ``paper``: Conv-4 (32 filters, 5x5 map flattened at 84x84 as in the original), inner lr 0.01,
  5 inner steps at train and 10 at test, meta-batch 4, Adam 1e-3, 60,000 iterations, meta-gradient
  elements clamped to [-10, 10] (the official code on miniImageNet), 15 queries per class. The
  paper used a meta-batch of 4 for 1-shot and **2 for 5-shot**: for 5-shot pass
  ``--set episodic.meta_batch=2``.
* ``quick``: the same learner and inner loop (second order, 5/10 inner steps), a short
  schedule for a CPU: 100 meta-batches of 4 tasks with 5 queries per class (not 15), val every 50
  on 20 episodes, tasks run in a per-task loop (``batched=false``: on a CPU the loop is as fast
  as vmap or faster). Measured on real miniImageNet 84x84 (1 thread of a shared 2-core CPU):
  a 1-shot meta-train step costs about 3.6 CPU-seconds, a 5-shot step (meta-batch 2) about 6.8,
  and adapting one test episode about 1.1 (1-shot) / 3.2 (5-shot) CPU-seconds, so a 1-shot run
  with 600 test episodes needs about 18 CPU-minutes (two thirds of it the 600 adaptations), a
  5-shot one about 45. For 5-shot pass ``--set episodic.meta_batch=2`` as for ``paper``.
* ``smoke``: a tiny run for tests.
"""

from __future__ import annotations

from fsbench import hookimpl
from fsbench.config import EpisodicConfig, MethodPreset
from fsbench.hookspecs import MethodRecord

from .inner_loop import InnerLoop, PrimitiveNorms, use_batch_statistics
from .method import MAML, MAMLHparams, build_learner

__all__ = [
    "MAML",
    "MAMLHparams",
    "PRESETS",
    "InnerLoop",
    "PrimitiveNorms",
    "build_learner",
    "fsbench_methods",
    "use_batch_statistics",
]

#: The original miniImageNet learner: Conv-4 with 32 filters, final map flattened.
_CONV4_32_FLAT = {"pool": "flatten"}

PRESETS: dict[str, MethodPreset] = {
    "paper": MethodPreset(
        backbone="conv4_32", backbone_kwargs=_CONV4_32_FLAT, hparams=MAMLHparams(),
        episodic=EpisodicConfig(iterations=60_000, meta_batch=4, train_query=15,
                                val_every=2000, val_episodes=600),
        eval_batch=25,
        description="Finn et al. 2017 on miniImageNet; 5-shot: --set episodic.meta_batch=2",
    ),
    "quick": MethodPreset(
        backbone="conv4_32", backbone_kwargs=_CONV4_32_FLAT, hparams=MAMLHparams(batched=False),
        episodic=EpisodicConfig(iterations=100, meta_batch=4, train_query=5,
                                val_every=50, val_episodes=20),
        eval_batch=10,
        description="short CPU schedule (~15 min on 2 cores, 1-shot miniImageNet); 5-shot: --set episodic.meta_batch=2",
    ),
    "smoke": MethodPreset(
        backbone="conv4", backbone_kwargs={"width": 8},
        hparams=MAMLHparams(inner_steps=2, test_inner_steps=3, inner_lr=0.1),
        episodic=EpisodicConfig(iterations=6, meta_batch=2, train_query=3,
                                val_every=3, val_episodes=10),
        eval_batch=10,
        description="a tiny run for tests",
    ),
}


@hookimpl
def fsbench_methods() -> list[MethodRecord]:
    return [
        MethodRecord(
            "maml", MAML,
            "MAML (Finn et al. 2017): meta-learned initialisation adapted per episode by SGD "
            "(paper setting for 5-shot: --set episodic.meta_batch=2)",
            PRESETS,
        ),
        MethodRecord(
            "maml_ht", MAML,
            "MAML + hard-task meta-batch (Sun et al. 2019)",
            PRESETS, hard_tasks=True,
        ),
    ]

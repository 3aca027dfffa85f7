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
  as vmap or faster; its costs are in the README, "Precision and CPU speed"). For 5-shot pass
  ``--set episodic.meta_batch=2`` as for ``paper``.
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

_FINN = "Finn et al. 2017"
_CODE = "cbfinn/maml main.py"

#: Where each setting of the paper preset comes from (Finn et al., ICML 2017, and the official
#: code's miniImageNet commands); the CPU presets inherit what they keep equal.
_PAPER_SOURCES = {
    "backbone": f"{_FINN}, Sec. 5.2 (Vinyals et al.'s 4-block conv net, 32 filters on "
                f"miniImageNet to limit overfitting); {_CODE} flag num_filters=32 in the "
                "miniImageNet usage commands",
    "backbone_kwargs.pool": "cbfinn/maml maml.py forward_conv: on miniImageNet the final map is "
                            "reshaped into one vector (no global pooling); usage --max_pool=True",
    "hparams.inner_lr": f"{_FINN}, Sec. 5.2 / App. A.1 (alpha = 0.01); {_CODE} usage --update_lr=0.01",
    "hparams.inner_steps": f"{_FINN}, App. A.1 (5 gradient steps at training); {_CODE} usage --num_updates=5",
    "hparams.test_inner_steps": f"{_FINN}, App. A.1 (10 steps at test time); {_CODE} main(): "
                                "test_num_updates = 10 when not training",
    "hparams.meta_lr": f"{_CODE} flag meta_lr (default 0.001, Adam)",
    "hparams.first_order": f"{_FINN}, Sec. 5.2 (second-order MAML; first order is an ablation); "
                           f"{_CODE} flag stop_grad=False",
    "hparams.batched": "DEVIATION: an implementation choice (vmap over tasks), not a setting of "
                       "the method; both paths compute the same function (tests/test_maml.py)",
    "hparams.clip_value": "cbfinn/maml maml.py: meta-gradients clipped to [-10, 10] for "
                          "miniImageNet (tf.clip_by_value in construct_model)",
    "episodic.iterations": f"{_CODE} usage --metatrain_iterations=60000",
    "episodic.meta_batch": f"{_FINN}, App. A.1 (4 tasks for 1-shot, 2 for 5-shot: "
                           "--set episodic.meta_batch=2); usage --meta_batch_size=4",
    "episodic.train_query": f"{_CODE} main(): DataGenerator(update_batch_size + 15) for "
                            "miniImageNet training (15 queries per class)",
    "episodic.train_way": f"{_FINN}, Sec. 5.2 (N-way training equals the test way)",
    "episodic.val_every": "DEVIATION: the official code logs val accuracy every 500 iterations "
                          "(TEST_PRINT_INTERVAL) and tests the last model; fsbench validates every "
                          "2,000 on 600 episodes and keeps the best state",
    "episodic.val_episodes": "DEVIATION: see episodic.val_every (model selection on 600 val episodes)",
    "episodic.grad_clip": f"{_CODE}: no norm clipping (elementwise clip: hparams.clip_value)",
}

_CPU = "DEVIATION: CPU budget (a whole run in minutes on 2 cores)"

PRESETS: dict[str, MethodPreset] = {
    "paper": MethodPreset(
        backbone="conv4_32", backbone_kwargs=_CONV4_32_FLAT, hparams=MAMLHparams(),
        episodic=EpisodicConfig(iterations=60_000, meta_batch=4, train_query=15,
                                val_every=2000, val_episodes=600),
        eval_batch=25,
        description="Finn et al. 2017 on miniImageNet; 5-shot: --set episodic.meta_batch=2",
        sources=_PAPER_SOURCES,
    ),
    "quick": MethodPreset(
        backbone="conv4_32", backbone_kwargs=_CONV4_32_FLAT, hparams=MAMLHparams(batched=False),
        episodic=EpisodicConfig(iterations=100, meta_batch=4, train_query=5,
                                val_every=50, val_episodes=20),
        eval_batch=10,
        description="short CPU schedule (~15 min on 2 cores, 1-shot miniImageNet); 5-shot: --set episodic.meta_batch=2",
        sources={
            "hparams.batched": "DEVIATION: the per-task loop is as fast or faster than vmap on a CPU",
            "episodic.iterations": f"{_CPU}: 100 meta-batches (paper 60,000)",
            "episodic.train_query": f"{_CPU}: 5 queries per class in training tasks (paper 15)",
            "episodic.val_every": f"{_CPU}: validate twice",
            "episodic.val_episodes": f"{_CPU}: 20 val episodes",
        },
    ),
    "smoke": MethodPreset(
        backbone="conv4", backbone_kwargs={"width": 8},
        hparams=MAMLHparams(inner_steps=2, test_inner_steps=3, inner_lr=0.1),
        episodic=EpisodicConfig(iterations=20, meta_batch=2, train_query=3,
                                val_every=10, val_episodes=10),
        eval_batch=10,
        description="a tiny run for tests",
        sources={
            "hparams.inner_lr": "DEVIATION: tests: a larger step for the few inner steps",
            "episodic.iterations": "DEVIATION: tests: 20 meta-batches (well above chance on "
                                   "synthetic_easy, the CI suite's data)",
        },
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

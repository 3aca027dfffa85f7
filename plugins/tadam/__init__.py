"""TADAM: Task dependent adaptive metric (Oreshkin, Rodriguez, Lacoste, NeurIPS 2018).

Prototypical networks with three additions (:mod:`fsbench_plugins.tadam.method`):

* **metric scaling**: logits ``-alpha * ||q - c_k||`` with a scale ``alpha`` (fixed at a
  cross-validated value in the paper preset, learned in the CPU presets);
* **task conditioning**: a task-embedding network (TEN) maps the mean of the class prototypes to
  FiLM parameters applied right after the BatchNorm of every main-path convolution of each
  backbone block (``gamma = 1 + gamma0 * g(c_bar)``, ``beta = beta0 * h(c_bar)``, scalars
  ``gamma0``/``beta0`` L2-penalised; FiLM is the identity at ``gamma0 = beta0 = 0``, where it starts);
* **auxiliary co-training**: a 64-way head over all train classes, trained in an extra step
  before an update with a probability that decays exponentially over training; never used at test.

Every setting follows the official code (``ServiceNow/TADAM``, ``model/tadam.py``) where it and the
paper's text differ; the preset sources say which.

The auxiliary task needs each image's global train class: the method declares
``needs_class_ids = True`` and the core passes the tasks' class ids (``Episode.classes``, [T, way])
to ``meta_train_step`` as ``classes``. A caller that passes none trains the episodic loss only
(warned once).

Evaluation protocol: TADAM reports 10 x 500 test episodes with 100 queries; fsbench evaluates every
method on its own protocol (600 episodes, 15 queries per class), so numbers are comparable across
methods here, not to the last digit with the paper's. Test episodes are embedded per episode (the
backbone is conditioned on each task), batched over the episodes of an evaluation batch.
"""

from __future__ import annotations

from fsbench import hookimpl
from fsbench.config import EpisodicConfig, MethodPreset
from fsbench.hookspecs import MethodRecord

from .method import TADAM, TADAMHparams, TaskEmbeddingNetwork, film_layers

__all__ = ["PRESETS", "TADAM", "TADAMHparams", "TaskEmbeddingNetwork", "film_layers", "fsbench_methods"]

_P = "Oreshkin et al. 2018"
_CODE = "ServiceNow/TADAM (the official code) model/tadam.py @0ca35f7"
_CODE_LATER = "ServiceNow/TADAM model/tadam.py @1a2146b (the later revision with TADAM's defaults)"
_TEX = "ServiceNow/TADAM paper/main.tex (the paper's source)"
_HEAD = "ServiceNow/TADAM @5c91a74 model/tadam.py"  # the newest revision (the lines cited with it)
_AUX_BATCH = ("; DEVIATION: an auxiliary step trains on the meta-batch's images (the official code draws "
              "a separate batch of 64 images of the 64 train classes, --pre_train_batch_size 64)")

_COMMON = {
    "hparams.task_conditioning": f"{_P} Sec. 2.4 (task conditioning with FiLM, TEN on the mean prototype of "
                                 "the unconditioned backbone)",
    "hparams.metric": f"{_CODE} get_polynomial: logits -alpha * tf.norm(q - c), the Euclidean norm "
                      "(--polynomial_metric_order 1), not its square",
    "hparams.ten_layers": f"{_CODE} --cbn_num_layers 3 (each layer as wide as the conditioned conv, residual "
                          f"from the second, swish between); {_TEX} appendix: cross-validated to 3 layers",
    "hparams.film_l2": f"{_CODE} --weight_decay_cbn 0.01 on gamma0/beta0 (TF l2_regularizer: 0.01 * x^2 / 2); "
                       f"{_TEX} appendix: cross-validated at 0.01",
    "hparams.clip_norm": f"{_CODE} --clip_gradient_norm 1.0: slim create_train_op clips each gradient tensor "
                         "(the paper does not mention it)",
    "hparams.decay_before_clip": f"{_HEAD}:892-893 (the l2_regularizer losses join the loss) and 914-915 "
                                 "(create_train_op clips the gradient of that total per tensor): the decay is "
                                 "clipped with the gradient; 858-860 and 871-874 the same for the auxiliary task",
    "hparams.separate_query_forward": f"{_HEAD}:737-751 (film: the conditioned supports, features_task_encode, "
                                      "and the queries, features_generic, are two calls of the feature "
                                      "extractor, each with tf.layers.batch_normalization in training mode: two "
                                      "sets of batch statistics)",
    "eval_batch": "fsbench: test episodes per batch (a speed setting, no effect on results)",
    "episodic.train_way": f"None = trained with the test way (5): {_CODE} --num_classes_train 5",
    "episodic.grad_clip": "none: TADAM clips per gradient tensor (hparams.clip_norm)",
}

PRESETS: dict[str, MethodPreset] = {
    "paper": MethodPreset(
        backbone="resnet12", backbone_kwargs={"widths": (64, 128, 256, 512)}, hparams=TADAMHparams(),
        episodic=EpisodicConfig(iterations=30_000, meta_batch=2, train_query=6,
                                val_every=1000, val_episodes=600),
        eval_batch=20,
        description="TADAM (ResNet-12 64-128-256-512, SGD 0.1, fixed alpha 7.5, decaying auxiliary 64-way task)",
        sources={
            **_COMMON,
            "backbone": f"{_P} Sec. 3: ResNet-12, 4 blocks of 3 conv3x3-BN-activation; DEVIATION: fsbench's "
                        f"ResNet-12 (LeakyReLU 0.1, a max-pool after every block, as {_TEX} describes); the "
                        "official code uses swish-1 (--activation) and pools after the first 3 blocks only "
                        "(--num_max_pools 3)",
            "backbone_kwargs.widths": f"{_CODE} --num_filters 64, --block_size_growth 2.0: 64-128-256-512",
            "hparams.optimizer": f"{_CODE} --optimizer sgd (MomentumOptimizer); {_TEX} appendix: SGD, momentum 0.9",
            "hparams.lr": f"{_CODE} --init_learning_rate 0.1; {_TEX} appendix: initial learning rate 0.1",
            "hparams.momentum": f"{_CODE} MomentumOptimizer(momentum=0.9)",
            "hparams.weight_decay": f"{_CODE} --weight_decay 0.0005 on conv and FC weights (l2_regularizer); "
                                    f"{_TEX} appendix: cross-validated at 0.0005",
            "hparams.lr_decay": f"{_CODE} get_pwc_learning_rate: x0.1 at each boundary",
            "hparams.lr_milestones": f"{_CODE} get_pwc_learning_rate, --number_of_steps 30000, "
                                     "--num_steps_decay_pwc 2500: T/2, T/2 + 2500, T/2 + 5000; "
                                     f"{_TEX} appendix: x0.1 halfway, then twice more every 2500 episodes",
            "hparams.lr_decay_every": "unused (hparams.lr_milestones)",
            "hparams.alpha_init": f"{_CODE_LATER} --metric_multiplier_init 7.5 (the 5-shot value; {_P} "
                                  "cross-validate it per setting, Table 3; the 1-shot value is not in the code)",
            "hparams.learn_alpha": f"{_CODE} --metric_multiplier_trainable False: fixed (cross-validated)",
            "hparams.aux_prob": f"{_CODE} multitask_proba = 0.9 ** (step // (T // 20) + 1); {_P} Sec. 2.5: "
                                f"initial probability 0.9{_AUX_BATCH}",
            "hparams.aux_decay": f"{_CODE} --feat_extract_pretrain_decay_rate 0.9",
            "hparams.aux_decay_every": f"{_CODE} number_of_steps // --feat_extract_pretrain_decay_n 20 = 1500 "
                                       f"(the paper writes 0.9^floor(20t/T), one power fewer than the code); "
                                       f"the step t is the loop's ({_HEAD}:943, 969-970): regular updates, so an "
                                       "extra hard-task meta-batch (fsbench's, not TADAM's) does not advance it",
            "episodic.iterations": f"{_CODE} --number_of_steps 30000; {_TEX} appendix: 30000 episodes with the "
                                   "auxiliary task",
            "episodic.meta_batch": f"{_CODE} --num_tasks_per_batch 2 (5-shot; {_TEX} appendix: 5 tasks "
                                   "in 1-shot)",
            "episodic.train_query": f"DEVIATION: 6 per class, class-balanced ({_CODE} draws --train_batch_size "
                                    "32 queries per task from the 5 classes in 5-shot, 12 in 1-shot)",
            "episodic.val_every": "DEVIATION: fsbench model selection every 1,000 updates",
            "episodic.val_episodes": "DEVIATION: fsbench model selection on 600 val episodes",
        },
    ),
    "quick": MethodPreset(
        backbone="conv4",
        hparams=TADAMHparams(optimizer="adam", lr=1e-3, weight_decay=0.0, lr_decay=0.5, lr_milestones=(),
                             lr_decay_every=200, metric="sq_euclidean", alpha_init=1.0, learn_alpha=True,
                             aux_decay_every=25),
        episodic=EpisodicConfig(iterations=500, meta_batch=1, train_query=15,
                                val_every=250, val_episodes=50),
        eval_batch=20,
        description="CPU budget (~5 min training): Conv-4, 500 episodes, Adam (protonet's quick optimiser)",
        sources={
            **_COMMON,
            "backbone": "DEVIATION: Conv-4 (64 filters, global pooling), a CPU-sized backbone (paper: ResNet-12)",
            "hparams.optimizer": "DEVIATION: Adam as protonet's quick preset (SGD 0.1 is tuned for 30k updates)",
            "hparams.lr": "DEVIATION: 1e-3, protonet's (plugins/protonet/__init__.py quick preset)",
            "hparams.momentum": "unused with Adam",
            "hparams.weight_decay": "DEVIATION: none, as protonet's quick preset",
            "hparams.lr_decay": "DEVIATION: halved, as protonet's quick preset",
            "hparams.lr_milestones": "unused (hparams.lr_decay_every)",
            "hparams.lr_decay_every": "DEVIATION: every 200 updates (CPU budget; paper x0.1 from T/2)",
            "hparams.metric": "DEVIATION: ProtoNets' squared distance: on this CPU schedule the official norm "
                              "with alpha 7.5 lost 2.70 ± 0.54 points in 1-shot (README, Measured)",
            "hparams.alpha_init": "DEVIATION: 1, ProtoNets' unscaled squared metric (the official 7.5 is a "
                                  "5-shot value for the norm); learned",
            "hparams.learn_alpha": f"DEVIATION: learned (no budget to cross-validate it; {_P} Sec. 2.2 "
                                   "also train it)",
            "hparams.aux_prob": f"{_CODE}: 0.9, as the paper preset{_AUX_BATCH}",
            "hparams.aux_decay": f"{_CODE} --feat_extract_pretrain_decay_rate 0.9",
            "hparams.aux_decay_every": f"{_CODE}'s formula over this run: 500 updates // 20 decay steps = 25",
            "episodic.iterations": "DEVIATION: CPU budget (~5 min), 500 episodes (paper 30k)",
            "episodic.meta_batch": "DEVIATION: one episode per update (protonet's quick; paper 2)",
            "episodic.train_query": "fsbench protocol, 15 queries per class (protonet's quick)",
            "episodic.val_every": "DEVIATION: CPU budget, validation every 250 updates",
            "episodic.val_episodes": "DEVIATION: CPU budget, 50 val episodes (embedded per episode)",
        },
    ),
    "smoke": MethodPreset(
        backbone="conv4", backbone_kwargs={"width": 16},
        hparams=TADAMHparams(optimizer="adam", lr=3e-3, weight_decay=0.0, lr_milestones=(), lr_decay_every=0,
                             learn_alpha=True, aux_decay_every=2),
        episodic=EpisodicConfig(iterations=40, meta_batch=2, train_query=5, val_every=20, val_episodes=20),
        eval_batch=50,
        description="seconds: a 16-filter Conv-4, 40 meta-batches",
        sources={
            **_COMMON,
            "hparams.lr": "DEVIATION: Adam 3e-3: 40 meta-batches must learn something",
            "hparams.momentum": "unused with Adam",
            "hparams.lr_decay": "unused (no schedule)",
            "hparams.alpha_init": f"{_CODE_LATER} --metric_multiplier_init 7.5, as the paper preset",
            "hparams.aux_prob": f"{_CODE}: 0.9, as the paper preset{_AUX_BATCH}",
            "hparams.aux_decay": f"{_CODE} --feat_extract_pretrain_decay_rate 0.9",
            "hparams.aux_decay_every": f"{_CODE}'s formula over this run: 40 updates // 20 decay steps = 2",
        },
    ),
}


@hookimpl
def fsbench_methods() -> list[MethodRecord]:
    return [
        MethodRecord(
            "tadam", TADAM,
            "TADAM: scaled-metric prototypes, FiLM task conditioning, auxiliary 64-way co-training",
            PRESETS,
        )
    ]

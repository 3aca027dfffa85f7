"""Meta-LSTM (Ravi & Larochelle, "Optimization as a Model for Few-Shot Learning", ICLR 2017).

The learner's parameters are the cell state of a coordinate-wise LSTM meta-learner fed the
preprocessed loss and gradient (log/sign preprocessing of Andrychowicz et al. 2016, p = 10); its
input gate is a learned per-coordinate learning rate, its forget gate a learned shrinkage
(:mod:`fsbench_plugins.meta_lstm.method`). Initialisation makes it start as plain gradient
descent: forget gate ~1 (bias 5), input gate exactly ``inner_lr`` (bias ``logit(inner_lr)``,
gate weights zero). First order, as the reference: the learner's gradients are inputs, not
differentiated through. As in the reference code, the gradient the meta-learner sees and applies
is the batch-mean loss's divided again by the batch size (``hparams.grad_batch_divide``; off in
the CPU presets, a declared deviation), and the gate layers are fed the previous gates before
their sigmoid (``hparams.gates_pre_sigmoid``).

BatchNorm of the learner (epsilon 1e-3, momentum 0.9 in 1-shot and 0.95 in 5-shot, the
reference's configurations): batch statistics while adapting (every support mini-batch) and for the
queries during meta-training; at test the queries are normalised with the running statistics of
the episode's own support batches (reset per episode), as the reference's ``evaluate`` mode does
(``model/lstm/meta-learner-lstm.lua``: ``learner.reset()`` per dataset, ``learner.set('evaluate')``
before the test set).

Adaptation schedule (the reference configuration, ``config/lstm/train-imagenet-1shot.lua`` and
``-5shot.lua``): 1-shot: 12 passes over the support set in batches of 5 (12 updates); 5-shot:
8 passes in batches of 25 (8 updates). ``hparams.epochs`` / ``hparams.inner_batch`` override it.

Test episodes are adapted one by one (the learner changes per episode); the tasks of a
meta-batch likewise run in a loop (each is a chain of small updates on its own parameter vector;
on a CPU the loop costs what a batched version would).
"""

from __future__ import annotations

from fsbench import hookimpl
from fsbench.config import EpisodicConfig, MethodPreset
from fsbench.hookspecs import MethodRecord

from .method import MetaLearnerCell, MetaLSTM, MetaLSTMHparams, preprocess

__all__ = ["PRESETS", "MetaLSTM", "MetaLSTMHparams", "MetaLearnerCell", "fsbench_methods", "preprocess"]

_REF = "twitter-research/meta-learning-lstm"
_AT = f"{_REF} @0df7fc7"  # the newest revision (the lines cited with it)
_ML = f"{_REF} model/lstm/meta-learner-lstm.lua"
_C1 = f"{_REF} @9d439f4 config/lstm/train-imagenet-1shot.lua"
_C5 = f"{_AT} config/lstm/train-imagenet-5shot.lua"
_PT = "markdtw/meta-learning-lstm-pytorch @fcc68ba"  # a PyTorch re-implementation that agrees
_DIVIDE_DEVIATION = (
    "DEVIATION: the mean-loss gradient, not divided again by the batch size (the reference divides, "
    f"{_AT} model/lstm/meta-learner-lstm.lua:64; the paper preset follows it): with the division the "
    "first updates are 5x (1-shot) / 25x (5-shot) smaller, and a CPU-length run leaves the learner "
    "almost unadapted. Smoke, synthetic_easy, 200 episodes, seeds 0 and 1: 24.0 / 25.0% with it, "
    "46.3 / 40.9% without (paired -22.32 ± 2.56 and -15.87 ± 2.41 per seed); quick: see the README")
_FLAT = {"pool": "flatten"}

_COMMON = {
    "hparams.lr": f"{_C1} lines 16-17 (optimMethod adam, learningRate 0.001); same in {_C5}",
    "episodic.grad_clip": f"{_C1} line 18 (maxGradNorm = 0.25), applied to the global norm in "
                          f"{_ML} (dfWithGradNorm)",
    "hparams.inner_lr": f"{_ML} (bI ~ U(-5, -4): input gate sigmoid ~ 0.007-0.018). DEVIATION: a constant "
                        "bias logit(0.01) and zero gate weights (reference U(-0.01, 0.01)) so the first update "
                        "is exactly a step of 0.01 along the meta-learner's gradient input",
    "hparams.forget_bias": f"{_ML} (bF ~ U(4, 5), 'initial forget value high ... starts with gradient "
                           "descent'); 5 = the top of that range, forget gate 0.993",
    "hparams.hidden": f"{_ML} getMetaLearner (nHidden = 20), Ravi & Larochelle Sec. 3.2 / 4",
    "hparams.preprocess_p": "Ravi & Larochelle Sec. 3.3 / Andrychowicz et al. 2016 appendix A (p = 10)",
    "hparams.epochs": f"None = by shot: 12 passes for 1-shot ({_C1} line 26, nEpochs[1] = 12), 8 for "
                      f"5-shot ({_C5}:18, nEpochs[5] = 8)",
    "hparams.inner_batch": f"None = the whole support set: batchSize 5 for 1-shot ({_C1} line 22) and 25 "
                           f"for 5-shot ({_C5}:14) = 5-way support sizes",
    "hparams.bn_momentum": f"None = by shot: 0.9 for 1-shot ({_C1} line 10, BN_momentum = 0.9), 0.95 "
                           f"otherwise ({_C5}:6, BN_momentum = 0.95; {_PT} scripts/train_5s_5c.sh: "
                           "--bn-momentum 0.95); Torch's and PyTorch's momentum weigh the new batch alike",
    "hparams.bn_eps": f"{_AT} model/lstm-classifier.lua:8 (SpatialBatchNormalization(nOutput, 1e-3, "
                      f"BN_momentum)); {_PT} scripts/train_5s_5c.sh: --bn-eps 1e-3",
    "hparams.gates_pre_sigmoid": f"{_AT} model/lstm/lstm-helper.lua:116-119 (fS[s] = fN, iS[s] = iN: the "
                                 "previous gates enter the gate layers as pre-activations; the sigmoid is "
                                 f"applied only in the update, lines 123 and 126); {_PT} metalearner.py:63-69 "
                                 "likewise. The paper's equations (Sec. 3.2) write i_{t-1}, f_{t-1} after it",
    "eval_batch": "fsbench: test episodes per batch (a speed setting, no effect on results)",
    "episodic.train_way": "None = the test way: the learner's classifier has `way` outputs (Ravi & Larochelle Sec. 4: 5-way training)",
}

PRESETS: dict[str, MethodPreset] = {
    "paper": MethodPreset(
        backbone="conv4_32", backbone_kwargs=_FLAT, hparams=MetaLSTMHparams(),
        episodic=EpisodicConfig(iterations=75_000, meta_batch=1, train_query=15,
                                val_every=2500, val_episodes=600, grad_clip=0.25),
        eval_batch=20,
        description="Ravi & Larochelle 2017 (conv4_32 learner, 75k episodes; 5-shot: "
                    "--set episodic.iterations=50000)",
        sources={
            **_COMMON,
            "backbone": f"{_REF} model/imagenet-net.lua (4 x [conv3x3 32, BN, ReLU, maxpool 2] + linear), "
                        "Ravi & Larochelle Sec. 4 ('4 convolutional layers ... 32 filters')",
            "backbone_kwargs.pool": f"{_REF} model/imagenet-net.lua: the 5x5x32 map is flattened into "
                                    "the linear classifier",
            "episodic.iterations": f"{_C1} line 31 (nEpisode = 75000); 5-shot: {_C5}:20 (50000)",
            "episodic.meta_batch": f"{_ML}: one episode per meta-learner update",
            "episodic.train_query": "fsbench protocol: 15 queries per class (Ravi: nEval = 15, config/imagenet.lua)",
            "episodic.val_every": "DEVIATION: fsbench model selection every 2,500 episodes on 600 val "
                                  f"episodes (reference: nValidationEpisode = 100, {_C1} line 32)",
            "episodic.val_episodes": "DEVIATION: 600 val episodes (reference 100) for model selection",
            "hparams.grad_batch_divide": f"{_AT} model/lstm/meta-learner-lstm.lua:64 (feval: gradParameters:div("
                                         "inputs:size(1)) on the gradient of nn.CrossEntropyCriterion's batch "
                                         "mean, model/lstm-classifier.lua:31; the meta-learner is fed it and "
                                         "applies it, lstm-helper.lua:123); "
                                         f"{_PT} main.py:115 (p.grad / args.batch_size) likewise",
        },
    ),
    "quick": MethodPreset(
        backbone="conv4_32", backbone_kwargs=_FLAT, hparams=MetaLSTMHparams(grad_batch_divide=False),
        episodic=EpisodicConfig(iterations=250, meta_batch=1, train_query=6,
                                val_every=125, val_episodes=20, grad_clip=0.25),
        eval_batch=20,
        description="CPU budget (~5 min training on 1 thread at 84x84): 250 episodes",
        sources={
            **_COMMON,
            "backbone": f"{_REF} model/imagenet-net.lua (the paper preset's learner)",
            "backbone_kwargs.pool": f"{_REF} model/imagenet-net.lua (flattened 5x5 map)",
            "episodic.iterations": "DEVIATION: CPU budget, 250 episodes (reference 75,000 / 50,000)",
            "episodic.meta_batch": f"{_ML}: one episode per update",
            "episodic.train_query": "DEVIATION: 6 training queries per class (protocol 15): CPU budget",
            "episodic.val_every": "DEVIATION: CPU budget, validation every 125 episodes",
            "episodic.val_episodes": "DEVIATION: CPU budget, 20 val episodes (each adapts the learner)",
            "hparams.grad_batch_divide": _DIVIDE_DEVIATION,
        },
    ),
    "smoke": MethodPreset(
        backbone="conv4", backbone_kwargs={"width": 8},
        hparams=MetaLSTMHparams(epochs=4, lr=1e-2, grad_batch_divide=False),
        episodic=EpisodicConfig(iterations=30, meta_batch=2, train_query=5,
                                val_every=15, val_episodes=10, grad_clip=0.25),
        eval_batch=20,
        description="seconds: an 8-filter Conv-4 learner (global pooling), 4 updates per task",
        sources={
            **_COMMON,
            "hparams.lr": "DEVIATION: Adam 1e-2 (reference 1e-3): 100 meta-batches must learn something",
            "episodic.meta_batch": "DEVIATION: 2 tasks per update: a less noisy gradient in a short run",
            "hparams.grad_batch_divide": _DIVIDE_DEVIATION,
        },
    ),
}


@hookimpl
def fsbench_methods() -> list[MethodRecord]:
    return [
        MethodRecord(
            "meta_lstm", MetaLSTM,
            "Meta-LSTM (Ravi & Larochelle 2017): an LSTM meta-learner whose cell state is the learner's weights",
            PRESETS,
        )
    ]

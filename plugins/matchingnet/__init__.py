"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu, Wierstra, NeurIPS 2016).

A query is classified by attention over the labelled support set:
``P(y | x) = sum_i a(x, x_i) y_i`` with ``a`` a softmax over the (scaled) cosine similarity of
the query embedding ``f(x)`` to each support embedding ``g(x_i)`` (paper eq. 1-2). f and g share
one CNN (``f' = g'``). With *full-context embeddings* (FCE, paper Sec. 2.1.2 and appendix A.2):

* ``g(x_i) = h_fwd_i + h_bwd_i + g'(x_i)``: a bidirectional LSTM over the support embeddings;
* ``f(x) = attLSTM(f'(x), g(S), K)``: K "processing" steps of an LSTM whose hidden state is
  ``[h_{k-1}, r_{k-1}]`` (``r`` the attention read-out over ``g(S)``) and whose input is always
  ``f'(x)``, with the skip connection ``h_k = h_hat_k + f'(x)``.

FCE is an option (``hparams.fce``), on in ``paper``.

**The cosine scale.** Vinyals et al. write the attention as a softmax over raw cosines. A cosine
lies in [-1, 1], so over 5 support images the largest attention weight is at most
``e / (e + 4/e) ~ 0.65``: the softmax is starved, the loss never falls below ~0.43 and its
gradients stay small. fsbench multiplies the cosine by a *learned* scale (``hparams.scale_init``
10, ``learn_scale`` True): learned because the best sharpness depends on the backbone and the
shot, and because it costs one scalar. ``--set hparams.learn_scale=false`` keeps it fixed.

**The ``paper`` preset** follows Ravi & Larochelle's re-implementation, which produced the
43.4 / 55.3 miniImageNet numbers the MTL paper quotes: the 4-conv, 32-filter learner of their
code (``conv4_32``, the final 5x5 map flattened to 800 features), Adam, 75,000 episodes, K = 3
processing steps (their config's ``opt.steps``).

Test time: the CNN does not change per episode (``frozen_at_test``): the core embeds each test
image once and :meth:`MatchingNet.classify` runs FCE and the attention for a whole batch of
episodes at once (all tensors carry the task dimension ``T``). Episodes are evaluated on fsbench's
protocol (600 episodes, 15 queries per class), as for every method.
"""

from __future__ import annotations

from fsbench import hookimpl
from fsbench.config import EpisodicConfig, MethodPreset
from fsbench.hookspecs import MethodRecord

from .method import FullContextEmbedding, MatchingNet, MatchingNetHparams, attention_readout

__all__ = [
    "PRESETS",
    "FullContextEmbedding",
    "MatchingNet",
    "MatchingNetHparams",
    "attention_readout",
    "fsbench_methods",
]

_RAVI = "twitter-research/meta-learning-lstm"
_FLAT = {"pool": "flatten"}

_COMMON_SOURCES = {
    "hparams.scale_init": "DEVIATION: Vinyals et al. eq. 2 use an unscaled cosine; a cosine in [-1, 1] caps "
                          "a 5-way softmax at ~0.65 (starved), so the cosine is multiplied by a scale "
                          "starting at 10 (as metric scaling in TADAM, Oreshkin et al. 2018 Sec. 2.2)",
    "hparams.learn_scale": "DEVIATION: the scale is learned (one scalar) rather than fixed, because the best "
                           "sharpness depends on backbone and shot; --set hparams.learn_scale=false fixes it",
    "hparams.fce": "Vinyals et al. 2016 Sec. 2.1.2 and appendix A.2 (full-context embeddings; the paper's "
                   "miniImageNet numbers use FCE)",
    "hparams.processing_steps": f"{_RAVI} config/baselines/train-matching-net.lua line 11 (opt.steps = 3), "
                                "K of Vinyals et al. appendix A.2",
    "hparams.lr": f"{_RAVI} config/baselines/train-matching-net.lua line 15 (opt.learningRate = 0.0001, "
                  "Adam, line 14); the issue quotes 1e-3: the stored reference file reads 1e-4",
    "hparams.eps": "numerical guard of log P(y|x) (NLL of the attention read-out, Vinyals et al. eq. 1)",
    "eval_batch": "fsbench: test episodes per batch (a speed setting, no effect on results)",
    "episodic.train_way": "None = trained with the test way (5), as Vinyals et al. Sec. 4.1.2 and Ravi's code (nClasses.train = 5)",
    "episodic.train_query": "fsbench protocol: 15 queries per class (GUIDE sec. 4); Ravi's code "
                            "uses nEval=15 for miniImageNet (config/imagenet.lua)",
}

PRESETS: dict[str, MethodPreset] = {
    "paper": MethodPreset(
        backbone="conv4_32", backbone_kwargs=_FLAT, hparams=MatchingNetHparams(),
        episodic=EpisodicConfig(iterations=75_000, meta_batch=1, train_query=15,
                                val_every=2500, val_episodes=600),
        eval_batch=50,
        description="Ravi & Larochelle's MatchingNets (conv4_32 flattened, FCE K=3, Adam, 75k episodes)",
        sources={
            **_COMMON_SOURCES,
            "backbone": f"{_RAVI} model/imagenet-net.lua (4 x [conv3x3 32 filters, BN, ReLU, maxpool 2]), "
                        "used by config/baselines/train-matching-net.lua; Ravi & Larochelle 2017 Sec. 4",
            "backbone_kwargs.pool": f"{_RAVI} model/baselines/simple-embedding.lua: the 5x5x32 map is "
                                    "flattened (800 features) at 84x84",
            "episodic.iterations": f"{_RAVI} config/baselines/train-matching-net.lua line 18 (nEpisode = 75000)",
            "episodic.meta_batch": f"{_RAVI} config/baselines/train-matching-net.lua: one episode per "
                                   "update (batchSize = nClasses.train * nEval images of one episode)",
            "episodic.val_every": "DEVIATION: fsbench validates every 2,500 episodes on 600 val episodes "
                                  "(Ravi's code: 100 validation episodes, printPer 1000) for model selection",
            "episodic.val_episodes": "DEVIATION: 600 val episodes (Ravi: nValidationEpisode = 100, config line 19) "
                                     "for a tighter model selection",
            "episodic.grad_clip": "none: Ravi's matching-net config sets no gradient clipping",
        },
    ),
    "quick": MethodPreset(
        backbone="conv4_32", backbone_kwargs=_FLAT, hparams=MatchingNetHparams(lr=1e-3),
        episodic=EpisodicConfig(iterations=400, meta_batch=2, train_query=6,
                                val_every=200, val_episodes=100),
        eval_batch=50,
        description="CPU budget (~5 min training on 1 thread at 84x84): 400 meta-batches of 2 tasks",
        sources={
            **_COMMON_SOURCES,
            "backbone": f"{_RAVI} model/imagenet-net.lua (the paper preset's learner)",
            "backbone_kwargs.pool": f"{_RAVI} model/baselines/simple-embedding.lua (flattened 5x5 map)",
            "hparams.lr": "DEVIATION: Adam 1e-3 (reference 1e-4) so that 800 training episodes are "
                          "enough to move a randomly initialised CNN",
            "episodic.iterations": "DEVIATION: CPU budget, 400 meta-batches of 2 (paper 75,000 episodes)",
            "episodic.meta_batch": "DEVIATION: 2 tasks per update (reference 1) for a less noisy gradient "
                                   "within the CPU budget",
            "episodic.train_query": "DEVIATION: 6 training queries per class (protocol 15): CPU budget",
            "episodic.val_every": "DEVIATION: CPU budget, validation every 200 meta-batches",
            "episodic.val_episodes": "DEVIATION: CPU budget, 100 val episodes for model selection",
            "episodic.grad_clip": "none, as the reference",
        },
    ),
    "smoke": MethodPreset(
        backbone="conv4", backbone_kwargs={"width": 16}, hparams=MatchingNetHparams(lr=1e-3),
        episodic=EpisodicConfig(iterations=40, meta_batch=2, train_query=5, val_every=20,
                                val_episodes=20),
        eval_batch=50,
        description="seconds: a 16-filter Conv-4 (global pooling), 40 meta-batches",
        sources={
            **_COMMON_SOURCES,
            "hparams.lr": "DEVIATION: Adam 1e-3 (reference 1e-4): a short run must learn something",
            "episodic.grad_clip": "none, as the reference",
        },
    ),
}


@hookimpl
def fsbench_methods() -> list[MethodRecord]:
    return [
        MethodRecord(
            "matchingnet", MatchingNet,
            "Matching Networks: scaled-cosine attention over the support set, full-context embeddings",
            PRESETS,
        )
    ]

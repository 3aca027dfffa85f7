"""Building blocks that method plugins share, where a plugin finds them.

They sit beside the method contract (:mod:`fsbench.method`) and below the engine: they import
nothing from :mod:`fsbench.engine` (the engine's pre-training uses the cosine classifier and the
nearest-centroid probe from here).

* :mod:`.linear`: the FC-head base learner (finetune, MTL, scratch) and :class:`~.linear.FCHeadMetaLearner`;
* :mod:`.cosine`: Baseline++'s cosine classifier;
* :mod:`.prototypes`: class means, nearest-centroid and cosine logits (ProtoNets, SimpleShot,
  Meta-Baseline, TADAM, the pre-training probe);
* :mod:`.pretrained`: loading pre-trained weights; :class:`~.pretrained.FrozenPretrained`;
* :mod:`.schedules`: the outer loop's step decay (``hparams.lr_decay_every``), one meaning for all.
"""

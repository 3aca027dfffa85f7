"""Meta-Transfer Learning (Sun, Liu, Chua, Schiele, "Meta-Transfer Learning for Few-Shot
Learning", CVPR 2019): the method.

A backbone pre-trained by many-shot classification (:mod:`fsbench.engine.pretrain`) is frozen and
every convolution gets a learnable scale and shift (SS, :mod:`fsbench_plugins.mtl.scaleshift`). The base
learner is a linear (FC) head trained per task by plain gradient descent on the support features
(:func:`fsbench.learners.linear.fit_linear_heads`); its *initialisation* (``fc_weight`` [way, D],
``fc_bias`` [way]) is meta-learned together with SS by Adam on the query loss of the adapted head.

One meta-train step on a meta-batch of ``T`` tasks:

1. one backbone forward over the support and query images of all ``T`` tasks (flattened to one
   batch; under the run's precision policy, e.g. bf16 autocast + channels_last);
2. inner loop: ``train_steps`` gradient steps (lr ``inner_lr``) of all ``T`` FC heads at once,
   from the shared meta-learned initialisation, on each task's support features;
3. the query cross-entropy of the adapted heads, averaged over tasks, is back-propagated to SS
   (through the query features, and through the support features unless ``first_order``) and to
   the FC initialisation (through the fast weights); Adam updates them with two learning rates.

Design choices (and where they depart from the official code):

* **First order by default.** The official PyTorch code computes each inner gradient with
  ``torch.autograd.grad`` without ``create_graph``, i.e. the inner gradients are constants: the
  query loss reaches SS only through the query features and the FC initialisation through the
  identity path of the fast weights. ``first_order=False`` differentiates through the inner
  loop (the support features then receive gradients too); the closed-form FC gradient makes that
  cheap.
* **BatchNorm frozen.** The backbone's BatchNorm layers stay in eval mode with the pre-trained
  running statistics and affine parameters, in training as at test, so that SS is the only thing
  that changes the pre-trained network (as the paper describes) and a task's features do not
  depend on which other images share its batch. The official PyTorch code instead leaves the
  encoder in train mode during meta-training (batch statistics of each task's 80 images, running
  statistics drifting) and puts BN's affine parameters in the SS optimiser.
* **Inner loop on raw features**, as in the official code (``F.linear`` on the pooled encoder
  output, FC init Kaiming-normal, bias zero, lr 0.01, mean cross-entropy over the support set).
  How fast it learns depends on the squared feature norm: one step moves a support logit by
  about ``lr * |x|^2 / S``. The official 640-d ResNet features are large, so lr 0.01 fits the
  support set within its steps; on the CPU presets' 64-d Conv-4 features it is slower (README,
  "Figures behind design choices", has the support loss over the inner steps).
  ``feature_norm`` (L2-normalise, rescale) and ``fc_init="zero"`` are options, off in the
  ``paper`` preset; the CPU presets (``quick``, ``smoke``) turn both on so that MTL's base
  learner is exactly the finetune baseline's (see ``plugins/mtl/__init__.py``).
  Note that the tasks' labels are random permutations of their classes, so the outer loss is
  invariant to permuting the rows of the FC init: meta-training can only make the init more
  class-symmetric, i.e. remove the random component of its Kaiming initialisation.
* **Frozen at test**: the core embeds each test image once (:meth:`MTL.embed`) and
  :meth:`MTL.classify` runs the ``test_steps`` inner loop for a whole batch of episodes at once.
* **No host synchronisation** in a step: the inner loop is a fixed number of batched matrix
  products; losses and logits are returned on the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fsbench.backbones import feature_dim
from fsbench.errors import ConfigError
from fsbench.learners.linear import FCHeadMetaLearner, fit_linear_heads, linear_logits
from fsbench.learners.pretrained import pretrained_backbone
from fsbench.learners.schedules import check_step_decay, step_decay
from fsbench.method import MethodContext

from .scaleshift import scale_shift_parameters, wrap_scale_shift

FC_INITS = ("kaiming", "xavier", "zero")


@dataclass(frozen=True)
class MTLHparams:
    """Hyperparameters of MTL (defaults: the paper and the official code).

    ``lr_decay_every`` counts outer updates (hard-task meta-batches included); 0 disables decay.
    ``fc_init``: how the meta-learned FC initialisation starts: ``kaiming`` (Kaiming-normal
    weight, std ``sqrt(2 / D)``, as the official code) or ``zero``.
    ``feature_norm``: ``None`` feeds the raw backbone features to the FC inner loop (official
    code); a number L2-normalises each feature vector and rescales it to that norm, which makes
    the inner loop's speed independent of the backbone's feature scale.
    """

    inner_lr: float = 0.01
    train_steps: int = 20  # inner steps during meta-training (official: 20 TF, 50-100 PyTorch)
    test_steps: int = 100  # inner steps at meta-test
    first_order: bool = True  # official code: inner gradients are not differentiated through
    ss_lr: float = 1e-4  # Adam lr of the scale/shift parameters
    fc_lr: float = 1e-3  # Adam lr of the FC initialisation
    lr_decay: float = 0.5
    lr_decay_every: int = 5000
    lr_min: float = 0.0  # the decayed learning rates stop at this floor (0: none)
    #: The official PyTorch code also meta-learns the backbone's BatchNorm scale and bias (with
    #: the scale-shift learning rate) and keeps BatchNorm in train mode while meta-training
    #: (batch statistics, running statistics updated); the paper and the TF code freeze them.
    bn_affine: bool = False
    bn_train: bool = False
    fc_init: str = "kaiming"
    feature_norm: float | None = None

    def check(self) -> None:
        for name in ("train_steps", "test_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"hparams.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("inner_lr", "ss_lr", "fc_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"hparams.{name} must be positive, got {getattr(self, name)}")
        if self.lr_min < 0:
            raise ConfigError(f"hparams.lr_min must be >= 0, got {self.lr_min}")
        check_step_decay(self)
        if self.fc_init not in FC_INITS:
            raise ConfigError(f"hparams.fc_init must be one of {', '.join(FC_INITS)}, got {self.fc_init!r}")
        if self.feature_norm is not None and not self.feature_norm > 0:
            raise ConfigError(f"hparams.feature_norm must be positive or null, got {self.feature_norm}")


class MTL(FCHeadMetaLearner):
    """Meta-Transfer Learning: scale-shift a frozen pre-trained backbone, meta-learn the FC init.

    Used by both records ``mtl`` and ``mtl_ht`` (the hard-task meta-batch is the core's
    strategy, switched on by the record; the method itself is the same).
    """

    frozen_at_test = True
    hp: MTLHparams

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        hp = self.hp
        self.backbone = wrap_scale_shift(pretrained_backbone(ctx, "MTL"))
        self.backbone.eval()
        self._place_backbone()
        dim = feature_dim(self.backbone)
        self.fc_weight = nn.Parameter(torch.zeros(ctx.way, dim))
        if hp.fc_init in ("kaiming", "xavier"):
            with torch.random.fork_rng(devices=[]):  # seeded, global RNG untouched
                torch.manual_seed(ctx.seed)
                if hp.fc_init == "kaiming":  # std sqrt(2 / D): the official PyTorch init
                    nn.init.kaiming_normal_(self.fc_weight)
                else:  # the official TensorFlow init
                    nn.init.xavier_uniform_(self.fc_weight)
        self.fc_bias = nn.Parameter(torch.zeros(ctx.way))
        bn = [p for m in self.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
              for p in (m.weight, m.bias) if p is not None] if hp.bn_affine else []
        for p in bn:
            p.requires_grad_(True)
        self.optimizer = torch.optim.Adam([
            {"params": scale_shift_parameters(self.backbone) + bn, "lr": hp.ss_lr},
            {"params": [self.fc_weight, self.fc_bias], "lr": hp.fc_lr},
        ])
        # Step decay, with a floor per parameter group when lr_min is set.
        floors = [hp.lr_min / hp.ss_lr, hp.lr_min / hp.fc_lr] if hp.lr_min > 0 else []
        self.scheduler = step_decay(self.optimizer, hp.lr_decay, hp.lr_decay_every, floors)

    # -- modes ------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> MTL:
        """Train/eval mode for the method; the backbone's BatchNorm stays in eval mode
        (pre-trained statistics) unless ``bn_train`` puts it in train mode while meta-training."""
        super().train(mode)
        self.backbone.train(mode and self.hp.bn_train)
        return self

    # -- features (meta_train_step, _features: FCHeadMetaLearner) ---------------------------
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self._features(images)

    # -- test -------------------------------------------------------------------------------
    def adapt_heads(
        self, support: torch.Tensor, support_y: torch.Tensor, way: int, steps: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """FC heads [T, way, D], [T, way] after the test inner loop from the meta-learned init."""
        self._check_way(way)
        return fit_linear_heads(
            support.detach().float(), support_y, way, self.hp.test_steps if steps is None else steps,
            self.hp.inner_lr, weight=self.fc_weight.detach(), bias=self.fc_bias.detach(),
        )

    def classify(self, support, support_y, query, way) -> torch.Tensor:
        weight, bias = self.adapt_heads(support, support_y, way)
        return linear_logits(query.detach().float(), weight, bias)

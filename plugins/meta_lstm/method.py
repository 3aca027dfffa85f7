"""The Meta-LSTM method: a coordinate-wise LSTM whose cell state is the learner's parameters.

Ravi & Larochelle, "Optimization as a Model for Few-Shot Learning", ICLR 2017. For each task the
learner (a 4-conv network with a ``way``-way linear classifier) starts from the meta-learned
initial cell state ``c_0`` and is updated by the meta-learner, once per support mini-batch::

    g_t      = grad of the mean support-batch loss / batch size   (the reference's gradient)
    x_t      = [preprocess(L_t), preprocess(g_t)]          (4 numbers per coordinate)
    h_t      = LSTM_1(x_t, h_{t-1})                        (hidden 20, shared by all coordinates)
    a_t      = W_I [h_t, c_{t-1}, a_{t-1}] + b_I,  i_t = sigmoid(a_t)   (input gate: a learning rate)
    z_t      = W_F [h_t, c_{t-1}, z_{t-1}] + b_F,  f_t = sigmoid(z_t)   (forget gate: a shrinkage)
    c_t      = f_t * c_{t-1} - i_t * g_t                   (the learner's new parameters)

As the reference code (``twitter-research/meta-learning-lstm``, the paper's): the gradient is that
of the batch-mean loss divided again by the batch size (``model/lstm/meta-learner-lstm.lua:64``,
``gradParameters:div(inputs:size(1))`` after ``nn.CrossEntropyCriterion``'s mean,
``model/lstm-classifier.lua:31``), and the gate layers see the previous gates *before* their
sigmoid (``model/lstm/lstm-helper.lua:116-119`` keep ``fN``/``iN``, the pre-activations).
``hparams.grad_batch_divide`` / ``hparams.gates_pre_sigmoid`` switch either off (the paper's
equations read as written).

The query loss of the learner at ``c_T`` trains the meta-learner (gates, LSTM_1, ``c_0``) with
Adam and a clipped global gradient norm. Like the reference, it is *first order*: the learner's
gradient ``grad_t`` (and the preprocessed inputs) are constants to the meta-learner; the query
loss reaches the meta-parameters through the chain of cell states ``c_t``.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from fsbench.backbones import create_backbone, with_image_size
from fsbench.errors import ConfigError
from fsbench.method import Method, MethodContext, StepOutput


@dataclass(frozen=True)
class MetaLSTMHparams:
    """Meta-LSTM's hyperparameters (defaults: the reference configuration).

    lr: Adam learning rate of the meta-learner (and of the learner's initial parameters ``c_0``).
    inner_lr: the input gate starts at exactly this value (its bias is ``logit(inner_lr)``, its
        weights zero): the first update is a step of this size along the meta-learner's gradient
        (``grad_batch_divide``: the mean-loss gradient over the batch size).
    forget_bias: initial forget-gate bias (``sigmoid(5) = 0.993``: the learner starts close to
        plain gradient descent, shrinking its parameters by 0.7% per update).
    hidden: units of the first (ordinary) LSTM layer.
    preprocess_p: ``p`` of the log/sign gradient preprocessing (Andrychowicz et al. 2016).
    epochs: passes over the support set per task; None: 12 for 1-shot, 8 otherwise.
    inner_batch: support images per update; None: the whole support set (5 for 5-way 1-shot,
        25 for 5-way 5-shot, the reference's batch sizes).
    bn_momentum: the learner's BatchNorm running-average momentum over the support batches of
        one episode (reset per episode); the queries of a test episode are normalised with it.
        None: by shot, 0.9 for 1-shot and 0.95 otherwise (the reference's two configurations).
    bn_eps: the learner's BatchNorm epsilon (the reference's 1e-3).
    grad_batch_divide: divide the learner's mean-loss gradient by the batch size again before
        the meta-learner sees and applies it (the reference code); False: the mean-loss gradient.
    gates_pre_sigmoid: feed the gate layers their previous values before the sigmoid (the
        reference code); False: after it (the paper's equations).
    """

    lr: float = 1e-3
    inner_lr: float = 0.01
    forget_bias: float = 5.0
    hidden: int = 20
    preprocess_p: float = 10.0
    epochs: int | None = None
    inner_batch: int | None = None
    bn_momentum: float | None = None
    bn_eps: float = 1e-3
    grad_batch_divide: bool = True
    gates_pre_sigmoid: bool = True

    def check(self) -> None:
        if not 0 < self.inner_lr < 1:
            raise ConfigError(f"hparams.inner_lr must be in (0, 1), got {self.inner_lr}")
        for name in ("lr", "preprocess_p"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"hparams.{name} must be positive, got {getattr(self, name)}")
        for name in ("hidden", "epochs", "inner_batch"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"hparams.{name} must be at least 1, got {value}")
        if self.bn_momentum is not None and not 0 < self.bn_momentum <= 1:
            raise ConfigError(f"hparams.bn_momentum must be in (0, 1] or null, got {self.bn_momentum}")
        if not self.bn_eps > 0:
            raise ConfigError(f"hparams.bn_eps must be positive, got {self.bn_eps}")

    def resolved_epochs(self, shot: int) -> int:
        if self.epochs is not None:
            return self.epochs
        return 12 if shot == 1 else 8

    def resolved_bn_momentum(self, shot: int) -> float:
        if self.bn_momentum is not None:
            return self.bn_momentum
        return 0.9 if shot == 1 else 0.95


def preprocess(x: torch.Tensor, p: float) -> torch.Tensor:
    """Andrychowicz et al. (2016, appendix A): ``x -> (log|x| / p, sign x)`` if ``|x| >= e^-p``,
    else ``(-1, e^p x)``. Returns [..., 2]."""
    big = x.abs() >= math.exp(-p)
    first = torch.where(big, x.abs().clamp_min(1e-38).log() / p, torch.full_like(x, -1.0))
    second = torch.where(big, x.sign(), x * math.exp(p))
    return torch.stack([first, second], -1)


class MetaLearnerCell(nn.Module):
    """LSTM_1 (ordinary, coordinate-wise) + the meta-learner's gate layer (input, forget)."""

    def __init__(self, hidden: int, inner_lr: float, forget_bias: float, gates_pre_sigmoid: bool = True) -> None:
        super().__init__()
        #: The state carries each gate's pre-activation (the reference) or its sigmoid.
        self.gates_pre_sigmoid = gates_pre_sigmoid
        self.lstm = nn.LSTMCell(4, hidden)
        nn.init.uniform_(self.lstm.weight_ih, -0.01, 0.01)
        nn.init.uniform_(self.lstm.weight_hh, -0.01, 0.01)
        nn.init.uniform_(self.lstm.bias_ih, -0.01, 0.01)
        nn.init.uniform_(self.lstm.bias_hh, -0.01, 0.01)
        # Gate weights over [h_t, c_{t-1}, gate_{t-1}]; zero so that the first update is exactly
        # sigmoid(bias): i = inner_lr, f = sigmoid(forget_bias).
        self.input_gate = nn.Linear(hidden + 2, 1)
        self.forget_gate = nn.Linear(hidden + 2, 1)
        for gate, bias in ((self.input_gate, math.log(inner_lr / (1 - inner_lr))),
                           (self.forget_gate, forget_bias)):
            nn.init.zeros_(gate.weight)
            nn.init.constant_(gate.bias, bias)

    def forward(self, inputs, theta, grad, state):
        """One update of all coordinates: inputs [P, 4], theta/grad [P] -> new theta, state."""
        lstm_state, i_prev, f_prev = state
        h, c = self.lstm(inputs, lstm_state)
        i_pre = self.input_gate(torch.cat([h, theta[:, None], i_prev[:, None]], 1)).squeeze(1)
        f_pre = self.forget_gate(torch.cat([h, theta[:, None], f_prev[:, None]], 1)).squeeze(1)
        i, f = torch.sigmoid(i_pre), torch.sigmoid(f_pre)
        carried = (i_pre, f_pre) if self.gates_pre_sigmoid else (i, f)
        return f * theta - i * grad, ((h, c), *carried)

    def initial_state(self, coords: int, like: torch.Tensor):
        hidden = self.lstm.hidden_size
        z = like.new_zeros(coords, hidden)
        return (z, z.clone()), like.new_zeros(coords), like.new_zeros(coords)


class MetaLSTM(Method):
    """The Meta-LSTM meta-learner with its learner; adapts per test episode."""

    frozen_at_test = False
    hp: MetaLSTMHparams

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        hp = self.hp
        kwargs = with_image_size(ctx.backbone_kwargs, ctx.image_shape)
        #: The learner; its parameters are the meta-learned initial cell state c_0.
        self.learner = create_backbone(ctx.backbone, num_classes=ctx.way, **kwargs)
        for m in self.learner.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum, m.eps = hp.resolved_bn_momentum(ctx.shot), hp.bn_eps
        self.names = [n for n, _ in self.learner.named_parameters()]
        self.shapes = [p.shape for p in self.learner.parameters()]
        self.cell = MetaLearnerCell(hp.hidden, hp.inner_lr, hp.forget_bias, hp.gates_pre_sigmoid)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=hp.lr)

    # -- the learner, functionally ------------------------------------------------------------
    def initial_parameters(self) -> torch.Tensor:
        """c_0: the learner's parameters as one flat vector (differentiable)."""
        return torch.cat([p.flatten() for p in self.learner.parameters()])

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = theta.split([s.numel() for s in self.shapes])
        return {n: t.view(s) for n, t, s in zip(self.names, parts, self.shapes, strict=True)}

    def fresh_buffers(self) -> dict[str, torch.Tensor]:
        """Reset BatchNorm running statistics for one episode (the reference's learner.reset())."""
        out = {}
        for name, buf in self.learner.named_buffers():
            if name.endswith("running_var"):
                out[name] = torch.ones_like(buf)
            else:
                out[name] = torch.zeros_like(buf)
        return out

    @contextmanager
    def learner_mode(self, training: bool):
        was = self.learner.training
        self.learner.train(training)
        try:
            yield
        finally:
            self.learner.train(was)

    def learner_logits(self, theta, buffers, images, batch_stats: bool) -> torch.Tensor:
        precision = self.ctx.precision
        with self.learner_mode(batch_stats), precision.autocast():
            out = functional_call(self.learner, (self.unflatten(theta), buffers), (precision.input(images),))
        return precision.features(out)

    def learner_gradient(self, theta, buffers, images, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and gradient of the learner at ``theta`` (constants: first order)."""
        with torch.enable_grad():
            leaf = theta.detach().requires_grad_()
            loss = F.cross_entropy(self.learner_logits(leaf, buffers, images, True), labels)
            (grad,) = torch.autograd.grad(loss, leaf)
        return loss.detach(), grad

    # -- adaptation ---------------------------------------------------------------------------
    def adapt(self, support: torch.Tensor, support_y: torch.Tensor, updates: int | None = None):
        """The learner's parameters after the meta-learner's updates on one task's support set
        ([S, C, H, W], [S]); returns (theta, buffers). ``updates`` caps the number of updates."""
        hp = self.hp
        theta = self.initial_parameters()
        buffers = self.fresh_buffers()
        state = self.cell.initial_state(theta.numel(), theta)
        s = support.shape[0]
        batch = hp.inner_batch or s
        done = 0
        for _ in range(hp.resolved_epochs(self.ctx.shot)):
            for start in range(0, s, batch):
                if updates is not None and done >= updates:
                    return theta, buffers
                x, y = support[start:start + batch], support_y[start:start + batch]
                loss, grad = self.learner_gradient(theta, buffers, x, y)
                if hp.grad_batch_divide:
                    grad = grad / x.shape[0]
                inputs = torch.cat([preprocess(loss.expand_as(grad), hp.preprocess_p),
                                    preprocess(grad, hp.preprocess_p)], -1)
                theta, state = self.cell(inputs, theta, grad, state)
                done += 1
        return theta, buffers

    def task_logits(self, support, support_y, query) -> torch.Tensor:
        theta, buffers = self.adapt(support, support_y)
        # Meta-training: batch statistics of the query set (the reference); test: the running
        # statistics of this episode's support batches (the reference's learner.set('evaluate')).
        return self.learner_logits(theta, buffers, query, batch_stats=self.training)

    # -- training -----------------------------------------------------------------------------
    def meta_train_step(self, support, support_y, query, query_y, way) -> StepOutput:
        self._check_way(way)
        logits = torch.stack([self.task_logits(support[t], support_y[t], query[t])
                              for t in range(support.shape[0])])
        loss = F.cross_entropy(logits.flatten(0, 1), query_y.flatten())
        self.outer_step(loss)
        return StepOutput(loss.detach(), logits.detach())

    # -- test ---------------------------------------------------------------------------------
    def adapt_and_predict(self, support, support_y, query, way) -> torch.Tensor:
        self._check_way(way)
        with torch.no_grad():
            return torch.stack([self.task_logits(support[t], support_y[t], query[t])
                                for t in range(support.shape[0])])

    def _check_way(self, way: int) -> None:
        if way != self.ctx.way:
            raise ConfigError(f"Meta-LSTM's learner was built for {self.ctx.way}-way tasks, got {way}-way")

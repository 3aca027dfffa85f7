"""The functional core of MAML: batch-statistics normalisation and the inner loop on one task.

Written with :mod:`torch.func` (``functional_call`` + ``grad``) so that it runs on any
``nn.Module`` (any backbone in timm's registry): the parameters of the adapted model are a plain
``dict`` of tensors, the inner loop is ordinary arithmetic on that dict, and the same per-task
function is either ``vmap``-ed over the tasks of a meta-batch or called in a Python loop.

Normalisation layers
--------------------
MAML (Finn et al., ICML 2017; the official TensorFlow code calls ``batch_norm`` in training mode
everywhere) normalises with the statistics of the batch being processed, at meta-training *and*
at test time, and never uses running averages. :func:`use_batch_statistics` turns every
BatchNorm of a model into exactly that: running buffers removed, ``track_running_stats=False``,
so ``F.batch_norm`` uses batch statistics whether the module is in train or eval mode. Within a
task, the support forward passes are normalised with the support set's statistics and the query
forward pass with the query set's statistics (transductive, as in the original).

Under ``vmap``, PyTorch's batching rules for the *backward* of ``native_batch_norm`` and
``native_layer_norm`` give wrong second derivatives (pytorch/functorch#534; checked on torch 2.14:
the second-order meta-gradient of a Conv-BN net differs from the per-task loop by ~1e-3 in
float64). :class:`PrimitiveNorms` therefore computes ``batch_norm`` (batch statistics only),
``instance_norm`` and ``layer_norm`` from primitive operations, which vmap and differentiate to
any order correctly. MAML uses it on both paths (vmap and loop), so both compute the same function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad
from torch.overrides import TorchFunctionMode

Params = dict[str, torch.Tensor]

__all__ = [
    "InnerLoop",
    "Params",
    "at_least_float32",
    "PrimitiveNorms",
    "batch_norm_from_batch",
    "layer_norm_from_primitives",
    "use_batch_statistics",
]


def use_batch_statistics(model: nn.Module) -> int:
    """Make every BatchNorm of ``model`` normalise with the statistics of its input batch.

    Removes the running mean/variance buffers and sets ``track_running_stats = False``: such a
    module uses batch statistics in train *and* eval mode, and nothing is updated in place (which
    ``vmap`` and ``grad`` require). Works on every ``nn.modules.batchnorm._BatchNorm`` subclass,
    timm's ``BatchNormAct2d`` included. Returns the number of modules changed.
    """
    count = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.track_running_stats = False
            module.running_mean = None
            module.running_var = None
            module.num_batches_tracked = None
            count += 1
    return count


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 if it is in a lower precision (bf16 under autocast), else unchanged."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def batch_norm_from_batch(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    reduce_dims: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """Normalise ``x`` [N, C, ...] per channel with its own (biased) mean and variance.

    ``reduce_dims`` defaults to every dimension but the channel dimension 1 (batch norm);
    instance norm reduces over the spatial dimensions only.
    """
    x = at_least_float32(x)
    dims = reduce_dims if reduce_dims is not None else (0, *range(2, x.dim()))
    mean = x.mean(dims, keepdim=True)
    centred = x - mean
    var = (centred * centred).mean(dims, keepdim=True)
    out = centred * torch.rsqrt(var + eps)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out


def layer_norm_from_primitives(
    x: torch.Tensor,
    normalized_shape: list[int] | tuple[int, ...],
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
) -> torch.Tensor:
    x = at_least_float32(x)
    dims = tuple(range(x.dim() - len(normalized_shape), x.dim()))
    mean = x.mean(dims, keepdim=True)
    centred = x - mean
    var = (centred * centred).mean(dims, keepdim=True)
    out = centred * torch.rsqrt(var + eps)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


def _batch_norm(
    input: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> torch.Tensor:
    if running_mean is not None or running_var is not None:
        # Running statistics: not a MAML-converted layer; leave it to PyTorch.
        return F.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
    return batch_norm_from_batch(input, weight, bias, eps)


def _instance_norm(
    input: torch.Tensor,
    running_mean: torch.Tensor | None = None,
    running_var: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> torch.Tensor:
    if not use_input_stats or running_mean is not None or running_var is not None:
        return F.instance_norm(
            input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps
        )
    return batch_norm_from_batch(input, weight, bias, eps, tuple(range(2, input.dim())))


def _layer_norm(
    input: torch.Tensor,
    normalized_shape: list[int] | tuple[int, ...],
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    return layer_norm_from_primitives(input, normalized_shape, weight, bias, eps)


_REPLACEMENTS: dict[Callable[..., Any], Callable[..., Any]] = {
    F.batch_norm: _batch_norm,
    F.instance_norm: _instance_norm,
    F.layer_norm: _layer_norm,
}


class PrimitiveNorms(TorchFunctionMode):
    """Within this context, ``F.batch_norm`` (without running statistics), ``F.instance_norm``
    and ``F.layer_norm`` are computed from primitive operations (see the module docstring)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        replacement = _REPLACEMENTS.get(func)
        return (replacement or func)(*args, **(kwargs or {}))


@dataclass(frozen=True)
class InnerLoop:
    """MAML's inner loop on *one* task (unbatched tensors), written for ``torch.func``.

    ``steps`` plain gradient-descent steps of size ``lr`` on the support cross-entropy, from the
    given initial parameters, then the logits of the query images under the adapted parameters.
    With ``first_order`` the inner gradients are detached, so the meta-gradient is the query-loss
    gradient at the adapted parameters (first-order MAML); otherwise it is differentiated
    through the whole inner loop (second order). Every parameter (backbone and head) is adapted.
    """

    model: nn.Module
    lr: float
    steps: int
    first_order: bool

    def logits(self, params: Params, buffers: Params, images: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, (params, buffers), (images,))

    def support_loss(
        self, params: Params, buffers: Params, images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        return F.cross_entropy(at_least_float32(self.logits(params, buffers, images)), labels)

    def adapt(
        self, params: Params, buffers: Params, images: torch.Tensor, labels: torch.Tensor
    ) -> Params:
        """The parameters after ``steps`` gradient steps on (``images``, ``labels``)."""
        step = grad(self.support_loss)
        for _ in range(self.steps):
            grads = step(params, buffers, images, labels)
            params = {
                name: p - self.lr * (grads[name].detach() if self.first_order else grads[name])
                for name, p in params.items()
            }
        return params

    def adapt_without_graph(
        self, params: Params, buffers: Params, images: torch.Tensor, labels: torch.Tensor
    ) -> Params:
        """:meth:`adapt` for test time (first order, nothing differentiated through it): plain
        ``torch.autograd.grad`` on detached leaves, no ``torch.func`` transform and no graph kept
        from one step to the next. Computes the same values as ``adapt(first_order=True)``."""
        params = {name: p.detach().requires_grad_() for name, p in params.items()}
        for _ in range(self.steps):
            with torch.enable_grad():
                loss = self.support_loss(params, buffers, images, labels)
                grads = torch.autograd.grad(loss, list(params.values()))
            with torch.no_grad():
                params = {
                    name: (p - self.lr * g).requires_grad_()
                    for (name, p), g in zip(params.items(), grads, strict=True)
                }
        return {name: p.detach() for name, p in params.items()}

    def predict(
        self,
        params: Params,
        buffers: Params,
        support: torch.Tensor,
        support_y: torch.Tensor,
        query: torch.Tensor,
    ) -> torch.Tensor:
        """Query logits [Q, way] of one test task, adapted by :meth:`adapt_without_graph`."""
        adapted = self.adapt_without_graph(params, buffers, support, support_y)
        with torch.no_grad():
            return self.logits(adapted, buffers, query)

    def __call__(
        self,
        params: Params,
        buffers: Params,
        support: torch.Tensor,
        support_y: torch.Tensor,
        query: torch.Tensor,
    ) -> torch.Tensor:
        """Query logits [Q, way] after adapting ``params`` on one task's support set."""
        adapted = self.adapt(params, buffers, support, support_y)
        return self.logits(adapted, buffers, query)

"""L2-regularised multinomial logistic regression on support features, batched over tasks.

RFS classifies each episode's queries with scikit-learn's ``LogisticRegression(penalty='l2',
C=1.0, solver='lbfgs', max_iter=1000, multi_class='multinomial')`` fitted on the support
features (``WangYueFt/rfs`` ``eval/meta_eval.py:66-74``), i.e. per task

    min_{W, b}  sum_i CE(W x_i + b, y_i) + ||W||^2 / (2 C)         (the intercept b unpenalised)

This module solves the same problem for ``T`` tasks at once in torch, without scikit-learn.

**Solver: Newton's method in the span of the support features.** The objective is strictly
convex in ``W`` and, because ``b`` is not penalised, its minimiser has every row of ``W`` in the
span of the ``n`` support features (a component orthogonal to them changes no support logit and
only adds to the penalty). So ``W = A X`` with ``A`` [way, n], and the problem becomes one in
``way * (n + 1)`` unknowns (30 for 5-way 1-shot, 130 for 5-shot) whatever the feature size:
logits ``Z = K A^T + b`` with the Gram matrix ``K = X X^T``, penalty ``tr(A K A^T) / (2C)``. Its
Hessian is small enough to build and solve exactly for a whole batch of tasks (float64), and
Newton's method with a backtracking (Armijo) line search converges quadratically (a few
iterations; README, "Figures behind design choices"). It stops when
the gradient of the original objective (in ``W`` and ``b``) is below ``tol`` in every entry for
every task, or after ``max_iter`` iterations. scikit-learn's L-BFGS stops at 1e-4 on the same
gradient (its default ``tol``) or after 1,000 iterations; both approach the same unique minimiser
(the intercepts up to a common shift, which changes no prediction). A tiny ridge on the Newton
system handles that shift direction, along which the objective is flat.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Step sizes the line search tries, largest first.
_STEPS = 0.5 ** torch.arange(16, dtype=torch.float64)
_ARMIJO = 1e-4
_RIDGE = 1e-10


def _objective(z: torch.Tensor, y: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of logits z [..., n, way] under one-hot y, plus ``penalty``."""
    return (torch.logsumexp(z, -1) - (z * y).sum(-1)).sum(-1) + penalty


def fit_logistic_regression(
    features: torch.Tensor, labels: torch.Tensor, way: int, c: float, max_iter: int, tol: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights [T, way, D] and intercepts [T, way] of each task's logistic regression.

    ``features`` [T, n, D] (RFS L2-normalises them first), ``labels`` [T, n] in 0..way-1, ``c``
    the inverse regularisation strength (scikit-learn's ``C``).
    """
    t, n, _ = features.shape
    x = features.double()
    y = F.one_hot(labels, way).double()
    gram = x @ x.transpose(1, 2)
    k1 = torch.cat([gram, gram.new_ones(t, n, 1)], dim=-1)  # [T, n, n+1]: an intercept column
    metric = F.pad(gram, (0, 1, 0, 1))  # the penalty's metric on (A, b): b unpenalised
    lam, size = 1.0 / c, way * (n + 1)
    eye = torch.eye(way, dtype=x.dtype, device=x.device)
    ridge = _RIDGE * torch.eye(size, dtype=x.dtype, device=x.device)
    steps = _STEPS.to(x.device)
    theta = x.new_zeros(t, way, n + 1)  # (A | b) per class
    for _ in range(max_iter):
        z = k1 @ theta.transpose(1, 2)  # [T, n, way]
        p = z.softmax(-1)
        resid = (p - y).transpose(1, 2)  # [T, way, n]
        grad_w = (resid + lam * theta[..., :n]) @ x  # the gradient in W and b: the stopping test
        if max(grad_w.abs().amax(), resid.sum(-1).abs().amax()) <= tol:
            break
        grad = resid @ k1 + lam * theta @ metric  # [T, way, n+1]
        s = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)  # [T, n, way, way]
        hess = (torch.einsum("tij,ticd,tik->tcjdk", k1, s, k1)
                + lam * torch.einsum("cd,tjk->tcjdk", eye, metric)).reshape(t, size, size)
        step = -torch.linalg.solve(hess + ridge, grad.reshape(t, size, 1)).view(t, way, n + 1)
        # Backtracking: the largest tried step that decreases the objective enough, per task.
        dz = k1 @ step.transpose(1, 2)
        quad = [(u @ metric * v).sum((1, 2)) for u, v in ((theta, theta), (step, theta), (step, step))]
        tried = steps.view(1, -1, 1, 1)
        penalty = 0.5 * lam * (quad[0][:, None] + 2 * steps * quad[1][:, None] + steps**2 * quad[2][:, None])
        value = _objective(z.unsqueeze(1) + tried * dz.unsqueeze(1), y.unsqueeze(1), penalty)
        start = _objective(z, y, 0.5 * lam * quad[0])
        slope = (grad * step).sum((1, 2))
        ok = value <= start[:, None] + _ARMIJO * steps * slope[:, None]
        chosen = torch.where(ok.any(1), steps[ok.int().argmax(1)], torch.zeros_like(start))
        theta = theta + chosen.view(t, 1, 1) * step
    weight = theta[..., :n] @ x
    return weight.to(features.dtype), theta[..., n].to(features.dtype)

"""Per-episode statistics: mean accuracy with a 95% confidence interval, and paired differences.

The few-shot protocol (Ravi & Larochelle; MAML, ProtoNets and MTL official code) reports the mean
accuracy over test episodes with ``1.96 * std / sqrt(n)``, where ``std`` is numpy's default
``np.std`` -- the *population* standard deviation (``ddof=0``). fsbench uses the same formula so
that its numbers are comparable with the published ones, and records it as :data:`CI_FORMULA` in
every run summary. (With 600 episodes the difference to ``ddof=1`` is 0.08% of the interval.)

Every function works in the units of its input: pass fractions and get fractions back, pass
percentages and get percentages back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

#: z-value of a two-sided 95% normal interval.
Z95 = 1.96

#: The interval formula, written into each run's ``summary.json`` as ``ci_formula``.
CI_FORMULA = "1.96*std(ddof=0)/sqrt(n)"


def _as_array(values: Iterable[float], what: str = "values") -> np.ndarray:
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
    arr = arr.reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{what}: need at least one value, got none")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what}: contains a non-finite value (NaN or inf)")
    return arr


def mean_ci95(values: Iterable[float]) -> tuple[float, float]:
    """Mean and 95% CI half-width ``1.96 * std(ddof=0) / sqrt(n)`` of ``values``.

    One value gives a half-width of 0 (there is no spread to estimate). An empty input or a
    non-finite value raises :class:`ValueError`.
    """
    arr = _as_array(values)
    n = arr.size
    return float(arr.mean()), float(Z95 * arr.std(ddof=0) / math.sqrt(n))


@dataclass(frozen=True)
class PairedResult:
    """Mean of the per-episode differences ``b - a`` with its 95% CI half-width.

    ``significant`` is true when the interval ``mean_diff ± ci95`` excludes 0. With fewer than two
    pairs nothing is significant: a single difference says nothing about its own spread.
    """

    mean_diff: float
    ci95: float
    n: int
    significant: bool

    @property
    def low(self) -> float:
        return self.mean_diff - self.ci95

    @property
    def high(self) -> float:
        return self.mean_diff + self.ci95


def paired_difference(a: Iterable[float], b: Iterable[float]) -> PairedResult:
    """Paired comparison of two methods evaluated on the same episodes (``a[i]``, ``b[i]``).

    Returns the mean of ``b - a`` and its 95% CI (same formula as :func:`mean_ci95`). Because
    both methods see identical episodes, the episode-to-episode difficulty cancels and the
    interval is far tighter than the two separate intervals suggest.
    """
    arr_a = _as_array(a, "a")
    arr_b = _as_array(b, "b")
    if arr_a.shape != arr_b.shape:
        raise ValueError(
            f"paired difference needs equally many values, got {arr_a.size} and {arr_b.size}"
        )
    mean, ci = mean_ci95(arr_b - arr_a)
    significant = arr_a.size >= 2 and (mean - ci > 0 or mean + ci < 0)
    return PairedResult(mean_diff=mean, ci95=ci, n=int(arr_a.size), significant=bool(significant))


# ----------------------------------------------------------------------------------------------
# Between training seeds: one seed is one sample
# ----------------------------------------------------------------------------------------------

#: The between-seeds interval formula, recorded beside :data:`CI_FORMULA` in reports.
SEED_CI_FORMULA = "t(0.975, k-1)*std(ddof=1)/sqrt(k) over the k per-seed means"


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t distribution with ``df`` degrees of freedom.

    The CDF is integrated numerically (Simpson's rule on the density) and inverted by
    bisection: accurate to about 1e-6, with no dependency beyond numpy. ``df`` may be
    fractional (Welch's approximation).
    """
    if not 0.5 <= p < 1.0:
        raise ValueError(f"p must be in [0.5, 1), got {p}")
    if not df > 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(t: float) -> float:
        x = np.linspace(0.0, t, 4001)
        f = np.exp(log_norm - (df + 1) / 2 * np.log1p(x * x / df))
        h = t / 4000
        return 0.5 + h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())

    low, high = 0.0, 1.0
    while cdf(high) < p:
        high *= 2.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if cdf(mid) < p else (low, mid)
    return (low + high) / 2


def seed_ci95(values: Iterable[float]) -> tuple[float, float]:
    """Mean and 95% CI half-width over training seeds: ``t(0.975, k-1) * std(ddof=1) / sqrt(k)``.

    Each value is one training run (its accuracy, or its paired difference to another method):
    the interval describes the spread between training runs. Fewer than two values give NaN.
    """
    arr = _as_array(values)
    k = arr.size
    if k < 2:
        return float(arr.mean()), math.nan
    return float(arr.mean()), float(t_quantile(0.975, k - 1) * arr.std(ddof=1) / math.sqrt(k))


def seed_paired_difference(diffs: Iterable[float]) -> PairedResult:
    """Across seeds: the per-seed paired differences (one per training seed) and their t-interval.

    ``n`` counts seeds; significant when the interval excludes 0 (never with fewer than two).
    """
    arr = _as_array(diffs, "per-seed differences")
    mean, ci = seed_ci95(arr)
    significant = not math.isnan(ci) and (mean - ci > 0 or mean + ci < 0)
    return PairedResult(mean_diff=mean, ci95=ci, n=int(arr.size), significant=bool(significant))


def welch_difference(a: Iterable[float], b: Iterable[float]) -> PairedResult:
    """Unpaired difference of means ``mean(b) - mean(a)`` with a Welch 95% t-interval.

    For per-seed accuracies of two sets of training runs that share no seed. ``n`` is the
    smaller sample size; fewer than two values on either side gives a NaN interval.
    """
    arr_a, arr_b = _as_array(a, "a"), _as_array(b, "b")
    diff = float(arr_b.mean() - arr_a.mean())
    if arr_a.size < 2 or arr_b.size < 2:
        return PairedResult(diff, math.nan, int(min(arr_a.size, arr_b.size)), False)
    va, vb = arr_a.var(ddof=1) / arr_a.size, arr_b.var(ddof=1) / arr_b.size
    se = math.sqrt(va + vb)
    if se == 0.0:
        return PairedResult(diff, 0.0, int(min(arr_a.size, arr_b.size)), diff != 0.0)
    df = (va + vb) ** 2 / (va**2 / (arr_a.size - 1) + vb**2 / (arr_b.size - 1))
    ci = float(t_quantile(0.975, df) * se)
    significant = diff - ci > 0 or diff + ci < 0
    return PairedResult(diff, ci, int(min(arr_a.size, arr_b.size)), bool(significant))

"""Per-episode statistics: mean accuracy with a 95% confidence interval, and paired differences.

Every interval is Student's t with n-1 degrees of freedom on the sample standard deviation
(``ddof=1``): ``t(0.975, n-1) * std(ddof=1) / sqrt(n)`` (:data:`CI_FORMULA`, recorded in every
run summary). It is exact at any n under the usual normal approximation of the mean, so it stays
honest for the small numbers of episodes of tests, smoke runs and ``fsbench compare`` on a few
episodes.

The papers print ``1.96 * std / sqrt(n)``: Ravi & Larochelle's and Snell et al.'s code divide by
n-1, the MAML and MTL code use numpy's default ``np.std`` (n). At the protocol's 600 episodes
fsbench's interval is 0.2% wider than ``1.96*std(ddof=1)/sqrt(n)`` and 0.3% wider than
``1.96*std(ddof=0)/sqrt(n)``, so its numbers stay comparable with the published ones. Runs
written before this formula recorded :data:`LEGACY_CI_FORMULA`; :func:`ci95_for_formula`
recomputes either.

A difference whose values have no spread (every paired difference equal, e.g. two runs that agree
on every episode, or one that is better by exactly one query everywhere) has no estimable
interval: it is *not testable*, never "significant".

Every function works in the units of its input: pass fractions and get fractions back, pass
percentages and get percentages back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

#: The interval formula, written into each run's ``summary.json`` as ``ci_formula``.
CI_FORMULA = "t(0.975, n-1)*std(ddof=1)/sqrt(n)"

#: The formula of runs written by fsbench before 0.2 (normal quantile, population std).
LEGACY_CI_FORMULA = "1.96*std(ddof=0)/sqrt(n)"

#: A standard deviation this small relative to the mean is float rounding of equal values.
_NO_SPREAD = 1e-9

#: The formulas :func:`ci95_for_formula` knows.
CI_FORMULAS: tuple[str, ...] = (CI_FORMULA, LEGACY_CI_FORMULA)


def _as_array(values: Iterable[float], what: str = "values") -> np.ndarray:
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
    arr = arr.reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{what}: need at least one value, got none")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what}: contains a non-finite value (NaN or inf)")
    return arr


def mean_ci95(values: Iterable[float]) -> tuple[float, float]:
    """Mean and 95% CI half-width ``t(0.975, n-1) * std(ddof=1) / sqrt(n)`` of ``values``.

    One value has no interval: its half-width is NaN. An empty input or a non-finite value
    raises :class:`ValueError`.
    """
    arr = _as_array(values)
    n = arr.size
    if n < 2:
        return float(arr.mean()), math.nan
    return float(arr.mean()), float(t95(n - 1) * arr.std(ddof=1) / math.sqrt(n))


def ci95_for_formula(values: Iterable[float], formula: str) -> float:
    """The 95% half-width of ``values`` under ``formula`` (one of :data:`CI_FORMULAS`).

    Reading a run recomputes its recorded interval with this; an unknown formula raises
    :class:`ValueError` naming the known ones.
    """
    if formula == CI_FORMULA:
        return mean_ci95(values)[1]
    if formula == LEGACY_CI_FORMULA:
        arr = _as_array(values)
        return float(1.96 * arr.std(ddof=0) / math.sqrt(arr.size))
    raise ValueError(f"unknown CI formula {formula!r}; known: {'; '.join(CI_FORMULAS)}")


@dataclass(frozen=True)
class PairedResult:
    """Mean of the differences ``b - a`` with its 95% CI half-width.

    ``significant`` is true when the interval ``mean_diff ± ci95`` excludes 0. ``testable`` is
    false when the differences have no estimable spread (fewer than two, or all equal): the
    interval is then NaN (fewer than two) or 0 (all equal) and nothing is significant.
    """

    mean_diff: float
    ci95: float
    n: int
    significant: bool
    testable: bool = True

    @property
    def low(self) -> float:
        return self.mean_diff - self.ci95

    @property
    def high(self) -> float:
        return self.mean_diff + self.ci95

    @property
    def verdict(self) -> str:
        """``significant``, ``not significant`` or ``not testable``, for tables and messages."""
        if not self.testable:
            return "not testable"
        return "significant" if self.significant else "not significant"


def _interval(diffs: np.ndarray) -> PairedResult:
    """The t-interval of the mean of ``diffs`` (see :class:`PairedResult`)."""
    mean = float(diffs.mean())
    n = int(diffs.size)
    if n < 2:
        return PairedResult(mean, math.nan, n, False, testable=False)
    sd = float(diffs.std(ddof=1))
    if sd <= _NO_SPREAD * max(1.0, abs(mean)):  # equal values, up to float rounding
        return PairedResult(mean, 0.0, n, False, testable=False)
    ci = float(t95(n - 1) * sd / math.sqrt(n))
    return PairedResult(mean, ci, n, bool(mean - ci > 0 or mean + ci < 0))


def paired_difference(a: Iterable[float], b: Iterable[float]) -> PairedResult:
    """Paired comparison of two methods evaluated on the same episodes (``a[i]``, ``b[i]``).

    The mean of ``b - a`` and its t-interval (:data:`CI_FORMULA` on the differences). Because
    both methods see identical episodes, the episode-to-episode difficulty cancels and the
    interval is far tighter than the two separate intervals suggest.
    """
    arr_a = _as_array(a, "a")
    arr_b = _as_array(b, "b")
    if arr_a.shape != arr_b.shape:
        raise ValueError(
            f"paired difference needs equally many values, got {arr_a.size} and {arr_b.size}"
        )
    return _interval(arr_b - arr_a)


# ----------------------------------------------------------------------------------------------
# Between training seeds: one seed is one sample
# ----------------------------------------------------------------------------------------------

#: The between-seeds interval formula (the same t-interval, over k training seeds).
SEED_CI_FORMULA = "t(0.975, k-1)*std(ddof=1)/sqrt(k) over the k per-seed means"


def t95(df: float) -> float:
    """``t(0.975, df)``: the two-sided 95% quantile of Student's t (cached)."""
    return _t_quantile_cached(0.975, float(df))


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
    return _t_quantile_cached(float(p), float(df))


@lru_cache(maxsize=1024)
def _t_quantile_cached(p: float, df: float) -> float:
    if df > 1e7:  # the normal limit; the integral below would need a finer grid
        return _normal_quantile(p)
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


def _normal_quantile(p: float) -> float:
    low, high = 0.0, 10.0
    for _ in range(80):
        mid = (low + high) / 2
        low, high = (mid, high) if 0.5 * math.erfc(-mid / math.sqrt(2)) < p else (low, mid)
    return (low + high) / 2


def seed_ci95(values: Iterable[float]) -> tuple[float, float]:
    """Mean and 95% CI half-width over training seeds: ``t(0.975, k-1) * std(ddof=1) / sqrt(k)``.

    Each value is one training run (its accuracy, or its paired difference to another method):
    the interval describes the spread between training runs. Fewer than two values give NaN.
    """
    return mean_ci95(values)


def seed_paired_difference(diffs: Iterable[float]) -> PairedResult:
    """Across seeds: the per-seed paired differences (one per training seed) and their t-interval.

    ``n`` counts seeds; significant when the interval excludes 0 (never with fewer than two).
    """
    return _interval(_as_array(diffs, "per-seed differences"))


def welch_difference(a: Iterable[float], b: Iterable[float]) -> PairedResult:
    """Unpaired difference of means ``mean(b) - mean(a)`` with a Welch 95% t-interval.

    For per-seed accuracies of two sets of training runs that share no seed. ``n`` is the
    smaller sample size; fewer than two values on either side gives a NaN interval.
    """
    arr_a, arr_b = _as_array(a, "a"), _as_array(b, "b")
    diff = float(arr_b.mean() - arr_a.mean())
    n = int(min(arr_a.size, arr_b.size))
    if arr_a.size < 2 or arr_b.size < 2:
        return PairedResult(diff, math.nan, n, False, testable=False)
    va, vb = arr_a.var(ddof=1) / arr_a.size, arr_b.var(ddof=1) / arr_b.size
    se = math.sqrt(va + vb)
    if se <= _NO_SPREAD * max(1.0, abs(diff)):  # no spread on either side: nothing to test
        return PairedResult(diff, 0.0, n, False, testable=False)
    df = (va + vb) ** 2 / (va**2 / (arr_a.size - 1) + vb**2 / (arr_b.size - 1))
    ci = float(t_quantile(0.975, df) * se)
    return PairedResult(diff, ci, n, bool(diff - ci > 0 or diff + ci < 0))

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

"""Hand-computed checks of the CI formula and paired differences.

Quantiles are checked against published t tables (e.g. t(0.975, 1) = 12.7062, t(0.975, 4) =
2.7764, t(0.975, 599) = 1.9639); the false-positive rate of the paired test is checked by
simulation under the null at small n.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fsbench.stats import (
    CI_FORMULA,
    LEGACY_CI_FORMULA,
    PairedResult,
    ci95_for_formula,
    mean_ci95,
    paired_difference,
    t95,
    welch_difference,
)

T_975_3 = 3.182446305284263  # t(0.975, 3), from a t table


@pytest.mark.parametrize("df, expected", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622),
                                          (29, 2.0452), (599, 1.9639)])
def test_t_quantiles_match_the_table(df, expected):
    assert t95(df) == pytest.approx(expected, abs=1e-4)


def test_mean_ci95_hand_computed():
    mean, ci = mean_ci95([0.2, 0.4, 0.6, 0.8])
    # std with ddof=1: deviations ±0.1, ±0.3 -> variance (0.01+0.09+0.09+0.01)/3
    assert mean == pytest.approx(0.5)
    assert ci == pytest.approx(T_975_3 * math.sqrt(0.2 / 3) / 2)


def test_mean_ci95_is_student_t_with_sample_std():
    values = np.random.default_rng(0).uniform(0, 100, size=600)
    _, ci = mean_ci95(values)
    assert ci == pytest.approx(t95(599) * np.std(values, ddof=1) / math.sqrt(600))
    assert "ddof=1" in CI_FORMULA and "t(0.975, n-1)" in CI_FORMULA
    # At the protocol's 600 episodes, within 0.3% of the papers' 1.96 * std / sqrt(n).
    assert ci / (1.96 * np.std(values) / math.sqrt(600)) == pytest.approx(1.0, abs=3e-3)


def test_legacy_formula_recomputes_old_runs():
    values = [0.2, 0.4, 0.6, 0.8]
    assert ci95_for_formula(values, LEGACY_CI_FORMULA) == pytest.approx(1.96 * math.sqrt(0.05) / 2)
    assert ci95_for_formula(values, CI_FORMULA) == pytest.approx(mean_ci95(values)[1])
    with pytest.raises(ValueError, match="unknown CI formula"):
        ci95_for_formula(values, "2*std")


def test_mean_ci95_keeps_units():
    mean, ci = mean_ci95([20.0, 40.0, 60.0, 80.0])
    assert mean == pytest.approx(50.0)
    assert ci == pytest.approx(100 * T_975_3 * math.sqrt(0.2 / 3) / 2)


def test_single_value_has_no_interval():
    mean, ci = mean_ci95([0.7])
    assert mean == pytest.approx(0.7) and math.isnan(ci)


@pytest.mark.parametrize("bad", [[], np.array([])])
def test_empty_input_raises(bad):
    with pytest.raises(ValueError, match="at least one"):
        mean_ci95(bad)


def test_non_finite_raises():
    with pytest.raises(ValueError, match="non-finite"):
        mean_ci95([0.1, float("nan")])


def test_accepts_generators_and_arrays():
    assert mean_ci95(x / 10 for x in (2, 4, 6, 8)) == mean_ci95(np.array([0.2, 0.4, 0.6, 0.8]))


def test_paired_difference_hand_computed():
    a = [0.5, 0.5, 0.5, 0.5]
    b = [0.6, 0.8, 0.9, 0.7]  # differences 0.1, 0.3, 0.4, 0.2 -> mean 0.25, var 0.0125
    res = paired_difference(a, b)
    assert isinstance(res, PairedResult)
    assert res.mean_diff == pytest.approx(0.25)
    # sample variance of the differences: (0.0225+0.0025+0.0225+0.0025)/3
    assert res.ci95 == pytest.approx(T_975_3 * math.sqrt(0.05 / 3) / 2)
    assert res.n == 4
    assert res.significant
    assert res.low == pytest.approx(0.25 - res.ci95)
    assert res.high == pytest.approx(0.25 + res.ci95)


def test_paired_difference_direction_is_b_minus_a():
    res = paired_difference([0.9, 0.8, 0.7], [0.7, 0.7, 0.4])
    assert res.mean_diff == pytest.approx(-0.2)


def test_constant_difference_is_not_testable_never_significant():
    res = paired_difference([0.9, 0.8, 0.7], [0.8, 0.7, 0.6])
    assert res.mean_diff == pytest.approx(-0.1)
    assert not res.testable and not res.significant and res.verdict == "not testable"
    welch = welch_difference([0.5, 0.5, 0.5], [0.7, 0.7, 0.7])
    assert not welch.testable and not welch.significant


def test_paired_difference_not_significant_when_ci_spans_zero():
    res = paired_difference([0.5, 0.5, 0.5, 0.5], [0.6, 0.4, 0.7, 0.3])
    assert res.mean_diff == pytest.approx(0.0)
    assert not res.significant


def test_identical_inputs_not_significant():
    res = paired_difference([0.3, 0.6, 0.9], [0.3, 0.6, 0.9])
    assert (res.mean_diff, res.ci95, res.significant) == (0.0, 0.0, False)


def test_single_pair_never_significant():
    res = paired_difference([0.2], [0.9])
    assert res.n == 1 and math.isnan(res.ci95) and not res.significant and not res.testable


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_paired_false_positive_rate_is_nominal_at_small_n(n):
    """Under the null (differences with mean 0), 'significant' about 5% of the time at any n
    (the 1.96/ddof=0 interval gave 40% at n=2, 15% at 5, 9% at 10)."""
    rng = np.random.default_rng(n)
    trials = 4000
    hits = sum(paired_difference(np.zeros(n), rng.normal(size=n)).significant for _ in range(trials))
    assert abs(hits / trials - 0.05) < 0.015


def test_paired_difference_length_mismatch_and_empty():
    with pytest.raises(ValueError, match="equally many"):
        paired_difference([0.1, 0.2], [0.1])
    with pytest.raises(ValueError):
        paired_difference([], [])

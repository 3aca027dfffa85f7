"""Hand-computed checks of the CI formula and paired differences."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fsbench.stats import CI_FORMULA, PairedResult, mean_ci95, paired_difference


def test_mean_ci95_hand_computed():
    mean, ci = mean_ci95([0.2, 0.4, 0.6, 0.8])
    # std with ddof=0: deviations ±0.1, ±0.3 -> variance (0.01+0.09+0.09+0.01)/4 = 0.05
    assert mean == pytest.approx(0.5)
    assert ci == pytest.approx(1.96 * math.sqrt(0.05) / 2)


def test_mean_ci95_uses_population_std_like_numpy_default():
    values = np.random.default_rng(0).uniform(0, 100, size=600)
    _, ci = mean_ci95(values)
    assert ci == pytest.approx(1.96 * np.std(values) / math.sqrt(600))
    assert "ddof=0" in CI_FORMULA


def test_mean_ci95_keeps_units():
    mean, ci = mean_ci95([20.0, 40.0, 60.0, 80.0])
    assert mean == pytest.approx(50.0)
    assert ci == pytest.approx(100 * 1.96 * math.sqrt(0.05) / 2)


def test_single_value_has_zero_ci():
    assert mean_ci95([0.7]) == (pytest.approx(0.7), 0.0)


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
    assert res.ci95 == pytest.approx(1.96 * math.sqrt(0.0125) / 2)
    assert res.n == 4
    assert res.significant
    assert res.low == pytest.approx(0.25 - res.ci95)
    assert res.high == pytest.approx(0.25 + res.ci95)


def test_paired_difference_direction_is_b_minus_a():
    res = paired_difference([0.9, 0.8, 0.7], [0.8, 0.7, 0.6])
    assert res.mean_diff == pytest.approx(-0.1)
    assert res.significant  # constant difference: zero-width CI at -0.1


def test_paired_difference_not_significant_when_ci_spans_zero():
    res = paired_difference([0.5, 0.5, 0.5, 0.5], [0.6, 0.4, 0.7, 0.3])
    assert res.mean_diff == pytest.approx(0.0)
    assert not res.significant


def test_identical_inputs_not_significant():
    res = paired_difference([0.3, 0.6, 0.9], [0.3, 0.6, 0.9])
    assert (res.mean_diff, res.ci95, res.significant) == (0.0, 0.0, False)


def test_single_pair_never_significant():
    res = paired_difference([0.2], [0.9])
    assert res.n == 1 and res.ci95 == 0.0 and not res.significant


def test_paired_difference_length_mismatch_and_empty():
    with pytest.raises(ValueError, match="equally many"):
        paired_difference([0.1, 0.2], [0.1])
    with pytest.raises(ValueError):
        paired_difference([], [])

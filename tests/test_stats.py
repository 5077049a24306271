"""Statistics helpers: Welch contrasts against scipy's tests, bootstrap intervals, t-intervals."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from plasticnet.stats import bootstrap_contrast, contrast, t_interval, t_quantile, welch_contrast, welch_test


def test_t_quantile_is_students_t():
    for df in (1, 2, 5, 29, 30, 31, 60, 10_000):
        assert t_quantile(df) == pytest.approx(sps.t.ppf(0.975, df), abs=1e-3)
    assert math.isnan(t_quantile(0))


def test_t_interval_matches_scipy():
    x = [0.1, 0.4, 0.35, 0.2, 0.6]
    mean, half, n = t_interval(x)
    low, high = sps.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=sps.sem(x))
    assert n == 5 and mean == pytest.approx(np.mean(x))
    assert (mean - half, mean + half) == pytest.approx((low, high), abs=1e-4)
    assert t_interval([math.nan, 2.0])[2] == 1 and math.isnan(t_interval([2.0])[1])


def test_two_group_contrast_is_welchs_t_test():
    a = [0.05, 0.06, 0.052, 0.07]
    b = [0.14, 0.145, 0.13]
    res = welch_contrast([a, b], [1, -1])
    t, p = welch_test(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert p == pytest.approx(ref.pvalue) and t == pytest.approx(ref.statistic)
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert res.estimate == pytest.approx(np.mean(a) - np.mean(b))
    se = math.sqrt(np.var(a, ddof=1) / 4 + np.var(b, ddof=1) / 3)
    assert res.estimate / se == pytest.approx(ref.statistic)
    half = sps.t.ppf(0.975, res.df) * se
    assert (res.low, res.high) == pytest.approx((res.estimate - half, res.estimate + half))
    assert res.high < 0 and res.method == "welch"


def test_one_group_contrast_is_one_sample_t_test():
    x = [0.0015, 0.0016, 0.0013]
    res = welch_contrast([x], [1.0], constant=0.02)
    ref = sps.ttest_1samp(x, 0.02)
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert res.df == pytest.approx(2.0)
    assert res.high < 0


def test_four_term_contrast_satterthwaite_df():
    rng = np.random.default_rng(1)
    groups = [rng.normal(m, s, size=n) for m, s, n in ((1, .1, 3), (2, .3, 4), (0, .2, 3), (0.5, .1, 5))]
    coefs = [1, -1, -1, 1]
    res = welch_contrast(groups, coefs)
    parts = [c * c * np.var(g, ddof=1) / len(g) for c, g in zip(coefs, groups)]
    df = sum(parts) ** 2 / sum(p * p / (len(g) - 1) for p, g in zip(parts, groups))
    assert res.df == pytest.approx(df)
    assert res.estimate == pytest.approx(sum(c * g.mean() for c, g in zip(coefs, groups)))


def test_degenerate_inputs():
    assert math.isnan(welch_contrast([[1.0], [2.0, 3.0]], [1, -1]).low)  # one seed: no interval
    same = welch_contrast([[0.5, 0.5], [0.7, 0.7]], [1, -1])  # no spread: a point interval
    assert same.low == same.high == pytest.approx(-0.2)
    with pytest.raises(ValueError, match="one coefficient per group"):
        welch_contrast([[1.0, 2.0]], [1, -1])
    with pytest.raises(ValueError, match="unknown test 'ttest'.*'welch', 'bootstrap'"):
        contrast("ttest", [[1.0, 2.0]], [1])


def test_bootstrap_interval():
    a = [0.05, 0.06, 0.052, 0.07, 0.055]
    b = [0.14, 0.145, 0.13, 0.15]
    res = bootstrap_contrast([a, b], [1, -1], seed=3)
    again = bootstrap_contrast([a, b], [1, -1], seed=3)
    assert (res.low, res.high) == (again.low, again.high)  # seeded
    assert res.low < res.estimate < res.high < 0
    # the interval lies within the range of the possible resampled contrasts
    assert res.low >= min(a) - max(b) and res.high <= max(a) - min(b)
    assert res.p_value == 0.0 and math.isnan(res.df)
    overlapping = bootstrap_contrast([[0.1, 0.3, 0.2], [0.15, 0.25, 0.2]], [1, -1])
    assert overlapping.low < 0 < overlapping.high and overlapping.p_value > 0.05
    with pytest.raises(ValueError, match="resamples must be >= 100"):
        bootstrap_contrast([a], [1], resamples=10)

"""Statistics over seeds: t-intervals, Welch's t-test and bootstrap intervals of contrasts.

The one home of the statistics helpers (reports, figures and
``plasticnet reproduce`` use them). scipy.stats supplies the t distribution;
it is imported on first use, so importing this module stays cheap.
:func:`t_quantile` / :func:`t_interval` (the reports' bands) use a table of
``t_{0.975}`` (3 decimals) and need no scipy.

A *contrast* is a linear combination of condition means minus a constant,
``C = Σ_i c_i · mean(x_i) − k``: ``a − b`` (two conditions), ``a − 0.5·b``
("a far below b"), ``a − 0.02`` (a threshold) or
``(b₂ − a₂) − (b₁ − a₁)`` (a gap that grows). Two ways to put an interval on it:

- :func:`welch_contrast`: the t-interval with the Welch–Satterthwaite degrees
  of freedom, ``SE² = Σ c_i² s_i² / n_i``, ``df = SE⁴ / Σ (c_i² s_i² / n_i)² / (n_i − 1)``.
  For ``a − b`` this is exactly Welch's unequal-variance t-test
  (``scipy.stats.ttest_ind(a, b, equal_var=False)``), for ``a − k`` the
  one-sample t-test.
- :func:`bootstrap_contrast`: the percentile interval of the contrast over
  resamplings of each condition's seeds (with replacement, independently).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np


def _finite(values) -> np.ndarray:
    return np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)


T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)


def t_quantile(df: int) -> float:
    """``t_{0.975}`` of Student's t with ``df`` degrees of freedom (table, Cornish–Fisher beyond 30)."""
    if df < 1:
        return math.nan
    if df <= len(T975):
        return T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def t_interval(values) -> Tuple[float, float, int]:
    """Mean, half-width of the 95% t-interval, and count of the finite ``values``."""
    x = _finite(values)
    n = len(x)
    if n == 0:
        return math.nan, math.nan, 0
    if n == 1:
        return float(x[0]), math.nan, 1
    return float(x.mean()), t_quantile(n - 1) * float(x.std(ddof=1)) / math.sqrt(n), n


@dataclass
class ContrastResult:
    """A contrast's estimate, its two-sided ``level`` interval and the test of ``C = 0``.

    ``p_value``: two-sided (Welch) or the bootstrap's two-sided share of
    resamples on the other side of zero; ``df``: Welch–Satterthwaite degrees
    of freedom (nan for the bootstrap); ``method``: ``welch`` or ``bootstrap``.
    """

    estimate: float
    low: float
    high: float
    p_value: float
    df: float
    method: str
    level: float = 0.95


def _check_groups(groups: Sequence, coefs: Sequence[float]):
    if len(groups) != len(coefs) or not groups:
        raise ValueError(f"a contrast needs one coefficient per group, got {len(groups)} groups "
                         f"and {len(coefs)} coefficients")
    return [_finite(g) for g in groups]


def welch_contrast(groups: Sequence, coefs: Sequence[float], constant: float = 0.0,
                   level: float = 0.95) -> ContrastResult:
    """Welch t-interval and two-sided test of ``Σ c_i mean(groups[i]) − constant`` (module docstring).

    Every group needs at least 2 finite values (else the result is all nan).
    A contrast with zero standard error gets the point interval ``[C, C]``
    and p = 0 (or 1 if ``C`` = 0).
    """
    from scipy import stats

    xs = _check_groups(groups, coefs)
    if any(len(x) < 2 for x in xs):
        return ContrastResult(math.nan, math.nan, math.nan, math.nan, math.nan, "welch", level)
    est = float(sum(c * x.mean() for c, x in zip(coefs, xs)) - constant)
    parts = [c * c * x.var(ddof=1) / len(x) for c, x in zip(coefs, xs)]
    se2 = float(sum(parts))
    if se2 == 0.0:
        return ContrastResult(est, est, est, 0.0 if est != 0 else 1.0, math.inf, "welch", level)
    df = se2 ** 2 / sum(p * p / (len(x) - 1) for p, x in zip(parts, xs))
    se = math.sqrt(se2)
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    p = float(2 * stats.t.sf(abs(est) / se, df))
    return ContrastResult(est, est - half, est + half, p, float(df), "welch", level)


def welch_test(a, b) -> Tuple[float, float]:
    """Welch's unequal-variance t-test of ``mean(a) = mean(b)``: ``(t, two-sided p)`` (scipy.stats)."""
    from scipy import stats

    res = stats.ttest_ind(_finite(a), _finite(b), equal_var=False)
    return float(res.statistic), float(res.pvalue)


def bootstrap_contrast(groups: Sequence, coefs: Sequence[float], constant: float = 0.0, level: float = 0.95,
                       resamples: int = 10000, seed: Optional[int] = 0) -> ContrastResult:
    """Percentile bootstrap interval of ``Σ c_i mean(groups[i]) − constant``.

    Each group's values are resampled with replacement (``resamples`` times,
    independently per group, generator seeded by ``seed``). Needs at least 2
    finite values per group. ``p_value``: ``min(1, 2 · share of resampled
    contrasts on the far side of 0)``.
    """
    xs = _check_groups(groups, coefs)
    if resamples < 100:
        raise ValueError(f"resamples must be >= 100, got {resamples}")
    if any(len(x) < 2 for x in xs):
        return ContrastResult(math.nan, math.nan, math.nan, math.nan, math.nan, "bootstrap", level)
    rng = np.random.default_rng(seed)
    est = float(sum(c * x.mean() for c, x in zip(coefs, xs)) - constant)
    total = np.full(resamples, -float(constant))
    for c, x in zip(coefs, xs):
        idx = rng.integers(0, len(x), size=(resamples, len(x)))
        total += c * x[idx].mean(axis=1)
    alpha = 1 - level
    low, high = np.quantile(total, [alpha / 2, 1 - alpha / 2])
    far = np.mean(total <= 0) if est > 0 else np.mean(total >= 0)
    return ContrastResult(est, float(low), float(high), float(min(1.0, 2 * far)), math.nan, "bootstrap", level)


METHODS = {"welch": welch_contrast, "bootstrap": bootstrap_contrast}


def contrast(method: str, groups: Sequence, coefs: Sequence[float], constant: float = 0.0,
             level: float = 0.95) -> ContrastResult:
    """The contrast by ``method`` (``welch`` or ``bootstrap``)."""
    if method not in METHODS:
        raise ValueError(f"unknown test {method!r}; allowed: {', '.join(map(repr, METHODS))}")
    return METHODS[method](groups, coefs, constant, level)


__all__ = ["ContrastResult", "METHODS", "bootstrap_contrast", "contrast", "t_interval", "t_quantile",
           "welch_contrast", "welch_test"]

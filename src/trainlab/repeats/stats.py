"""The statistics of groups of runs: mean, standard deviation, a Student-t confidence interval, Welch's
t-test between two groups (or the one-sample test against a number), Hedges' g, and Holm's correction for
many tests at once (trainlab.studies judges claims with them)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    """`count` values as mean ± std, and the 95 % confidence interval [low, high] of their mean."""

    mean: float
    std: float
    count: int
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def metrics(self, name: str) -> dict[str, float]:
        """As a parent run logs them: `<name>.mean`, `.std`, `.count`, `.ci95_low`, `.ci95_high`."""
        values = {"mean": self.mean, "std": self.std, "count": self.count}
        values |= {"ci95_low": self.low, "ci95_high": self.high}
        return {f"{name}.{key}": float(value) for key, value in values.items() if math.isfinite(value)}


def summarize(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """mean x̄ = Σx/n; std s = √(Σ(x − x̄)²/(n − 1)); CI x̄ ± t_{(1+c)/2, n−1} · s/√n (NaN for n = 1)."""
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return Summary(mean, math.nan, n, math.nan, math.nan)
    std = math.sqrt(sum((x - mean) ** 2 for x in values) / (n - 1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return Summary(mean, std, n, mean - half, mean + half)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test (unequal variances) that groups `a` and `b` share a mean:
    t = (ā − b̄)/√(s²ₐ/nₐ + s²_b/n_b), Welch–Satterthwaite degrees of freedom."""
    from scipy import stats

    if len(set(a)) == 1 and len(set(b)) == 1:  # no spread on either side: the means are known exactly
        return 0.0 if a[0] != b[0] else 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def one_sample_p(values: Sequence[float], threshold: float) -> float:
    """Two-sided p-value of the one-sample t-test that the values' mean is `threshold`: below 0.05
    exactly when the 95 % confidence interval of `summarize` leaves the threshold out."""
    from scipy import stats

    if len(set(values)) == 1:  # no spread: the mean is the value, known exactly
        return 0.0 if values[0] != threshold else 1.0
    with warnings.catch_warnings():  # nearly equal values: scipy warns, and its p is still the right one
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_1samp(values, threshold).pvalue)


def hedges_g(a: Sequence[float], b: Sequence[float] | float) -> float:
    """Effect size: the difference of means in pooled standard deviations, corrected for small samples,
    g = J · (ā − b̄)/s_p, J = 1 − 3/(4·df − 1); against a number (one sample), J · (ā − b)/sₐ."""
    constant = len(set(a)) == 1 and (isinstance(b, int | float) or len(set(b)) == 1)
    if isinstance(b, int | float):
        first, df = summarize(a), len(a) - 1
        spread, difference = first.std, first.mean - b
    else:
        first, second = summarize(a), summarize(b)
        df = first.count + second.count - 2
        pooled = ((first.count - 1) * first.std**2 + (second.count - 1) * second.std**2) / max(df, 1)
        spread, difference = math.sqrt(pooled), first.mean - second.mean
    if df < 1 or math.isnan(spread):
        return math.nan
    if constant:  # no spread (a float sum may leave a trace of one): any difference is infinitely large
        return math.copysign(math.inf, difference) if abs(difference) > 1e-12 else 0.0
    return (1 - 3 / (4 * df - 1)) * difference / spread


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the given order: the i-th smallest of m is multiplied by
    m − i + 1 and the results kept non-decreasing, so `adjusted < α` controls the family-wise error at α
    over all the claims tested together."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted

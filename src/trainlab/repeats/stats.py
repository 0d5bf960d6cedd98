"""The statistics of a group of runs: mean, standard deviation, a Student-t confidence interval, and
Welch's t-test between two groups."""

from __future__ import annotations

import math
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

    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)

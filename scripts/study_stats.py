"""Statistics of the evidence page (scripts/study.py, docs/results.md).

Per arm: mean ± sample std over seeds.  Per comparison "A > B": the paired
differences d_s = A_s − B_s over the seeds both arms finished, their mean and
the two-sided 95 % Student-t confidence interval
mean ± t_{0.975, n−1} · sd / √n (paired t interval; e.g. Wasserman 2004,
"All of Statistics", §10.1).  The verdict reads the interval against the
paper's direction: "holds" (interval above 0), "reversed" (below 0), "not
resolved" (contains 0, or fewer than two pairs).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

# t_{0.975, df} for df = 1..30: used when scipy is not installed.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
        2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
        2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)

HOLDS, REVERSED, NOT_RESOLVED = "holds", "reversed", "not resolved"


def t_quantile(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"degrees of freedom {df}; allowed: an integer >= 1")
    try:
        from scipy import stats
    except ImportError:
        return T975[df - 1] if df <= len(T975) else 1.96
    return float(stats.t.ppf(0.975, df))


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    if not values:
        raise ValueError("mean_std of no values")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


@dataclass(frozen=True)
class Paired:
    n: int
    mean: float
    low: float   # 95 % CI; nan with fewer than two pairs
    high: float

    @property
    def verdict(self) -> str:
        return verdict(self.low, self.high)


def paired_ci(a: list[float], b: list[float]) -> Paired:
    """Mean of a_i − b_i and its 95 % t interval (pairs in the same order)."""
    if len(a) != len(b):
        raise ValueError(f"paired_ci: {len(a)} vs {len(b)} values; the arms must be paired")
    d = [x - y for x, y in zip(a, b)]
    if not d:
        raise ValueError("paired_ci of no pairs")
    m = statistics.fmean(d)
    if len(d) < 2:
        return Paired(1, m, math.nan, math.nan)
    half = t_quantile(len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d))
    return Paired(len(d), m, m - half, m + half)


def verdict(low: float, high: float) -> str:
    """Interval of (paper's better arm − other arm): above 0 holds, below 0 reversed."""
    if math.isnan(low) or math.isnan(high):
        return NOT_RESOLVED
    if low > 0:
        return HOLDS
    if high < 0:
        return REVERSED
    return NOT_RESOLVED

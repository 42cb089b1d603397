"""Paired comparisons over seeds: is one setting better than another, or is it noise?

Runs of two settings with the same seed share their initial weights and data order, so their
difference is measured per seed and a paired t-test (``scipy.stats.ttest_rel``) asks whether the
mean difference is zero; the 95 % confidence interval of the mean difference comes from the same
t distribution. A difference counts as established only when the test rejects at p < 0.05 with
at least :data:`MIN_SEEDS` pairs: with fewer the test has little power and one lucky seed moves
it.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from scipy import stats

ALPHA = 0.05
MIN_SEEDS = 5


@dataclass(frozen=True)
class PairedTest:
    n: int  # seeds present in both
    mean_diff: float  # a - b
    ci: tuple[float, float] | None  # 95 % interval of the mean difference; None: one pair
    p: float | None  # two-sided paired t-test; None: one pair, or every difference equal

    @property
    def established(self) -> bool:
        return self.p is not None and self.p < ALPHA and self.n >= MIN_SEEDS

    def describe(self) -> str:
        text = f"{self.mean_diff:+.2f}"
        if self.ci is None:
            return text + " (one seed: no test)"
        text += f" [{self.ci[0]:+.2f}, {self.ci[1]:+.2f}]"
        if self.p is None:
            return text + " (every seed the same difference: no test)"
        text += ", p < 0.001" if self.p < 0.001 else f", p = {self.p:.3f}"
        if self.established:
            return text + ", established"
        if self.n < MIN_SEEDS:
            return text + f" (not established: {self.n} seeds, fewer than {MIN_SEEDS})"
        return text + " (not established)"


def paired_test(a: list[float], b: list[float]) -> PairedTest:
    """``a`` against ``b``, the i-th of each from the same seed."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired_test needs two lists of one length, got {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b)]
    mean = statistics.fmean(diffs)
    n = len(diffs)
    if n == 1:
        return PairedTest(1, mean, None, None)
    sd = statistics.stdev(diffs)
    if sd == 0:
        return PairedTest(n, mean, (mean, mean), None)
    half = stats.t.ppf(1 - ALPHA / 2, n - 1) * sd / math.sqrt(n)
    p = float(stats.ttest_rel(a, b).pvalue)
    return PairedTest(n, mean, (mean - half, mean + half), p)

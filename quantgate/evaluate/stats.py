"""Statistics for comparing a candidate variant against its baseline on the same cases.

Everything here is paired: both variants answer the same golden cases, so differences are judged
on discordant pairs, not on two independent samples (which would waste most of the information
and widen every interval). Choices, each the standard one for small samples:

- a pass rate: Wilson score interval (good coverage near 0 and 1, unlike the Wald interval);
- the change in pass rate: Newcombe's hybrid score interval for paired proportions (method 10,
  Stat. Med. 1998), built from the two Wilson intervals and the continuity-corrected phi
  correlation of the pairs;
- whether flips are one-sided: McNemar's exact test (a two-sided binomial test on the discordant
  pairs);
- a paired shift in a continuous quantity (length in tokens): Wilcoxon signed-rank, and a
  percentile-bootstrap interval for the ratio of means;
- means of per-token metrics (KL divergence): mean with its standard error and tail percentiles.

scipy supplies the distributions; these functions only arrange the counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

__all__ = [
    "Interval",
    "PairedCounts",
    "bootstrap_ratio_of_means",
    "mcnemar_exact",
    "mean_se",
    "paired_counts",
    "paired_difference",
    "percentiles",
    "wilcoxon_paired",
    "wilson",
]


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    confidence: float = 0.95

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class PairedCounts:
    """2x2 table of paired outcomes: ``both`` pass, ``base_only`` (regressions), ``cand_only``
    (improvements), ``neither``."""

    both: int
    base_only: int
    cand_only: int
    neither: int

    @property
    def n(self) -> int:
        return self.both + self.base_only + self.cand_only + self.neither


def _z(confidence: float) -> float:
    return float(sps.norm.ppf(0.5 + confidence / 2))


def wilson(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval for a binomial proportion; (0, 0, 1) when n is 0."""
    if n == 0:
        return Interval(0.0, 0.0, 1.0, confidence)
    z = _z(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), confidence)


def paired_counts(base: Sequence[bool], cand: Sequence[bool]) -> PairedCounts:
    if len(base) != len(cand):
        raise ValueError(f"paired outcomes differ in length: {len(base)} vs {len(cand)}")
    both = sum(1 for b, c in zip(base, cand) if b and c)
    base_only = sum(1 for b, c in zip(base, cand) if b and not c)
    cand_only = sum(1 for b, c in zip(base, cand) if c and not b)
    return PairedCounts(both, base_only, cand_only, len(base) - both - base_only - cand_only)


def paired_difference(counts: PairedCounts, confidence: float = 0.95) -> Interval:
    """Interval for (candidate pass rate - baseline pass rate), Newcombe's method 10."""
    n = counts.n
    if n == 0:
        return Interval(0.0, -1.0, 1.0, confidence)
    a, b, c, d = counts.both, counts.base_only, counts.cand_only, counts.neither
    p1, p2 = (a + c) / n, (a + b) / n  # candidate, baseline
    w1, w2 = wilson(a + c, n, confidence), wilson(a + b, n, confidence)
    denom = (a + b) * (c + d) * (a + c) * (b + d)
    # Newcombe's phi carries a continuity correction: a positive association is shrunk by n/2 (to
    # zero below it), which widens the interval slightly where the plain phi would overstate how
    # much the pairs agree; a negative one is used as it is.
    cross = a * d - b * c
    cross = cross - n / 2 if cross > n / 2 else min(cross, 0)
    phi = cross / math.sqrt(denom) if denom else 0.0
    theta = p1 - p2
    delta = math.sqrt(max(0.0, (p1 - w1.low) ** 2 - 2 * phi * (p1 - w1.low) * (w2.high - p2) + (w2.high - p2) ** 2))
    eps = math.sqrt(max(0.0, (w1.high - p1) ** 2 - 2 * phi * (w1.high - p1) * (p2 - w2.low) + (p2 - w2.low) ** 2))
    return Interval(theta, max(-1.0, theta - delta), min(1.0, theta + eps), confidence)


def mcnemar_exact(base_only: int, cand_only: int) -> float:
    """Two-sided exact McNemar p-value on the discordant pairs (1.0 when there are none)."""
    k = base_only + cand_only
    if k == 0:
        return 1.0
    return float(sps.binomtest(base_only, k, 0.5, alternative="two-sided").pvalue)


def mean_se(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and its standard error (sample standard deviation / sqrt(n))."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return 0.0, 0.0
    if arr.size == 1:
        return float(arr[0]), 0.0
    return float(arr.mean()), float(arr.std(ddof=1) / math.sqrt(arr.size))


def percentiles(values: Sequence[float] | np.ndarray, qs: Sequence[float] = (50, 90, 95, 99)) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {f"p{q:g}": 0.0 for q in qs}
    return {f"p{q:g}": float(np.percentile(arr, q)) for q in qs}


def wilcoxon_paired(base: Sequence[float], cand: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value for a paired shift; 1.0 when nothing differs."""
    diffs = np.asarray(cand, dtype=np.float64) - np.asarray(base, dtype=np.float64)
    if not np.any(diffs):
        return 1.0
    return float(sps.wilcoxon(diffs, zero_method="wilcox").pvalue)


def bootstrap_ratio_of_means(
    base: Sequence[float], cand: Sequence[float], confidence: float = 0.95,
    n_boot: int = 2000, seed: int = 0,
) -> Interval:
    """mean(cand) / mean(base) with a paired percentile-bootstrap interval."""
    b = np.asarray(base, dtype=np.float64)
    c = np.asarray(cand, dtype=np.float64)
    if b.size == 0 or b.sum() == 0:
        return Interval(float("nan"), float("nan"), float("nan"), confidence)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, b.size, size=(n_boot, b.size))
    bs = b[idx].mean(axis=1)
    ratios = np.where(bs > 0, c[idx].mean(axis=1) / np.where(bs > 0, bs, 1), np.nan)
    alpha = (1 - confidence) / 2
    low, high = np.nanpercentile(ratios, [100 * alpha, 100 * (1 - alpha)])
    return Interval(float(c.mean() / b.mean()), float(low), float(high), confidence)

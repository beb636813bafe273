from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from quantgate.evaluate.stats import (
    PairedCounts,
    bootstrap_ratio_of_means,
    mcnemar_exact,
    mean_se,
    paired_counts,
    paired_difference,
    percentiles,
    wilcoxon_paired,
    wilson,
)


def test_wilson_known_values() -> None:
    # 8/10 at 95%: (0.4902, 0.9433), the textbook value
    w = wilson(8, 10)
    assert (w.low, w.high) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson(0, 10).low == 0.0 and wilson(10, 10).high == pytest.approx(1.0)
    # agrees with scipy's implementation
    ci = sps.binomtest(37, 120).proportion_ci(0.95, method="wilson")
    assert (wilson(37, 120).low, wilson(37, 120).high) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_mcnemar_exact_known_values() -> None:
    # b=1, c=9: 2 * P(X <= 1 | n=10, p=.5) = 2 * 11/1024
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar_exact(9, 1) == pytest.approx(22 / 1024)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == pytest.approx(1.0)


def test_paired_counts_and_difference() -> None:
    base = [True] * 80 + [True] * 10 + [False] * 2 + [False] * 8
    cand = [True] * 80 + [False] * 10 + [True] * 2 + [False] * 8
    counts = paired_counts(base, cand)
    assert counts == PairedCounts(80, 10, 2, 8)
    interval = paired_difference(counts)
    assert interval.estimate == pytest.approx(-0.08)
    assert interval.low < -0.08 < interval.high < 0  # a clear regression excludes zero
    with pytest.raises(ValueError):
        paired_counts([True], [True, False])


def test_paired_difference_matches_a_published_value() -> None:
    # Cavo et al. (2012), complete response before/after consolidation, as worked in Fagerland,
    # Lydersen & Laake, "Statistical Analysis of Contingency Tables" (2017), ch. 8: table
    # [[59, 6], [16, 80]], Newcombe square-and-add interval -0.0621 (95% CI -0.1186 to -0.0046)
    # (also the expected output in the R package contingencytables' tests). Rows are the
    # candidate's outcome, columns the baseline's.
    interval = paired_difference(PairedCounts(both=59, base_only=16, cand_only=6, neither=80))
    assert interval.estimate == pytest.approx(-0.0621, abs=5e-5)
    assert interval.low == pytest.approx(-0.1186, abs=5e-5)
    assert interval.high == pytest.approx(-0.0046, abs=5e-5)


def test_paired_difference_identical_outcomes_is_narrow_and_contains_zero() -> None:
    interval = paired_difference(PairedCounts(95, 0, 0, 5))
    assert interval.estimate == 0.0
    assert interval.low <= 0.0 <= interval.high
    assert interval.high - interval.low < 0.08


def test_paired_difference_coverage_is_near_nominal() -> None:
    rng = np.random.default_rng(1)
    n, sims, hits = 150, 1500, 0
    # true rates: baseline 0.9, candidate 0.85, correlated through a shared latent draw
    true = -0.05
    for _ in range(sims):
        u = rng.random(n)
        noise = rng.random(n)
        base = u < 0.9
        cand = np.where(noise < 0.7, u < 0.85, rng.random(n) < 0.85)
        hits += paired_difference(paired_counts(base.tolist(), cand.tolist())).contains(true)
    assert 0.92 <= hits / sims <= 0.98


def test_mean_se_and_percentiles() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    mean, se = mean_se(values)
    assert mean == 2.5 and se == pytest.approx(np.std(values, ddof=1) / 2)
    assert mean_se([]) == (0.0, 0.0) and mean_se([3.0]) == (3.0, 0.0)
    p = percentiles(list(range(101)))
    assert p == {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0}


def test_wilcoxon_matches_scipy_and_handles_no_change() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(10, 40, 60).astype(float)
    cand = base + rng.normal(3, 2, 60)
    assert wilcoxon_paired(base, cand) == pytest.approx(sps.wilcoxon(cand - base).pvalue)
    assert wilcoxon_paired([1, 2], [1, 2]) == 1.0


def test_bootstrap_ratio() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(20, 40, 200).astype(float)
    ratio = bootstrap_ratio_of_means(base, base * 1.3)
    assert ratio.estimate == pytest.approx(1.3)
    assert ratio.low == pytest.approx(1.3) and ratio.high == pytest.approx(1.3)
    noisy = bootstrap_ratio_of_means(base, base + rng.normal(0, 5, 200))
    assert noisy.low < noisy.estimate < noisy.high

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from quantgate.evaluate.token_metrics import first_divergence, position_metrics, summarise


def test_identical_distributions_have_zero_distance() -> None:
    lp = torch.randn(5, 11).log_softmax(-1)
    m = position_metrics(lp, lp.clone(), [1, 2, 3, 4, 5])
    assert np.allclose(m.kl, 0) and m.top1_agree.all() and np.allclose(m.dp, 0)
    report = summarise([m], [None])
    assert report.kl_mean == pytest.approx(0, abs=1e-12) and report.top1_agreement == 1.0
    assert report.ppl_ratio == pytest.approx(1.0) and report.greedy_identical == 1.0


def test_kl_matches_scipy_entropy() -> None:
    from scipy.stats import entropy

    torch.manual_seed(0)
    base = torch.randn(3, 7).log_softmax(-1)
    cand = torch.randn(3, 7).log_softmax(-1)
    m = position_metrics(base, cand, [0, 1, 2])
    expected = [entropy(base[i].exp().numpy(), cand[i].exp().numpy()) for i in range(3)]
    assert m.kl == pytest.approx(expected, rel=1e-5)
    assert m.dp == pytest.approx([(cand[i, i].exp() - base[i, i].exp()).item() for i in range(3)], abs=1e-6)
    report = summarise([m], [2])
    assert report.kl_mean == pytest.approx(np.mean(expected))
    assert report.kl_se == pytest.approx(np.std(expected, ddof=1) / math.sqrt(3))
    assert report.ppl_base == pytest.approx(math.exp(-np.mean([base[i, i].item() for i in range(3)])), rel=1e-6)
    assert report.first_divergence_median == 2.0 and report.greedy_identical == 0.0


def test_first_divergence() -> None:
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert first_divergence([1, 2], [1, 2, 3]) == 2


def test_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        position_metrics(torch.zeros(2, 3), torch.zeros(3, 3), [0, 1])

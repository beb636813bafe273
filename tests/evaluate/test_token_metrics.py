from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from quantgate.evaluate.token_metrics import (
    divergence_at,
    first_divergence,
    position_metrics,
    summarise,
    weakest_choice,
)


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


def _logprobs(rows: list[list[float]]) -> torch.Tensor:
    return torch.log(torch.tensor(rows, dtype=torch.float32))


def test_divergence_margins_at_the_first_differing_token() -> None:
    # Position 1 is where the answers part: the baseline preferred token 2 over token 0 by
    # log(0.48/0.47) nats, a near tie; the candidate preferred token 0 by log(0.9/0.05).
    base = _logprobs([[0.1, 0.8, 0.1], [0.47, 0.05, 0.48], [0.2, 0.2, 0.6]])
    cand = _logprobs([[0.1, 0.8, 0.1], [0.9, 0.05, 0.05], [0.3, 0.3, 0.4]])
    d = divergence_at(base, cand, [1, 2, 2], [1, 0, 2])
    assert d is not None and d.position == 1 and (d.baseline_token, d.candidate_token) == (2, 0)
    assert d.baseline_margin == pytest.approx(math.log(0.48 / 0.47), abs=1e-6)
    assert d.candidate_margin == pytest.approx(math.log(0.9 / 0.05), abs=1e-6)
    assert d.near_tie
    firm = _logprobs([[0.1, 0.8, 0.1], [0.02, 0.03, 0.95], [0.2, 0.2, 0.6]])
    confident = divergence_at(firm, cand, [1, 2, 2], [1, 0, 2])
    assert confident is not None and confident.baseline_margin == pytest.approx(math.log(0.95 / 0.02), abs=1e-6)
    assert not confident.near_tie


def test_divergence_where_one_answer_ends() -> None:
    base = _logprobs([[0.1, 0.8, 0.1], [0.6, 0.1, 0.3]])
    cand = _logprobs([[0.1, 0.8, 0.1], [0.2, 0.1, 0.7]])
    assert divergence_at(base, cand, [1, 0], [1, 0]) is None
    ended = divergence_at(base, cand, [1, 0], [1], end_id=2)  # the candidate stopped after one token
    assert ended is not None and (ended.position, ended.candidate_token) == (1, 2)
    assert ended.baseline_margin == pytest.approx(math.log(0.6 / 0.3), abs=1e-6) and not ended.near_tie
    unknown = divergence_at(base, cand, [1, 0], [1])  # no end token known: no margins
    assert unknown is not None and unknown.candidate_token is None and unknown.baseline_margin is None
    longer = divergence_at(base, cand, [1, 0], [1, 0, 1], end_id=2)  # the baseline ended: not scored there
    assert longer is not None and longer.position == 2 and longer.baseline_margin is None and not longer.near_tie


def test_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        position_metrics(torch.zeros(2, 3), torch.zeros(3, 3), [0, 1])


def test_summary_statistics_on_known_values() -> None:
    from quantgate.evaluate.token_metrics import PositionMetrics

    def case(kl: list[float], agree: list[bool], dp: list[float], nb: list[float], nc: list[float]) -> PositionMetrics:
        return PositionMetrics(np.array(kl), np.array(agree), np.array(dp), np.array(nb), np.array(nc))

    # 10 positions over two cases: KL 0.0 .. 0.9, three top-1 disagreements
    a = case([0.0, 0.1, 0.2, 0.3], [True, False, True, True], [0.1, -0.1, 0.2, -0.2], [1.0, 1.0, 1.0, 1.0],
             [1.0, 1.5, 1.0, 1.0])
    b = case([0.4, 0.5, 0.6, 0.7, 0.8, 0.9], [True, True, False, True, False, True], [0.0, 0.0, 0.3, 0.0, -0.3, 0.0],
             [2.0] * 6, [2.0, 2.0, 2.5, 2.0, 2.5, 2.0])
    r = summarise([a, b], [None, 3, None, 1])
    assert r.positions == 10
    assert r.kl_mean == pytest.approx(0.45) and r.kl_max == pytest.approx(0.9)
    assert r.kl_p90 == pytest.approx(0.81) and r.kl_p99 == pytest.approx(0.891)  # linear interpolation
    assert r.top1_agreement == pytest.approx(0.7)
    assert r.top1_se == pytest.approx(math.sqrt(0.7 * 0.3 * 10 / 9 / 10))  # sample SD / sqrt(n)
    assert r.dp_mean == pytest.approx(0.0) and r.dp_rms == pytest.approx(math.sqrt(0.28 / 10))
    assert r.ppl_base == pytest.approx(math.exp(1.6)) and r.ppl_cand == pytest.approx(math.exp(1.75))
    assert r.ppl_ratio == pytest.approx(math.exp(0.15))
    assert r.greedy_identical == 0.5 and r.first_divergence_median == 2.0
    assert sum(r.kl_histogram["counts"]) == 10


def test_weakest_choice_is_the_smallest_margin_for_the_own_token() -> None:
    lp = _logprobs([[0.1, 0.8, 0.1], [0.49, 0.02, 0.49], [0.3, 0.1, 0.6]])
    pos, margin, runner_up = weakest_choice(lp, [1, 0, 2]) or (None, None, None)
    assert (pos, runner_up) == (1, 2) and margin == pytest.approx(0.0, abs=1e-6)
    pos, margin, runner_up = weakest_choice(lp, [1, 2, 2]) or (None, None, None)
    assert (pos, runner_up) == (1, 0) and margin == pytest.approx(0.0, abs=1e-6)
    assert weakest_choice(lp[:2], [1, 1]) == (1, pytest.approx(math.log(0.02 / 0.49)), 0)
    assert weakest_choice(lp, []) is None

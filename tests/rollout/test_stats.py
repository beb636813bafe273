"""The evidence primitives: validity under the null (simulated), power under alternatives, bounds."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from quantgate.rollout.stats import BelowFloor, MeanSequence, RatioEvidence, SplitEvidence, ratio_grid


def test_grid_holds_margin_and_its_inverse() -> None:
    g = ratio_grid(1.5)
    assert any(math.isclose(x, 1.5) for x in g) and any(math.isclose(x, 1 / 1.5) for x in g)
    assert g.min() <= 1 / 16 * 1.01 and g.max() >= 16 / 1.01


def _simulate_events(rng: random.Random, ev: RatioEvidence, p_base: float, p_can: float, n: int,
                     weights: tuple[float, ...]) -> None:
    """``n`` requests split over ``weights`` in equal phases; only the bad events reach the evidence."""
    gen = np.random.default_rng(rng.randrange(2**32))
    for rho in weights:
        m = n // len(weights)
        canary = gen.random(m) < rho
        bad = gen.random(m) < np.where(canary, p_can, p_base)
        ev.observe(True, rho, int((bad & canary).sum()))
        ev.observe(False, rho, int((bad & ~canary).sum()))


def test_ratio_evidence_rarely_crosses_under_the_null_with_moving_weights() -> None:
    # Looking after every event: the e-process only moves on events, so its running maximum over
    # the events in order is what continuous monitoring sees.
    gen = np.random.default_rng(1)
    crossed, runs = 0, 300
    weights = (0.05, 0.1, 0.25, 0.5)
    for _ in range(runs):
        ev = RatioEvidence(1.5)
        for rho in weights:
            canary = gen.random(1500) < rho
            bad = gen.random(1500) < np.where(canary, 0.075, 0.05)  # exactly at the margin
            for is_canary in canary[bad]:
                ev.observe(bool(is_canary), rho)
                if ev.log_e_above(1.5) >= math.log(20):
                    crossed += 1
                    break
            else:
                continue
            break
    assert crossed / runs <= 0.05 + 0.03  # alpha 0.05 plus simulation noise


def test_ratio_evidence_finds_a_tripled_rate_and_bounds_cover_it() -> None:
    rng = random.Random(2)
    ev = RatioEvidence(1.5)
    _simulate_events(rng, ev, 0.05, 0.15, 8000, (0.2,))
    assert ev.log_e_above(1.5) >= math.log(20)
    lower, upper = ev.bounds(0.05)
    assert 1.5 < lower <= 3.0 <= upper
    assert ev.log_e_below(1.5) < 0


def test_ratio_evidence_shows_an_equal_canary_within_margin() -> None:
    rng = random.Random(3)
    ev = RatioEvidence(1.5)
    _simulate_events(rng, ev, 0.1, 0.1, 20000, (0.5,))
    assert ev.log_e_below(1.5) >= math.log(20)
    assert ev.bounds(0.05)[1] <= 1.5
    assert ev.estimate() is not None and 0.8 < ev.estimate() < 1.25


def test_more_canary_failures_never_lower_the_evidence() -> None:
    a, b = RatioEvidence(1.5), RatioEvidence(1.5)
    for ev in (a, b):
        ev.observe(False, 0.1, 30)
        ev.observe(True, 0.1, 5)
    b.observe(True, 0.1)
    assert b.log_e_above(1.5) > a.log_e_above(1.5)


def test_full_weight_events_carry_no_information() -> None:
    ev = RatioEvidence(1.5)
    ev.observe(True, 1.0, 50)
    ev.observe(False, 0.0, 50)
    assert ev.events == (0, 0) and ev.log_e_above(1.5) == 0.0 and ev.estimate() is None


def test_state_round_trip() -> None:
    ev = RatioEvidence(1.5)
    ev.observe(True, 0.05, 3)
    ev.observe(False, 0.25, 7)
    again = RatioEvidence(1.5)
    again.load(ev.state())
    assert again.log_e_above(1.5) == ev.log_e_above(1.5)


def test_grid_rejects_an_off_grid_bound() -> None:
    with pytest.raises(ValueError, match="not on the grid"):
        RatioEvidence(1.5).log_e_above(1.234)


def test_below_floor_passes_a_clean_arm_and_not_a_bad_one() -> None:
    clean, bad = BelowFloor(0.01), BelowFloor(0.01)
    for i in range(3000):
        clean.observe(False)
        bad.observe(i % 50 == 0)  # 2%
    assert clean.log_e() >= math.log(160)
    assert bad.log_e() < 0


def test_mean_sequence_covers_the_mean_under_continuous_looks() -> None:
    rng = random.Random(4)
    missed = 0
    for _ in range(150):
        s = MeanSequence(tuned_n=500)
        for _ in range(1500):
            s.observe(rng.expovariate(1.0))
            if s.n > 30:
                lo, hi = s.interval(0.05)
                if not lo <= 1.0 <= hi:
                    missed += 1
                    break
    assert missed / 150 <= 0.08


def test_split_evidence_catches_a_skewed_split_not_a_fair_one() -> None:
    rng = random.Random(5)
    fair, skew = SplitEvidence(), SplitEvidence()
    for _ in range(5000):
        fair.observe(rng.random() < 0.1, 0.1)
        skew.observe(rng.random() < 0.13, 0.1)
    assert fair.log_e() < math.log(1000)
    assert skew.log_e() >= math.log(1000)
    assert 450 < fair.expected_canary() + 1 and skew.counts[1] > 550

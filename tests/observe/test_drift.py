"""Drift monitor: calibration, detection of a 30% prompt-length shift, quiet on unshifted traffic."""

from __future__ import annotations

import numpy as np
import pytest

from quantgate.observe.drift import DriftAlert, DriftMonitor, drift_statistics


def _traffic(gen: np.random.Generator, n: int, prompt_scale: float = 1.0) -> list[dict[str, float]]:
    return [{"prompt_tokens": round(prompt_scale * gen.lognormal(5.0, 0.6)), "turns": 1 + gen.poisson(1.5),
             "tools_offered": int(gen.integers(0, 6)), "response_tokens": round(gen.lognormal(4.0, 0.5))}
            for _ in range(n)]


def _calibrated(gen: np.random.Generator, **kw: object) -> DriftMonitor:
    m = DriftMonitor(reference_size=2000, **kw)
    for x in _traffic(gen, 2000):
        assert m.observe(x) == []
    assert m.calibrated
    return m


def test_longer_prompts_are_flagged_within_500_requests() -> None:
    alerts: list[DriftAlert] = []
    m = _calibrated(np.random.default_rng(0), on_alert=alerts.append)
    gen = np.random.default_rng(1)
    hit = next(i for i, x in enumerate(_traffic(gen, 600, 1.3)) if m.observe(x))
    assert hit < 500
    assert alerts and alerts[0].feature == "prompt_tokens" and alerts[0].value > alerts[0].threshold
    assert m.describe()["drifting"] == ["prompt_tokens"]


def test_unshifted_traffic_stays_quiet() -> None:
    gen = np.random.default_rng(2)
    m = _calibrated(gen)
    assert not any(m.observe(x) for x in _traffic(gen, 3000))
    assert set(m.last) == {"prompt_tokens", "turns", "tools_offered", "response_tokens"}


def test_features_no_request_carries_are_not_monitored() -> None:
    m = _calibrated(np.random.default_rng(3))
    assert "retrieval_depth" not in m.thresholds() and "tools_called" not in m.thresholds()


def test_identical_distributions_score_zero_and_shifts_score_more() -> None:
    ref = np.array([0.25, 0.25, 0.25, 0.25])
    centers = np.array([1.0, 2.0, 3.0, 4.0])
    same = drift_statistics(ref, ref, centers, 1.0)[0]
    moved = drift_statistics(ref, np.array([0.0, 0.25, 0.25, 0.5]), centers, 1.0)[0]
    assert np.allclose(same, 0.0, atol=1e-9)
    assert (moved > same).all()
    assert moved[2] == pytest.approx(0.75)  # a quarter of the mass moved three bins: W1 = 0.25 * 3


def test_window_larger_than_reference_is_refused() -> None:
    with pytest.raises(ValueError, match="window"):
        DriftMonitor(reference_size=100, window=500)

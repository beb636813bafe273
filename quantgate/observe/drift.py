"""Traffic drift: per-request features in a sliding window against a reference window.

Features (``FEATURES``): prompt tokens, turns, tools offered, tools called, response tokens, and
retrieval depth when the request's metadata carries it. The first ``reference_size`` requests are
the reference; each feature's values are cut into up to ``bins`` quantile bins of the reference, and
every ``check_every`` requests the last ``window`` requests are compared with it by three
statistics on those bins: PSI, Jensen-Shannon distance (base 2) and the Wasserstein-1 distance
between the binned distributions, normalised by the reference's standard deviation.

Thresholds are calibrated, not fixed: for each feature and statistic, the null distribution of
"a window of this size against a reference of this size, both from the same traffic" is simulated
(multinomial draws of both from the reference's own bin frequencies) and the threshold is its ``1 - alpha`` quantile, raised to the
mean + 3 standard deviations over overlapping chunks of the reference itself (NannyML's rule), so
autocorrelation in real traffic does not make it trigger-happy. A feature drifts when a statistic
exceeds its threshold on ``consecutive`` checks in a row (3: one check over is mostly noise at
these quantiles, three in a row 100 requests apart is not). Trade-off: binning loses resolution inside a bin
(a shift smaller than a bin's width shows up late), in exchange for O(bins) checks and a null
distribution that is cheap to simulate.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["FEATURES", "DriftAlert", "DriftMonitor", "drift_statistics"]

FEATURES = ("prompt_tokens", "turns", "tools_offered", "tools_called", "response_tokens", "retrieval_depth")
STATISTICS = ("psi", "js", "wasserstein")
_CHUNK = 10_000  # simulated windows per calibration step (~25 ms of CPU)
_PAUSE_S = 0.025  # a background calibration sleeps this long between steps: at most half a core
_EPS = 1e-4


@dataclass(frozen=True)
class DriftAlert:
    feature: str
    statistic: str
    value: float
    threshold: float
    at_request: int


def drift_statistics(ref: np.ndarray, cur: np.ndarray, centers: np.ndarray, scale: float) -> np.ndarray:
    """PSI, JS distance and normalised W1 between bin frequencies ``ref`` and ``cur`` (rows of ``cur`` vectorised)."""
    cur = np.atleast_2d(cur)
    ref = np.atleast_2d(ref)
    p = np.clip(ref, _EPS, None)
    q = np.clip(cur, _EPS, None)
    psi = ((q - p) * np.log(q / p)).sum(axis=1)
    m = (p + q) / 2
    js = np.sqrt(np.clip(0.5 * ((p * np.log2(p / m)).sum(axis=1) + (q * np.log2(q / m)).sum(axis=1)), 0, None))
    widths = np.diff(centers) if centers.size > 1 else np.zeros(0)
    cdf_gap = np.abs(np.cumsum(cur, axis=1) - np.cumsum(ref, axis=1))[:, :-1]
    w1 = (cdf_gap * widths).sum(axis=1) / (scale if scale > 0 else 1.0)
    return np.stack([psi, js, w1], axis=1)


class _Feature:
    def __init__(self, name: str, values: np.ndarray, bins: int, window: int, alpha: float, rng: np.random.Generator,
                 pause: Callable[[], None] | None = None):
        self.name = name
        edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
        self.edges = edges
        idx = np.searchsorted(edges, values, side="right")
        k = edges.size + 1
        counts = np.bincount(idx, minlength=k).astype(float)
        self.ref = counts / counts.sum()
        sums = np.bincount(idx, weights=values, minlength=k)
        self.centers = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
        # empty bins (possible with ties) take their neighbours' edge so the CDF distance stays ordered
        for i in range(k):
            if counts[i] == 0:
                self.centers[i] = edges[min(i, edges.size - 1)]
        self.scale = float(values.std())
        # The null compares two samples, not a sample with the truth: the reference is an estimate too.
        # Enough draws that the 1 - alpha quantile is an order statistic, not the sample's maximum; in
        # chunks, so a background calibration can pause between them and leave the CPU to requests.
        sims = int(min(200_000, max(20_000, 3 / alpha)))
        parts = []
        for start in range(0, sims, _CHUNK):
            n = min(_CHUNK, sims - start)
            ref_draws = rng.multinomial(values.size, self.ref, size=n) / values.size
            null = rng.multinomial(window, self.ref, size=n) / window
            parts.append(drift_statistics(ref_draws, null, self.centers, self.scale))
            if pause is not None:
                pause()
        sim = np.concatenate(parts)
        thresholds = np.quantile(sim, 1 - alpha, axis=0)
        chunk_stats = []
        for start in range(0, max(1, values.size - window + 1), max(1, window // 5)):
            chunk = np.bincount(idx[start : start + window], minlength=k) / min(window, values.size - start)
            chunk_stats.append(drift_statistics(self.ref, chunk, self.centers, self.scale)[0])
        chunks = np.array(chunk_stats)
        self.thresholds = np.maximum(thresholds, chunks.mean(axis=0) + 3 * chunks.std(axis=0))

    def statistics(self, values: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(self.edges, values, side="right")
        cur = np.bincount(idx, minlength=self.ref.size) / max(values.size, 1)
        return drift_statistics(self.ref, cur, self.centers, self.scale)[0]


class DriftMonitor:
    """Feed ``observe`` one feature mapping per request; alerts go to ``on_alert`` and ``last``."""

    def __init__(self, reference_size: int = 10_000, window: int = 500, check_every: int = 50, bins: int = 10,
                 alpha: float = 3e-5, consecutive: int = 3, seed: int = 0,
                 on_alert: Callable[[DriftAlert], None] | None = None,
                 on_check: Callable[[dict[str, dict[str, float]]], None] | None = None,
                 background: bool = False):
        if window > reference_size:
            raise ValueError("the window must not be larger than the reference")
        self.reference_size, self.window, self.check_every = reference_size, window, check_every
        self.bins, self.alpha, self.consecutive = bins, alpha, consecutive
        self.on_alert, self.on_check = on_alert, on_check
        self._rng = np.random.default_rng(seed)
        self._reference: dict[str, list[float]] = {f: [] for f in FEATURES}
        self._recent: dict[str, deque[float]] = {f: deque(maxlen=window) for f in FEATURES}
        self.features: dict[str, _Feature] = {}
        self.requests = 0
        self.last: dict[str, dict[str, float]] = {}
        self.drifting: set[str] = set()
        self._over: dict[str, int] = {}
        self.alerts: list[DriftAlert] = []
        # Calibration simulates hundreds of thousands of windows (about a second of CPU): a gateway
        # runs it on a thread so its event loop keeps serving; checks start when it is done.
        self.background = background
        self._collecting = True
        self._thread: threading.Thread | None = None

    @property
    def calibrated(self) -> bool:
        return bool(self.features)

    def observe(self, values: Mapping[str, float | None]) -> list[DriftAlert]:
        self.requests += 1
        for name in FEATURES:
            v = values.get(name)
            if v is None:
                continue
            if self._collecting:
                self._reference[name].append(float(v))
            else:
                self._recent[name].append(float(v))
        if self._collecting:
            if self.requests >= self.reference_size:
                self._start_calibration()
            return []
        if not self.calibrated or (self.requests - self.reference_size) % self.check_every:
            return []
        return self.check()

    def _start_calibration(self) -> None:
        reference, self._reference = self._reference, {f: [] for f in FEATURES}
        for name, values in reference.items():
            # the window starts full, with the reference's tail, so every check compares full windows
            self._recent[name].extend(values[-self.window :])
        self._collecting = False
        if self.background:
            self._thread = threading.Thread(target=self._calibrate, args=(reference,), name="drift-calibration",
                                            daemon=True)
            self._thread.start()
        else:
            self._calibrate(reference)

    def _calibrate(self, reference: dict[str, list[float]]) -> None:
        pause = None
        if self.background:
            pause = functools.partial(time.sleep, _PAUSE_S)
            with contextlib.suppress(OSError, AttributeError):  # lower this thread's priority (Linux)
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        features = {}
        for name, values in reference.items():
            # a feature no request carried (retrieval depth without metadata) is not monitored
            if len(values) >= self.window and np.ptp(values) > 0:
                features[name] = _Feature(name, np.array(values), self.bins, self.window,
                                          self.alpha / len(STATISTICS), self._rng, pause)
        self.features = features  # one assignment: the request path sees none or all of them

    def wait_calibrated(self, timeout_s: float = 30.0) -> bool:
        if self._thread is not None:
            self._thread.join(timeout_s)
        return self.calibrated

    def check(self) -> list[DriftAlert]:
        fired = []
        for name, feat in self.features.items():
            recent = self._recent[name]
            if len(recent) < self.window:
                continue
            stats = feat.statistics(np.fromiter(recent, float))
            self.last[name] = {s: float(v) for s, v in zip(STATISTICS, stats)}
            over = [(s, float(v), float(t)) for s, v, t in zip(STATISTICS, stats, feat.thresholds) if v > t]
            self._over[name] = self._over.get(name, 0) + 1 if over else 0
            if self._over[name] >= self.consecutive and name not in self.drifting:
                self.drifting.add(name)
                s, v, t = max(over, key=lambda x: x[1] / x[2])
                alert = DriftAlert(name, s, v, t, self.requests)
                self.alerts.append(alert)
                fired.append(alert)
                if self.on_alert is not None:
                    self.on_alert(alert)
            elif not over and name in self.drifting:
                self.drifting.discard(name)
        if self.on_check is not None:
            self.on_check(self.last)
        return fired

    def thresholds(self) -> dict[str, dict[str, float]]:
        return {n: {s: float(t) for s, t in zip(STATISTICS, f.thresholds)} for n, f in self.features.items()}

    def describe(self) -> dict[str, object]:
        return {"requests": self.requests, "calibrated": self.calibrated, "collecting_reference": self._collecting, "reference_size": self.reference_size,
                "window": self.window, "thresholds": self.thresholds(), "last": self.last,
                "drifting": sorted(self.drifting),
                "alerts": [a.__dict__ for a in self.alerts[-20:]]}

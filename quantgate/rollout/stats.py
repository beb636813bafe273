"""Anytime-valid evidence for canary judging: e-processes and confidence sequences, no I/O.

Everything here may be looked at after every request without inflating the error rate (Ville's
inequality: an e-process under its null crosses ``1/alpha`` with probability at most ``alpha``,
ever). Three kinds:

* ``RatioEvidence``: the conditional test of Lindon & Malek (2022) for a rate ("bad events per
  request") on two arms. Given that a bad event happened while the canary held share ``rho`` of the
  traffic, it came from the canary with probability ``theta = rho r / (rho r + 1 - rho)``, where
  ``r`` is the canary/baseline rate ratio. The likelihood in ``r`` is kept on a log-spaced grid;
  a mixture of the grid points above (below) a bound ``b``, divided by the likelihood at ``b``, is an
  e-process against ``r <= b`` (``r >= b``), valid however ``rho`` changes between events. An
  observation adds one cached vector (per distinct ``rho``) to the log-likelihood; a look is a
  log-sum-exp over the grid.
* ``BelowFloor``: evidence that one arm's rate is below an absolute floor (``p < f``): a mixture of
  Bernoulli likelihood ratios. It lets a metric with no events at all (errors on a healthy canary)
  pass, where a ratio has nothing to say.
* ``MeanSequence``: an asymptotic confidence sequence for a mean (Waudby-Smith et al. 2023), used
  for cost; asymptotic means it relies on the CLT, the price of not needing a bound on the values.

Trade-off: the grid makes bounds as coarse as its spacing (reported bounds are rounded outward,
so they stay valid), in exchange for O(1) updates and closed-form arithmetic.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

__all__ = ["BelowFloor", "MeanSequence", "RatioEvidence", "SplitEvidence", "ratio_grid"]


def ratio_grid(margin: float, per_margin: int = 4, span: float = 16.0) -> np.ndarray:
    """Log-spaced ratios, symmetric around 1, holding ``margin`` and ``1/margin`` exactly."""
    step = math.log(margin) / per_margin if margin > 1 else math.log(1.1) / per_margin
    n = math.ceil(math.log(span) / step)
    return np.exp(np.arange(-n, n + 1) * step)


def _logsumexp(x: np.ndarray) -> float:
    if x.size == 0:
        return -math.inf
    m = float(x.max())
    return m + math.log(float(np.exp(x - m).sum()))


class RatioEvidence:
    """Likelihood of the canary/baseline rate ratio from who produced each bad event."""

    def __init__(self, margin: float, per_margin: int = 4, span: float = 16.0, prior_span: float = 4.0):
        if margin < 1:
            raise ValueError("margin is a ratio >= 1")
        self.margin = margin
        # The alternative mixes the grid points within a factor ``prior_span`` of the bound: a canary
        # 2-3x worse is the regression worth catching fast; mass spread out to 16x would slow that down.
        self._prior_span = prior_span
        self.grid = ratio_grid(margin, per_margin, span)
        self._log_grid = np.log(self.grid)
        self._prior_points = max(1, round(math.log(self._prior_span) / float(self._log_grid[1] - self._log_grid[0])))
        self._counts: dict[float, list[int]] = defaultdict(lambda: [0, 0])  # rho -> [baseline, canary]
        self._terms: dict[float, tuple[np.ndarray, np.ndarray]] = {}  # rho -> (log(1 - theta), log theta)
        self._ll = np.zeros_like(self.grid)

    def _log_thetas(self, rho: float) -> tuple[np.ndarray, np.ndarray]:
        terms = self._terms.get(rho)
        if terms is None:
            # theta = rho r / (rho r + 1 - rho), in logs over the grid of r
            denom = np.logaddexp(math.log(rho) + self._log_grid, math.log1p(-rho))
            terms = self._terms[rho] = (math.log1p(-rho) - denom, math.log(rho) + self._log_grid - denom)
        return terms

    def observe(self, canary: bool, rho: float, n: int = 1) -> None:
        """``n`` bad events on one arm while the canary's share of traffic was ``rho``."""
        if not 0.0 < rho < 1.0 or n <= 0:
            return  # with all traffic on one arm an event says nothing about the ratio
        rho = round(rho, 6)
        self._counts[rho][int(canary)] += n
        self._ll += n * self._log_thetas(rho)[int(canary)]

    @property
    def events(self) -> tuple[int, int]:
        """(baseline, canary) events that carried information."""
        b = sum(c[0] for c in self._counts.values())
        return b, sum(c[1] for c in self._counts.values())

    def log_likelihood(self) -> np.ndarray:
        return self._ll

    def _index(self, bound: float) -> int:
        i = int(np.argmin(np.abs(self._log_grid - math.log(bound))))
        if not math.isclose(float(self.grid[i]), bound, rel_tol=1e-9):
            raise ValueError(f"{bound} is not on the grid of margin {self.margin}")
        return i

    def log_e_above(self, bound: float) -> float:
        """log e-value against ``r <= bound`` (evidence that the canary's rate is higher)."""
        return self._log_e(self._index(bound), True)

    def log_e_below(self, bound: float) -> float:
        """log e-value against ``r >= bound`` (evidence that the canary's rate is lower)."""
        return self._log_e(self._index(bound), False)

    def _log_e(self, i: int, above: bool) -> float:
        ll, k = self.log_likelihood(), self._prior_points
        alt = ll[i + 1 : i + 1 + k] if above else ll[max(0, i - k) : i]
        return _logsumexp(alt) - math.log(alt.size) - float(ll[i]) if alt.size else 0.0

    def bounds(self, alpha: float) -> tuple[float, float]:
        """Anytime-valid (lower, upper) bounds on the ratio, each one-sided at level ``alpha``.

        The confidence set is every grid point its one-sided test does not reject; a bound is the grid
        point next to the first point kept, so a ratio between grid points is still covered.
        """
        log_t, n = math.log(1 / alpha), len(self.grid)

        def rejected(i: int, above: bool) -> bool:
            return self._log_e(i, above) >= log_t

        first_kept = next((i for i in range(n) if not rejected(i, True)), n)
        last_kept = next((i for i in range(n - 1, -1, -1) if not rejected(i, False)), -1)
        lower = 0.0 if first_kept == 0 else float(self.grid[first_kept - 1])
        upper = math.inf if last_kept >= n - 1 else float(self.grid[last_kept + 1])
        return lower, upper

    def estimate(self) -> float | None:
        """The grid point of highest likelihood (None before any informative event)."""
        b, c = self.events
        return None if b + c == 0 else float(self.grid[int(np.argmax(self.log_likelihood()))])

    def state(self) -> list[list[float]]:
        return [[rho, b, c] for rho, (b, c) in sorted(self._counts.items())]

    def load(self, state: list[list[float]]) -> None:
        self._counts.clear()
        self._ll = np.zeros_like(self.grid)
        for rho, b, c in state:
            self.observe(False, float(rho), int(b))
            self.observe(True, float(rho), int(c))


class BelowFloor:
    """Evidence that an arm's rate is below ``floor``: e-process against ``p >= floor``."""

    _FRACTIONS = (0.1, 0.3, 0.5, 0.7)  # alternatives q = fraction * floor, mixed with equal weight

    def __init__(self, floor: float):
        if not 0.0 < floor < 1.0:
            raise ValueError("floor is a rate in (0, 1)")
        self.floor = floor
        self.n = 0
        self.bad = 0

    def observe(self, bad: bool) -> None:
        self.n += 1
        self.bad += int(bad)

    def log_e(self) -> float:
        f, good = self.floor, self.n - self.bad
        terms = [good * (math.log1p(-q * f) - math.log1p(-f)) + self.bad * math.log(q)
                 for q in self._FRACTIONS]
        return _logsumexp(np.array(terms)) - math.log(len(terms))


class MeanSequence:
    """Asymptotic confidence sequence for a mean (Waudby-Smith et al. 2023, Gaussian mixture boundary).

    ``tuned_n`` is where the boundary is tightest; it stays valid (if wider) everywhere else.
    """

    def __init__(self, tuned_n: int = 1000):
        self.tuned_n = tuned_n
        self.n = 0
        self.mean = 0.0
        self._m2 = 0.0

    def observe(self, x: float) -> None:
        self.n += 1
        d = x - self.mean
        self.mean += d / self.n
        self._m2 += d * (x - self.mean)

    def radius(self, alpha: float) -> float:
        if self.n < 2:
            return math.inf
        la = math.log(1 / alpha)
        rho2 = (2 * la + math.log(2 * la + 1)) / self.tuned_n
        var = self._m2 / (self.n - 1)
        t = self.n
        return math.sqrt(var) * math.sqrt(2 * (t * rho2 + 1) / (t * t * rho2) * math.log(math.sqrt(t * rho2 + 1) / alpha))

    def interval(self, alpha: float) -> tuple[float, float]:
        r = self.radius(alpha)
        return self.mean - r, self.mean + r

    def state(self) -> list[float]:
        return [self.n, self.mean, self._m2]

    def load(self, state: list[float]) -> None:
        self.n, self.mean, self._m2 = int(state[0]), float(state[1]), float(state[2])


class SplitEvidence:
    """Sample-ratio mismatch: e-process against "each request went to the canary with probability rho".

    Same grid mixture as ``RatioEvidence`` over an odds multiplier ``m`` (H0: ``m = 1``), two-sided,
    on every request instead of bad events only.
    """

    def __init__(self, span: float = 4.0, points: int = 16):
        self._ratio = RatioEvidence(span ** (1 / points), per_margin=1, span=span)
        self._one = 0

    def observe(self, canary: bool, rho: float, n: int = 1) -> None:
        self._ratio.observe(canary, rho, n)

    def log_e(self) -> float:
        ll = self._ratio.log_likelihood()
        one = int(np.argmin(np.abs(self._ratio._log_grid)))
        others = np.delete(ll, one)
        return _logsumexp(others) - math.log(others.size) - float(ll[one])

    @property
    def counts(self) -> tuple[int, int]:
        return self._ratio.events

    def expected_canary(self) -> float:
        return sum(rho * (b + c) for rho, b, c in self._ratio.state())

    def state(self) -> list[list[float]]:
        return self._ratio.state()

    def load(self, state: list[list[float]]) -> None:
        self._ratio.load(state)

"""Simulated canaries: quantgate's judge beside a fixed-window Mann-Whitney judge of the Kayenta kind.

    python bench/judge.py                  # all scenarios, 200 canaries each (a few minutes)
    python bench/judge.py --runs 50        # quicker, noisier
    python bench/judge.py --json out.json

Traffic: requests arrive one at a time; the canary's weight ramps 5% -> 10% after 2,000 requests
(the first two steps of a real rollout); each request fails (a validation failure) with the
arm's probability and takes a latency drawn from the arm's distribution. Both judges look after
every request:

* quantgate: ``quantgate.rollout.judge.Judge`` itself (the gateway's code), guards
  ``validation_failures`` (margin 1.1, floor 0.5%, budget weight 3) and ``latency_p99`` (margin 1.5,
  weight 1, threshold from the first 1,000 baseline requests): alpha 0.05 split 0.0375 / 0.0125. Its e-values only move on bad
  events and exceedances, so the verdict is recomputed exactly when one happens; that is the same
  sequence of decisions as recomputing after every request.
* fixed-window Mann-Whitney: per interval of 500 requests, each arm's failure rate and p99 latency;
  after every interval, a one-sided Mann-Whitney test (normal approximation, tie-corrected) over the
  last 10 intervals of each arm, "high" at confidence 0.98 with a canary mean above the baseline
  mean (Kayenta's NetflixACAJudge defaults), either metric high rolls back.

Scenarios: A/A (identical arms, 2% failures, 20,000 requests), doubled failure rate (4% on the
canary), and a canary whose p99 is 30% worse while its mean and median are better. Reported: share
rolled back and the median request at which it happened.

Drift (``quantgate.observe.drift.DriftMonitor`` with its defaults: 5,000-request reference, 500-request
window, a check every 50): synthetic traffic (prompt tokens lognormal, turns, tools offered and
called, response tokens); after the reference, either 10,000 more requests from the same traffic
(how many runs raise any alert) or traffic whose prompts are 30% longer (requests until the alert).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from quantgate.config import GuardConfig, RolloutConfig  # noqa: E402
from quantgate.rollout.judge import Judge, Outcome  # noqa: E402


@dataclass(frozen=True)
class Scenario:
    name: str
    horizon: int
    canary_fail: float
    canary_latency: tuple[float, float]  # lognormal (mu, sigma)
    base_fail: float = 0.02
    base_latency: tuple[float, float] = (0.0, 0.5)


# Baseline latency lognormal(0, 0.5): p99 = 3.20, mean 1.13. The slow-tail canary lognormal(-0.203, 0.7):
# p99 = 4.16 (30% worse), mean 1.04 and median 0.82 (both better).
SCENARIOS = (
    Scenario("A/A (2% failures both arms)", 20_000, 0.02, (0.0, 0.5)),
    Scenario("failure rate doubled (2% -> 4%)", 40_000, 0.04, (0.0, 0.5)),
    Scenario("p99 +30%, mean and median better", 100_000, 0.02, (-0.203, 0.7)),
)


RAMP_AT = 2_000  # requests at 5% before the step to 10%


def weight_at(i: int, horizon: int) -> float:
    return 0.05 if i < RAMP_AT else 0.10


def ours(s: Scenario, gen: np.random.Generator) -> int | None:
    spec = RolloutConfig(route="r", baseline="b", candidate="c", latency_calibration=1000, alpha=0.05,
                         guards=[GuardConfig(metric="validation_failures", margin=1.1, floor=0.005, weight=3),
                                 GuardConfig(metric="latency_p99", margin=1.5, weight=1)])
    judge = Judge(spec)
    u, f = gen.random(s.horizon), gen.random(s.horizon)
    z = gen.standard_normal(s.horizon)
    p99 = judge.guards["latency_p99"]
    for i in range(s.horizon):
        w = weight_at(i, s.horizon)
        canary = bool(u[i] < w)
        mu, sigma = s.canary_latency if canary else s.base_latency
        latency = math.exp(mu + sigma * z[i])
        failed = bool(f[i] < (s.canary_fail if canary else s.base_fail))
        judge.observe(Outcome(canary=canary, weight=w, validation_failed=failed, latency_s=latency, success=not failed))
        slow = p99.threshold is not None and latency > p99.threshold
        if (failed or slow) and judge.verdict().action == "rollback":
            return i + 1
    return None


def _mann_whitney_greater(canary: list[float], baseline: list[float]) -> float:
    """One-sided p-value that ``canary`` tends to be larger (normal approximation, tie-corrected)."""
    n1, n2 = len(canary), len(baseline)
    values = sorted((v, k) for k, xs in ((0, canary), (1, baseline)) for v in xs)
    ranks, i, ties = [0.0] * len(values), 0, 0.0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1][0] == values[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        t = j - i + 1
        ties += t ** 3 - t
        i = j + 1
    r1 = sum(r for r, (_, k) in zip(ranks, values) if k == 0)
    u1 = r1 - n1 * (n1 + 1) / 2
    n = n1 + n2
    var = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if var <= 0:
        return 1.0
    zscore = (u1 - n1 * n2 / 2 - 0.5) / math.sqrt(var)  # continuity correction
    return 0.5 * math.erfc(zscore / math.sqrt(2))


def fixed_window(s: Scenario, gen: np.random.Generator, interval: int = 500, window: int = 10,
                 confidence: float = 0.98) -> int | None:
    u, f = gen.random(s.horizon), gen.random(s.horizon)
    z = gen.standard_normal(s.horizon)
    series: dict[str, list[tuple[float, float]]] = {"canary": [], "baseline": []}
    cur: dict[str, list[tuple[bool, float]]] = {"canary": [], "baseline": []}
    alpha = (1 - confidence) / 2  # Kayenta's two-sided interval, read one-sided
    for i in range(s.horizon):
        w = weight_at(i, s.horizon)
        canary = bool(u[i] < w)
        mu, sigma = s.canary_latency if canary else s.base_latency
        arm = "canary" if canary else "baseline"
        cur[arm].append((bool(f[i] < (s.canary_fail if canary else s.base_fail)), math.exp(mu + sigma * z[i])))
        if (i + 1) % interval:
            continue
        for a in ("canary", "baseline"):
            if cur[a]:
                lat = sorted(x[1] for x in cur[a])
                series[a].append((sum(x[0] for x in cur[a]) / len(cur[a]), lat[min(len(lat) - 1, int(0.99 * len(lat)))]))
            cur[a] = []
        c, b = series["canary"][-window:], series["baseline"][-window:]
        if len(c) < 3 or len(b) < 3:
            continue
        for m in (0, 1):
            cm, bm = [x[m] for x in c], [x[m] for x in b]
            if statistics.fmean(cm) > statistics.fmean(bm) and _mann_whitney_greater(cm, bm) < alpha:
                return i + 1
    return None


def run(runs: int, seed: int, only: str | None = None) -> list[dict[str, object]]:
    rows = []
    for k, s in enumerate(SCENARIOS):
        if only and only not in s.name:
            continue
        for name, judge in (("quantgate (anytime-valid)", ours), ("fixed-window Mann-Whitney", fixed_window)):
            t0 = time.perf_counter()
            gen = np.random.default_rng([seed, k])
            hits = [judge(s, gen) for _ in range(runs)]
            rolled = [h for h in hits if h is not None]
            rows.append({"scenario": s.name, "judge": name, "runs": runs, "horizon": s.horizon,
                         "rolled_back": len(rolled) / runs,
                         "median_requests": statistics.median(rolled) if rolled else None,
                         "seconds": round(time.perf_counter() - t0, 1)})
            r = rows[-1]
            med = "-" if r["median_requests"] is None else f"{r['median_requests']:,.0f}"
            print(f"| {s.name} | {name} | {runs} | {s.horizon:,} | {r['rolled_back']:.1%} | {med} |", flush=True)
    return rows


def _traffic(gen: np.random.Generator, n: int, prompt_scale: float = 1.0) -> list[dict[str, float]]:
    prompt = np.round(prompt_scale * gen.lognormal(5.0, 0.6, n))
    turns, offered = 1 + gen.poisson(1.5, n), gen.integers(0, 6, n)
    called, response = gen.integers(0, 2, n), np.round(gen.lognormal(4.0, 0.5, n))
    return [{"prompt_tokens": p, "turns": t, "tools_offered": o, "tools_called": c, "response_tokens": r}
            for p, t, o, c, r in zip(prompt, turns, offered, called, response)]


def drift(runs: int, seed: int) -> list[dict[str, object]]:
    from quantgate.observe.drift import DriftMonitor

    false_alarms, delays = 0, []
    t0 = time.perf_counter()
    for r in range(runs):
        gen = np.random.default_rng([seed, 99, r])
        for shifted in (False, True):
            monitor = DriftMonitor(seed=r)
            for x in _traffic(gen, monitor.reference_size):
                monitor.observe(x)
            after = _traffic(gen, 2_000, 1.3) if shifted else _traffic(gen, 10_000)
            hit = next((i + 1 for i, x in enumerate(after) if monitor.observe(x)), None)
            if shifted:
                delays.append(hit if hit is not None else math.inf)
            else:
                false_alarms += hit is not None
    detected = [d for d in delays if math.isfinite(d)]
    row = {"runs": runs, "false_alarm_runs": false_alarms / runs, "detected": len(detected) / runs,
           "median_requests": statistics.median(detected) if detected else None,
           "max_requests": max(detected) if detected else None, "seconds": round(time.perf_counter() - t0, 1)}
    print(f"| drift | {runs} | {row['false_alarm_runs']:.1%} of runs alerted on 10,000 unshifted requests | "
          f"30% longer prompts: {row['detected']:.0%} detected, median {row['median_requests']} / max "
          f"{row['max_requests']} requests |", flush=True)
    return [row]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--drift-runs", type=int, default=400)
    p.add_argument("--scenario", help="run only the canary scenarios whose name contains this")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    rows: list[dict[str, object]] = []
    if a.runs:
        print("| scenario | judge | canaries | requests each | rolled back | median requests to rollback |")
        print("|---|---|--:|--:|--:|--:|")
        rows += run(a.runs, a.seed, a.scenario)
    if a.drift_runs:
        rows += drift(a.drift_runs, a.seed)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

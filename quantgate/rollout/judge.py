"""The canary judge: per guard metric, anytime-valid evidence; one verdict (rollback, promote, hold, pause).

A guard watches one thing a quantized variant can make worse: a rate (validation failures, tool-call
errors, refusals in either direction, escalations, errors and timeouts), a latency quantile, or
cost per successful request. Rates use the conditional test (``stats.RatioEvidence``): margin is the
canary/baseline rate ratio tolerated. Latency quantiles become rates too: the threshold ``T`` is the
baseline's quantile measured over the first ``latency_calibration`` baseline requests and then fixed,
and a request slower than ``T`` is a bad event (a p99 that grows while the mean shrinks shows up as
more exceedances even though the average improves). Cost compares cost per success on both arms
with confidence sequences for the four means.

The error budget ``alpha`` is split across guards by ``weight`` (Bonferroni on e-values, which needs
no independence). Rollback when any guard's e-value against "within margin" reaches
``1/alpha_guard``; promote (the controller adds the minimums) when every guard has shown it is within
margin, by its own e-value or, for rates, by the canary's rate being shown below ``floor``; pause
when the traffic split itself is off (sample-ratio mismatch), since then none of the above is
trustworthy. The judge holds no clock and does no I/O: the controller feeds it and stores its state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from quantgate.config import GuardConfig, RolloutConfig
from quantgate.rollout.stats import BelowFloor, MeanSequence, RatioEvidence, SplitEvidence

__all__ = ["Judge", "Outcome", "Verdict"]

Action = Literal["rollback", "promote", "hold", "pause"]
_RATE_FIELDS = {"validation_failures": "validation_failed", "tool_call_errors": "tool_error",
                "refusals": "refused", "escalations": "escalated", "errors": "error"}


@dataclass(frozen=True)
class Outcome:
    """What one finished request says about its arm (``canary``) under canary share ``weight``."""

    canary: bool
    weight: float
    validation_failed: bool = False
    tool_error: bool | None = None  # None: no tool call in the answer (the rate is per tool-calling answer)
    refused: bool = False
    escalated: bool = False
    error: bool = False
    latency_s: float | None = None
    cost: float = 0.0
    success: bool = True
    prompt_tokens: int | None = None


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str
    evidence: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Check:
    rollback: str | None  # why, if this guard demands a rollback
    passed: bool          # shown to be within margin
    evidence: dict[str, Any]
    blocked: str | None = None  # a slice regressed: no promotion, though no rollback either


def _bucket_labels(bounds: tuple[int, ...]) -> list[str]:
    if not bounds:
        return []
    edges = [0, *bounds]
    return [f"<{bounds[0]}"] + [f"{lo}-{hi - 1}" for lo, hi in zip(edges[1:], bounds[1:])] + [f">={bounds[-1]}"]


def _e(log_e: float) -> float:
    return math.exp(min(log_e, 700.0))


class _RateGuard:
    """Bad events per request on each arm, judged by their rate ratio (and a floor for the canary)."""

    def __init__(self, g: GuardConfig, alpha: float, is_bad: Any, buckets: tuple[int, ...] = ()):
        self.g, self.alpha, self.is_bad = g, alpha, is_bad
        self.ratio = RatioEvidence(g.margin)
        self.canary_floor = BelowFloor(g.floor) if g.floor else None
        self.baseline_floor = BelowFloor(g.floor) if g.floor and g.both_directions else None
        self.counts = {"baseline": [0, 0], "canary": [0, 0]}  # [requests, bad]
        # Slices by prompt length: a regression that lives only in long prompts shows (and blocks promotion)
        # even while the overall ratio is diluted by short ones.
        self.buckets = buckets
        self.labels = _bucket_labels(buckets)
        self.slices = {label: RatioEvidence(g.margin) for label in self.labels} if buckets else {}
        self.slice_counts = {label: {"baseline": [0, 0], "canary": [0, 0]} for label in self.slices}

    def observe(self, o: Outcome) -> None:
        bad = self.is_bad(o)
        if bad is None:
            return
        side = "canary" if o.canary else "baseline"
        arm = self.counts[side]
        arm[0] += 1
        arm[1] += int(bad)
        label = None
        if self.slices and o.prompt_tokens is not None:
            label = self.labels[sum(o.prompt_tokens >= b for b in self.buckets)]
            self.slice_counts[label][side][0] += 1
            self.slice_counts[label][side][1] += int(bad)
        if bad:
            self.ratio.observe(o.canary, o.weight)
            if label is not None:
                self.slices[label].observe(o.canary, o.weight)
        floor = self.canary_floor if o.canary else self.baseline_floor
        if floor is not None:
            floor.observe(bad)

    def check(self) -> _Check:
        g = self.g
        a = self.alpha / 2 if g.both_directions else self.alpha
        log_t = math.log(1 / a)
        up, down = self.ratio.log_e_above(g.margin), self.ratio.log_e_below(g.margin)
        floor_e = self.canary_floor.log_e() if self.canary_floor else -math.inf
        rollback = f"{g.metric}: canary/baseline ratio above {g.margin:g} (e={_e(up):.3g} >= {1 / a:.3g})" \
            if up >= log_t else None
        passed = down >= log_t or floor_e >= log_t
        ev: dict[str, Any] = {"e_worse": _e(up), "e_within": _e(down), "threshold": 1 / a}
        if g.both_directions:
            low_up, low_down = self.ratio.log_e_above(1 / g.margin), self.ratio.log_e_below(1 / g.margin)
            base_floor = self.baseline_floor.log_e() if self.baseline_floor else -math.inf
            if rollback is None and low_down >= log_t:
                rollback = f"{g.metric}: canary/baseline ratio below {1 / g.margin:.3g} (e={_e(low_down):.3g} >= {1 / a:.3g})"
            passed = passed and (low_up >= log_t or base_floor >= log_t)
            ev |= {"e_lower": _e(low_down), "e_within_lower": _e(low_up)}
        if self.canary_floor is not None:
            ev["e_canary_below_floor"] = _e(floor_e)
        lower, upper = self.ratio.bounds(a)
        ev |= {"margin": g.margin, "floor": g.floor, "ratio": self.ratio.estimate(), "lower": lower,
               "upper": upper if math.isfinite(upper) else None, "alpha": self.alpha,
               "baseline": list(self.counts["baseline"]), "canary": list(self.counts["canary"])}
        blocked = None
        if self.slices:
            by_length = {}
            for label, ratio in self.slices.items():
                e_up = ratio.log_e_above(g.margin)
                by_length[label] = {"ratio": ratio.estimate(), "e_worse": _e(e_up), **self.slice_counts[label]}
                if e_up >= log_t and blocked is None:
                    blocked = f"{g.metric} worse in prompts of {label} tokens (e={_e(e_up):.3g})"
            ev["by_prompt_length"] = by_length
        return _Check(rollback, passed and blocked is None, ev, blocked)

    def state(self) -> dict[str, Any]:
        s: dict[str, Any] = {"ratio": self.ratio.state(), "counts": self.counts,
                             "slices": {k: v.state() for k, v in self.slices.items()}, "slice_counts": self.slice_counts}
        for name in ("canary_floor", "baseline_floor"):
            f = getattr(self, name)
            if f is not None:
                s[name] = [f.n, f.bad]
        return s

    def load(self, s: dict[str, Any]) -> None:
        self.ratio.load(s["ratio"])
        self.counts = {k: list(v) for k, v in s["counts"].items()}
        for label, state in s.get("slices", {}).items():
            if label in self.slices:
                self.slices[label].load(state)
                self.slice_counts[label] = {k: list(v) for k, v in s["slice_counts"][label].items()}
        for name in ("canary_floor", "baseline_floor"):
            f = getattr(self, name)
            if f is not None and name in s:
                f.n, f.bad = s[name]


class _LatencyGuard(_RateGuard):
    """A latency quantile as the rate of requests slower than a threshold fixed from the baseline."""

    def __init__(self, g: GuardConfig, alpha: float, quantile: float, calibration: int):
        super().__init__(g.model_copy(update={"floor": None, "both_directions": False}), alpha, self._slow)
        self.quantile, self.calibration = quantile, calibration
        self.samples: list[float] = []
        self.threshold: float | None = None

    def _slow(self, o: Outcome) -> bool | None:
        if o.latency_s is None or self.threshold is None:
            return None
        return o.latency_s > self.threshold

    def observe(self, o: Outcome) -> None:
        if self.threshold is None and not o.canary and o.latency_s is not None:
            self.samples.append(o.latency_s)
            if len(self.samples) >= self.calibration:
                ordered = sorted(self.samples)
                self.threshold = ordered[min(len(ordered) - 1, int(self.quantile * len(ordered)))]
                self.samples = []
            return
        super().observe(o)

    def check(self) -> _Check:
        c = super().check()
        ev = c.evidence | {"threshold_s": self.threshold, "calibrating": self.threshold is None}
        return _Check(c.rollback, c.passed and self.threshold is not None, ev)

    def state(self) -> dict[str, Any]:
        return super().state() | {"threshold": self.threshold, "samples": self.samples}

    def load(self, s: dict[str, Any]) -> None:
        super().load(s)
        self.threshold, self.samples = s["threshold"], list(s["samples"])


class _CostGuard:
    """Cost per successful request, canary over baseline, from four confidence sequences (alpha/4 each)."""

    def __init__(self, g: GuardConfig, alpha: float):
        self.g, self.alpha = g, alpha
        self.seq = {k: MeanSequence() for k in ("baseline_cost", "baseline_success", "canary_cost", "canary_success")}

    def observe(self, o: Outcome) -> None:
        arm = "canary" if o.canary else "baseline"
        self.seq[f"{arm}_cost"].observe(o.cost)
        self.seq[f"{arm}_success"].observe(float(o.success))

    def check(self) -> _Check:
        a = self.alpha / 4
        (bc_lo, bc_hi), (bs_lo, bs_hi) = self.seq["baseline_cost"].interval(a), self.seq["baseline_success"].interval(a)
        (cc_lo, cc_hi), (cs_lo, cs_hi) = self.seq["canary_cost"].interval(a), self.seq["canary_success"].interval(a)
        lower = upper = None
        if min(bc_hi, cs_hi) > 0 and bs_lo > 0 and cc_lo > 0:
            lower = (cc_lo / cs_hi) / (bc_hi / bs_lo)
        if cs_lo > 0 and bc_lo > 0 and bs_hi > 0 and math.isfinite(cc_hi):
            upper = (cc_hi / cs_lo) / (bc_lo / bs_hi)
        b, c = self.seq["baseline_cost"], self.seq["canary_cost"]
        bs, cs = self.seq["baseline_success"], self.seq["canary_success"]
        est = (c.mean / cs.mean) / (b.mean / bs.mean) if min(cs.mean, b.mean, bs.mean) > 0 else None
        rollback = f"cost_per_success: canary/baseline above {self.g.margin:g} (lower bound {lower:.3g})" \
            if lower is not None and lower > self.g.margin else None
        no_cost = b.n > 1 and c.n > 1 and b.mean == 0 and c.mean == 0  # nothing is priced: nothing to regress
        passed = no_cost or (upper is not None and upper <= self.g.margin)
        ev = {"margin": self.g.margin, "ratio": est, "lower": lower, "upper": upper, "alpha": self.alpha,
              "baseline": [b.n, b.mean, bs.mean], "canary": [c.n, c.mean, cs.mean]}
        return _Check(rollback, passed, ev)

    def state(self) -> dict[str, Any]:
        return {k: s.state() for k, s in self.seq.items()}

    def load(self, s: dict[str, Any]) -> None:
        for k, v in s.items():
            self.seq[k].load(v)


class _ShadowGuard:
    """Regression flips per shadowed canary request (``shadow``), tested against ``floor``, the tolerated rate."""

    _UP = (1.5, 2.0, 3.0, 5.0)  # alternatives above the floor, mixed with equal weight

    def __init__(self, g: GuardConfig, alpha: float):
        self.g, self.alpha = g, alpha
        self.below = BelowFloor(g.floor or 0.01)
        self.n = self.flips = self.agree = 0

    def observe(self, o: Outcome) -> None:
        return  # fed by the shadow replayer, after the fact

    def observe_shadow(self, flip: bool, agreed: bool) -> None:
        self.n += 1
        self.flips += int(flip)
        self.agree += int(agreed)
        self.below.observe(flip)

    def _log_e_above(self) -> float:
        f = self.below.floor
        terms = [self.flips * math.log(min(k * f, 0.999) / f) + (self.n - self.flips) * (math.log1p(-min(k * f, 0.999)) - math.log1p(-f))
                 for k in self._UP]
        m = max(terms)
        return m + math.log(sum(math.exp(t - m) for t in terms) / len(terms))

    def check(self) -> _Check:
        log_t = math.log(1 / self.alpha)
        up, down = self._log_e_above(), self.below.log_e()
        rollback = f"shadow_flips: regression flips above {self.below.floor:g} per shadowed request " \
                   f"(e={_e(up):.3g} >= {1 / self.alpha:.3g})" if up >= log_t else None
        ev = {"floor": self.below.floor, "shadowed": self.n, "regression_flips": self.flips,
              "normalized_agreement": self.agree / self.n if self.n else None,
              "e_worse": _e(up), "e_within": _e(down), "threshold": 1 / self.alpha, "alpha": self.alpha}
        return _Check(rollback, down >= log_t, ev)

    def state(self) -> dict[str, Any]:
        return {"n": self.n, "flips": self.flips, "agree": self.agree}

    def load(self, s: dict[str, Any]) -> None:
        self.n, self.flips, self.agree = s["n"], s["flips"], s["agree"]
        self.below.n, self.below.bad = self.n, self.flips


def _rate_reader(attr: str) -> Any:
    def read(o: Outcome) -> bool | None:
        value = getattr(o, attr)
        return None if value is None else bool(value)  # None: the request had nothing to judge here
    return read


class Judge:
    """Evidence for one rollout; ``observe`` every finished request, ask ``verdict`` whenever."""

    def __init__(self, spec: RolloutConfig):
        self.spec = spec
        total = sum(g.weight for g in spec.guards)
        self.guards: dict[str, Any] = {}
        for g in spec.guards:
            alpha = spec.alpha * g.weight / total
            if g.metric in _RATE_FIELDS:
                self.guards[g.metric] = _RateGuard(g, alpha, _rate_reader(_RATE_FIELDS[g.metric]),
                                                   tuple(spec.prompt_buckets))
            elif g.metric in ("latency_p95", "latency_p99"):
                q = 0.95 if g.metric == "latency_p95" else 0.99
                self.guards[g.metric] = _LatencyGuard(g, alpha, q, spec.latency_calibration)
            elif g.metric == "shadow_flips":
                self.guards[g.metric] = _ShadowGuard(g, alpha)
            else:
                self.guards[g.metric] = _CostGuard(g, alpha)
        self.split = SplitEvidence()
        self.requests = {"baseline": 0, "canary": 0}

    def observe(self, o: Outcome) -> None:
        self.requests["canary" if o.canary else "baseline"] += 1
        self.split.observe(o.canary, o.weight)
        for guard in self.guards.values():
            guard.observe(o)

    def observe_shadow(self, regression_flip: bool, agreed: bool) -> None:
        guard = self.guards.get("shadow_flips")
        if guard is not None:
            guard.observe_shadow(regression_flip, agreed)

    def verdict(self) -> Verdict:
        checks = {name: g.check() for name, g in self.guards.items()}
        evidence = {name: c.evidence for name, c in checks.items()}
        srm_e = _e(self.split.log_e())
        evidence["sample_ratio"] = {"e": srm_e, "threshold": 1 / self.spec.srm_alpha,
                                    "canary": self.split.counts[1], "expected_canary": round(self.split.expected_canary(), 1),
                                    "total": sum(self.split.counts)}
        if srm_e >= 1 / self.spec.srm_alpha:
            return Verdict("pause", f"sample-ratio mismatch: {self.split.counts[1]} canary requests, "
                           f"{self.split.expected_canary():.0f} expected (e={srm_e:.3g}); evidence is not trustworthy",
                           evidence)
        bad = [c.rollback for c in checks.values() if c.rollback]
        if bad:
            return Verdict("rollback", "; ".join(bad), evidence)
        blocked = [c.blocked for c in checks.values() if c.blocked]
        if blocked:
            return Verdict("hold", "; ".join(blocked), evidence)
        waiting = [name for name, c in checks.items() if not c.passed]
        if waiting:
            return Verdict("hold", "not yet shown within margin: " + ", ".join(waiting), evidence)
        return Verdict("promote", "every guard within its margin", evidence)

    def state(self) -> dict[str, Any]:
        return {"guards": {n: g.state() for n, g in self.guards.items()}, "split": self.split.state(),
                "requests": self.requests}

    def load(self, s: dict[str, Any]) -> None:
        for n, gs in s["guards"].items():
            if n in self.guards:
                self.guards[n].load(gs)
        self.split.load(s["split"])
        self.requests = dict(s["requests"])

"""The rollout controller: moves one route's canary through its steps on the judge's verdicts.

Lifecycle: ``pending`` -> ``running`` (step 0's weight) -> each promotion raises the weight to the next
step -> after the last step the candidate becomes the route's default and the rollout is
``completed``. A rollback sets the canary weight to 0 at once and freezes the rollout
(``rolled_back``; only an explicit ``start`` begins a new one, with fresh evidence). A sample-ratio
mismatch pauses it (weight kept, no decisions) until someone resumes or aborts. Every decision is
written to the store, with the judge's evidence, before the router sees the new weight.

The controller runs on the gateway's event loop, called once per finished request; the judge is
asked for a verdict after any request that carried a bad signal and every ``check_every`` requests
otherwise (the e-values only move on bad events, so this loses no rollback), and the minimums per step
use an injectable clock so tests need no sleeps. Trade-off: one gateway decides for its own traffic;
replicas sharing evidence and one leader are not built yet (see docs/rollouts.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

from quantgate.config import RolloutConfig
from quantgate.errors import QuantgateError
from quantgate.gateway.routing import Router
from quantgate.observe.events import EventLog
from quantgate.observe.metrics import GatewayMetrics
from quantgate.rollout.judge import Judge, Outcome, Verdict
from quantgate.rollout.store import RolloutStore

__all__ = ["RolloutController", "RolloutError"]

State = Literal["pending", "running", "paused", "rolled_back", "completed", "aborted"]
_ACTIVE = ("running", "paused")


class RolloutError(QuantgateError):
    """An admin action that does not apply in the rollout's current state."""


class RolloutController:
    def __init__(self, spec: RolloutConfig, router: Router, store: RolloutStore, *, events: EventLog | None = None,
                 metrics: GatewayMetrics | None = None, clock: Callable[[], float] = time.time,
                 check_every: int = 20, snapshot_s: float = 2.0, autostart: bool = True):
        self.spec, self.router, self.store = spec, router, store
        self.events, self.metrics, self.clock = events, metrics, clock
        self.check_every, self.snapshot_s = check_every, snapshot_s
        self.state: State = "pending"
        self.step = -1
        self.step_started = 0.0
        self.step_canary_start = 0
        self.judge = Judge(spec)
        self.last_verdict: Verdict | None = None
        self.last_decision: dict[str, Any] | None = None
        self._since_check = 0
        self._last_snapshot = 0.0
        self._restore(autostart)

    # ------------------------------------------------------------------ state
    @property
    def route(self) -> str:
        return self.spec.route

    @property
    def weight(self) -> float:
        return self.spec.steps[self.step] if self.state in _ACTIVE and self.step >= 0 else 0.0

    def _snapshot(self) -> dict[str, Any]:
        return {"state": self.state, "step": self.step, "step_started": self.step_started,
                "step_canary_start": self.step_canary_start, "judge": self.judge.state(),
                "last_decision": self.last_decision, "candidate": self.spec.candidate, "baseline": self.spec.baseline}

    def _restore(self, autostart: bool) -> None:
        if not self.reload() and autostart and self.spec.start:
            self.start("configured to start with the gateway")

    def reload(self) -> bool:
        """Take the stored state (after a restart, or another replica's decision); False if none applies."""
        saved = self.store.load(self.route)
        if saved is None or saved.get("candidate") != self.spec.candidate or saved.get("baseline") != self.spec.baseline:
            self._apply()
            return False
        self.state, self.step = saved["state"], saved["step"]
        self.step_started, self.step_canary_start = saved["step_started"], saved["step_canary_start"]
        self.last_decision = saved.get("last_decision")
        self.judge = Judge(self.spec)
        self.judge.load(saved["judge"])
        self._apply()
        return True

    def persist(self) -> None:
        self._last_snapshot = self.clock()
        self.store.save(self.route, self._snapshot())

    def _apply(self) -> None:
        """Make the router match the state: canary weight, and the default once completed."""
        self.router.attach_canary(self.route, self.spec.candidate, self.spec.sticky, self.weight,
                                  self.spec.candidate if self.state == "completed" else self.spec.baseline)
        if self.metrics is not None:
            self.metrics.rollout_weight.labels(self.route).set(self.weight)
            for s in ("pending", "running", "paused", "rolled_back", "completed", "aborted"):
                self.metrics.rollout_state.labels(self.route, s).set(1.0 if s == self.state else 0.0)

    def _decide(self, action: str, reason: str, new_state: State, new_step: int, evidence: dict[str, Any]) -> None:
        before = self.weight
        kept = (self.state, self.step, self.step_started, self.step_canary_start, self.last_decision)
        self.state, self.step = new_state, new_step
        if new_state == "running" and action != "resume":
            self.step_started, self.step_canary_start = self.clock(), self.judge.requests["canary"]
        after = self.weight
        self.last_decision = {"action": action, "reason": reason, "from_weight": before, "to_weight": after,
                              "step": self.step, "state": self.state, "at": self.clock()}
        try:
            self.store.decide(self.route, action, before, after, reason, evidence, self._snapshot())
        except self.store.errors:
            # not stored, not made: the state stays as it was (a replica without the lease, a failed write)
            (self.state, self.step, self.step_started, self.step_canary_start, self.last_decision) = kept
            raise
        self._last_snapshot = self.clock()
        self._apply()
        if self.metrics is not None:
            self.metrics.rollout_decisions.labels(self.route, action).inc()
        if self.events is not None:
            self.events.record("rollout", route=self.route, variant=self.spec.candidate,
                               reason=f"{action}: {before:g} -> {after:g}: {reason}"[:500])

    # ------------------------------------------------------------------ traffic
    def observe(self, o: Outcome) -> None:
        """One finished request of this route that a canary coin decided (either arm)."""
        if self.state not in _ACTIVE:
            return
        self.judge.observe(o)
        self._since_check += 1
        signal = o.validation_failed or o.tool_error or o.refused or o.escalated or o.error
        if signal or self._since_check >= self.check_every:
            self._since_check = 0
            self.evaluate()
        if self.clock() - self._last_snapshot >= self.snapshot_s:
            self._last_snapshot = self.clock()
            self.store.save(self.route, self._snapshot())

    def observe_shadow(self, regression_flip: bool, agreed: bool) -> None:
        """One shadow comparison of a canary answer with the baseline's."""
        if self.state not in _ACTIVE:
            return
        self.judge.observe_shadow(regression_flip, agreed)
        if regression_flip:
            self.evaluate()

    def evaluate(self) -> Verdict:
        v = self.judge.verdict()
        self.last_verdict = v
        if self.metrics is not None:
            self._export(v)
        if self.state != "running":
            return v
        if v.action == "rollback":
            self._decide("rollback", v.reason, "rolled_back", self.step, v.evidence)
        elif v.action == "pause":
            self._decide("pause", v.reason, "paused", self.step, v.evidence)
        elif v.action == "promote":
            missing = self._minimums_missing()
            if not missing:
                self._promote(v.reason, v.evidence)
        return v

    def _minimums_missing(self) -> str | None:
        seen = self.judge.requests["canary"] - self.step_canary_start
        if seen < self.spec.min_requests:
            return f"{seen}/{self.spec.min_requests} canary requests this step"
        waited = self.clock() - self.step_started
        if waited < self.spec.min_seconds:
            return f"{waited:.0f}/{self.spec.min_seconds:g} s this step"
        return None

    def _promote(self, reason: str, evidence: dict[str, Any]) -> None:
        if self.step + 1 < len(self.spec.steps):
            self._decide("promote", reason, "running", self.step + 1, evidence)
        else:
            self._decide("complete", reason, "completed", self.step, evidence)

    def _export(self, v: Verdict) -> None:
        g = self.metrics.rollout_evidence  # type: ignore[union-attr]
        for metric, ev in v.evidence.items():
            for kind in ("e_worse", "e_within", "ratio", "e"):
                value = ev.get(kind)
                if isinstance(value, (int, float)):
                    g.labels(self.route, metric, kind).set(float(value))

    # ------------------------------------------------------------------ admin
    def start(self, reason: str = "started by admin") -> None:
        if self.state in _ACTIVE:
            raise RolloutError(f"rollout on route {self.route!r} is already {self.state}")
        self.judge = Judge(self.spec)
        self._decide("start", reason, "running", 0, {})

    def pause(self, reason: str = "paused by admin") -> None:
        if self.state != "running":
            raise RolloutError(f"rollout on route {self.route!r} is {self.state}, not running")
        self._decide("pause", reason, "paused", self.step, {})

    def resume(self, reason: str = "resumed by admin") -> None:
        if self.state != "paused":
            raise RolloutError(f"rollout on route {self.route!r} is {self.state}, not paused")
        # A pause for a sample-ratio mismatch must not fire again on the same evidence.
        self.judge.split = type(self.judge.split)()
        self._decide("resume", reason, "running", self.step, {})

    def abort(self, reason: str = "aborted by admin") -> None:
        if self.state not in _ACTIVE:
            raise RolloutError(f"rollout on route {self.route!r} is {self.state}, nothing to abort")
        self._decide("abort", reason, "aborted", self.step, self.judge.verdict().evidence)

    def promote(self, reason: str = "promoted by admin") -> None:
        if self.state not in _ACTIVE:
            raise RolloutError(f"rollout on route {self.route!r} is {self.state}, nothing to promote")
        self._promote(reason, self.judge.verdict().evidence)  # from paused too: the next step runs

    def describe(self) -> dict[str, Any]:
        """What ``GET /admin/rollout`` shows."""
        v = self.last_verdict or (self.judge.verdict() if self.state in _ACTIVE else None)
        return {
            "route": self.route, "baseline": self.spec.baseline, "candidate": self.spec.candidate,
            "state": self.state, "step": self.step, "steps": self.spec.steps,
            "weights": {self.spec.candidate: self.weight, self.spec.baseline: 1.0 - self.weight}
            if self.state != "completed" else {self.spec.candidate: 1.0},
            "requests": dict(self.judge.requests),
            "step_minimums": self._minimums_missing() if self.state in _ACTIVE else None,
            "verdict": None if v is None else {"action": v.action, "reason": v.reason},
            "evidence": None if v is None else v.evidence,
            "last_decision": self.last_decision,
            "decisions": self.store.decisions(self.route, 20),
        }

    def close(self) -> None:
        self.store.save(self.route, self._snapshot())

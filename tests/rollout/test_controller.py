"""The controller against a real router and SQLite store, with a fake clock: steps, rollback, restart."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from quantgate.config import GatewayConfig, parse_config
from quantgate.gateway.routing import RequestFacts, Router
from quantgate.rollout.controller import RolloutController, RolloutError
from quantgate.rollout.judge import Outcome
from quantgate.rollout.store import RolloutStore
from tests.rollout.test_judge import rounded


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _config(**rollout: Any) -> GatewayConfig:
    spec = {"route": "assistant", "baseline": "bf16", "candidate": "int8", "steps": [0.1, 0.5, 1.0],
            "min_requests": 100, "min_seconds": 30,
            "guards": [{"metric": "validation_failures", "margin": 1.5, "floor": 0.02},
                       {"metric": "errors", "margin": 1.5, "floor": 0.02}]} | rollout
    return parse_config({
        "variants": [{"name": n, "engine": "upstream", "url": "http://127.0.0.1:9", "model": "m"} for n in ("int8", "bf16")],
        "ladder": ["int8", "bf16"],
        "routes": [{"name": "assistant", "model": "assistant"}],
        "rollouts": [spec], "events": {"path": None}})


def _feed(c: RolloutController, rng: random.Random, n: int, p_canary: float, p_base: float = 0.0) -> None:
    for _ in range(n):
        w = c.weight
        canary = rng.random() < w
        c.observe(Outcome(canary=canary, weight=w, validation_failed=rng.random() < (p_canary if canary else p_base)))


def _facts(user: str) -> RequestFacts:
    return RequestFacts(headers={}, tags=frozenset(), metadata={}, user=user, session=None)


def test_good_canary_climbs_every_step_and_becomes_the_default(tmp_path: Path) -> None:
    cfg, clock = _config(), Clock()
    router = Router(cfg)
    c = RolloutController(cfg.rollouts[0], router, RolloutStore(tmp_path / "r.sqlite"), clock=clock)
    assert c.state == "pending" and router.canary_weight("assistant") == 0.0
    c.start()
    assert router.canary_weight("assistant") == 0.1
    rng = random.Random(0)
    _feed(c, rng, 3000, 0.0)
    assert c.state == "running" and c.step == 0  # minimum time per step not met yet
    assert "s this step" in c.describe()["step_minimums"]
    for step in (1, 2):
        clock.t += 31
        _feed(c, rng, 2000, 0.0)
        assert c.step == step, c.describe()["verdict"]
    clock.t += 31
    _feed(c, rng, 2000, 0.0)
    assert c.state == "completed"
    route = router.route_for("assistant")
    assert router.default_for(route) == "int8" and router.canary_weight("assistant") == 0.0
    assert router.decide(route, _facts("u1")).variant == "int8"
    actions = [d["action"] for d in c.describe()["decisions"]]
    assert actions == ["complete", "promote", "promote", "start"]


def test_bad_canary_rolls_back_at_once_and_stays_frozen(tmp_path: Path) -> None:
    cfg, clock = _config(), Clock()
    router = Router(cfg)
    c = RolloutController(cfg.rollouts[0], router, RolloutStore(tmp_path / "r.sqlite"), clock=clock)
    c.start()
    _feed(c, random.Random(1), 5000, 0.3, 0.05)
    assert c.state == "rolled_back" and router.canary_weight("assistant") == 0.0
    d = c.describe()["decisions"][0]
    assert d["action"] == "rollback" and d["from_weight"] == 0.1 and d["to_weight"] == 0.0
    assert d["evidence"]["validation_failures"]["e_worse"] >= d["evidence"]["validation_failures"]["threshold"]
    route = router.route_for("assistant")
    assert all(router.decide(route, _facts(f"u{i}")).variant == "bf16" for i in range(200))
    _feed(c, random.Random(2), 100, 0.0)
    assert c.state == "rolled_back"  # frozen: clean traffic does not bring it back
    with pytest.raises(RolloutError, match="not running"):
        c.pause()


def test_restart_mid_rollout_keeps_state_evidence_and_decisions(tmp_path: Path) -> None:
    cfg, clock = _config(), Clock()
    store_path = tmp_path / "r.sqlite"
    c = RolloutController(cfg.rollouts[0], Router(cfg), RolloutStore(store_path), clock=clock)
    c.start()
    rng = random.Random(3)
    _feed(c, rng, 3000, 0.0)
    clock.t += 31
    _feed(c, rng, 1500, 0.0)
    assert c.step == 1
    _feed(c, rng, 700, 0.05, 0.05)
    c.close()  # what the gateway does on shutdown
    before = c.describe()

    router = Router(cfg)
    again = RolloutController(cfg.rollouts[0], router, RolloutStore(store_path), clock=clock)
    after = again.describe()
    assert (after["state"], after["step"], after["requests"]) == (before["state"], before["step"], before["requests"])
    assert after["decisions"] == before["decisions"]
    assert rounded(again.judge.verdict()) == rounded(c.judge.verdict())
    assert router.canary_weight("assistant") == 0.5


def test_admin_actions_and_their_state_errors(tmp_path: Path) -> None:
    cfg, clock = _config(), Clock()
    router = Router(cfg)
    c = RolloutController(cfg.rollouts[0], router, RolloutStore(None), clock=clock)
    with pytest.raises(RolloutError, match="pending, not running"):
        c.pause()
    c.start()
    with pytest.raises(RolloutError, match="already running"):
        c.start()
    c.pause()
    _feed(c, random.Random(4), 3000, 0.5)  # a paused rollout collects evidence but decides nothing
    assert c.state == "paused"
    c.resume()
    c.promote("operator is sure")
    assert c.step == 1 and router.canary_weight("assistant") == 0.5
    c.abort()
    assert c.state == "aborted" and router.canary_weight("assistant") == 0.0
    c.start()
    assert c.judge.requests == {"baseline": 0, "canary": 0}  # a new start is a new experiment


def test_skewed_split_pauses_the_rollout(tmp_path: Path) -> None:
    cfg = _config(min_seconds=0)
    c = RolloutController(cfg.rollouts[0], Router(cfg), RolloutStore(None), clock=Clock())
    c.start()
    rng = random.Random(5)
    for _ in range(6000):
        c.observe(Outcome(canary=rng.random() < 0.16, weight=0.1))
        if c.state != "running":
            break
    assert c.state == "paused" and "sample-ratio mismatch" in c.last_decision["reason"]


def test_config_rejects_bad_rollouts() -> None:
    from quantgate.errors import QuantgateError

    with pytest.raises(QuantgateError, match="steps must be increasing"):
        _config(steps=[0.5, 0.1])
    with pytest.raises(QuantgateError, match="candidate 'fp8' is not a variant"):
        _config(candidate="fp8")
    with pytest.raises(QuantgateError, match="guards: metric 'errors' appears twice"):
        _config(guards=[{"metric": "errors"}, {"metric": "errors"}])

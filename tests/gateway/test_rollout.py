"""End to end: two real local upstreams behind the gateway, a traffic driver, and a rollout that decides alone."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from tests.fakes.upstream import Reply, completion, sse_events
from tests.gateway.conftest import ADMIN, KEY, Rig
from tests.waiting import wait_until

GOOD = '{"city": "Oslo", "days": 3}'


def _rollout(tmp_path: Path, **kw: Any) -> dict[str, Any]:
    spec = {"route": "assistant", "baseline": "bf16", "candidate": "int8", "steps": [0.3, 0.6, 1.0],
            "min_requests": 20, "min_seconds": 0, "start": True,
            "guards": [{"metric": "validation_failures", "margin": 1.2, "floor": 0.05},
                       {"metric": "errors", "margin": 1.2, "floor": 0.05},
                       {"metric": "cost_per_success", "margin": 1.2}]} | kw
    return {"rollouts": [spec], "rollout_state": str(tmp_path / "rollouts.sqlite")}


def _drive(rig: Rig, n: int, stop: Callable[[], bool]) -> int:
    """Send up to ``n`` JSON-mode requests from 8 threads, asking ``stop`` every 10; returns how many were sent."""
    sent, stopped = 0, False
    lock = threading.Lock()
    local = threading.local()
    clients: list[httpx.Client] = []

    def one(i: int) -> None:
        nonlocal sent, stopped
        if stopped or (i % 10 == 0 and stop()):
            stopped = True
            return
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=rig.url, headers={"authorization": f"Bearer {KEY}"}, timeout=10)
            with lock:
                clients.append(local.client)
        r = local.client.post("/v1/chat/completions", json={
            "model": "assistant", "user": f"u{i}", "response_format": {"type": "json_object"},
            "messages": [{"role": "user", "content": "weather as JSON"}]})
        assert r.status_code == 200, r.text  # escalation keeps users whole while the canary misbehaves
        with lock:
            sent += 1

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(n)))
    for client in clients:
        client.close()
    return sent


def _rollout_state(rig: Rig) -> dict[str, Any]:
    r = httpx.get(rig.url + "/admin/rollout", headers={"authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200, r.text
    return r.json()


def test_canary_that_breaks_json_rolls_itself_back(rig_factory: Callable[..., Rig], tmp_path: Path) -> None:
    rig = rig_factory(**_rollout(tmp_path))
    rng = random.Random(0)
    rig.replies["int8"] = lambda body: Reply(body=completion('{"city": "Oslo", "days":' if rng.random() < 0.3 else GOOD))
    rig.replies["bf16"] = lambda body: Reply(body=completion(GOOD))
    sent = _drive(rig, 1500, lambda: _rollout_state(rig)["state"] != "running")
    state = _rollout_state(rig)
    assert state["state"] == "rolled_back", state
    assert state["weights"]["int8"] == 0.0 and state["last_decision"]["action"] == "rollback"
    assert "validation_failures" in state["last_decision"]["reason"]
    ev = state["decisions"][0]["evidence"]["validation_failures"]
    assert ev["e_worse"] >= ev["threshold"] and ev["canary"][1] > 0 and ev["baseline"][1] == 0
    assert sent < 1500
    metrics = httpx.get(rig.url + "/metrics").text
    assert 'quantgate_rollout_decisions_total{action="rollback",route="assistant"} 1.0' in metrics
    assert 'quantgate_rollout_canary_weight{route="assistant"} 0.0' in metrics
    before = len(rig.upstreams["int8"].requests)
    _drive(rig, 50, lambda: False)
    assert len(rig.upstreams["int8"].requests) == before  # frozen at 0: no traffic reaches the candidate


def test_equal_upstreams_promote_to_completion(rig_factory: Callable[..., Rig], tmp_path: Path) -> None:
    rig = rig_factory(**_rollout(tmp_path))
    rig.replies["int8"] = rig.replies["bf16"] = lambda body: Reply(body=completion(GOOD))
    _drive(rig, 3000, lambda: _rollout_state(rig)["state"] == "completed")
    state = _rollout_state(rig)
    assert state["state"] == "completed", state
    assert [d["action"] for d in state["decisions"]] == ["complete", "promote", "promote", "start"]
    assert state["weights"] == {"int8": 1.0}
    before = len(rig.upstreams["bf16"].requests)
    _drive(rig, 30, lambda: False)
    assert len(rig.upstreams["bf16"].requests) == before  # the candidate is the baseline now
    metrics = httpx.get(rig.url + "/metrics").text
    assert 'quantgate_rollout_state{route="assistant",state="completed"} 1.0' in metrics


def test_admin_rollout_api_errors_and_actions(rig_factory: Callable[..., Rig], tmp_path: Path) -> None:
    rig = rig_factory(**_rollout(tmp_path, start=False))
    auth = {"authorization": f"Bearer {ADMIN}"}
    assert httpx.get(rig.url + "/admin/rollout").status_code == 401
    assert _rollout_state(rig)["state"] == "pending"
    bad = httpx.post(rig.url + "/admin/rollout", headers=auth, json={"action": "explode"})
    assert bad.status_code == 400 and "unknown action 'explode'" in bad.json()["error"]["message"]
    wrong = httpx.post(rig.url + "/admin/rollout", headers=auth, json={"action": "pause"})
    assert wrong.status_code == 409 and "pending, not running" in wrong.json()["error"]["message"]
    missing = httpx.post(rig.url + "/admin/rollout", headers=auth, json={"action": "start", "route": "nope"})
    assert missing.status_code == 404
    ok = httpx.post(rig.url + "/admin/rollout", headers=auth, json={"action": "start", "reason": "ticket 42"})
    assert ok.status_code == 200 and ok.json()["state"] == "running" and ok.json()["weights"]["int8"] == 0.3
    assert ok.json()["last_decision"]["reason"] == "start by admin: ticket 42"
    aborted = httpx.post(rig.url + "/admin/rollout", headers=auth, json={"action": "abort"})
    assert aborted.json()["state"] == "aborted" and aborted.json()["weights"]["int8"] == 0.0


def test_drift_in_prompt_length_is_reported(rig_factory: Callable[..., Rig], tmp_path: Path) -> None:
    rig = rig_factory(drift={"reference_size": 120, "window": 60, "check_every": 10})
    rng = random.Random(1)
    auth = {"authorization": f"Bearer {KEY}"}
    admin = {"authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=rig.url, headers=auth, timeout=10) as client:
        for i in range(300):
            if i == 150:  # the reference is in; calibration runs on a background thread, slowly under load
                assert wait_until(lambda: httpx.get(rig.url + "/admin/drift", headers=admin).json()
                                  ["routes"]["assistant"]["calibrated"], timeout_s=60)
            words = rng.randint(5, 15) if i < 150 else rng.randint(60, 90)
            r = client.post("/v1/chat/completions", json={"model": "assistant", "messages": [
                {"role": "user", "content": " ".join(["word"] * words)}]})
            assert r.status_code == 200
    report = httpx.get(rig.url + "/admin/drift", headers={"authorization": f"Bearer {ADMIN}"}).json()
    drift = report["routes"]["assistant"]
    assert drift["calibrated"] and "prompt_tokens" in drift["drifting"], drift
    assert drift["alerts"][0]["feature"] == "prompt_tokens"
    metrics = httpx.get(rig.url + "/metrics").text
    assert 'quantgate_drift_alerts_total{feature="prompt_tokens",route="assistant"} 1.0' in metrics
    def drift_logged() -> bool:  # the event log commits from its writer thread
        events = httpx.get(rig.url + "/admin/events?kind=drift", headers=admin).json()["events"]
        return any("prompt_tokens" in e["reason"] for e in events)

    assert wait_until(drift_logged, timeout_s=5), "no drift event was logged"


def test_shadow_replays_flag_json_breakage_and_roll_back(rig_factory: Callable[..., Rig], tmp_path: Path) -> None:
    # 16 slots per variant: the 8 driver threads leave the baseline room for shadow calls
    rig = rig_factory(variant={"max_concurrency": 16}, **_rollout(tmp_path, shadow={"share": 1.0, "queue_size": 256},
                                 guards=[{"metric": "shadow_flips", "floor": 0.05}]))
    rng = random.Random(2)
    rig.replies["int8"] = lambda body: Reply(body=completion('{"city": "Oslo", "days":' if rng.random() < 0.3 else GOOD))
    rig.replies["bf16"] = lambda body: Reply(body=completion(GOOD))
    _drive(rig, 1500, lambda: _rollout_state(rig)["state"] != "running")
    state = _rollout_state(rig)
    assert state["state"] == "rolled_back" and "shadow_flips" in state["last_decision"]["reason"], state["last_decision"]
    ev = state["decisions"][0]["evidence"]["shadow_flips"]
    assert ev["regression_flips"] > 0 and ev["shadowed"] >= ev["regression_flips"]
    metrics = httpx.get(rig.url + "/metrics").text
    assert 'quantgate_shadow_flips_total{direction="regression",route="assistant"}' in metrics
    assert 'quantgate_shadow_comparisons_total{result="exact",route="assistant"}' in metrics


def test_streamed_through_traffic_feeds_the_judge_and_drift(rig_factory: Callable[..., Rig], tmp_path: Path) -> None:
    # no response_format, no tools, no route assertions: the gateway streams straight through, and
    # the rollout must still see what those answers did (here: a canary whose streams die mid-way)
    rig = rig_factory(**_rollout(tmp_path, guards=[{"metric": "errors", "margin": 1.2, "floor": 0.05}]),
                      drift={"reference_size": 100, "window": 50, "check_every": 10})
    rng = random.Random(2)
    rig.replies["int8"] = lambda body: Reply(events=sse_events(["Sun", "ny"], finish_reason=None, done=False)
                                             if rng.random() < 0.3 else sse_events(["Sun", "ny"]))
    rig.replies["bf16"] = lambda body: Reply(events=sse_events(["Sun", "ny"]))
    cut = sent = 0
    with httpx.Client(base_url=rig.url, headers={"authorization": f"Bearer {KEY}"}, timeout=10) as client:
        for i in range(1500):
            if i % 10 == 0 and _rollout_state(rig)["state"] != "running":
                break
            with client.stream("POST", "/v1/chat/completions", json={
                    "model": "assistant", "user": f"u{i}", "stream": True,
                    "messages": [{"role": "user", "content": "weather?"}]}) as r:
                assert r.status_code == 200
                cut += "upstream_stream_cut" in r.read().decode()
                sent += 1
    state = _rollout_state(rig)
    assert state["state"] == "rolled_back", state
    assert "errors" in state["last_decision"]["reason"]
    assert state["decisions"][0]["evidence"]["errors"]["canary"][1] > 0 and cut > 0
    report = httpx.get(rig.url + "/admin/drift", headers={"authorization": f"Bearer {ADMIN}"}).json()
    assert report["routes"]["assistant"]["requests"] == sent  # every stream reached the drift monitor too

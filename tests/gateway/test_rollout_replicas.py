"""One rollout, two gateway replicas sharing Redis: one decides, both apply; a non-leader cannot decide."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from quantgate.config import parse_config
from quantgate.gateway.app import create_app
from quantgate.gateway.server import build_engines, serving
from tests.fakes.upstream import FakeUpstream, Reply, completion
from tests.gateway.conftest import ADMIN, KEY, base_config
from tests.waiting import wait_until

GOOD = '{"city": "Oslo", "days": 3}'


@pytest.fixture
def redis_url() -> str:
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    finally:
        client.close()
    return "redis://127.0.0.1:6379/0"


@contextmanager
def _replicas(redis_url: str, tmp_path: Path, **rollout: Any) -> Iterator[tuple[list[str], list[Any]]]:
    rng = random.Random(0)

    def reply(name: str) -> Any:
        def answer(body: dict[str, Any]) -> Reply:
            broken = name == "int8" and rng.random() < 0.3
            return Reply(body=completion('{"city": "Oslo", "days":' if broken else GOOD))
        return answer

    spec = {"route": "assistant", "baseline": "bf16", "candidate": "int8", "steps": [0.3, 1.0],
            "min_requests": 20, "min_seconds": 0, "start": True,
            "guards": [{"metric": "validation_failures", "margin": 1.2, "floor": 0.05}]} | rollout
    with ExitStack() as stack:
        ups = {n: stack.enter_context(FakeUpstream(reply=reply(n))) for n in ("int4", "int8", "bf16")}
        raw = base_config({n: u.url for n, u in ups.items()}, tmp_path,
                          state={"backend": "redis", "redis_url": redis_url, "prefix": f"qg-test-{uuid.uuid4().hex[:8]}"},
                          rollouts=[spec])
        raw["variants"] = [{**v, "max_concurrency": 16} for v in raw["variants"]]
        config = parse_config(raw)
        apps = [create_app(config, build_engines(config), admin_key=ADMIN) for _ in range(2)]
        urls = [stack.enter_context(serving(app)) for app in apps]
        yield urls, apps


@pytest.fixture
def replicas(redis_url: str, tmp_path: Path) -> Iterator[tuple[list[str], list[Any]]]:
    with _replicas(redis_url, tmp_path) as running:
        yield running


def _state(url: str) -> dict[str, Any]:
    return httpx.get(url + "/admin/rollout", headers={"authorization": f"Bearer {ADMIN}"}).json()


def test_two_replicas_share_one_rollout_and_one_decision(replicas: tuple[list[str], list[Any]]) -> None:
    urls, apps = replicas
    clients = [httpx.Client(base_url=u, headers={"authorization": f"Bearer {KEY}"}, timeout=10) for u in urls]
    body = {"model": "assistant", "response_format": {"type": "json_object"},
            "messages": [{"role": "user", "content": "weather as JSON"}]}
    try:
        deadline = time.monotonic() + 60
        i = 0
        while time.monotonic() < deadline and _state(urls[0])["state"] in ("pending", "running"):
            for client in clients:  # traffic on both replicas
                for _ in range(10):
                    assert client.post("/v1/chat/completions", json=body).status_code == 200
            i += 1
        # followers apply the shared state within a tick (0.5 s); poll, since a loaded machine is slower
        wait_until(lambda: len({_state(u)["state"] for u in urls}) == 1, timeout_s=10)
        states = [_state(u) for u in urls]
    finally:
        for client in clients:
            client.close()
    assert [s["state"] for s in states] == ["rolled_back", "rolled_back"], states[0]["verdict"]
    decisions = states[0]["decisions"]
    assert [d["action"] for d in decisions] == ["rollback", "start"]
    leaders = {app.state.replica_syncs["assistant"].leader for app in apps}
    assert leaders == {True, False}  # exactly one replica holds the lease
    ev = decisions[0]["evidence"]["validation_failures"]
    both = sum(ev["canary"]) and sum(ev["baseline"])
    assert both and ev["canary"][0] + ev["baseline"][0] > 20  # the judge saw both replicas' traffic
    for app in apps:
        assert app.state.pipeline.router.canary_weight("assistant") == 0.0


def test_a_replica_without_the_lease_cannot_decide(replicas: tuple[list[str], list[Any]]) -> None:
    urls, apps = replicas
    httpx.post(urls[0] + "/v1/chat/completions", headers={"authorization": f"Bearer {KEY}"},
               json={"model": "assistant", "messages": [{"role": "user", "content": "hi"}]})
    httpx.post(urls[1] + "/v1/chat/completions", headers={"authorization": f"Bearer {KEY}"},
               json={"model": "assistant", "messages": [{"role": "user", "content": "hi"}]})
    assert wait_until(lambda: any(app.state.replica_syncs["assistant"].leader for app in apps), timeout_s=10)
    follower = next(u for u, app in zip(urls, apps) if not app.state.replica_syncs["assistant"].leader)
    r = httpx.post(follower + "/admin/rollout", headers={"authorization": f"Bearer {ADMIN}"}, json={"action": "pause"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_leader"
    assert _state(follower)["state"] == "running"  # nothing changed


def test_a_followers_shadow_comparisons_reach_the_leaders_judge(redis_url: str, tmp_path: Path) -> None:
    # the only guard is shadow flips and only the follower gets traffic: the leader can roll back
    # only on comparisons the follower made and shipped
    with _replicas(redis_url, tmp_path, shadow={"share": 1.0},
                   guards=[{"metric": "shadow_flips", "floor": 0.02}]) as (urls, apps):
        assert wait_until(lambda: any(app.state.replica_syncs["assistant"].leader for app in apps), timeout_s=10)
        follower = next(u for u, app in zip(urls, apps) if not app.state.replica_syncs["assistant"].leader)
        leader = next(u for u in urls if u != follower)
        body = {"model": "assistant", "response_format": {"type": "json_object"},
                "messages": [{"role": "user", "content": "weather as JSON"}]}
        with httpx.Client(base_url=follower, headers={"authorization": f"Bearer {KEY}"}, timeout=10) as client:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and _state(leader)["state"] == "running":
                for _ in range(10):
                    assert client.post("/v1/chat/completions", json=body).status_code == 200
        state = _state(leader)
    assert state["state"] == "rolled_back", state["verdict"]
    assert "shadow_flips" in state["last_decision"]["reason"]

"""Routing: floors from rules, sticky canary split, budget downgrade, and the reason for each."""

from __future__ import annotations

from typing import Any

from quantgate.config import parse_config
from quantgate.gateway.routing import RequestFacts, Router, sticky_fraction


def _config(**route: Any) -> Any:
    return parse_config({
        "variants": [{"name": n, "engine": "local", "path": "x", "price": {"prompt_per_mtok": p}}
                     for n, p in (("int4", 1), ("int8", 2), ("bf16", 4))],
        "ladder": ["int4", "int8", "bf16"],
        "routes": [{"name": "r", "model": "m", **route}],
    })


def _facts(**kw: Any) -> RequestFacts:
    base: dict[str, Any] = {"headers": {}, "tags": frozenset(), "metadata": {}, "user": None, "session": None}
    base.update(kw)
    return RequestFacts(**base)


def test_floor_rules_and_ladder() -> None:
    cfg = _config(default="int8", rules=[{"tag": "legal", "floor": "bf16", "reason": "legal stays high"},
                                         {"metadata": "tier", "equals": "gold", "floor": "int8"}])
    router = Router(cfg)
    route = router.route_for("m")
    d = router.decide(route, _facts())
    assert (d.variant, d.ladder) == ("int8", ("int8", "bf16"))
    d = router.decide(route, _facts(tags=frozenset({"legal"})))
    assert d.variant == "bf16" and "legal stays high" in d.reason and d.ladder == ("bf16",)


def test_canary_is_sticky_and_weighted() -> None:
    router = Router(_config(floor="int8", canary={"variant": "int4", "weight": 0.5},
                            rules=[{"header": "x-quantgate-risk", "floor": "bf16"}]))
    route = router.route_for("m")
    assert "canary int4 below floor" in router.decide(route, _facts(user="a")).reason
    router = Router(_config(default="int8", canary={"variant": "int4", "weight": 0.3}))
    route = router.route_for("m")
    users = [f"user{i}" for i in range(2000)]
    picks = {u: router.decide(route, _facts(user=u)).variant for u in users}
    share = sum(v == "int4" for v in picks.values()) / len(users)
    assert 0.25 < share < 0.35
    assert all(router.decide(route, _facts(user=u)).variant == picks[u] for u in users[:200])
    assert all((picks[u] == "int4") == (sticky_fraction("r", u) < 0.3) for u in users)
    router.set_canary_weight("r", 0.0)
    assert router.decide(route, _facts(user=users[0])).variant == "int8"
    assert "no user to stick to" in Router(_config(canary={"variant": "int4", "weight": 1.0})).decide(
        route, _facts()).reason


def test_budget_downgrade_to_cheapest_at_or_above_floor() -> None:
    router = Router(_config(default="bf16", floor="int8"))
    route = router.route_for("m")
    assert router.decide(route, _facts(budget_fraction=0.5, downgrade_at=0.8)).variant == "bf16"
    d = router.decide(route, _facts(budget_fraction=0.9, downgrade_at=0.8))
    assert d.variant == "int8" and "budget 90% spent" in d.reason


def test_through_the_gateway_sessions_stick_and_tag_headers_raise_the_floor(rig_factory: Any) -> None:
    import httpx

    rig = rig_factory(routes=[{"name": "a", "model": "assistant",
                               "canary": {"variant": "int8", "weight": 0.5, "sticky": "session"},
                               "rules": [{"tag": "legal", "floor": "bf16", "reason": "legal stays high"}]}])

    def ask(headers: dict[str, str], metadata: dict[str, str] | None = None) -> httpx.Response:
        body: dict[str, Any] = {"model": "assistant", "messages": [{"role": "user", "content": "x"}]}
        if metadata:
            body["metadata"] = metadata
        r = httpx.post(rig.url + "/v1/chat/completions", json=body,
                       headers={"authorization": "Bearer sk-test-acme", **headers})
        assert r.status_code == 200, r.text
        return r

    seen = {}
    for i in range(16):
        variants = {ask({"x-quantgate-session": f"s{i}"}).headers["x-quantgate-variant"] for _ in range(3)}
        assert len(variants) == 1  # one conversation, one variant
        seen[f"s{i}"] = variants.pop()
        # the session may also come in the body's metadata
        assert ask({}, {"session_id": f"s{i}"}).headers["x-quantgate-variant"] == seen[f"s{i}"]
    assert set(seen.values()) == {"int4", "int8"}
    legal = ask({"x-quantgate-tags": "billing, legal", "x-quantgate-session": "s0"})
    assert legal.headers["x-quantgate-variant"] == "bf16" and "legal stays high" in legal.headers["x-quantgate-route-reason"]

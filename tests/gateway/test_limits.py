"""Rate limits and budgets: token buckets against a fake clock; atomic reservations in memory and in Redis."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from quantgate.gateway.limits import MemoryLimits, RedisLimits, budget_period_key


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_refills_continuously() -> None:
    clock = Clock()
    lim = MemoryLimits(clock)

    async def go() -> None:
        assert await lim.take_rate("k", 60, 60) == 0.0
        wait = await lim.take_rate("k", 1, 60)
        assert wait == pytest.approx(1.0)
        clock.t += 1.0
        assert await lim.take_rate("k", 1, 60) == 0.0
        await lim.refund_rate("k", 30, 60)
        assert await lim.take_rate("k", 30, 60) == 0.0

    asyncio.run(go())


def test_budget_periods() -> None:
    assert budget_period_key("day", 86400 * 3 + 5) == "d3"
    assert budget_period_key("month", 0) == "m1970-01"


async def _race(lim: object, n: int, each: float, limit: float, key: str) -> tuple[int, float]:
    async def one() -> bool:
        ok, _ = await lim.reserve_budget(key, each, limit)  # type: ignore[attr-defined]
        await asyncio.sleep(0)
        if ok:
            await lim.settle_budget(key, each, each * 0.5)  # type: ignore[attr-defined]
        return ok

    granted = sum(await asyncio.gather(*(one() for _ in range(n))))
    return granted, await lim.spent(key)  # type: ignore[attr-defined]


def test_memory_budget_never_overspends_under_200_concurrent() -> None:
    granted, spent = asyncio.run(_race(MemoryLimits(), 200, 0.3, 10.0, "t:d1"))
    # every grant reserved 0.3 and spent 0.15; reservations never exceeded the limit at any moment
    assert spent <= 10.0
    assert granted >= 33


@pytest.fixture
def redis_client() -> object:
    redis = pytest.importorskip("redis.asyncio")
    client = redis.from_url("redis://127.0.0.1:6379/0")

    async def ping() -> bool:
        try:
            return bool(await client.ping())
        except OSError:
            return False

    if not asyncio.run(ping()):
        pytest.skip("no Redis on 127.0.0.1:6379 (.ci/run starts one)")
    return redis


def test_redis_limits_are_atomic(redis_client: object) -> None:
    async def go() -> tuple[int, float, float]:
        pool = redis_client.BlockingConnectionPool.from_url("redis://127.0.0.1:6379/0", max_connections=32)  # type: ignore[attr-defined]
        client = redis_client.Redis(connection_pool=pool)  # type: ignore[attr-defined]
        lim = RedisLimits(client, prefix=f"qgtest-{uuid.uuid4().hex[:8]}", clock=Clock())
        granted, spent = await _race(lim, 200, 0.3, 10.0, "t:d1")
        first = await lim.take_rate("r", 5, 5)
        wait = await lim.take_rate("r", 1, 5)
        await client.aclose()
        return granted, spent, wait + first

    granted, spent, wait = asyncio.run(go())
    assert spent <= 10.0 and granted >= 33
    assert wait == pytest.approx(12.0)  # 1 token at 5 per minute


def test_tokens_per_minute_reserve_the_worst_case_and_refund_the_rest(rig_factory: Any) -> None:
    import httpx

    from tests.fakes.upstream import Reply, completion

    rig = rig_factory(tenants=[{"name": "acme", "keys": ["sk-test-acme"], "rate": {"tokens_per_min": 100}}])
    rig.replies["int4"] = lambda body: Reply(body=completion("ok", prompt_tokens=5, completion_tokens=3), delay_s=0.3)
    url, auth = rig.url + "/v1/chat/completions", {"authorization": "Bearer sk-test-acme"}
    body = {"model": "assistant", "messages": [{"role": "user", "content": "x"}], "max_tokens": 60}

    too_big = httpx.post(url, headers=auth, json={**body, "max_tokens": 200})
    assert too_big.status_code == 400 and too_big.json()["error"]["code"] == "request_too_large"
    assert "needs up to 205 tokens (prompt + max_tokens), more than the 100 tokens per minute of tenant 'acme'" \
        in too_big.json()["error"]["message"]

    async def two_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=10) as client:
            return list(await asyncio.gather(*(client.post(url, headers=auth, json=body) for _ in range(2))))

    codes = sorted(r.status_code for r in asyncio.run(two_at_once()))
    assert codes == [200, 429]  # two worst cases (60+ tokens each) do not fit one minute's 100
    # each answer used 8 tokens and gave the rest of its reservation back, so more requests fit, one at a time
    assert [httpx.post(url, headers=auth, json=body).status_code for _ in range(3)] == [200] * 3
    assert rig.metric("quantgate_shed_total", reason="rate_tokens") == 1

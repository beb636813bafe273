"""Rate limits and budgets: token buckets against a fake clock; atomic reservations in memory and in Redis."""

from __future__ import annotations

import asyncio
import uuid

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

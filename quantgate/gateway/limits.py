"""Rate limits (requests and tokens per minute) and spend budgets per tenant, in memory or in Redis.

Both follow reserve-then-settle: before the engine call the pipeline takes the worst case (prompt
tokens plus the completion cap, and the cost of every attempt escalation may make), after it gives
back what was not used. The check and the take are one atomic step (a plain dict update between
awaits in memory, a Lua script in Redis), so 200 concurrent requests cannot all see the same
remaining budget and overspend together, the race LiteLLM's budgets are known for.

Rate limits are token buckets refilled continuously (capacity = the per-minute limit), so a tenant
can burst up to a minute's allowance and then proceeds at the steady rate; a refused take returns
how long to wait, which becomes ``Retry-After``. The clock is injectable for tests.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["MemoryLimits", "RedisLimits", "LimitStore", "budget_period_key"]

_PERIOD_S = {"minute": 60, "hour": 3600, "day": 86400, "month": 30 * 86400}


def budget_period_key(period: str, now: float) -> str:
    """The id of the budget window containing ``now`` (calendar month for ``month``, UTC)."""
    if period == "month":
        t = time.gmtime(now)
        return f"m{t.tm_year}-{t.tm_mon:02d}"
    return f"{period[0]}{int(now // _PERIOD_S[period])}"


class LimitStore(Protocol):
    async def take_rate(self, key: str, amount: float, per_min: float) -> float: ...
    async def refund_rate(self, key: str, amount: float, per_min: float) -> None: ...
    async def reserve_budget(self, key: str, amount: float, limit: float) -> tuple[bool, float]: ...
    async def settle_budget(self, key: str, reserved: float, actual: float) -> float: ...
    async def spent(self, key: str) -> float: ...


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class MemoryLimits:
    """One replica's limits; the event loop's single thread makes each method atomic."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._spent: dict[str, float] = {}

    def _bucket(self, key: str, cap: float) -> _Bucket:
        now = self._clock()
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = _Bucket(cap, now)
        else:
            b.tokens = min(cap, b.tokens + (now - b.stamp) * cap / 60.0)
            b.stamp = now
        return b

    async def take_rate(self, key: str, amount: float, per_min: float) -> float:
        """Take ``amount``; 0.0 when granted, else the seconds until it would be (nothing taken)."""
        b = self._bucket(key, per_min)
        if b.tokens >= amount:
            b.tokens -= amount
            return 0.0
        return (amount - b.tokens) * 60.0 / per_min

    async def refund_rate(self, key: str, amount: float, per_min: float) -> None:
        b = self._bucket(key, per_min)
        b.tokens = min(per_min, b.tokens + amount)

    async def reserve_budget(self, key: str, amount: float, limit: float) -> tuple[bool, float]:
        spent = self._spent.get(key, 0.0)
        if spent + amount > limit:
            return False, spent
        self._spent[key] = spent + amount
        return True, spent + amount

    async def settle_budget(self, key: str, reserved: float, actual: float) -> float:
        self._spent[key] = self._spent.get(key, 0.0) + actual - reserved
        return self._spent[key]

    async def spent(self, key: str) -> float:
        return self._spent.get(key, 0.0)


# Redis keeps the same state; each script runs atomically on the server. Time comes from the
# caller's clock so every replica agrees with its own tests' fake clock; replicas' clocks only need
# to agree to well under a second for per-minute limits.
_TAKE = """
local cap = tonumber(ARGV[2]); local now = tonumber(ARGV[3]); local amount = tonumber(ARGV[1])
local s = redis.call('HMGET', KEYS[1], 't', 's')
local tokens = tonumber(s[1]) or cap; local stamp = tonumber(s[2]) or now
tokens = math.min(cap, tokens + math.max(0, now - stamp) * cap / 60.0)
local wait = 0
if tokens >= amount then tokens = tokens - amount else wait = (amount - tokens) * 60.0 / cap end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 's', tostring(now))
redis.call('EXPIRE', KEYS[1], 120)
return tostring(wait)
"""
_REFUND = """
local cap = tonumber(ARGV[2]); local now = tonumber(ARGV[3])
local s = redis.call('HMGET', KEYS[1], 't', 's')
local tokens = tonumber(s[1]) or cap; local stamp = tonumber(s[2]) or now
tokens = math.min(cap, tokens + math.max(0, now - stamp) * cap / 60.0 + tonumber(ARGV[1]))
redis.call('HSET', KEYS[1], 't', tostring(tokens), 's', tostring(now))
redis.call('EXPIRE', KEYS[1], 120)
return 1
"""
_RESERVE = """
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
if spent + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return {0, tostring(spent)} end
spent = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return {1, tostring(spent)}
"""


class RedisLimits:
    """Limits shared by every replica through Redis (``redis.asyncio`` client, injected)."""

    def __init__(self, client: Any, prefix: str = "quantgate", clock: Callable[[], float] = time.time,
                 budget_ttl_s: int = 40 * 86400):
        self._r = client
        self._prefix = prefix
        self._clock = clock
        self._ttl = budget_ttl_s
        self._take = client.register_script(_TAKE)
        self._refund = client.register_script(_REFUND)
        self._reserve = client.register_script(_RESERVE)

    def _k(self, kind: str, key: str) -> str:
        return f"{self._prefix}:{kind}:{key}"

    async def take_rate(self, key: str, amount: float, per_min: float) -> float:
        wait = await self._take(keys=[self._k("rate", key)], args=[amount, per_min, self._clock()])
        return float(wait)

    async def refund_rate(self, key: str, amount: float, per_min: float) -> None:
        await self._refund(keys=[self._k("rate", key)], args=[amount, per_min, self._clock()])

    async def reserve_budget(self, key: str, amount: float, limit: float) -> tuple[bool, float]:
        ok, spent = await self._reserve(keys=[self._k("spend", key)], args=[repr(amount), repr(limit), self._ttl])
        return bool(int(ok)), float(spent)

    async def settle_budget(self, key: str, reserved: float, actual: float) -> float:
        return float(await self._r.incrbyfloat(self._k("spend", key), repr(actual - reserved)))

    async def spent(self, key: str) -> float:
        v = await self._r.get(self._k("spend", key))
        return float(v) if v is not None else 0.0


def retry_after_header(wait_s: float) -> dict[str, str]:
    return {"retry-after": str(max(1, math.ceil(wait_s)))}

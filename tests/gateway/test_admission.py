"""Admission: concurrency cap, bounded priority queue, 429 when full, 503 at the deadline."""

from __future__ import annotations

import asyncio

import pytest

from quantgate.gateway.admission import Admission, QueueFull, QueueTimeout


def test_cap_queue_priority_and_shedding() -> None:
    async def go() -> list[str]:
        adm = Admission("v", concurrency=1, queue_size=2)
        order: list[str] = []
        await adm.acquire()
        assert adm.in_flight == 1

        async def waiter(name: str, prio: int) -> None:
            await adm.acquire(prio, timeout_s=5)
            order.append(name)
            adm.release()

        low = asyncio.create_task(waiter("low", 0))
        await asyncio.sleep(0)
        high = asyncio.create_task(waiter("high", 5))
        await asyncio.sleep(0)
        assert adm.queued == 2
        with pytest.raises(QueueFull) as err:
            await adm.acquire()
        assert err.value.status == 429 and err.value.headers == {"retry-after": "1"}
        adm.release()
        await asyncio.gather(low, high)
        assert adm.in_flight == 0 and adm.queued == 0
        return order

    assert asyncio.run(go()) == ["high", "low"]


def test_deadline_is_503_and_frees_the_queue_slot() -> None:
    async def go() -> None:
        adm = Admission("v", concurrency=1, queue_size=1)
        await adm.acquire()
        with pytest.raises(QueueTimeout) as err:
            await adm.acquire(timeout_s=0.05)
        assert err.value.status == 503
        assert adm.queued == 0
        adm.release()
        assert await adm.acquire(timeout_s=0.05) == 0.0

    asyncio.run(go())


def test_cancelled_waiter_does_not_leak_a_slot() -> None:
    async def go() -> None:
        adm = Admission("v", concurrency=1, queue_size=4)
        await adm.acquire()
        t = asyncio.create_task(adm.acquire(timeout_s=5))
        await asyncio.sleep(0)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        adm.release()
        assert adm.in_flight == 0 and adm.queued == 0

    asyncio.run(go())

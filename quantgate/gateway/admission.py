"""Admission control per variant: a concurrency cap, then a bounded priority queue with deadlines.

A request runs at once while fewer than ``concurrency`` are in flight on the variant; otherwise it
waits in a queue ordered by priority (higher first) and arrival. A full queue sheds the request at
once (429 with Retry-After) and a request still queued at its deadline leaves with 503, so memory
stays bounded by ``concurrency + queue_size`` requests per variant whatever the offered load.
The trade-off of shedding over queueing deeper is deliberate: past the capacity knee, a deeper
queue only turns fast failures into slow ones.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from quantgate.gateway.protocol import ApiError

__all__ = ["Admission", "QueueFull", "QueueTimeout"]


class QueueFull(ApiError):
    """The variant's queue is full (429 with Retry-After)."""


class QueueTimeout(ApiError):
    """The request was still queued at its deadline (503)."""


@dataclass(order=True)
class _Waiter:
    rank: tuple[int, int]
    future: asyncio.Future[None] = field(compare=False)


class Admission:
    def __init__(self, name: str, concurrency: int, queue_size: int, retry_after_s: int = 1,
                 clock: Callable[[], float] = time.monotonic):
        self.name = name
        self.concurrency = concurrency
        self.queue_size = queue_size
        self._retry_after = retry_after_s
        self._clock = clock
        self._active = 0
        self._waiting = 0  # live waiters (the heap may also hold cancelled ones until popped)
        self._heap: list[_Waiter] = []
        self._seq = itertools.count()

    @property
    def in_flight(self) -> int:
        return self._active

    @property
    def queued(self) -> int:
        return self._waiting

    async def acquire(self, priority: int = 0, timeout_s: float = 30.0) -> float:
        """Wait for a slot; returns the seconds spent queued. Raises ``QueueFull`` / ``QueueTimeout``."""
        if self._active < self.concurrency and self._waiting == 0:
            self._active += 1
            return 0.0
        if self._waiting >= self.queue_size:
            raise QueueFull(429, f"variant {self.name!r} is at capacity and its queue is full; retry later",
                            "rate_limit_error", code="overloaded", headers={"retry-after": str(self._retry_after)})
        start = self._clock()
        waiter = _Waiter((-priority, next(self._seq)), asyncio.get_running_loop().create_future())
        heapq.heappush(self._heap, waiter)
        self._waiting += 1
        try:
            await asyncio.wait_for(asyncio.shield(waiter.future), timeout=max(0.0, timeout_s))
        except TimeoutError:
            if waiter.future.done() and not waiter.future.cancelled():
                return self._clock() - start  # granted in the same instant the deadline passed
            waiter.future.cancel()
            self._waiting -= 1
            raise QueueTimeout(503, f"request waited {timeout_s:.1f}s in the queue of variant {self.name!r} "
                                    "without being served", "server_error", code="queue_timeout") from None
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                self.release()  # the slot was ours; pass it on
            else:
                waiter.future.cancel()
                self._waiting -= 1
            raise
        return self._clock() - start

    def release(self) -> None:
        """Give a slot back: the best live waiter gets it, or the in-flight count drops."""
        while self._heap:
            waiter = heapq.heappop(self._heap)
            if not waiter.future.done():
                waiter.future.set_result(None)
                self._waiting -= 1
                return  # the slot passes on; _active unchanged
        self._active -= 1

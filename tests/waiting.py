"""Polling for tests that wait on background work: a fixed sleep is either slow or flaky under load."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0, interval_s: float = 0.02) -> bool:
    """Call ``condition`` until it is true or ``timeout_s`` passes; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval_s)
    return True


async def wait_until_async(condition: Callable[[], Awaitable[bool]], timeout_s: float = 10.0,
                           interval_s: float = 0.02) -> bool:
    """``wait_until`` inside an event loop: awaits ``condition`` and sleeps without blocking the loop."""
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval_s)
    return True

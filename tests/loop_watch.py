"""Watching the event loop from a test: the longest time it went without running a task."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable


async def longest_stall(work: Awaitable[Any], tick: float = 0.05) -> tuple[Any, float]:
    """``work``'s result and the longest gap between heartbeats (ticks of ``tick`` seconds)
    while it ran: a blocked event loop shows as a long gap."""
    gaps: list[float] = []

    async def heartbeat() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            gaps.append(time.monotonic() - last)
            last = time.monotonic()

    beat = asyncio.create_task(heartbeat())
    try:
        result = await work
    finally:
        beat.cancel()
    return result, max(gaps, default=0.0)

"""Clocks: the real one, and a virtual one that lets timing rules run instantly.

Providers that keep time themselves (the in-memory provider) take a :class:`Clock`, so the
conformance suite can run visibility and delay rules in virtual time: ``advance(5)`` moves
time forward and wakes exactly the sleepers that became due, in order.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "SystemClock", "VirtualClock"]


@runtime_checkable
class Clock(Protocol):
    """Time source for deadlines (``now``) and timestamps (``wall``)."""

    def now(self) -> float:
        """Monotonic seconds, for deadlines."""
        ...

    def wall(self) -> float:
        """Seconds since the epoch, for ``enqueued_at``."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Suspend for ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class VirtualClock:
    """A clock that only moves when :meth:`advance` is awaited."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), future))
        await future

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking due sleepers in deadline order and letting them run."""
        target = self._now + max(0.0, seconds)
        while self._sleepers and self._sleepers[0][0] <= target:
            due, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, due)
            if not future.done():
                future.set_result(None)
            await _settle()
        self._now = target
        await _settle()


async def _settle() -> None:
    # A few loop turns let woken tasks run to their next await before time moves again.
    for _ in range(5):
        await asyncio.sleep(0)

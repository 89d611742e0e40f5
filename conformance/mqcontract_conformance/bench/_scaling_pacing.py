"""Open-loop pacing: every send has a due time fixed in advance.

Sleeping a fixed interval *after* each send lets a slow send push back every later one
(the offered rate drifts below the target, and the queueing the test should reveal is
hidden). Here send ``i`` is due at ``start + i / rate``; several senders take turns, so
one slow send delays no other, and a send that could not start on time is counted as
late (its lag is reported) instead of silently moving the schedule.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mqcontract.clock import Clock

__all__ = ["PacedRun", "due_times", "paced_sends"]

#: A send that starts more than this after its due time counts as late.
LATE_AFTER = 0.002


def due_times(start: float, rate: float | None, count: int) -> list[float]:
    """When each of ``count`` sends is due: ``start + i / rate`` (all at ``start`` for None)."""
    if rate is None:
        return [start] * count
    if rate <= 0:
        raise ValueError(f"rate must be positive, not {rate!r}")
    return [start + i / rate for i in range(count)]


@dataclass(frozen=True, slots=True)
class PacedRun:
    """What the schedule asked for and what the senders managed."""

    #: Seconds each send started after its due time (0 or a little more when on time).
    lags: list[float]
    #: From the first due time to the start of the last send.
    seconds: float

    @property
    def late(self) -> int:
        """Sends that started more than :data:`LATE_AFTER` after their due time."""
        return sum(1 for lag in self.lags if lag > LATE_AFTER)

    @property
    def max_lag(self) -> float:
        return max(self.lags, default=0.0)


async def paced_sends(
    send: Callable[[int], Awaitable[None]],
    count: int,
    rate: float | None,
    *,
    senders: int,
    clock: Clock,
) -> PacedRun:
    """Call ``send(i)`` for every ``i < count`` at its due time, from ``senders`` tasks.

    ``rate`` None sends as fast as the senders can (a capacity run).
    """
    start = clock.now()
    due = due_times(start, rate, count)
    lags = [0.0] * count
    last_start = start
    turns = iter(range(count))

    async def sender() -> None:
        nonlocal last_start
        for i in turns:  # shared iterator: each index is taken by exactly one sender
            wait = due[i] - clock.now()
            if wait > 0:
                await clock.sleep(wait)
            began = clock.now()
            lags[i] = max(0.0, began - due[i])
            last_start = max(last_start, began)
            await send(i)

    async with asyncio.TaskGroup() as group:
        for _ in range(max(1, min(senders, count))):
            group.create_task(sender())
    return PacedRun(lags=lags, seconds=last_start - start)

"""Acked messages' ledger records, purged a while after the ack, once the message is gone.

A confirmed ack is not proof the message is gone. A consumer leader cut off from its
majority confirms acks it cannot carry out, the stream's leader on that side may answer
that the message is no longer there, and the new leader delivers it again: a record
purged on that word would let the redelivery be handed out as new. So the look at the
stream waits ``delay`` seconds, longer than a leader without its majority keeps leading
(nats-server steps down within seconds). Whatever answers then has its majority. A
message still there is looked at again later (``tries`` in all), then its records stay:
they are what makes a redelivery be finished instead of handed out. What is still waiting
when the service closes stays too.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable

from mqcontract_nats_jetstream._names import QueueNames

__all__ = ["Forgetting"]

#: Is message ``seq`` gone from the queue's stream (``False`` when not known)?
Gone = Callable[[QueueNames, int], Awaitable[bool]]
#: Shortest wait before a message still in the stream is looked at again.
_MIN_GAP = 0.05
#: Purge the records of message ``seq``.
Purge = Callable[[QueueNames, int], Awaitable[None]]


class Forgetting:
    """The records waiting to be purged, and the one task that purges them in turn."""

    def __init__(self, gone: Gone, purge: Purge, *, delay: float, tries: int = 3) -> None:
        self._gone, self._purge = gone, purge
        self.delay, self.tries = delay, tries
        #: (due, order, names, seq, attempt), soonest first.
        self._due: list[tuple[float, int, QueueNames, int, int]] = []
        self._order = itertools.count()
        self._added = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.purged = 0
        self.kept = 0

    def __len__(self) -> int:
        return len(self._due)

    def later(self, names: QueueNames, seq: int) -> None:
        """Purge the records of acked message ``seq`` once ``delay`` has passed (nothing
        once closed: a settle that ends after the close leaves its records)."""
        if self._closed:
            return
        self._add(time.monotonic() + self.delay, names, seq, 1)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def _add(self, due: float, names: QueueNames, seq: int, attempt: int) -> None:
        heapq.heappush(self._due, (due, next(self._order), names, seq, attempt))
        self._added.set()

    async def _run(self) -> None:
        while self._due:
            wait = self._due[0][0] - time.monotonic()
            if wait > 0:  # until it is due, or something sooner comes
                self._added.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._added.wait()
                continue
            _, _, names, seq, attempt = heapq.heappop(self._due)
            try:
                if await self._gone(names, seq):
                    await self._purge(names, seq)
                    self.purged += 1
                elif attempt < self.tries:
                    # The stream removes an acked message just after it confirmed the
                    # ack: even with no retention, the next look waits a moment.
                    gap = max(self.delay, _MIN_GAP) * 2**attempt
                    self._add(time.monotonic() + gap, names, seq, attempt + 1)
                else:
                    self.kept += 1
            except Exception:  # not purged now (a connection gone, say): kept, harmless
                self.kept += 1

    async def close(self) -> None:
        """Stop; records still waiting stay in the ledger."""
        self._closed = True
        self._due.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

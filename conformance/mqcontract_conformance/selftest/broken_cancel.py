"""Broken providers that leave something behind when a call is cancelled (ERR-12).

Both providers here make each call a request and a reply on one connection: the store
acts at once (the request reached the server), and the reply crosses the wire while
the event loop runs other tasks. The correct one drops the connection, and with it the
unread reply, when a call is cancelled before reading it; the broken one leaves the
reply where the next call reads it, as redis-py did before 4.5.3 (CVE-2023-28858),
or strands the messages the cancelled receive claimed.
"""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Awaitable
from typing import Any, TypeVar, cast

from mqcontract.messages import QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService
from mqcontract_conformance.selftest.catalogue import Specimen

__all__ = ["SPECIMENS", "RepliesOutliveCancel", "RoundTrips", "StrandsCancelledClaims"]

T = TypeVar("T")

#: Passes of the event loop a reply takes to come back.
_WIRE = 2


class RoundTrips(InMemoryMessagingService):
    """Correct: a call cancelled before it read its reply drops the connection (the
    reply goes with it); the next call opens a new one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Replies on the wire, oldest first; a call reads the oldest.
        self._replies: collections.deque[object] = collections.deque()

    async def _round_trip(self, request: Awaitable[T]) -> T:
        self._replies.append(await request)
        try:
            for _ in range(_WIRE):
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            self._cancelled()
            raise
        return cast(T, self._replies.popleft())

    def _cancelled(self) -> None:
        self._replies.clear()  # a new connection: nothing unread on it

    async def _receive(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        return await self._round_trip(super()._receive(queue, limit, visibility_timeout))

    async def _queue_exists(self, name: str) -> bool:
        return await self._round_trip(super()._queue_exists(name))


class RepliesOutliveCancel(RoundTrips):
    """Leaves the reply of a call cancelled before reading it on the connection: the
    next call reads that reply as its own (another queue's messages, a True for a
    missing queue), as redis-py did before 4.5.3 (CVE-2023-28858)."""

    def _cancelled(self) -> None:
        pass  # the connection goes back to the pool with the reply unread


class StrandsCancelledClaims(RoundTrips):
    """Starts a claim's visibility timer only once the receive's reply is read, over a
    broker that holds a delivery until it is settled (RabbitMQ's basic.get with the
    timeout kept by the client): what a cancelled receive claimed stays held for good."""

    def _cancelled(self) -> None:
        for reply in self._replies:
            for message in reply if isinstance(reply, list) else ():
                queue = self._queues.get(message.queue_name)
                entry = queue.entries.get(message.msg_id) if queue is not None else None
                if entry is not None:
                    entry.visible_at = math.inf  # no timer: held until the connection ends
        super()._cancelled()


SPECIMENS: tuple[Specimen, ...] = (
    Specimen(RepliesOutliveCancel, "ERR-12", reference=RoundTrips),
    Specimen(StrandsCancelledClaims, "ERR-12", reference=RoundTrips),
)

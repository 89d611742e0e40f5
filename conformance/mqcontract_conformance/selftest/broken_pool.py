"""A broken provider whose connection pool raises when it is exhausted (ERR-11).

Both providers here hold a connection for the length of each call, with a round trip in
it (one pass of the event loop, so that calls made at once overlap). The correct one
waits for a free connection; the broken one raises, as redis-py's default pool does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from mqcontract.errors import ConnectionLost
from mqcontract.messages import Claim, QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService
from mqcontract_conformance.selftest.catalogue import Specimen

__all__ = ["SPECIMENS", "PoolRaisesWhenExhausted", "PooledConnections"]


class PooledConnections(InMemoryMessagingService):
    """Correct: each call takes one of ``pool_size`` connections, waiting for a free one."""

    pool_size = 32

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._free = asyncio.Semaphore(self.pool_size)
        self.in_use = 0

    @contextlib.asynccontextmanager
    async def _pooled(self, operation: str) -> AsyncIterator[None]:
        async with self._free:
            self.in_use += 1
            try:
                await asyncio.sleep(0)  # the round trip: calls made at once overlap here
                yield
            finally:
                self.in_use -= 1

    async def _send(self, queue: str, payload: bytes) -> int:
        async with self._pooled("send_message"):
            return await super()._send(queue, payload)

    async def _receive(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        async with self._pooled("receive_messages"):
            return await super()._receive(queue, limit, visibility_timeout)

    async def _ack(self, queue: str, claim: Claim) -> None:
        async with self._pooled("ack_claim"):
            await super()._ack(queue, claim)


class PoolRaisesWhenExhausted(PooledConnections):
    """Raises ConnectionLost for a call made while every connection of its pool is in
    use, instead of waiting for one (redis-py's default pool: "Too many connections").

    A burst of calls beyond the pool fails as if the backend were down, though nothing
    is wrong with it; a producer retrying such a send cannot know whether it happened.
    """

    @contextlib.asynccontextmanager
    async def _pooled(self, operation: str) -> AsyncIterator[None]:
        if self.in_use >= self.pool_size:
            raise ConnectionLost("memory", "(pool)", f"{operation}: Too many connections")
        async with super()._pooled(operation):
            yield


SPECIMENS: tuple[Specimen, ...] = (
    Specimen(PoolRaisesWhenExhausted, "ERR-11", reference=PooledConnections),
)

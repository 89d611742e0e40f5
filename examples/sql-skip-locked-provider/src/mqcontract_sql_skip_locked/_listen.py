"""PostgreSQL push: one LISTEN connection per service, fanning NOTIFYs out to subscriptions.

Triggers on the messages table (:mod:`._postgres`) announce every message that becomes
visible by an event — an insert without delay, a nack — with ``NOTIFY <prefix>_announce,
'<queue> <id>'`` at commit. The listener holds one dedicated connection (a pooled one
would ``UNLISTEN *`` on release), LISTENs on that channel while any subscription is open,
and puts ``Available(queue, id)`` into each subscription naming that queue.

What NOTIFY cannot do, and why consumers must also poll (``requires_fallback_polling``):
a notification sent while the listener is disconnected is gone for good, and nothing
announces a claim that expired or a delayed message that became due. When the connection
dies, the listener reconnects with a short back-off and then announces
``Available(queue, None)`` on every subscribed queue ("catch up").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from mqcontract.messages import Available
from mqcontract.subscription import QueueSubscription

__all__ = ["Listener"]

log = logging.getLogger(__name__)

#: Longest pause between reconnect attempts.
MAX_BACKOFF = 2.0


class Listener:
    """The LISTEN connection of one service and the subscriptions it feeds."""

    def __init__(
        self, connect: Callable[[], Awaitable[Any]], channel: str, *, timeout: float
    ) -> None:
        self._connect = connect
        self._channel = channel
        self._timeout = timeout
        self._conn: Any = None
        self._subscriptions: set[QueueSubscription] = set()
        self._reconnecting: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        #: How many times the connection was lost and made again.
        self.reconnects = 0

    @property
    def backend_pid(self) -> int | None:
        """The server process of the LISTEN connection, while it is connected."""
        conn = self._conn
        if conn is None or conn.is_closed():
            return None
        return int(conn.get_server_pid())

    async def add(self, subscription: QueueSubscription) -> None:
        """Feed ``subscription``; connects and LISTENs first if nothing is listening."""
        async with self._lock:
            if self._conn is None and self._reconnecting is None:
                await self._listen()
            self._subscriptions.add(subscription)

    async def remove(self, subscription: QueueSubscription) -> None:
        """Stop feeding ``subscription``; the last one out closes the connection."""
        async with self._lock:
            self._subscriptions.discard(subscription)
            if not self._subscriptions:
                await self._hang_up()

    async def close(self) -> None:
        """End every subscription and the connection. Idempotent."""
        self._closed = True
        for subscription in list(self._subscriptions):
            await subscription.aclose()  # its on_close removes it
        async with self._lock:
            await self._hang_up()

    # -- the connection ----------------------------------------------------------------

    async def _listen(self) -> None:
        async with asyncio.timeout(self._timeout):
            conn = await self._connect()
            try:
                await conn.add_listener(self._channel, self._notified)
            except BaseException:
                await conn.close()
                raise
        conn.add_termination_listener(self._terminated)
        self._conn = conn

    async def _hang_up(self) -> None:
        task, self._reconnecting = self._reconnecting, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.remove_termination_listener(self._terminated)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._timeout):
                    await conn.close()

    def _notified(self, conn: object, pid: int, channel: str, payload: str) -> None:
        queue, _, msg_id = payload.rpartition(" ")
        announced = Available(queue, int(msg_id) if msg_id.isdigit() else None)
        for subscription in list(self._subscriptions):
            if queue in subscription.queues:
                subscription.put(announced)

    def _terminated(self, conn: object) -> None:
        if self._closed or conn is not self._conn or self._reconnecting is not None:
            return
        self._conn = None
        self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        failures = 0
        while self._subscriptions and not self._closed:
            try:
                await self._listen()
            except Exception as exc:  # the server is away: try again shortly
                failures += 1
                pause = min(MAX_BACKOFF, 0.05 * 2**failures)
                log.warning("sql-postgres listener: %s; retrying in %.2f s", exc, pause)
                await asyncio.sleep(pause)
                continue
            self.reconnects += 1
            for subscription in list(self._subscriptions):  # announcements may be lost
                for queue in subscription.queues:
                    subscription.put(Available(queue, None))
            break
        self._reconnecting = None

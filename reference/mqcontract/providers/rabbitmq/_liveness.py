"""Leaving a node that keeps a connection open and answers nothing on it.

A node can hold a client's connection up (TCP open, heartbeats answered) and serve
nothing: RabbitMQ pauses a node that lost its majority (``pause_minority``), and a client
that reconnects to it then completes the handshake and waits. Robust reconnection never
leaves such a node, since nothing closed. So when an operation runs out of time, every
connection is probed in the background by opening and closing a channel, which is
connection-level work that any serving node answers at once (even while a queue elects a
leader). A connection that does not answer within the connect timeout is closed, and the
robust connection reconnects: to the next URL, when several are configured. A connection
the broker blocked (``connection.blocked``: a resource alarm) is left alone: it answers
nothing until the alarm clears, on every node alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

import aiormq.abc
from aio_pika import RobustConnection

from ._blocked import is_blocked
from ._tasks import Background

__all__ = ["Liveness"]

log = logging.getLogger(__name__)


class Liveness:
    """Probes the connections after a timed-out operation; see the module docstring."""

    def __init__(
        self,
        connections: Callable[[], Sequence[RobustConnection]],
        *,
        timeout: float,
        tasks: Background,
        is_closed: Callable[[], bool],
    ) -> None:
        self._connections = connections
        self._timeout = timeout
        self._tasks = tasks
        self._is_closed = is_closed
        self._probing = False
        #: Connections closed because they did not answer a probe.
        self.abandoned = 0

    def suspect(self) -> None:
        """An operation ran out of time: probe every connection (once at a time)."""
        if self._probing or self._is_closed():
            return
        self._probing = True
        self._tasks.spawn(self._probe_all())

    async def _probe_all(self) -> None:
        try:
            await asyncio.gather(*(self._probe(c) for c in self._connections()))
        finally:
            self._probing = False

    async def _probe(self, robust: RobustConnection) -> None:
        transport = robust.transport
        if transport is None or not robust.connected.is_set():
            return  # reconnecting already
        connection = transport.connection
        if connection.is_closed or is_blocked(connection):
            return  # a blocked connection (a resource alarm) is alive: it waits to publish
        if await self._answers(connection) or self._is_closed():
            return
        self.abandoned += 1
        log.warning(
            "%s opened no channel within %g s; leaving it to reconnect", robust, self._timeout
        )
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._timeout):
                await connection.close(ConnectionError("the node answers nothing"))

    async def _answers(self, connection: aiormq.abc.AbstractConnection) -> bool:
        """Whether ``connection`` opens (and closes) a channel within the timeout; any
        answer, even a refusal, shows the node serves it."""
        try:
            async with asyncio.timeout(self._timeout):
                channel = await connection.channel()
                await channel.close()
        except TimeoutError:
            return connection.is_closed  # closed meanwhile: the reconnect is under way
        except Exception:
            return True
        return True

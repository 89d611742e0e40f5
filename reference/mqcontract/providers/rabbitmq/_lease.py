"""The node bits of this service's message ids, leased from the broker.

A lease is an exclusive queue ``mqcontract.node.<n>`` declared on the connection the
service publishes on: RabbitMQ lets one connection at a time hold an exclusive queue
(another gets RESOURCE_LOCKED) and deletes it when that connection closes, so no two
live producers on a virtual host (where queues, and so per-queue uniqueness, live) hold
the same node. The lease is taken before the first publish and again after every
reconnect (the old queue went with the old connection), trying the node held before
first; it costs a channel and a declare then, nothing on other sends.

Its name holds dots, which user queue names cannot, and it carries no ``x-mqcontract``
marker, so it never collides with or is listed as a user queue. When no node can be
leased (the user may not declare it, or every draw is taken) the generator keeps a
random node and a warning says so: ids are then unique only with the probability
:mod:`._ids` gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiormq.abc
from aiormq.exceptions import ChannelClosed, ChannelLockedResource

from ._ids import MessageIdGenerator, random_node

__all__ = ["LEASE_PREFIX", "NodeLease", "lease_queue"]

log = logging.getLogger(__name__)

LEASE_PREFIX = "mqcontract.node."
#: Nodes tried per lease: with fewer than half the nodes taken, 8 draws all fail with
#: probability below 1/256.
ATTEMPTS = 8


def lease_queue(node: int) -> str:
    """The exclusive queue that holds ``node``."""
    return f"{LEASE_PREFIX}{node}"


class NodeLease:
    """Keeps ``ids.node`` leased on the connection the service publishes on."""

    def __init__(self, ids: MessageIdGenerator, *, timeout: float) -> None:
        self._ids = ids
        self._timeout = timeout
        self._lock = asyncio.Lock()
        #: The connection the lease was settled for (held, or given up on).
        self._on: aiormq.abc.AbstractConnection | None = None
        #: Whether the broker holds the lease (False: the node is random).
        self.held = False

    async def ensure(self, connection: aiormq.abc.AbstractConnection) -> None:
        """Hold a node on ``connection`` before anything is published on it."""
        if connection is self._on:
            return
        async with self._lock:
            if connection is self._on:
                return
            async with asyncio.timeout(self._timeout):
                self.held = await self._take(connection)
            self._on = connection

    async def _take(self, connection: aiormq.abc.AbstractConnection) -> bool:
        candidates = [self._ids.node] + [random_node() for _ in range(ATTEMPTS - 1)]
        for node in candidates:
            channel = await connection.channel(publisher_confirms=False)
            try:
                await channel.queue_declare(lease_queue(node), exclusive=True)
            except ChannelLockedResource:
                continue  # another live producer holds it
            except ChannelClosed as exc:  # refused, say by permissions: no lease at all
                log.warning("cannot lease a message id node (%s); using random node bits", exc)
                return False
            finally:
                if not channel.is_closed:
                    with contextlib.suppress(Exception):
                        await channel.close()
            self._ids.node = node
            return True
        log.warning("no free message id node in %d draws; using random node bits", ATTEMPTS)
        self._ids.node = random_node()  # not the old one: someone else may hold it now
        return False

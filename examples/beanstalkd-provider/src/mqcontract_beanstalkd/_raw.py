"""The raw side of ``mqcontract bench``: the same workloads on the bare protocol client.

It puts plain bodies (no header) straight into the queue's message tube and consumes
with ``reserve-with-timeout 0`` + ``delete``, pipelined as far as each workload allows:
what an application talking beanstalkd directly would do, without claims, incarnations,
leases or existence checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable, Sequence

from mqcontract.testing.sides import batches

from mqcontract_beanstalkd._protocol import Link, put_command
from mqcontract_beanstalkd._tubes import Tubes

__all__ = ["RawSide"]

#: Time-to-run of the raw side's jobs: long enough never to expire during a run.
TTR_SECONDS = 60
#: How long a raw consumer's worker blocks in ``reserve-with-timeout`` when idle.
IDLE_SECONDS = 1


class _Consumer:
    """``workers`` connections, each blocking in ``reserve-with-timeout`` and deleting."""

    def __init__(
        self, host: str, port: int, tube: str, on_message: Callable[[], None], workers: int
    ) -> None:
        self._address = (host, port)
        self._tube = tube
        self._on_message = on_message
        self._workers = workers
        self._tasks: list[asyncio.Task[None]] = []
        self._links: list[Link] = []
        self._stopping = False
        self.acked = 0

    async def start(self) -> None:
        for _ in range(self._workers):
            link = await Link.connect(*self._address, secrets.token_hex(8))
            await link.pipeline([b"watch " + self._tube.encode(), b"ignore default"])
            self._links.append(link)
        self._tasks = [asyncio.create_task(self._loop(link)) for link in self._links]

    async def _loop(self, link: Link) -> None:
        while not self._stopping:
            reply = await link.one(
                b"reserve-with-timeout %d" % IDLE_SECONDS, "RESERVED", "TIMED_OUT"
            )
            if reply.status == "RESERVED":
                self._on_message()
                await link.one(b"delete %d" % reply.id(), "DELETED")
                self.acked += 1

    async def stop(self) -> None:
        self._stopping = True  # each worker returns within IDLE_SECONDS
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for link in self._links:
            await link.close()


class RawSide:
    """One connection of the protocol client; see the module docstring."""

    label = "raw"

    def __init__(self, host: str, port: int, tube_prefix: str) -> None:
        self._address = (host, port)
        self._prefix = tube_prefix
        self._link: Link | None = None
        self.description = (
            "the provider's asyncio protocol client, one connection: put per message, "
            "pipelined puts per batch, pipelined reserve-with-timeout 0 + delete, into the "
            "queue's message tube (no header, no claims, no existence check)"
        )

    def _tube(self, queue: str) -> bytes:
        return Tubes.of(self._prefix, queue).messages.encode()

    @property
    def link(self) -> Link:
        assert self._link is not None, "open() first"
        return self._link

    async def open(self) -> None:
        self._link = await Link.connect(*self._address, secrets.token_hex(8))

    async def close(self) -> None:
        if self._link is not None:
            with contextlib.suppress(Exception):
                await self._link.close()

    async def send(self, queue: str, payloads: Sequence[bytes]) -> None:
        await self.link.one(b"use " + self._tube(queue), "USING")
        for payload in payloads:
            await self.link.one(put_command(1024, 0, TTR_SECONDS, payload), "INSERTED")

    async def send_batch(self, queue: str, payloads: Sequence[bytes], batch: int) -> None:
        await self.link.one(b"use " + self._tube(queue), "USING")
        for chunk in batches(payloads, batch):
            await self.link.pipeline([put_command(1024, 0, TTR_SECONDS, p) for p in chunk])

    async def receive_ack(self, queue: str, count: int, limit: int) -> int:
        link = self.link
        tube = self._tube(queue)
        await link.pipeline([b"watch " + tube, b"ignore default"])
        acked = 0
        try:
            while acked < count:
                replies = await link.pipeline(
                    [b"reserve-with-timeout 0"] * min(limit, count - acked)
                )
                ids = [r.id() for r in replies if r.status == "RESERVED"]
                if not ids:
                    break
                await link.pipeline([b"delete %d" % i for i in ids])
                acked += len(ids)
        finally:
            await link.pipeline([b"watch default", b"ignore " + tube])
        return acked

    def consumer(
        self, queue: str, on_message: Callable[[], None], *, mode: str, workers: int, batch: int
    ) -> _Consumer:
        return _Consumer(*self._address, self._tube(queue).decode(), on_message, max(workers, 1))

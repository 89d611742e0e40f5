"""NATS JetStream without mqcontract: nats-py doing the same work on the same streams.

Publishing waits for each publish's acknowledgement (as the provider does); receiving is
a pull subscription on the queue's own consumer, ``fetch`` then ``ack_sync`` of each
message; consuming is a loop of fetches with a short wait, acking each message. No claims
ledger, no per-receive timeout: what JetStream does by itself, which is what the
provider's extra round trips are measured against.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
from collections.abc import Callable, Sequence
from typing import Any

import nats
import nats.errors
from mqcontract.testing.sides import batches

from mqcontract_nats_jetstream._config import NatsJetStreamConfig
from mqcontract_nats_jetstream._names import CONSUMER, QueueNames

__all__ = ["NatsPySide"]


class _PullConsumer:
    """A fetch loop on the queue's consumer; binds its pull subscription on start."""

    def __init__(
        self, js: Any, names: QueueNames, on_message: Callable[[], None], batch: int
    ) -> None:
        self._js = js
        self._names = names
        self._sub: Any = None
        self._on_message = on_message
        self._batch = batch
        self._task: asyncio.Task[None] | None = None
        self.acked = 0

    async def _run(self) -> None:
        while True:
            try:
                messages = await self._sub.fetch(self._batch, timeout=0.5)
            except nats.errors.TimeoutError:
                continue
            for message in messages:
                self._on_message()
                await message.ack()
                self.acked += 1

    async def start(self) -> None:
        self._sub = await self._js.pull_subscribe_bind(durable=CONSUMER, stream=self._names.stream)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()


class NatsPySide:
    """nats-py: acknowledged publishes, pull ``fetch`` + ``ack_sync``, a fetch loop."""

    label = "raw"

    def __init__(self, settings: NatsJetStreamConfig) -> None:
        self._settings = settings
        self._nc: Any = None
        self._js: Any = None
        self._subs: dict[str, Any] = {}
        version = importlib.metadata.version("nats-py")
        self.description = (
            f"nats-py {version}: js.publish awaiting each ack (as the provider), pull "
            "fetch on the queue's consumer + ack_sync, a fetch(batch) loop + ack"
        )

    def _names(self, queue: str) -> QueueNames:
        return QueueNames(self._settings.prefix, queue)

    async def open(self) -> None:
        self._nc = await nats.connect(servers=self._settings.servers)
        self._js = self._nc.jetstream()

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()

    async def send(self, queue: str, payloads: Sequence[bytes]) -> None:
        subject = self._names(queue).subject
        for payload in payloads:
            await self._js.publish(subject, payload)

    async def send_batch(self, queue: str, payloads: Sequence[bytes], batch: int) -> None:
        subject = self._names(queue).subject
        for chunk in batches(payloads, batch):
            await asyncio.gather(*(self._js.publish(subject, p) for p in chunk))

    async def _sub(self, queue: str) -> Any:
        sub = self._subs.get(queue)
        if sub is None:
            names = self._names(queue)
            sub = await self._js.pull_subscribe_bind(durable=CONSUMER, stream=names.stream)
            self._subs[queue] = sub
        return sub

    async def receive_ack(self, queue: str, count: int, limit: int) -> int:
        sub = await self._sub(queue)
        acked = 0
        while acked < count:
            try:
                messages = await sub.fetch(min(limit, count - acked), timeout=0.5)
            except nats.errors.TimeoutError:
                break
            for message in messages:
                await message.ack_sync()
            acked += len(messages)
        return acked

    def consumer(
        self, queue: str, on_message: Callable[[], None], *, mode: str, workers: int, batch: int
    ) -> _PullConsumer:
        return _PullConsumer(self._js, self._names(queue), on_message, batch)

"""RabbitMQ without mqcontract: aio-pika doing the same work on the same queues.

Publishing uses a channel with publisher confirms and ``mandatory=True``, persistent
messages and a ``message_id`` (exactly what the provider does), so both sides wait for
the broker's confirm of every message. Receiving is ``basic.get`` + ``basic.ack`` on a
channel without confirms; consuming is ``basic.consume`` with the provider's prefetch.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from ._sides import batches

__all__ = ["AioPikaSide"]


class _PikaConsumer:
    def __init__(
        self, connection: Any, queue: str, on_message: Callable[[], None], prefetch: int
    ) -> None:
        self._connection = connection
        self._queue_name = queue
        self._on_message = on_message
        self._prefetch = prefetch
        self._channel: Any = None
        self._queue: Any = None
        self._tag: str | None = None
        self.acked = 0

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        self._on_message()
        await message.ack()
        self.acked += 1

    async def start(self) -> None:
        self._channel = await self._connection.channel()
        await self._channel.set_qos(prefetch_count=self._prefetch)
        self._queue = await self._channel.get_queue(self._queue_name, ensure=True)
        self._tag = await self._queue.consume(self._deliver, no_ack=False)

    async def stop(self) -> None:
        if self._queue is not None and self._tag is not None:
            await self._queue.cancel(self._tag)
        if self._channel is not None:
            await self._channel.close()


class AioPikaSide:
    """aio-pika: confirmed mandatory publishes, ``basic.get``, ``basic.consume``."""

    label = "raw"

    def __init__(self, url: str, *, prefetch: int) -> None:
        self._url = url
        self._prefetch = prefetch
        self._connection: Any = None
        self._publish: Any = None
        self._receive: Any = None
        self._queues: dict[str, Any] = {}
        self._ids = itertools.count(1)
        self.description = (
            f"aio-pika {aio_pika.__version__}: default-exchange publish with publisher "
            "confirms + mandatory (as the provider), basic.get + ack, consume with "
            f"prefetch {prefetch}"
        )

    async def open(self) -> None:
        self._connection = await aio_pika.connect(self._url)
        self._publish = await self._connection.channel(publisher_confirms=True)
        self._receive = await self._connection.channel(publisher_confirms=False)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()

    def _message(self, payload: bytes) -> aio_pika.Message:
        return aio_pika.Message(
            payload,
            message_id=str(next(self._ids)),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )

    async def send(self, queue: str, payloads: Sequence[bytes]) -> None:
        exchange = self._publish.default_exchange
        for payload in payloads:
            await exchange.publish(self._message(payload), routing_key=queue, mandatory=True)

    async def send_batch(self, queue: str, payloads: Sequence[bytes], batch: int) -> None:
        exchange = self._publish.default_exchange
        for chunk in batches(payloads, batch):
            await asyncio.gather(
                *(
                    exchange.publish(self._message(p), routing_key=queue, mandatory=True)
                    for p in chunk
                )
            )

    async def _queue(self, name: str) -> Any:
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = await self._receive.get_queue(name, ensure=True)
        return queue

    async def receive_ack(self, queue: str, count: int, limit: int) -> int:
        source = await self._queue(queue)
        acked = 0
        while acked < count:
            held = []
            for _ in range(min(limit, count - acked)):
                message = await source.get(no_ack=False, fail=False)
                if message is None:
                    break
                held.append(message)
            if not held:
                break
            for message in held:
                await message.ack()
            acked += len(held)
        return acked

    def consumer(
        self, queue: str, on_message: Callable[[], None], *, mode: str, workers: int, batch: int
    ) -> _PikaConsumer:
        return _PikaConsumer(self._connection, queue, on_message, self._prefetch)

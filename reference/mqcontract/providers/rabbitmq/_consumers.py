"""Push: ``basic.consume`` per subscription, each delivery a claimed, held ``Message``.

A subscription gets its own channel on the push connection, with ``prefetch_count``. Each
delivery is held exactly like a received message, under its own claim (:mod:`._holds`),
with ``push_visibility_timeout_seconds`` as its visibility timeout, and handed to the
subscription; until the caller takes it, no settlement reaches it (PUSH-12). A
supervisor re-subscribes after the channel dies (reconnect, broker-side close). Closing a
subscription cancels its consumers and requeues deliveries never handed out; its channel
closes once nothing handed out is still held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import aiormq.abc
from aiormq.exceptions import ChannelNotFoundEntity

from mqcontract.config import RabbitMqConfig
from mqcontract.errors import QueueNotFound, StaleReason
from mqcontract.messages import Message
from mqcontract.subscription import QueueSubscription

from ._channels import RECONNECT_INTERVAL, Channel, Channels, exists
from ._holds import Holds
from ._tasks import Background

__all__ = ["Consumers"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Consumer:
    """One push subscription: its channel, consumer tags and supervisor."""

    subscription: QueueSubscription
    queues: tuple[str, ...]
    channel: Channel | None = None
    tags: list[str] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    closing: bool = False


class Consumers:
    """Every open push subscription; see the module docstring."""

    def __init__(
        self,
        config: RabbitMqConfig,
        *,
        provider: str,
        channels: Channels,
        holds: Holds,
        tasks: Background,
        timeout: float,
        is_closed: Callable[[], bool],
    ) -> None:
        self._config = config
        self._provider = provider
        self._channels = channels
        self._holds = holds
        self._tasks = tasks
        self._timeout = timeout
        self._is_closed = is_closed
        self._consumers: dict[QueueSubscription, Consumer] = {}

    async def subscribe(self, queues: tuple[str, ...]) -> QueueSubscription:
        """Start consuming ``queues`` on a new subscription (``QueueNotFound`` if one is
        missing; nothing was consumed then)."""
        subscription = QueueSubscription(
            queues, on_close=self._unsubscribe, on_take=self._holds.taken
        )
        consumer = Consumer(subscription, queues)
        await self._start(consumer, queues)
        self._consumers[subscription] = consumer
        consumer.task = asyncio.get_running_loop().create_task(
            self._supervise(consumer), name=f"mqcontract-{self._provider}-consumer"
        )
        return subscription

    async def _start(self, consumer: Consumer, queues: Sequence[str]) -> None:
        channel = await self._channels.open(confirms=False, push=True)
        # Current before the first consume: deliveries may arrive before the last consume-ok.
        consumer.channel = channel
        try:
            async with asyncio.timeout(self._timeout):
                if len(queues) > 1:
                    # Every queue is checked before the first consume, so a missing one
                    # fails the subscription before anything was delivered (one queue:
                    # its consume is the check).
                    for queue in queues:
                        if not await exists(channel, queue):
                            raise QueueNotFound(queue)
                await channel.basic_qos(prefetch_count=self._config.prefetch_count)
                tags = []
                for queue in queues:
                    try:
                        ok = await channel.basic_consume(
                            queue, partial(self._on_delivery, consumer, channel, queue)
                        )
                    except ChannelNotFoundEntity as exc:
                        raise QueueNotFound(queue) from exc
                    tags.append(str(ok.consumer_tag))
        except BaseException:
            consumer.channel = None
            await self._channels.close_channel(channel)
            raise
        consumer.tags = tags

    async def _on_delivery(
        self,
        consumer: Consumer,
        channel: Channel,
        queue: str,
        delivered: aiormq.abc.DeliveredMessage,
    ) -> None:
        # No await before the message is recorded and queued: deliveries keep their order.
        if consumer.closing or self._is_closed() or consumer.channel is not channel:
            tag = getattr(delivered.delivery, "delivery_tag", None)
            if tag is not None and not channel.is_closed:
                await self._holds.nack_quietly(channel, int(tag))
            return
        vt = self._config.push_visibility_timeout_seconds
        note = self._holds.hold_pushed(queue, channel, delivered, vt, consumer)
        if not consumer.subscription.put(note):
            held = self._holds.get(note.message.claim)
            if held is not None and self._holds.drop(held, StaleReason.NOT_HELD):
                self._holds.release(held)

    async def _supervise(self, consumer: Consumer) -> None:
        """Re-subscribe after the consumer channel dies (reconnect, broker-side close)."""
        while not consumer.closing and not self._is_closed():
            channel = consumer.channel
            if channel is not None and not channel.is_closed:
                await asyncio.wait([channel.closing])
                continue
            consumer.channel = None
            try:
                async with self._channels.scratch() as scratch:
                    alive = [q for q in consumer.queues if await exists(scratch, q)]
                if alive and not consumer.closing:
                    await self._start(consumer, alive)
                    log.info("re-subscribed to %s", ", ".join(alive))
                elif not alive:
                    return  # every queue was deleted: nothing left to consume
            except Exception as exc:  # keep trying until closed, whatever went wrong
                log.debug("re-subscribe failed, retrying: %r", exc)
                await asyncio.sleep(RECONNECT_INTERVAL / 2)

    async def _unsubscribe(self, subscription: QueueSubscription) -> None:
        consumer = self._consumers.pop(subscription, None)
        if consumer is None:
            return
        consumer.closing = True
        if consumer.task is not None:
            consumer.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer.task
        channel = consumer.channel
        if channel is not None and not channel.is_closed:
            for tag in consumer.tags:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self._timeout):
                        await channel.basic_cancel(tag)
        # Deliveries never handed to the consumer go straight back to their queues.
        for notification in subscription.pending():
            if isinstance(notification, Message):
                held = self._holds.get(notification.message.claim)
                if held is not None and held.owner is consumer:
                    self._holds.drop(held, StaleReason.NOT_HELD)
                    self._holds.release(held)
        self.maybe_retire(consumer)

    def maybe_retire(self, owner: object | None) -> None:
        """Close a closed subscription's channel once nothing handed out is still held."""
        if not isinstance(owner, Consumer) or not owner.closing or owner.channel is None:
            return
        if self._holds.held_by(owner):
            return
        channel, owner.channel = owner.channel, None
        self._tasks.spawn(self._channels.close_channel(channel))

    def channel_closed(self, channel: Channel) -> None:
        """Deliveries not yet handed out on a closed channel are void: drop them.

        Runs after the holds forgot the channel: what is still held came from elsewhere.
        """
        for consumer in self._consumers.values():
            if consumer.channel is channel:
                for note in consumer.subscription.pending():
                    if not isinstance(note, Message):
                        continue
                    if self._holds.get(note.message.claim) is not None:
                        consumer.subscription.put(note)

    async def close(self) -> None:
        """Close every subscription."""
        for subscription in list(self._consumers):
            with contextlib.suppress(Exception):
                await subscription.aclose()

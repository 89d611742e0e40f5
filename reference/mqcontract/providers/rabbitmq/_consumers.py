"""Push: ``basic.consume`` per subscription, each delivery a claimed, held ``Message``.

A subscription gets its own channel on the push connection, with ``prefetch_count``. Each
delivery is held exactly like a received message, under its own claim (:mod:`._holds`),
with ``push_visibility_timeout_seconds`` as its visibility timeout, and handed to the
subscription; until the caller takes it, no settlement reaches it (PUSH-12). Closing a
subscription cancels its consumers and requeues deliveries never handed out, including
those the broker sent before it took the cancel; its channel closes once nothing handed
out is still held.

A supervisor keeps every queue of a subscription consumed for as long as it is open:

* after the channel dies (reconnect, broker-side close) it opens another and consumes
  again every queue that exists;
* when the broker cancels one consumer (``basic.cancel``: its queue was deleted, by
  anyone), the claims delivered through it are void (settling one raises
  ``QueueNotFound`` while the queue is missing) and the queue is looked for again, a
  passive declare on a throwaway channel at growing intervals (``RECHECK_FIRST`` up to
  ``RECONNECT_INTERVAL``); once a queue of that name exists again, whoever created it,
  it is consumed on the same channel, so its messages are pushed within about a
  second. The subscription's other queues, and the claims held on them, are untouched.

A subscription whose queues are all gone stays open and waits for them; it ends only
when closed.

One case the broker does not report: RabbitMQ 3.10 sends its cancel some 30 ms after
it deleted a quorum queue, and never when a queue of that name was declared again
within that window; the consumer then stays attached to nothing (the broker even counts
it) and the new queue's messages are checked out to it unseen until its channel closes.
A deletion through this service cancels its own consumers of the queue at once
(:meth:`Consumers.queue_deleted`), and, when other clients consume it, returns only
once the broker has surely cancelled theirs (``service.QUORUM_CANCEL_GRACE``); only a
foreign client deleting and re-declaring a quorum queue within those 30 ms leaves a
subscription deaf to it (until its channel closes: a reconnect, or closing it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import aiormq.abc
from aiormq.exceptions import ChannelLockedResource, ChannelNotFoundEntity
from pamqp import commands as spec

from mqcontract.config import RabbitMqConfig
from mqcontract.errors import QueueNotFound, StaleReason
from mqcontract.messages import Message
from mqcontract.subscription import QueueSubscription

from ._channels import RECONNECT_INTERVAL, Channel, Channels, exists
from ._closing import writable
from ._errors import QueueLocked
from ._holds import Holds
from ._tasks import Background

__all__ = ["Consumers"]

log = logging.getLogger(__name__)

#: Seconds before a queue whose consumer the broker cancelled is first looked for again;
#: the interval doubles up to ``RECONNECT_INTERVAL`` while it is missing.
RECHECK_FIRST = 0.25


@dataclass(eq=False)
class Consumer:
    """One push subscription: its channel, consumer tags and supervisor."""

    subscription: QueueSubscription
    queues: tuple[str, ...]
    channel: Channel | None = None
    #: Queue → consumer tag, for each queue consumed on ``channel`` now.
    tags: dict[str, str] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    closing: bool = False
    #: Set when the broker cancels one of the consumers: wakes the supervisor.
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def missing(self) -> list[str]:
        """The queues not consumed now (deleted, or not yet consumed again)."""
        return [queue for queue in self.queues if queue not in self.tags]


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
        """The first consume of every queue: ``QueueNotFound`` if one is missing."""
        channel = await self._channels.open(confirms=False, role="push")
        try:
            async with asyncio.timeout(self._timeout):
                if len(queues) > 1:
                    # Every queue is checked before the first consume, so a missing one
                    # fails the subscription before anything was delivered (one queue:
                    # its consume is the check).
                    for queue in queues:
                        try:
                            if not await exists(channel, queue):
                                raise QueueNotFound(queue)
                        except ChannelLockedResource as exc:
                            raise QueueLocked(queue) from exc
                await self._prepare(consumer, channel)
                for queue in queues:
                    try:
                        await self._consume(consumer, channel, queue)
                    except ChannelNotFoundEntity as exc:
                        raise QueueNotFound(queue) from exc
                    except ChannelLockedResource as exc:
                        raise QueueLocked(queue) from exc
        except BaseException:
            consumer.channel, consumer.tags = None, {}
            await self._channels.close_channel(channel)
            raise

    async def _prepare(self, consumer: Consumer, channel: Channel) -> None:
        """Make ``channel`` the consumer's (prefetch, and the broker's cancels heard)."""
        # Current before the first consume: deliveries may arrive before the last consume-ok.
        consumer.channel, consumer.tags = channel, {}
        channel.on_consumer_cancel_callbacks.add(partial(self._on_cancel, consumer, channel))
        await channel.basic_qos(prefetch_count=self._config.prefetch_count)

    async def _consume(self, consumer: Consumer, channel: Channel, queue: str) -> None:
        # The tag is ours and known before the consume: aiormq hands the consume-ok to
        # this task and reads on, so a cancel right behind it (the queue deleted at once)
        # reaches ``_on_cancel`` first, which must know the tag or the queue goes deaf.
        tag = f"mqcontract.{uuid.uuid4().hex}"
        if consumer.channel is channel:
            consumer.tags[queue] = tag
        try:
            await channel.basic_consume(
                queue, partial(self._on_delivery, consumer, channel, queue), consumer_tag=tag
            )
        except BaseException:
            if consumer.tags.get(queue) == tag:
                del consumer.tags[queue]
            raise

    def _on_cancel(self, consumer: Consumer, channel: Channel, frame: spec.Basic.Cancel) -> None:
        """The broker cancelled a consumer (its queue was deleted): what it delivered is
        void, and the supervisor looks for the queue again."""
        if consumer.channel is not channel:
            return
        for queue, tag in list(consumer.tags.items()):
            if tag == frame.consumer_tag:
                del consumer.tags[queue]
                log.info("the broker cancelled the consumer of %r; waiting for it", queue)
                self._holds.forget_consumed(channel, queue)
                self._drop_void(consumer)
                consumer.cancelled.set()

    async def _on_delivery(
        self,
        consumer: Consumer,
        channel: Channel,
        queue: str,
        delivered: aiormq.abc.DeliveredMessage,
    ) -> None:
        # No await before the message is recorded and queued: deliveries keep their order.
        # A delivery for a consumer no longer current (cancelled by us, still in flight
        # when the broker took the cancel) goes back to its queue at once; one on a
        # channel that is closing goes back with it.
        current = consumer.tags.get(queue) == getattr(delivered.delivery, "consumer_tag", None)
        void = consumer.closing or self._is_closed() or consumer.channel is not channel
        if void or not current or not writable(channel):
            tag = getattr(delivered.delivery, "delivery_tag", None)
            if tag is not None and writable(channel):  # else it goes back with the channel
                await self._holds.nack_quietly(channel, int(tag))
            return
        vt = self._config.push_visibility_timeout_seconds
        note = self._holds.hold_pushed(queue, channel, delivered, vt, consumer)
        if not consumer.subscription.put(note):
            held = self._holds.get(note.message.claim)
            if held is not None and self._holds.drop(held, StaleReason.NOT_HELD):
                self._holds.release(held)

    async def _supervise(self, consumer: Consumer) -> None:
        """Keep every queue consumed: a new channel after the channel dies, a new
        consume once a queue whose consumer the broker cancelled exists again."""
        interval = RECHECK_FIRST
        while not consumer.closing and not self._is_closed():
            consumer.cancelled.clear()  # a cancel from here on wakes the wait below
            channel = consumer.channel
            try:
                if channel is None or channel.is_closed:
                    consumer.channel, consumer.tags = None, {}
                    channel = await self._channels.open(confirms=False, role="push")
                    try:
                        async with asyncio.timeout(self._timeout):
                            await self._prepare(consumer, channel)
                    except BaseException:
                        consumer.channel = None
                        await self._channels.close_channel(channel)
                        raise
                    interval = RECHECK_FIRST
                if consumer.missing:
                    await self._resume(consumer, channel, consumer.missing)
            except Exception as exc:  # keep trying until closed, whatever went wrong
                log.debug("re-subscribe failed, retrying: %r", exc)
                await asyncio.sleep(RECONNECT_INTERVAL / 2)
                continue
            if not consumer.missing:
                interval = RECHECK_FIRST
                await self._wait(consumer, channel, None)
            else:  # look again later, sooner if another consumer is cancelled meanwhile
                await self._wait(consumer, channel, interval)
                interval = min(interval * 2, RECONNECT_INTERVAL)

    async def _resume(self, consumer: Consumer, channel: Channel, queues: list[str]) -> None:
        """Consume, on ``channel``, each of ``queues`` that exists."""
        for queue in await self._existing(queues):
            if consumer.closing or consumer.channel is not channel:
                return
            # Deleted again since the declare: the 404 closes the channel, and the
            # supervisor opens another (the claims on this one go with it).
            async with asyncio.timeout(self._timeout):
                await self._consume(consumer, channel, queue)
            log.info("re-subscribed to %s", queue)

    async def _existing(self, queues: list[str]) -> list[str]:
        """Those of ``queues`` that exist: passive declares on throwaway channels (one
        while every queue exists; a 404 closes it, and the next one opens another)."""
        found: list[str] = []
        pending = list(queues)
        while pending:
            async with self._channels.scratch() as scratch:
                while pending and not scratch.is_closed:
                    queue = pending.pop(0)
                    try:
                        if await exists(scratch, queue):
                            found.append(queue)
                    except ChannelLockedResource:
                        # Exclusive to another connection now: looked for again later,
                        # while the others are consumed.
                        log.info("queue %r is exclusive to another connection", queue)
        return found

    async def _wait(self, consumer: Consumer, channel: Channel, timeout: float | None) -> None:
        """Until ``channel`` closes, a consumer is cancelled, or ``timeout`` passes."""
        cancelled = asyncio.ensure_future(consumer.cancelled.wait())
        try:
            await asyncio.wait(
                [channel.closing, cancelled],
                timeout=timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            cancelled.cancel()

    async def _unsubscribe(self, subscription: QueueSubscription) -> None:
        consumer = self._consumers.pop(subscription, None)
        if consumer is None:
            return
        consumer.closing = True
        consumer.cancelled.set()  # wakes the supervisor's wait: it sees closing and ends
        if consumer.task is not None:
            # Not cancelled mid-RPC: aiormq closes a channel whose RPC is cancelled, and
            # that would requeue every claim already handed out on it.
            done, _ = await asyncio.wait({consumer.task}, timeout=self._timeout)
            if not done:
                consumer.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await consumer.task
        channel = consumer.channel
        if channel is not None and writable(channel):
            for tag in list(consumer.tags.values()):
                await _cancel_consumer(channel, tag)
            consumer.tags = {}
        # Deliveries never handed to the consumer go straight back to their queues.
        for notification in subscription.pending():
            if isinstance(notification, Message):
                held = self._holds.get(notification.message.claim)
                if held is not None and held.owner is consumer:
                    self._holds.drop(held, StaleReason.NOT_HELD)
                    self._holds.release(held)
        self.maybe_retire(consumer)

    async def queue_deleted(self, queue: str) -> int:
        """This service deleted ``queue``: stop consuming it now, as the broker's cancel
        would (see the module docstring for when that never comes), and look for it.
        Returns how many of its consumers were cancelled so."""
        cancelled = 0
        for consumer in list(self._consumers.values()):
            channel = consumer.channel
            tag = consumer.tags.pop(queue, None)
            if channel is None or tag is None:
                continue
            cancelled += 1
            self._holds.forget_consumed(channel, queue)
            self._drop_void(consumer)
            consumer.cancelled.set()
            if writable(channel):
                await _cancel_consumer(channel, tag)
        return cancelled

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
                self._drop_void(consumer)

    def _drop_void(self, consumer: Consumer) -> None:
        """Drop the deliveries waiting in ``consumer``'s subscription that are no longer
        held (their channel closed, or their consumer was cancelled). A closing
        subscription is left alone: closing it requeues what waits there."""
        if consumer.subscription.closed:
            return
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


async def _cancel_consumer(channel: Channel, tag: str) -> None:
    """Cancel consumer ``tag`` without waiting for the broker's cancel-ok.

    A ``nowait`` cancel, so nothing waits for an answer; shielded, because aiormq closes a
    channel whose call is cancelled (waiting for its lock, say), which would requeue every
    claim handed out on it. Not ``basic_cancel(nowait=True)``: it forgets the consumer's
    callback at once, and aiormq silently drops the deliveries the broker sent before it
    took the cancel, leaving them checked out to this channel, invisible to every other
    consumer, until the channel closes. The callback stays (until the channel closes), so
    each such delivery reaches ``_on_delivery``, which requeues it.
    """
    with contextlib.suppress(Exception):
        await asyncio.shield(channel.rpc(spec.Basic.Cancel(consumer_tag=tag, nowait=True)))

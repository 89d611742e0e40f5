r"""The RabbitMQ provider: AMQP 0-9-1 through aio-pika's robust connection.

How the contract maps onto RabbitMQ:

* **Connections.** Two :class:`aio_pika.RobustConnection`\ s (heartbeat and connect
  timeout from ``[rabbitmq]``) reconnect in the background: one for operations, one for
  push consumers, opened at the first subscribe (RabbitMQ's advice: a publisher blocked by
  flow control must not stall deliveries). Every channel is a plain aiormq channel that
  this module opens, owns and re-opens lazily, so aio-pika never re-declares anything on
  reconnect (which could re-create a deleted queue).
* **Ids.** Assigned at publish (see :mod:`._ids`) and carried as the AMQP
  ``message_id`` property, so they survive requeues and dead-lettering.
* **Send.** Publisher confirms plus ``mandatory=True`` on the default exchange: a message
  to a missing queue comes back (``Basic.Return``) and raises ``QueueNotFound``; nothing
  is silently dropped and nothing is created.
* **Receive.** ``basic.get`` on a channel per queue (so a 404 for one queue never
  releases messages held from another). Each held message is recorded as msg_id →
  (channel, delivery tag) with a client-side timer that ``nack(requeue=True)``s it when
  the visibility timeout passes — the broker's ``consumer_timeout`` is far too coarse.
* **Ack/nack.** Only ids in that record reach the broker; anything else (unknown, acked,
  nacked, expired, or held on a channel that has since closed) raises
  ``MessageNotFound`` without a frame being sent, so a channel is never killed by a
  stale delivery tag. When a channel closes its record entries are dropped: the broker
  requeues those messages itself and may hand them to any consumer, so a claim lost with
  its connection is gone like an expired one and settling it raises ``MessageNotFound``
  (ERR-6), as does an ack naming a redelivery still waiting in a subscription (ERR-7):
  an ack that returned is never redelivered anywhere, and an ack that raised means the
  work runs again (at least once). A settlement the connection cut off (the broker may
  or may not have read its frame) raises ``ConnectionLost`` or ``OperationTimeout``: its
  outcome is unknown, and the channel is closed if it is still open, so the message is
  requeued rather than left held without a timer.
* **Receive count.** Quorum queues: ``x-delivery-count`` + 1, exact (checked on 3.10;
  RabbitMQ 4 adds a default delivery limit of 20 after which a quorum queue drops the
  message). Classic queues keep no count: 1 unless ``redelivered``, else a lower bound
  (at least 2, or one more than this process saw last time) — declared as
  ``exact_receive_count=False``.
* **Delay.** Wait queues with per-queue TTL dead-lettering into the target (:mod:`._delay`).
* **Push.** ``basic.consume`` (no auto-ack) on a channel per subscription with
  ``prefetch_count``; each delivery is a claimed ``Message`` held exactly like a received
  one, with ``push_visibility_timeout_seconds`` as its visibility timeout. A supervisor
  re-subscribes after a reconnect. Closing a subscription cancels its consumers and
  requeues deliveries never handed out.
* **Listing.** Only through the management HTTP API: ``management_url``, else the URL
  derived from the AMQP URL when it answers at connect (:func:`._management.find_management`);
  without it ``list_queues`` is not claimed. Queues are marked with the declare argument
  ``x-mqcontract`` and only marked ones are listed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aiormq.abc
from aio_pika import RobustConnection
from aio_pika.connection import make_url
from aiormq.exceptions import (
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
)
from pamqp import commands as spec

from mqcontract.capabilities import Capabilities, PayloadFidelity, PushKind, RequeuePosition
from mqcontract.config import MessagingConfig, RabbitMqConfig
from mqcontract.errors import (
    BackendUnavailable,
    ConnectionLost,
    MessageNotFound,
    ProviderClosed,
    QueueNotFound,
    UnsupportedOperation,
)
from mqcontract.messages import Message, MessageNotification, QueuedMessage
from mqcontract.service import BaseMessagingService
from mqcontract.subscription import QueueSubscription
from mqcontract.validation import (
    QUEUE_NAME_PATTERN,
    check_delay,
    check_limit,
    check_payload,
    check_queue_name,
    check_visibility_timeout,
)

from . import _delay
from ._errors import translated
from ._ids import MessageIdGenerator, default_generator, id_time
from ._management import ManagementClient, find_management, vhost_of

__all__ = ["RabbitMqMessagingService", "connect_rabbitmq"]

log = logging.getLogger(__name__)

Channel = aiormq.abc.AbstractChannel

#: Declare argument marking queues created through mqcontract (RabbitMQ ignores unknown
#: ``x-`` arguments and does not compare them on re-declare).
MARKER_ARGUMENT = "x-mqcontract"
#: Header carrying the send time in integer microseconds since the epoch (pamqp encodes a
#: float header as a 32-bit float, which would round it to minutes).
ENQUEUED_AT_HEADER = "mqcontract-enqueued-at-us"
#: Seconds between reconnect attempts of the robust connection.
RECONNECT_INTERVAL = 1.0
#: Receive channels kept open for queues with nothing held (least recently used go first).
RX_CHANNEL_CACHE = 64
#: Classic queues: how many per-message receive counts this process remembers.
SEEN_CAPACITY = 100_000


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a shared future's exception as seen (its waiters may all have gone)."""
    if not future.cancelled():
        future.exception()


@dataclass(eq=False)
class _Held:
    """A message this provider holds for a receiver: where and how to settle it."""

    queue: str
    msg_id: int
    channel: Channel
    tag: int
    consumer: _Consumer | None = None
    timer: asyncio.TimerHandle | None = None
    #: The notification of a pushed delivery while it waits in its subscription: nobody
    #: holds it yet, so an ack naming its id comes from an earlier claim and must not
    #: settle it. None once handed out, and for deliveries claimed by receive.
    waiting: Message | None = None


@dataclass(eq=False)
class _Consumer:
    """One push subscription: its channel, consumer tags and supervisor."""

    subscription: QueueSubscription
    queues: tuple[str, ...]
    channel: Channel | None = None
    tags: list[str] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    closing: bool = False


class RabbitMqMessagingService(BaseMessagingService):
    """RabbitMQ through robust connections and owned channels; see the module docstring."""

    def __init__(
        self,
        config: RabbitMqConfig,
        connection: RobustConnection,
        *,
        quorum: bool,
        operation_timeout: float,
        connection_name: str,
        ids: MessageIdGenerator | None = None,
        management: ManagementClient | None = None,
    ) -> None:
        self.provider_name = "rabbitmq-quorum" if quorum else "rabbitmq"
        self.connection_name = connection_name
        self._config = config
        self._conn = connection
        #: Consumers get their own connection (opened at the first subscribe), as RabbitMQ
        #: advises: flow control that blocks a publishing connection must not stall
        #: deliveries, and losing the push connection leaves sends and receives working.
        self._push_conn: RobustConnection | None = None
        self._push_conn_lock = asyncio.Lock()
        self._quorum = quorum
        self._timeout = operation_timeout
        self._connect_timeout = config.connection_timeout_seconds
        self._ids = ids or default_generator
        self._target = config.url
        self._vhost = vhost_of(config.url)
        #: The management API, when :func:`find_management` found one (``list_queues``).
        self._management = management
        self._closed = False
        self._held: dict[tuple[str, int], _Held] = {}
        self._seen: OrderedDict[tuple[str, int], int] = OrderedDict()
        self._rx: OrderedDict[str, Channel] = OrderedDict()
        self._rx_lock = asyncio.Lock()
        self._pub: Channel | None = None
        self._pub_lock = asyncio.Lock()
        self._consumers: dict[QueueSubscription, _Consumer] = {}
        self._wait_queues: dict[str, set[str]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Pending read-back round trip per channel (see ``_read_back``).
        self._read_backs: dict[Channel, asyncio.Future[None]] = {}
        self._capabilities = Capabilities(
            push=PushKind.FULL,
            pushed_messages_claimed=True,
            fetch_by_id=False,
            requires_fallback_polling=False,
            fallback_polling_interval=None,
            delay=True,
            # A client-side timer plus one nack frame: measured ~10 ms late on a local
            # broker; 50 ms leaves room for a loaded machine.
            visibility_precision_seconds=0.05,
            requeue_position=RequeuePosition.BACK if quorum else RequeuePosition.ORIGINAL,
            exact_receive_count=quorum,
            fifo=True,
            payload_fidelity=PayloadFidelity.BYTES,
            max_message_size_bytes=config.max_message_size_bytes,
            list_queues=self._management is not None,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    # -- plumbing ----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ProviderClosed(self.provider_name)

    def _guard(
        self, operation: str, queue: str = ""
    ) -> contextlib.AbstractAsyncContextManager[None]:
        return translated(
            self.provider_name,
            self._target,
            operation=operation,
            timeout=self._timeout,
            queue=queue,
            is_closed=lambda: self._closed,
        )

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.debug("background task failed: %r", exc)

    async def _amqp(self, *, push: bool = False) -> aiormq.abc.AbstractConnection:
        """The live aiormq connection, waiting (bounded) while the robust one reconnects."""
        self._check_open()
        robust = await self._push_connection() if push else self._conn
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._connect_timeout
        while True:
            transport = robust.transport
            if (
                robust.connected.is_set()
                and transport is not None
                and not transport.connection.is_closed
            ):
                return transport.connection
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ConnectionLost(
                    self.provider_name,
                    self._target,
                    f"not reconnected within {self._connect_timeout:g} s",
                )
            if robust.connected.is_set():
                # The flag lags behind a transport that just died; waiting on a set event
                # would never yield and starve the reconnect itself.
                await asyncio.sleep(min(remaining, 0.02))
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(remaining, 0.5)):
                        await robust.connected.wait()
            self._check_open()

    async def _push_connection(self) -> RobustConnection:
        async with self._push_conn_lock:
            if self._push_conn is None:
                connection = await open_connection(
                    self._config, self.provider_name, f"{self.connection_name}-push"
                )
                if self._closed:  # closed while connecting: do not leak it
                    await connection.close()
                    raise ProviderClosed(self.provider_name)
                self._push_conn = connection
            return self._push_conn

    async def _open_channel(self, *, confirms: bool, operation: str, push: bool = False) -> Channel:
        connection = await self._amqp(push=push)
        async with self._guard(operation):
            try:
                channel = await connection.channel(
                    publisher_confirms=confirms, on_return_raises=True
                )
            except RuntimeError as exc:  # aiormq: "connection closed"
                raise ConnectionLost(self.provider_name, self._target, str(exc)) from exc
        channel.closing.add_done_callback(partial(self._channel_closed, channel))
        return channel

    def _channel_closed(self, channel: Channel, _: asyncio.Future[Any]) -> None:
        """Tags held on a closed channel are void: the broker has requeued those messages."""
        for key, held in list(self._held.items()):
            if held.channel is channel:
                del self._held[key]
                if held.timer is not None:
                    held.timer.cancel()
        for queue, rx in list(self._rx.items()):
            if rx is channel:
                del self._rx[queue]
        if self._pub is channel:
            self._pub = None
        for consumer in self._consumers.values():
            if consumer.channel is channel:
                # Deliveries not yet handed out are void too; the broker redelivers them.
                for note in consumer.subscription.pending():
                    if isinstance(note, Message) and (note.queue_name, note.message.msg_id) in (
                        self._held
                    ):
                        consumer.subscription.put(note)

    @contextlib.asynccontextmanager
    async def _scratch(self, operation: str, queue: str = "") -> AsyncIterator[Channel]:
        """A throwaway channel: a 404 from a passive declare kills only this one."""
        channel = await self._open_channel(confirms=False, operation=operation)
        try:
            async with self._guard(operation, queue):
                yield channel
        finally:
            await self._close_channel(channel)

    async def _close_channel(self, channel: Channel) -> None:
        """Close ``channel`` if open, bounded; failures do not matter (it is going away)."""
        if not channel.is_closed:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._timeout):
                    await channel.close()

    async def _exists(self, channel: Channel, name: str) -> bool:
        try:
            await channel.queue_declare(name, passive=True)
        except ChannelNotFoundEntity:
            return False
        return True

    async def _require_queue(self, name: str, operation: str) -> None:
        async with self._scratch(operation, name) as channel:
            if not await self._exists(channel, name):
                raise QueueNotFound(name)

    async def _publish_channel(self) -> Channel:
        channel = self._pub
        if channel is not None and not channel.is_closed:
            return channel  # the lock only guards opening a channel
        async with self._pub_lock:
            if self._pub is None or self._pub.is_closed:
                self._pub = await self._open_channel(confirms=True, operation="send")
            return self._pub

    async def _rx_channel(self, queue: str) -> Channel:
        channel = self._rx.get(queue)
        if channel is not None and not channel.is_closed:
            self._rx.move_to_end(queue)
            return channel
        async with self._rx_lock:
            channel = self._rx.get(queue)
            if channel is None or channel.is_closed:
                channel = await self._open_channel(confirms=False, operation="receive")
                self._rx[queue] = channel
            self._rx.move_to_end(queue)
            self._evict_rx()
            return channel

    def _evict_rx(self) -> None:
        if len(self._rx) <= RX_CHANNEL_CACHE:
            return
        busy = {held.channel for held in self._held.values()}
        for queue, channel in list(self._rx.items())[:-1]:
            if len(self._rx) <= RX_CHANNEL_CACHE:
                return
            if channel not in busy:
                del self._rx[queue]
                self._spawn(self._close_channel(channel))

    # -- holding and settling ----------------------------------------------------------

    def _receive_count(
        self, queue: str, msg_id: int, redelivered: bool, headers: Mapping[str, Any]
    ) -> int:
        delivery_count = headers.get("x-delivery-count")
        if self._quorum and isinstance(delivery_count, int):
            return delivery_count + 1
        key = (queue, msg_id)
        previous = self._seen.pop(key, 0)
        count = max(2, previous + 1) if redelivered else 1
        self._seen[key] = count
        while len(self._seen) > SEEN_CAPACITY:
            self._seen.popitem(last=False)
        return count

    def _hold(
        self,
        queue: str,
        channel: Channel,
        delivered: aiormq.abc.DeliveredMessage,
        visibility_timeout: float,
        consumer: _Consumer | None,
    ) -> QueuedMessage:
        """Record a delivery as held and start its visibility timer."""
        props = delivered.header.properties
        headers: Mapping[str, Any] = props.headers or {}
        try:
            msg_id = int(props.message_id or "")
        except ValueError:  # not published through mqcontract: give it a local id
            msg_id = self._ids.next_id()
        delivery = delivered.delivery
        assert isinstance(delivery, spec.Basic.GetOk | spec.Basic.Deliver)
        count = self._receive_count(queue, msg_id, bool(delivery.redelivered), headers)
        stamp = headers.get(ENQUEUED_AT_HEADER)
        enqueued_at = stamp / 1e6 if isinstance(stamp, int) else id_time(msg_id)
        key = (queue, msg_id)
        previous = self._held.pop(key, None)
        if previous is not None:  # an id collision or duplicate: release, never orphan
            self._release(previous)
        held = _Held(queue, msg_id, channel, int(delivery.delivery_tag or 0), consumer)
        held.timer = asyncio.get_running_loop().call_later(visibility_timeout, self._expire, held)
        self._held[key] = held
        return QueuedMessage(msg_id, queue, delivered.body, count, enqueued_at)

    def _expire(self, held: _Held) -> None:
        if self._held.get((held.queue, held.msg_id)) is held:
            del self._held[(held.queue, held.msg_id)]
            self._release(held)

    def _release(self, held: _Held) -> None:
        """Requeue a held message in the background (its entry is already gone)."""
        if held.timer is not None:
            held.timer.cancel()
        if not held.channel.is_closed:
            self._spawn(self._nack_quietly(held.channel, held.tag))
        self._maybe_retire(held.consumer)

    async def _nack_quietly(self, channel: Channel, tag: int) -> None:
        # Any failure means the channel is going away, and the broker requeues it anyway.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._timeout):
                await channel.basic_nack(tag, requeue=True)

    def _taken(self, note: MessageNotification) -> None:
        """A pushed delivery reached the caller: from now on it may settle it."""
        if isinstance(note, Message):
            held = self._held.get((note.queue_name, note.message.msg_id))
            if held is not None and held.waiting is note:  # not a stale copy
                held.waiting = None

    def _take(self, queue: str, msg_id: int) -> _Held | None:
        """Remove and return the held entry for ``msg_id``; raise if the claim is gone.

        ``None``: this provider holds nothing under that id. ``MessageNotFound`` at once
        (no round trip) when the delivery is void or is not the caller's: its channel
        closed (the broker requeued it; the close callback may not have run yet), or it
        is a redelivery still waiting in a subscription, so an ack naming it comes from
        the claim that died and must not settle the copy someone is about to process.
        """
        held = self._held.get((queue, msg_id))
        if held is None:
            return None
        if held.waiting is not None:
            raise MessageNotFound(queue, msg_id)
        del self._held[(queue, msg_id)]
        if held.timer is not None:
            held.timer.cancel()
        if held.channel.is_closed:
            raise MessageNotFound(queue, msg_id)
        return held

    async def _settle(self, queue: str, msg_id: int, *, ack: bool) -> None:
        """Ack or nack a held message; a claim lost with its channel is not held (ERR-6).

        A frame the connection cut off may or may not have reached the broker, so that
        failure is reported as it is (``ConnectionLost``/``OperationTimeout``) and never
        turned into a success: the broker requeues an unsettled message and may give it
        to another consumer, so only a confirmed ack may return.
        """
        self._check_open()
        check_queue_name(queue)
        held = self._take(queue, msg_id)
        if held is None:
            await self._require_queue(queue, "ack" if ack else "nack")
            raise MessageNotFound(queue, msg_id)
        try:
            await self._send_settlement(held, ack=ack)
        except BaseException:
            if not held.channel.is_closed:
                # The frame may be stuck unsent (a full write buffer under flow control)
                # with the timer already cancelled: closing the channel makes the broker
                # requeue whatever it did not settle, instead of a claim held forever.
                self._spawn(self._close_channel(held.channel))
            raise
        finally:
            self._maybe_retire(held.consumer)  # a closed subscription's channel may go now

    async def _send_settlement(self, held: _Held, *, ack: bool) -> None:
        async with self._guard("ack" if ack else "nack", held.queue):
            try:
                if ack:
                    await held.channel.basic_ack(held.tag)
                else:
                    await held.channel.basic_nack(held.tag, requeue=True)
            except ChannelInvalidStateError:
                # The channel closed before the frame was written: nothing reached the
                # broker, and the claim went with the channel.
                raise MessageNotFound(held.queue, held.msg_id) from None
            if ack or held.consumer is not None:
                # Neither frame has a reply. A round trip on the same channel confirms
                # the broker read it: an ack that "succeeded" must not come back, and a
                # pushed message nacked here must be visible before another channel asks.
                await self._read_back(held.channel)

    async def _read_back(self, channel: Channel) -> None:
        """Return once the broker has read every frame sent on ``channel`` so far.

        Frames on a channel are read in order, so one passive declare sent after them
        confirms them all: settlements made while one is pending share it (a consumer's
        workers acking together pay one round trip between them, not one each).
        """
        sync = self._read_backs.get(channel)
        if sync is None:
            sync = asyncio.get_running_loop().create_future()
            sync.add_done_callback(_retrieve)
            self._read_backs[channel] = sync
            self._spawn(self._send_read_back(channel, sync))
        await asyncio.shield(sync)

    async def _send_read_back(self, channel: Channel, sync: asyncio.Future[None]) -> None:
        try:
            await asyncio.sleep(0)  # settlements sent in this turn of the loop join in
            # Frames sent from now on need the next read-back.
            if self._read_backs.get(channel) is sync:
                del self._read_backs[channel]
            await channel.exchange_declare("amq.direct", passive=True)
        except asyncio.CancelledError:
            sync.cancel()
            raise
        except BaseException as exc:
            sync.set_exception(exc)
            raise
        else:
            sync.set_result(None)
        finally:
            if self._read_backs.get(channel) is sync:
                del self._read_backs[channel]

    # -- lifecycle ---------------------------------------------------------------------

    def _queue_arguments(self) -> dict[str, Any]:
        kind = "quorum" if self._quorum else "classic"
        return {"x-queue-type": kind, MARKER_ARGUMENT: kind}

    async def create_queue(self, name: str) -> None:
        self._check_open()
        check_queue_name(name)
        async with self._scratch("create_queue", name) as channel:
            try:
                await channel.queue_declare(name, durable=True, arguments=self._queue_arguments())
            except ChannelPreconditionFailed:
                # It exists with other properties (say, the other queue type): it exists.
                log.warning("queue %r exists with different arguments; keeping it", name)

    async def delete_queue(self, name: str) -> None:
        self._check_open()
        check_queue_name(name)
        waits = self._wait_queues.pop(name, set())
        if self._management is not None:
            # Other processes' wait queues too; without the API they expire on their own.
            prefix = _delay.wait_queue_prefix(name)
            try:
                listed = await self._management.queues(self._vhost)
            except BackendUnavailable as exc:
                log.warning("cannot list wait queues of %r: %s", name, exc)
                listed = []
            waits |= {q["name"] for q in listed if str(q.get("name", "")).startswith(prefix)}
        async with self._scratch("delete_queue", name) as channel:
            await channel.queue_delete(name)
            for wait in sorted(waits):
                await channel.queue_delete(wait)
        for key, held in list(self._held.items()):
            if key[0] == name:
                del self._held[key]
                if held.timer is not None:
                    held.timer.cancel()
                self._maybe_retire(held.consumer)
        rx = self._rx.pop(name, None)
        if rx is not None:
            self._spawn(self._close_channel(rx))

    async def queue_exists(self, name: str) -> bool:
        self._check_open()
        check_queue_name(name)
        async with self._scratch("queue_exists", name) as channel:
            return await self._exists(channel, name)

    async def list_queues(self) -> list[str]:
        self._check_open()
        if self._management is None:
            raise UnsupportedOperation(
                self.provider_name, "list_queues (needs the management API; none was found)"
            )
        listed = await self._management.queues(self._vhost)
        names = {
            str(q["name"])
            for q in listed
            if MARKER_ARGUMENT in (q.get("arguments") or {})
            and QUEUE_NAME_PATTERN.fullmatch(str(q.get("name", "")))
        }
        return sorted(names)

    # -- sending -----------------------------------------------------------------------

    def _properties(self, msg_id: int) -> spec.Basic.Properties:
        return spec.Basic.Properties(
            message_id=str(msg_id),
            delivery_mode=2,
            content_type="application/octet-stream",
            headers={ENQUEUED_AT_HEADER: time.time_ns() // 1000},
        )

    async def _publish(self, queue: str, routing_key: str, body: bytes, msg_id: int) -> None:
        channel = await self._publish_channel()
        async with self._guard("send", queue):
            await channel.basic_publish(
                body,
                exchange="",
                routing_key=routing_key,
                properties=self._properties(msg_id),
                mandatory=True,
            )

    async def send_message(self, queue: str, payload: bytes) -> int:
        self._check_open()
        check_queue_name(queue)
        body = check_payload(queue, payload, self._capabilities)
        msg_id = self._ids.next_id()
        await self._publish(queue, queue, body, msg_id)
        return msg_id

    async def send_message_with_delay(
        self, queue: str, payload: bytes, delay_seconds: float
    ) -> int:
        self._check_open()
        check_queue_name(queue)
        body = check_payload(queue, payload, self._capabilities)
        delay = check_delay(queue, delay_seconds, self._capabilities)
        if delay <= 0:
            return await self.send_message(queue, body)
        ms = _delay.delay_ms(delay)
        wait = _delay.wait_queue_name(queue, ms)
        async with self._scratch("send_with_delay", queue) as channel:
            if not await self._exists(channel, queue):
                raise QueueNotFound(queue)
            # Re-declaring renews the wait queue's x-expires lease.
            await channel.queue_declare(
                wait, durable=True, arguments=_delay.wait_queue_arguments(queue, ms)
            )
        self._wait_queues.setdefault(queue, set()).add(wait)
        msg_id = self._ids.next_id()
        await self._publish(queue, wait, body, msg_id)
        return msg_id

    async def send_batch(self, queue: str, payloads: Sequence[bytes]) -> list[int]:
        self._check_open()
        check_queue_name(queue)
        bodies = [check_payload(queue, p, self._capabilities) for p in payloads]
        if not bodies:
            return []
        ids = [self._ids.next_id() for _ in bodies]
        # One channel keeps publish order; confirms are awaited together.
        pairs = zip(bodies, ids, strict=True)
        results = await asyncio.gather(
            *(self._publish(queue, queue, body, msg_id) for body, msg_id in pairs),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return ids

    # -- receiving ---------------------------------------------------------------------

    async def receive_messages(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        self._check_open()
        check_queue_name(queue)
        check_limit(queue, limit, self._capabilities)
        vt = check_visibility_timeout(queue, visibility_timeout, self._capabilities)
        channel = await self._rx_channel(queue)
        claimed: list[QueuedMessage] = []
        async with self._guard("receive", queue):
            while len(claimed) < limit:
                delivered = await channel.basic_get(queue, no_ack=False)
                if not isinstance(delivered.delivery, spec.Basic.GetOk):
                    break
                claimed.append(self._hold(queue, channel, delivered, vt, None))
        return claimed

    async def ack_message(self, queue: str, msg_id: int) -> None:
        await self._settle(queue, msg_id, ack=True)

    async def nack_message(self, queue: str, msg_id: int) -> None:
        await self._settle(queue, msg_id, ack=False)

    # -- push --------------------------------------------------------------------------

    async def subscribe_many(self, queues: Sequence[str]) -> QueueSubscription:
        self._check_open()
        names = tuple(dict.fromkeys(check_queue_name(q) for q in queues))
        async with self._scratch("subscribe") as channel:
            for name in names:
                if not await self._exists(channel, name):
                    raise QueueNotFound(name)
        subscription = QueueSubscription(names, on_close=self._unsubscribe, on_take=self._taken)
        consumer = _Consumer(subscription, names)
        await self._start_consumer(consumer, names)
        self._consumers[consumer.subscription] = consumer
        consumer.task = asyncio.get_running_loop().create_task(
            self._supervise(consumer), name=f"mqcontract-{self.provider_name}-consumer"
        )
        return consumer.subscription

    async def _start_consumer(self, consumer: _Consumer, queues: Sequence[str]) -> None:
        channel = await self._open_channel(confirms=False, operation="subscribe", push=True)
        # Current before the first consume: deliveries may arrive before the last consume-ok.
        consumer.channel = channel
        try:
            async with self._guard("subscribe", queues[0] if len(queues) == 1 else ""):
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
            await self._close_channel(channel)
            raise
        consumer.tags = tags

    async def _on_delivery(
        self,
        consumer: _Consumer,
        channel: Channel,
        queue: str,
        delivered: aiormq.abc.DeliveredMessage,
    ) -> None:
        # No await before the message is recorded and queued: deliveries keep their order.
        if consumer.closing or self._closed or consumer.channel is not channel:
            tag = getattr(delivered.delivery, "delivery_tag", None)
            if tag is not None and not channel.is_closed:
                await self._nack_quietly(channel, int(tag))
            return
        vt = self._config.push_visibility_timeout_seconds
        message = self._hold(queue, channel, delivered, vt, consumer)
        note = Message(message, claimed=True)
        self._held[(queue, message.msg_id)].waiting = note  # until the subscription yields it
        if not consumer.subscription.put(note):
            held = self._held.pop((queue, message.msg_id), None)
            if held is not None:
                self._release(held)

    async def _supervise(self, consumer: _Consumer) -> None:
        """Re-subscribe after the consumer channel dies (reconnect, broker-side close)."""
        while not consumer.closing and not self._closed:
            channel = consumer.channel
            if channel is not None and not channel.is_closed:
                await asyncio.wait([channel.closing])
                continue
            consumer.channel = None
            try:
                async with self._scratch("subscribe") as scratch:
                    alive = [q for q in consumer.queues if await self._exists(scratch, q)]
                if alive and not consumer.closing:
                    await self._start_consumer(consumer, alive)
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
                key = (notification.queue_name, notification.message.msg_id)
                held = self._held.get(key)
                if held is not None and held.consumer is consumer:
                    del self._held[key]
                    self._release(held)
        self._maybe_retire(consumer)

    def _maybe_retire(self, consumer: _Consumer | None) -> None:
        """Close a closed subscription's channel once nothing handed out is still held."""
        if consumer is None or not consumer.closing or consumer.channel is None:
            return
        if any(held.consumer is consumer for held in self._held.values()):
            return
        channel, consumer.channel = consumer.channel, None
        self._spawn(self._close_channel(channel))

    # -- shutdown ----------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        for subscription in list(self._consumers):
            with contextlib.suppress(Exception):
                await subscription.aclose()
        self._closed = True
        for held in self._held.values():
            if held.timer is not None:
                held.timer.cancel()
        self._held.clear()
        # Closing the connection makes the broker requeue everything still unacked.
        for connection in (self._conn, self._push_conn):
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._rx.clear()
        self._pub = None

    # -- test support ------------------------------------------------------------------

    @property
    def connection_names(self) -> tuple[str, ...]:
        """Client-provided names of the open connections (operations first, then push)."""
        names = [self.connection_name]
        if self._push_conn is not None:
            names.append(f"{self.connection_name}-push")
        return tuple(names)

    async def _abort_transport(self, *, push_only: bool = False) -> None:
        """Drop TCP connections without a goodbye (fault injection for harnesses).

        aiormq keeps its socket writer only inside its writer task, so it is taken from
        there; if that ever fails, the aiormq connection is closed with an error instead
        (the robust connection treats both as a lost connection and reconnects).
        """
        targets = [self._push_conn] if push_only else [self._conn, self._push_conn]
        for robust in targets:
            transport = robust.transport if robust is not None else None
            if transport is None:
                continue
            connection = transport.connection
            task = getattr(connection, "_writer_task", None)
            coro = task.get_coro() if task is not None and not task.done() else None
            frame = getattr(coro, "cr_frame", None)
            writer = frame.f_locals.get("writer") if frame is not None else None
            if isinstance(writer, asyncio.StreamWriter):
                writer.transport.abort()
            else:
                await connection.close(ConnectionResetError("connection severed"))


async def open_connection(rabbit: RabbitMqConfig, provider: str, name: str) -> RobustConnection:
    """A robust connection named ``name``, bounded by ``connection_timeout_seconds``."""
    kwargs: dict[str, Any] = {
        "heartbeat": rabbit.heartbeat_seconds,
        "reconnect_interval": RECONNECT_INTERVAL,
    }
    connection = RobustConnection(
        make_url(rabbit.url, **kwargs),
        client_properties={"connection_name": name},
        **kwargs,
    )
    try:
        async with asyncio.timeout(rabbit.connection_timeout_seconds):
            await connection.connect(timeout=rabbit.connection_timeout_seconds)
    except Exception as exc:  # any failure to connect means unavailable
        with contextlib.suppress(Exception):
            await connection.close()
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise BackendUnavailable(provider, rabbit.url, detail) from exc
    return connection


async def connect_rabbitmq(config: MessagingConfig, *, quorum: bool) -> RabbitMqMessagingService:
    """Connect (bounded by ``connection_timeout_seconds``) and return the service."""
    provider = "rabbitmq-quorum" if quorum else "rabbitmq"
    name = f"mqcontract-{provider}-{uuid.uuid4().hex[:12]}"
    connection = await open_connection(config.rabbitmq, provider, name)
    try:
        management = await find_management(
            config.rabbitmq, provider=provider, timeout=config.operation_timeout_seconds
        )
    except BaseException:
        await connection.close()
        raise
    return RabbitMqMessagingService(
        config.rabbitmq,
        connection,
        quorum=quorum,
        operation_timeout=config.operation_timeout_seconds,
        connection_name=name,
        management=management,
    )

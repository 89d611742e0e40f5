"""The messages this provider holds for receivers, and settling them.

Each held message is recorded as (queue, msg_id) → (channel, delivery tag), with a
client-side timer that ``nack(requeue=True)``s it when the visibility timeout passes
(the broker's ``consumer_timeout`` is far too coarse). Only ids in the record reach the
broker; anything else (unknown, acked, nacked, expired, or held on a channel that has
since closed) is ``MessageNotFound`` without a frame being sent, so a channel is never
killed by a stale delivery tag. When a channel closes its entries are dropped: the broker
requeues those messages itself.

Everything here talks to channels through :class:`~._settlement.SettlingChannel`, so it
runs against a fake channel as well as against aiormq's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiormq.abc
from pamqp import commands as spec

from mqcontract.errors import MessageNotFound
from mqcontract.messages import Message, MessageNotification, QueuedMessage

from ._ids import MessageIdGenerator, id_time
from ._settlement import ReadBacks, SettlingChannel, send_settlement
from ._tasks import Background

__all__ = ["ENQUEUED_AT_HEADER", "Held", "Holds"]

#: Header carrying the send time in integer microseconds since the epoch (pamqp encodes a
#: float header as a 32-bit float, which would round it to minutes).
ENQUEUED_AT_HEADER = "mqcontract-enqueued-at-us"
#: Classic queues: how many per-message receive counts this process remembers.
SEEN_CAPACITY = 100_000


@dataclass(eq=False)
class Held:
    """A message this provider holds for a receiver: where and how to settle it."""

    queue: str
    msg_id: int
    channel: SettlingChannel
    tag: int
    #: The push consumer it was delivered to (None: claimed by receive).
    owner: object | None = None
    timer: asyncio.TimerHandle | None = None
    #: The notification of a pushed delivery while it waits in its subscription: nobody
    #: holds it yet, so an ack naming its id comes from an earlier claim and must not
    #: settle it. None once handed out, and for deliveries claimed by receive.
    waiting: Message | None = None


def _nobody(owner: object | None) -> None:
    pass


class Holds:
    """The record of held messages; see the module docstring."""

    def __init__(
        self, *, quorum: bool, ids: MessageIdGenerator, tasks: Background, timeout: float
    ) -> None:
        self._quorum = quorum
        self._ids = ids
        self._tasks = tasks
        self._timeout = timeout
        self._held: dict[tuple[str, int], Held] = {}
        self._seen: OrderedDict[tuple[str, int], int] = OrderedDict()
        self._read_backs = ReadBacks(tasks)
        #: Called with a held message's owner once it is no longer held (settled,
        #: expired, released), so a closed subscription can retire its channel.
        self.on_released: Callable[[object | None], None] = _nobody

    # -- recording ---------------------------------------------------------------------

    def hold(
        self,
        queue: str,
        channel: SettlingChannel,
        delivered: aiormq.abc.DeliveredMessage,
        visibility_timeout: float,
        owner: object | None = None,
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
            self.release(previous)
        held = Held(queue, msg_id, channel, int(delivery.delivery_tag or 0), owner)
        held.timer = asyncio.get_running_loop().call_later(visibility_timeout, self._expire, held)
        self._held[key] = held
        return QueuedMessage(msg_id, queue, delivered.body, count, enqueued_at)

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

    def get(self, queue: str, msg_id: int) -> Held | None:
        """The held entry for ``msg_id``, if any."""
        return self._held.get((queue, msg_id))

    def held_by(self, owner: object) -> bool:
        """Whether anything delivered to ``owner`` is still held."""
        return any(held.owner is owner for held in self._held.values())

    def channels(self) -> set[SettlingChannel]:
        """Channels with something held on them (they must stay open)."""
        return {held.channel for held in self._held.values()}

    # -- letting go --------------------------------------------------------------------

    def _expire(self, held: Held) -> None:
        if self._held.get((held.queue, held.msg_id)) is held:
            del self._held[(held.queue, held.msg_id)]
            self.release(held)

    def drop(self, queue: str, msg_id: int) -> Held | None:
        """Remove and return the entry for ``msg_id`` (to release it)."""
        return self._held.pop((queue, msg_id), None)

    def release(self, held: Held) -> None:
        """Requeue a held message in the background (its entry is already gone)."""
        if held.timer is not None:
            held.timer.cancel()
        if not held.channel.is_closed:
            self._tasks.spawn(self.nack_quietly(held.channel, held.tag))
        self.on_released(held.owner)

    async def nack_quietly(self, channel: SettlingChannel, tag: int) -> None:
        """Requeue ``tag``; a failure means the channel is going away, which requeues it."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._timeout):
                await channel.basic_nack(tag, requeue=True)

    def forget_channel(self, channel: SettlingChannel) -> None:
        """Tags held on a closed channel are void: the broker has requeued those messages."""
        for key, held in list(self._held.items()):
            if held.channel is channel:
                del self._held[key]
                if held.timer is not None:
                    held.timer.cancel()

    def forget_queue(self, queue: str) -> None:
        """The queue was deleted: nothing on it is held any more."""
        for key, held in list(self._held.items()):
            if key[0] == queue:
                del self._held[key]
                if held.timer is not None:
                    held.timer.cancel()
                self.on_released(held.owner)

    def clear(self) -> None:
        """Forget everything (the provider is closing its connections)."""
        for held in self._held.values():
            if held.timer is not None:
                held.timer.cancel()
        self._held.clear()

    # -- settling ----------------------------------------------------------------------

    def taken(self, note: MessageNotification) -> None:
        """A pushed delivery reached the caller: from now on it may settle it."""
        if isinstance(note, Message):
            held = self._held.get((note.queue_name, note.message.msg_id))
            if held is not None and held.waiting is note:  # not a stale copy
                held.waiting = None

    def take(self, queue: str, msg_id: int) -> Held | None:
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

    async def settle(self, queue: str, msg_id: int, *, ack: bool) -> bool:
        """Ack or nack the held ``msg_id``; False when nothing is held under that id.

        A frame the connection cut off may or may not have reached the broker, so that
        failure propagates as it is and is never turned into a success: the broker
        requeues an unsettled message and may give it to another consumer, so only a
        confirmed ack may return. The channel is then closed if still open: the frame may
        be stuck unsent (a full write buffer under flow control) with the timer already
        cancelled, and closing makes the broker requeue whatever it did not settle,
        instead of a claim held forever.
        """
        held = self.take(queue, msg_id)
        if held is None:
            return False
        try:
            async with asyncio.timeout(self._timeout):
                sent = await send_settlement(
                    held.channel,
                    held.tag,
                    ack=ack,
                    confirm=ack or held.owner is not None,
                    read_backs=self._read_backs,
                )
            if not sent:
                raise MessageNotFound(queue, msg_id)
        except BaseException:
            if not held.channel.is_closed:
                self._tasks.spawn(self._close(held.channel))
            raise
        finally:
            self.on_released(held.owner)  # a closed subscription's channel may go now
        return True

    async def _close(self, channel: SettlingChannel) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._timeout):
                await channel.close()

"""The deliveries this provider holds for receivers, each under its own claim, and settling them.

Every delivery held gets a fresh claim token (this service's random nonce and a counter:
unique per service, and no other service can guess one) and is recorded by it, with its
queue, id, channel and delivery tag, and a client-side timer that
``nack(requeue=True)``s it when the visibility timeout passes (the broker's
``consumer_timeout`` is far too coarse). A settlement names a claim: only a live claim
recorded here, on the queue and id it names, reaches the broker. Anything else is
``StaleClaim`` without a frame being sent, so a channel is never killed by a stale
delivery tag, saying why as far as this service can tell: ``lapsed`` (the timer released
it, or it was nacked), ``settled`` (it was acked, or its queue deleted), ``not held``
(a token this service never made or no longer remembers: another service's claim, one
held on a channel that has since closed — the broker requeued those itself — or a pushed
copy still waiting in its subscription, which nobody holds yet).

Keyed by claim, two messages with one id (a foreign publisher, colliding producers) are
two independent holds: both delivered, both settleable, and holding one never releases
the other.

What a delivery says of itself is checked, since any publisher can set it: its id is
its ``message_id`` only when that is an id's canonical form (:func:`._ids.parse_id`),
else the hash of its content (:func:`._ids.content_id`), the same on every redelivery;
its send time is mqcontract's header only when that is a time (an ``int``, not a
``bool``, from 1 µs after the epoch to before the year 10000), else the AMQP
``timestamp``, else the time in a parsed id, else, for a hashed id, when this process
first saw the message (kept, bounded, so redeliveries here show the same time).

Everything here talks to channels through :class:`~._settlement.SettlingChannel`, so it
runs against a fake channel as well as against aiormq's.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiormq.abc
from pamqp import commands as spec

from mqcontract.errors import StaleClaim, StaleReason
from mqcontract.messages import Claim, Message, MessageNotification, QueuedMessage
from mqcontract.validation import is_message_id

from ._closing import begin_close, nack_frame, writable, write_frame
from ._counts import ReceiveCounts
from ._ids import content_id, id_time, parse_id
from ._settlement import ReadBacks, SettlingChannel, send_acks, send_settlement
from ._tasks import Background

__all__ = ["ENDED_CAPACITY", "ENQUEUED_AT_HEADER", "Held", "Holds"]

#: Header carrying the send time in integer microseconds since the epoch (pamqp encodes a
#: float header as a 32-bit float, which would round it to minutes).
ENQUEUED_AT_HEADER = "mqcontract-enqueued-at-us"
#: How many ended claims are remembered to say why they are stale (older: ``not held``).
ENDED_CAPACITY = 100_000
#: How many first-seen times of messages without a send time are remembered.
SEEN_AT_CAPACITY = 100_000
#: Send stamps from this on (microseconds since the epoch: the year 10000) are no time.
_STAMP_LIMIT_US = 253_402_300_800 * 1_000_000
#: Properties left out of a content id: the broker drops ``expiration`` when it
#: dead-letters a message; headers are taken without the broker's ``x-`` ones.
_NOT_IDENTITY = frozenset({"expiration", "headers"})


@dataclass(eq=False)
class Held:
    """A delivery this provider holds for a receiver: where and how to settle it."""

    queue: str
    msg_id: int
    token: str
    channel: SettlingChannel
    tag: int
    #: The push consumer it was delivered to (None: claimed by receive).
    owner: object | None = None
    timer: asyncio.TimerHandle | None = None
    #: The notification of a pushed delivery while it waits in its subscription: nobody
    #: holds it yet, so no settlement may reach it. None once handed out, and for
    #: deliveries claimed by receive.
    waiting: Message | None = None


def _nobody(owner: object | None) -> None:
    pass


def send_stamp(value: object) -> int | None:
    """mqcontract's enqueued-at header as microseconds since the epoch, if it is a time
    (an ``int``, not a ``bool``, in ``1.._STAMP_LIMIT_US - 1``); else None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 < value < _STAMP_LIMIT_US else None


def _identity(props: spec.Basic.Properties, headers: Mapping[str, Any]) -> bytes:
    """What a publisher set on a message and the broker keeps: what a content id hashes."""
    fields = [
        (name, getattr(props, name, None)) for name in props.__slots__ if name not in _NOT_IDENTITY
    ]
    own = sorted((str(k), v) for k, v in headers.items() if not str(k).startswith("x-"))
    return repr((fields, own)).encode("utf-8", "backslashreplace")


def _headers(props: spec.Basic.Properties) -> Mapping[str, Any]:
    headers = props.headers
    return headers if isinstance(headers, Mapping) else {}


class Holds:
    """The record of held deliveries by claim token; see the module docstring."""

    def __init__(
        self,
        *,
        quorum: bool,
        tasks: Background,
        timeout: float,
        nonce: str | None = None,
    ) -> None:
        self._tasks = tasks
        self._timeout = timeout
        self._nonce = nonce or secrets.token_hex(8)
        self._serials = itertools.count(1)
        self._held: dict[str, Held] = {}
        #: Token → (queue, msg_id, why it ended), for ``StaleClaim`` reasons. The reason is
        #: kept as its plain string: a tuple of strings and ints is one the garbage
        #: collector stops tracking, and there are up to ``ENDED_CAPACITY`` of them.
        self._ended: OrderedDict[str, tuple[str, int, str]] = OrderedDict()
        self._counts = ReceiveCounts(quorum=quorum)
        #: (queue, content id) → when this process first saw it (no send time known).
        self._seen_at: OrderedDict[tuple[str, int], float] = OrderedDict()
        self._read_backs = ReadBacks(tasks)
        #: Called with a held delivery's owner once it is no longer held (settled,
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
        """Record a delivery as held under a new claim and start its visibility timer."""
        return self._record(queue, channel, delivered, visibility_timeout, owner)[1]

    def hold_pushed(
        self,
        queue: str,
        channel: SettlingChannel,
        delivered: aiormq.abc.DeliveredMessage,
        visibility_timeout: float,
        owner: object,
    ) -> Message:
        """Hold a pushed delivery for ``owner``: its notification waits in the
        subscription, and no settlement reaches it until it is taken (:meth:`taken`)."""
        held, message = self._record(queue, channel, delivered, visibility_timeout, owner)
        held.waiting = Message(message, claimed=True)
        return held.waiting

    def _record(
        self,
        queue: str,
        channel: SettlingChannel,
        delivered: aiormq.abc.DeliveredMessage,
        visibility_timeout: float,
        owner: object | None,
    ) -> tuple[Held, QueuedMessage]:
        props = delivered.header.properties
        headers = _headers(props)
        msg_id = parse_id(props.message_id)
        hashed = msg_id is None
        if msg_id is None:  # no id of ours (a foreign publisher's): one from its content
            msg_id = content_id(_identity(props, headers), delivered.body)
        delivery = delivered.delivery
        assert isinstance(delivery, spec.Basic.GetOk | spec.Basic.Deliver)
        stamp = send_stamp(headers.get(ENQUEUED_AT_HEADER))
        count = self._counts.count(
            queue,
            msg_id,
            redelivered=bool(delivery.redelivered),
            headers=headers,
            stamp=stamp,
            timestamp=props.timestamp,
            body=delivered.body,
        )
        token = f"{self._nonce}.{next(self._serials)}"
        held = Held(queue, msg_id, token, channel, int(delivery.delivery_tag or 0), owner)
        held.timer = asyncio.get_running_loop().call_later(visibility_timeout, self._expire, held)
        self._held[token] = held
        claim = Claim(queue, msg_id, token, visibility_timeout)
        enqueued_at = self._enqueued_at(queue, msg_id, stamp, props.timestamp, hashed=hashed)
        return held, QueuedMessage(msg_id, queue, delivered.body, count, enqueued_at, claim)

    def _enqueued_at(
        self, queue: str, msg_id: int, stamp: int | None, timestamp: object, *, hashed: bool
    ) -> float:
        """The send time: mqcontract's header, else the AMQP timestamp, else the time in
        the id, else (a content id holds none) when this process first saw it."""
        if stamp is not None:
            return stamp / 1e6
        if isinstance(timestamp, datetime.datetime):
            return timestamp.timestamp()
        if not hashed:
            return id_time(msg_id)
        key = (queue, msg_id)
        seen = self._seen_at.pop(key, None)
        if seen is None:
            seen = time.time()
        self._seen_at[key] = seen
        while len(self._seen_at) > SEEN_AT_CAPACITY:
            self._seen_at.popitem(last=False)
        return seen

    def get(self, claim: Claim | None) -> Held | None:
        """The live hold ``claim`` names (its token, on its queue and id), if any."""
        if claim is None or not isinstance(claim.token, str):
            return None
        held = self._held.get(claim.token)
        if held is None or held.queue != claim.queue_name or not _same_id(held, claim.msg_id):
            return None
        return held

    def held_by(self, owner: object) -> bool:
        """Whether anything delivered to ``owner`` is still held."""
        return any(held.owner is owner for held in self._held.values())

    def channels(self) -> set[SettlingChannel]:
        """Channels with something held on them (they must stay open)."""
        return {held.channel for held in self._held.values()}

    # -- letting go --------------------------------------------------------------------

    def _end(self, held: Held, reason: StaleReason) -> None:
        """Forget ``held`` (still current) and remember why its claim ended."""
        del self._held[held.token]
        if held.timer is not None:
            held.timer.cancel()
        self._ended[held.token] = (held.queue, held.msg_id, reason.value)
        while len(self._ended) > ENDED_CAPACITY:
            self._ended.popitem(last=False)

    def _expire(self, held: Held) -> None:
        if self.drop(held, StaleReason.LAPSED):
            self.release(held)

    def drop(self, held: Held, reason: StaleReason) -> bool:
        """End ``held`` if it is still current (to release it); False if it was not."""
        if self._held.get(held.token) is not held:
            return False
        self._end(held, reason)
        return True

    def release(self, held: Held) -> None:
        """Requeue a delivery in the background (its hold has already ended)."""
        if held.timer is not None:
            held.timer.cancel()
        if writable(held.channel):
            self._tasks.spawn(self.nack_quietly(held.channel, held.tag))
        self.on_released(held.owner)

    async def nack_quietly(self, channel: SettlingChannel, tag: int) -> None:
        """Requeue ``tag``; a failure means the channel is going away, which requeues it."""
        with contextlib.suppress(Exception):  # not written: it goes back with the channel
            async with asyncio.timeout(self._timeout):
                await write_frame(channel, nack_frame(channel, tag))

    def forget_channel(self, channel: SettlingChannel) -> None:
        """Tags held on a closed channel are void: the broker has requeued those messages."""
        for held in [h for h in self._held.values() if h.channel is channel]:
            self._end(held, StaleReason.NOT_HELD)

    def forget_consumed(self, channel: SettlingChannel, queue: str) -> None:
        """The broker cancelled the consumer of ``queue`` on ``channel`` (the queue was
        deleted, or its node left): nothing delivered from there can be settled."""
        for held in [h for h in self._held.values() if h.channel is channel and h.queue == queue]:
            self._end(held, StaleReason.NOT_HELD)
            self.on_released(held.owner)

    def forget_queue(self, queue: str) -> None:
        """The queue was deleted: nothing on it is held any more."""
        for held in [h for h in self._held.values() if h.queue == queue]:
            self._end(held, StaleReason.SETTLED)
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
            held = self.get(note.message.claim)
            if held is not None and held.waiting is note:  # not a stale copy
                held.waiting = None

    def take(self, queue: str, claim: Claim, *, ack: bool) -> Held:
        """End the hold ``claim`` names and return it, to settle; else ``StaleClaim``.

        Raised at once, with no frame sent and nothing changed, when the claim is not
        live here (see the module docstring), when it names a pushed copy still waiting
        in its subscription, or when its channel has closed (the broker requeued the
        message; the close callback may not have run yet).
        """
        held = self.get(claim)
        if held is None:
            raise StaleClaim(queue, claim.msg_id, self._why(claim))
        if held.waiting is not None:
            raise StaleClaim(queue, claim.msg_id, StaleReason.NOT_HELD)
        if not writable(held.channel):  # closed or closing: the claim goes with it
            self._end(held, StaleReason.NOT_HELD)
            raise StaleClaim(queue, claim.msg_id, StaleReason.NOT_HELD)
        self._end(held, StaleReason.SETTLED if ack else StaleReason.LAPSED)
        return held

    def _why(self, claim: Claim) -> StaleReason:
        ended = self._ended.get(claim.token) if isinstance(claim.token, str) else None
        if ended is None or ended[:2] != (claim.queue_name, claim.msg_id):
            return StaleReason.NOT_HELD
        return StaleReason(ended[2])

    def _void(self, held: Held) -> None:
        """The settlement of ``held`` did not go through: its claim went with the channel."""
        self._ended[held.token] = (held.queue, held.msg_id, StaleReason.NOT_HELD.value)

    async def settle(self, queue: str, claim: Claim, *, ack: bool) -> None:
        """Ack or nack the delivery ``claim`` holds; ``StaleClaim`` if it holds none.

        A frame the connection cut off may or may not have reached the broker, so that
        failure propagates as it is and is never turned into a success: the broker
        requeues an unsettled message and may give it to another consumer, so only a
        confirmed ack may return. The channel is then closed if still open: the frame may
        be stuck unsent (a full write buffer under flow control) with the timer already
        cancelled, and closing makes the broker requeue whatever it did not settle,
        instead of a claim held forever. Both frames are confirmed by a read-back, which
        for a received delivery also checks its queue still exists
        (``ChannelNotFoundEntity`` when another client deleted it: :mod:`._settlement`).
        """
        held = self.take(queue, claim, ack=ack)
        try:
            async with asyncio.timeout(self._timeout):
                sent = await send_settlement(
                    held.channel,
                    held.tag,
                    ack=ack,
                    confirm=True,
                    read_backs=self._read_backs,
                    queue=_served(held),
                )
            if not sent:
                raise StaleClaim(queue, claim.msg_id, StaleReason.NOT_HELD)
        except BaseException:
            self._void(held)
            self._close_soon(held.channel)
            raise
        finally:
            self.on_released(held.owner)  # a closed subscription's channel may go now

    async def ack_many(self, queue: str, claims: list[Claim]) -> list[bool]:
        """Ack every live claim with one read-back per channel; False for stale ones.

        A read-back the connection cut off, or one not back within the operation bound,
        raises, as :meth:`settle` does, once the rest is accounted: claims on a channel
        whose read-back failed are voided and that channel closed; acks other channels
        confirmed stand (their channels, and the pushed deliveries they carry, stay open).
        """
        taken: list[tuple[int, Held]] = []
        for index, claim in enumerate(claims):
            with contextlib.suppress(StaleClaim):
                taken.append((index, self.take(queue, claim, ack=True)))
        settled = [False] * len(claims)
        if not taken:
            return settled
        try:  # each channel's read-back has its own bound: the ones back in time stand
            sent = await send_acks(
                [(held.channel, held.tag) for _, held in taken],
                read_backs=self._read_backs,
                timeout=self._timeout,
                queues={held.channel: q for _, held in taken if (q := _served(held)) is not None},
            )
        except BaseException:
            for _, held in taken:
                self._void(held)
            for channel in {held.channel for _, held in taken}:
                self._close_soon(channel)
            raise
        finally:
            for _, held in taken:
                self.on_released(held.owner)
        failed: dict[SettlingChannel, Exception] = {}
        for (index, held), ok in zip(taken, sent, strict=True):
            settled[index] = ok is True
            if ok is True:
                continue
            self._void(held)
            if isinstance(ok, Exception):
                failed.setdefault(held.channel, ok)
        for channel in failed:
            self._close_soon(channel)
        if failed:
            raise next(iter(failed.values()))
        return settled

    def _close_soon(self, channel: SettlingChannel) -> None:
        if writable(channel):
            begin_close(channel)
            self._tasks.spawn(self._close(channel))

    async def _close(self, channel: SettlingChannel) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._timeout):
                await channel.close()


def _served(held: Held) -> str | None:
    """The one queue ``held``'s channel serves: a received delivery's (``basic.get``
    channels are per queue), None for a pushed one (a consumer may have several)."""
    return held.queue if held.owner is None else None


def _same_id(held: Held, msg_id: object) -> bool:
    """Whether ``msg_id`` is ``held``'s id (an int, never ``True`` for 1)."""
    return is_message_id(msg_id) and held.msg_id == msg_id

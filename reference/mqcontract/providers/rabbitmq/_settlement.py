"""Settling a delivery on its channel: the frames, and knowing the broker has read them.

This is the provider's seam to AMQP for settlement: everything here needs only
:class:`SettlingChannel`, which aiormq's channels satisfy and a test can fake.

Ack frames are written without waiting for them to leave the socket (the read-back
after them says more than that), and the acks of one batch go out in one write: one
syscall for the batch, not one per message.

A read-back is a passive declare. On a channel that serves one queue (``basic.get``
channels, :mod:`._channels`) it declares that queue: the same round trip then also says
whether the queue still exists (another client may have deleted it under the claims;
a 404 that closes the channel, which held deliveries from that queue only, whose
messages went with it). A push channel may consume several queues, so its read-back
declares ``amq.direct``, which always exists; the broker's ``basic.cancel`` tells it of
a deleted queue instead (:mod:`._consumers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiormq.abc import ChannelFrame
from aiormq.exceptions import ChannelInvalidStateError, ChannelNotFoundEntity
from pamqp import commands as spec

from ._closing import nack_frame, write_frame
from ._tasks import Background

__all__ = [
    "ChannelGone",
    "ReadBacks",
    "SettlingChannel",
    "ack_frames",
    "send_acks",
    "send_settlement",
    "write_acks",
]


class SettlingChannel(Protocol):
    """What settling needs from an AMQP channel."""

    number: int
    write_queue: asyncio.Queue[Any]

    @property
    def is_closed(self) -> bool: ...

    async def exchange_declare(self, exchange: str = "", *, passive: bool = False) -> Any: ...

    async def queue_declare(self, queue: str = "", *, passive: bool = False) -> Any: ...

    async def close(self) -> Any: ...


#: A ``basic.ack`` frame (AMQP 0-9-1 section 4.2.3): method frame type 1, channel, payload
#: size 13 (class 60, method 80, the delivery tag, ``multiple`` off), frame end. pamqp
#: builds the same bytes, at about fifteen times the cost.
_ACK = struct.Struct(">BHIHHQBB")
#: Its class and method ids (60, 80), as pamqp knows them.
_ACK_CLASS, _ACK_METHOD = divmod(spec.Basic.Ack.index, 1 << 16)


def ack_frames(channel_number: int, tags: Iterable[int]) -> bytes:
    """The bytes of one ``basic.ack`` per delivery tag, in order."""
    pack, klass, method = _ACK.pack, _ACK_CLASS, _ACK_METHOD
    return b"".join(pack(1, channel_number, 13, klass, method, t, 0, 0xCE) for t in tags)


async def write_acks(channel: SettlingChannel, tags: Iterable[int]) -> bool:
    """Queue one write acking every delivery in ``tags``; False if the channel closed.

    Returns once the write is queued behind every frame sent on the channel before it:
    a read-back sent after this confirms it. aiormq's ``basic_ack`` writes the same
    frame, one write per ack, and waits for each to be flushed.
    """
    payload = ack_frames(channel.number, tags)
    return await write_frame(channel, ChannelFrame(payload=payload, should_close=False))


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a shared future's exception as seen (its waiters may all have gone)."""
    if not future.cancelled():
        future.exception()


@dataclass(eq=False)
class _Rounds:
    """A channel's read-back in flight, and the next one frames sent meanwhile wait for."""

    #: The queue the channel serves alone (its read-back declares it), or None.
    queue: str | None = None
    next: asyncio.Future[None] | None = None
    #: The 404 a read-back of ``queue`` met: the queue is gone (and the channel with it),
    #: the answer for every settlement that waited on the same channel too. Not kept for
    #: a channel serving several queues: its 404 may be about another one.
    gone: ChannelNotFoundEntity | None = None


class ChannelGone(ConnectionError):
    """A read-back on a channel serving several queues met a 404: about one of them, not
    necessarily the settling one's (a consume of a queue deleted meanwhile). The channel
    is gone, and whether the broker read the frames before it closed is unknown."""


def _about(exc: ChannelNotFoundEntity, queue: str | None) -> Exception:
    """What a read-back's 404 tells its settlements: their queue is gone when the
    channel serves that queue alone; else only that the channel is."""
    if queue is not None:
        return exc
    gone = ChannelGone(f"channel closed by the broker: {exc}")
    gone.__cause__ = exc
    return gone


async def _read_back(channel: SettlingChannel, queue: str | None) -> None:
    """One synchronous method: its reply means every earlier frame has been read. With
    ``queue`` (the one queue ``channel`` serves), a passive declare of it, which raises
    ``ChannelNotFoundEntity`` (and closes the channel) once it is deleted."""
    if queue is None:
        await channel.exchange_declare("amq.direct", passive=True)
    else:
        await channel.queue_declare(queue, passive=True)


class ReadBacks:
    """Confirms the broker has read a channel's frames, one round trip shared by many.

    Frames on a channel are read in order, so one passive declare sent after them
    confirms them all. A channel has at most one read-back in flight: settlements sent
    while it is (a consumer's workers acking together) share the next one, which starts
    when it returns. The first caller on an idle channel runs its read-back itself (no
    task to start: a lone ack pays its round trip and nothing more); later rounds run
    in the background.
    """

    def __init__(self, tasks: Background) -> None:
        self._tasks = tasks
        self._rounds: dict[SettlingChannel, _Rounds] = {}

    async def wait(self, channel: SettlingChannel, queue: str | None = None) -> None:
        """Return once the broker has read every frame sent on ``channel`` so far;
        ``queue``: the one queue ``channel`` serves, whose deletion then raises."""
        rounds = self._rounds.get(channel)
        if rounds is not None:  # one is in flight: frames sent now need the next one
            if rounds.next is None:
                rounds.next = asyncio.get_running_loop().create_future()
                rounds.next.add_done_callback(_retrieve)
            await asyncio.shield(rounds.next)
            return
        rounds = self._rounds[channel] = _Rounds(queue)
        try:
            await _read_back(channel, queue)
        except ChannelNotFoundEntity as exc:
            if queue is not None:  # the queue it serves alone is gone
                rounds.gone = exc
                raise
            raise _about(exc, queue) from exc
        finally:
            if rounds.next is None:
                del self._rounds[channel]
            else:
                self._tasks.spawn(self._run(channel, rounds))

    async def _run(self, channel: SettlingChannel, rounds: _Rounds) -> None:
        """Run read-backs while settlements keep waiting for one."""
        try:
            while rounds.next is not None:
                sync, rounds.next = rounds.next, None
                if rounds.gone is not None:  # not a lost channel: its queue was deleted
                    gone = ChannelNotFoundEntity(*rounds.gone.args)
                    gone.__cause__ = rounds.gone
                    sync.set_exception(gone)
                    continue
                try:
                    await _read_back(channel, rounds.queue)
                except asyncio.CancelledError:
                    sync.cancel()
                    raise
                except ChannelNotFoundEntity as exc:
                    if rounds.queue is not None:
                        rounds.gone = exc
                    sync.set_exception(_about(exc, rounds.queue))
                except BaseException as exc:
                    sync.set_exception(exc)
                else:
                    sync.set_result(None)
        finally:
            if self._rounds.get(channel) is rounds:
                del self._rounds[channel]
            if rounds.next is not None:  # cancelled with waiters left: they cannot know
                rounds.next.cancel()


async def send_settlement(
    channel: SettlingChannel,
    tag: int,
    *,
    ack: bool,
    confirm: bool,
    read_backs: ReadBacks,
    queue: str | None = None,
) -> bool:
    """Ack, or nack with requeue, delivery ``tag``; False if no frame could be sent.

    False: the channel closed before the frame was written, so nothing reached the
    broker and the claim went with the channel. ``confirm``: wait until the broker has
    read the frame (neither frame has a reply): an ack that returned must not come back,
    and a message nacked here must be visible before another channel asks. ``queue``:
    the one queue ``channel`` serves (see :meth:`ReadBacks.wait`).
    """
    try:
        if ack:
            if not await write_acks(channel, (tag,)):
                return False
        elif not await write_frame(channel, nack_frame(channel, tag)):
            return False
    except ChannelInvalidStateError:
        return False
    if confirm:
        await read_backs.wait(channel, queue)
    return True


async def send_acks(
    deliveries: Sequence[tuple[SettlingChannel, int]],
    *,
    read_backs: ReadBacks,
    timeout: float | None = None,
    queues: Mapping[SettlingChannel, str] | None = None,
) -> list[bool | Exception]:
    """Ack every (channel, tag), then confirm them with one read-back per channel.

    Each channel's acks go out in one write, and only then does each channel that took
    some get its read-back, all awaited together: many acks cost one round trip, not one
    each. Per delivery: True once confirmed; False when its channel closed before its
    frame was written (the claim went with the channel); the error of its channel's
    read-back when that failed, or a ``TimeoutError`` when it was not back within
    ``timeout`` of the call's start (the outcome of those acks is unknown), while the
    acks other channels confirmed in time stand. With a single channel to confirm, its
    failure or timeout raises, as for one ack; so does a write not done in time.
    ``queues``: the channels that serve one queue, and which (see :meth:`ReadBacks.wait`).
    """
    queues = queues or {}
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    tags: dict[SettlingChannel, list[int]] = {}
    for channel, tag in deliveries:
        tags.setdefault(channel, []).append(tag)
    written: dict[SettlingChannel, bool | Exception] = {}
    # A write waits while the channel's write buffer is full (flow control): bounded,
    # and a write cut short raises (which frames went out is unknown).
    async with asyncio.timeout_at(deadline):
        for channel, channel_tags in tags.items():
            with contextlib.suppress(ChannelInvalidStateError):
                written[channel] = await write_acks(channel, channel_tags)
    confirm = [channel for channel, ok in written.items() if ok is True]
    if len(confirm) == 1:
        async with asyncio.timeout_at(deadline):
            await read_backs.wait(confirm[0], queues.get(confirm[0]))
    elif confirm:
        left = None if deadline is None else max(0.0, deadline - loop.time())
        written.update(await _confirm_each(confirm, read_backs, left, queues))
    return [written.get(channel, False) for channel, _ in deliveries]


async def _confirm_each(
    channels: list[SettlingChannel],
    read_backs: ReadBacks,
    timeout: float | None,
    queues: Mapping[SettlingChannel, str],
) -> dict[SettlingChannel, bool | Exception]:
    """Each channel's read-back, awaited together: True, or why it is unknown. A channel
    not back within ``timeout`` is that channel's ``TimeoutError``, not the whole call's,
    so the channels that answered keep their acks (and stay open)."""
    waits = {
        channel: asyncio.ensure_future(read_backs.wait(channel, queues.get(channel)))
        for channel in channels
    }
    late: list[asyncio.Future[None]] = []
    try:
        await asyncio.wait(waits.values(), timeout=timeout)
    finally:  # late, or this call is cancelled: stop waiting for the rest
        late = [wait for wait in waits.values() if not wait.done()]
        for wait in late:
            wait.cancel()
        if late:
            await asyncio.gather(*late, return_exceptions=True)
    outcomes: dict[SettlingChannel, bool | Exception] = {}
    for channel, wait in waits.items():
        if wait in late:
            outcomes[channel] = TimeoutError(
                f"read-back on channel {channel.number} not back within {timeout:g} s"
            )
        elif wait.cancelled():  # that channel's read-back was cancelled (it closed)
            outcomes[channel] = ConnectionError(f"read-back on channel {channel.number} cancelled")
        elif (error := wait.exception()) is not None:
            if not isinstance(error, Exception):
                raise error
            outcomes[channel] = error
        else:
            outcomes[channel] = True
    return outcomes

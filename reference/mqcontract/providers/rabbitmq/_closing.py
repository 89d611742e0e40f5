"""Channels that are closing, and the one way settlement frames are written to a channel.

aiormq marks a channel closed only once the close is done: after it sent
``channel.close`` (ours, or its own after an RPC was cancelled or timed out) or answered
the broker's with ``close-ok``, its ``basic_ack``/``basic_nack`` still write. The broker
frees the channel on the close, and a frame that reaches it afterwards is a connection
error (``CHANNEL_ERROR - expected 'channel.open'``): the whole connection closes, with
every channel and claim on it.

So settlement frames go through :func:`write_frame`: it checks :func:`writable` and
queues the frame in the same step, without suspending in between (aiormq's own
``write_queue.put`` suspends while the connection's small write buffer is full, and a
close queued meanwhile would go first). A frame not written goes back to its queue with
the channel.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, Protocol

from aiormq.abc import ChannelFrame
from pamqp import commands as spec

__all__ = ["begin_close", "nack_frame", "writable", "write_frame"]

#: Seconds between looks at a full write buffer (flow control: rare, and short).
FULL_RETRY = 0.001


class WritableChannel(Protocol):
    """What writing a frame needs from an aiormq channel."""

    number: int
    write_queue: asyncio.Queue[Any]

    @property
    def is_closed(self) -> bool: ...


_CLOSING: weakref.WeakSet[Any] = weakref.WeakSet()


def begin_close(channel: object) -> None:
    """``channel`` is about to be closed by this provider: nothing more is written to it,
    and its deliveries from now on are left to go back with it (aiormq drops a delivery
    whose consumer it does not know, and never answers a cancel for one)."""
    _CLOSING.add(channel)
    consumers = getattr(channel, "consumers", None)
    if isinstance(consumers, dict):
        consumers.clear()


def writable(channel: WritableChannel) -> bool:
    """Whether a frame may still be written to ``channel``: not closed, not being closed
    by this provider, nor by aiormq (its private close event, set as it sends or
    answers a close)."""
    if channel.is_closed or channel in _CLOSING:
        return False
    closing = getattr(channel, "_Channel__close_event", None)
    return not (isinstance(closing, asyncio.Event) and closing.is_set())


async def write_frame(channel: WritableChannel, frame: ChannelFrame) -> bool:
    """Queue ``frame`` on ``channel``'s connection; False, with nothing written, once the
    channel is closing. Waits while the write buffer is full; cancelled meanwhile, it
    wrote nothing."""
    queue = channel.write_queue
    while writable(channel):
        if not queue.full():
            queue.put_nowait(frame)
            return True
        await asyncio.sleep(FULL_RETRY)
    return False


def nack_frame(channel: WritableChannel, tag: int) -> ChannelFrame:
    """A ``basic.nack`` of delivery ``tag`` with requeue, as aiormq would write it."""
    nack = spec.Basic.Nack(delivery_tag=tag, multiple=False, requeue=True)
    return ChannelFrame.marshall(channel_number=channel.number, frames=[nack])

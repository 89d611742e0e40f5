"""Nothing is written to a channel that is closing (``_closing``), whoever closes it.

A frame that reaches the broker after it freed the channel is a connection error that
takes every channel and claim of the connection with it; these are the checks that keep
settlement frames from ever following a close.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pamqp.frame
from pamqp import commands as spec

from mqcontract.providers.rabbitmq._closing import (
    begin_close,
    nack_frame,
    writable,
    write_frame,
)


class _Channel:
    """An aiormq channel as far as writing goes: its number, write queue, close state."""

    number = 3

    def __init__(self, buffer: int = 10) -> None:
        self.is_closed = False
        self.write_queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=buffer)
        # aiormq's private close event, set as it sends or answers a close.
        self._Channel__close_event = asyncio.Event()
        self.consumers: dict[str, object] = {"tag": object()}


def _written(channel: _Channel) -> list[Any]:
    frames = []
    while not channel.write_queue.empty():
        data = channel.write_queue.get_nowait().payload
        while data:
            used, number, frame = pamqp.frame.unmarshal(data)
            assert number == channel.number
            frames.append(frame)
            data = data[used:]
    return frames


async def test_a_nack_is_written_to_an_open_channel() -> None:
    channel = _Channel()
    assert await write_frame(channel, nack_frame(channel, 7))
    (frame,) = _written(channel)
    assert isinstance(frame, spec.Basic.Nack)
    assert (frame.delivery_tag, frame.multiple, frame.requeue) == (7, False, True)


async def test_nothing_is_written_once_this_provider_began_to_close_the_channel() -> None:
    channel = _Channel()
    begin_close(channel)
    assert not writable(channel)
    assert not await write_frame(channel, nack_frame(channel, 7))
    assert _written(channel) == []
    assert channel.consumers == {}  # its late deliveries go back with it


async def test_nothing_is_written_once_aiormq_began_to_close_the_channel() -> None:
    """aiormq closes a channel itself after a cancelled or timed-out call, and answers the
    broker's close; either way ``is_closed`` stays false until the close is done."""
    channel = _Channel()
    channel._Channel__close_event.set()
    assert not channel.is_closed
    assert not writable(channel)
    assert not await write_frame(channel, nack_frame(channel, 7))
    assert _written(channel) == []


async def test_a_write_waiting_on_a_full_buffer_is_dropped_when_a_close_begins() -> None:
    """The close queued while the write waited would go first: the write must not follow."""
    channel = _Channel(buffer=1)
    channel.write_queue.put_nowait(nack_frame(channel, 1))  # the buffer is full
    waiting = asyncio.create_task(write_frame(channel, nack_frame(channel, 2)))
    await asyncio.sleep(0)
    assert not waiting.done()
    begin_close(channel)
    _written(channel)  # the writer frees the buffer
    assert not await asyncio.wait_for(waiting, 1.0)
    assert _written(channel) == []


async def test_a_write_waiting_on_a_full_buffer_goes_out_once_there_is_room() -> None:
    channel = _Channel(buffer=1)
    channel.write_queue.put_nowait(nack_frame(channel, 1))
    waiting = asyncio.create_task(write_frame(channel, nack_frame(channel, 2)))
    await asyncio.sleep(0)
    assert [f.delivery_tag for f in _written(channel)] == [1]
    assert await asyncio.wait_for(waiting, 1.0)
    assert [f.delivery_tag for f in _written(channel)] == [2]


async def test_a_write_cancelled_while_it_waits_wrote_nothing() -> None:
    channel = _Channel(buffer=1)
    channel.write_queue.put_nowait(nack_frame(channel, 1))
    waiting = asyncio.create_task(write_frame(channel, nack_frame(channel, 2)))
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert [f.delivery_tag for f in _written(channel)] == [1]

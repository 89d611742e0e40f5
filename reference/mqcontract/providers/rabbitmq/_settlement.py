"""Settling a delivery on its channel: the frames, and knowing the broker has read them.

This is the provider's seam to AMQP for settlement: everything here needs only
:class:`SettlingChannel`, which aiormq's channels satisfy and a test can fake.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

from aiormq.exceptions import ChannelInvalidStateError

from ._tasks import Background

__all__ = ["ReadBacks", "SettlingChannel", "send_acks", "send_settlement"]


class SettlingChannel(Protocol):
    """What settling needs from an AMQP channel."""

    @property
    def is_closed(self) -> bool: ...

    def basic_ack(self, delivery_tag: int) -> Awaitable[Any]: ...

    def basic_nack(
        self, delivery_tag: int, multiple: bool = False, requeue: bool = True
    ) -> Awaitable[Any]: ...

    async def exchange_declare(self, exchange: str = "", *, passive: bool = False) -> Any: ...

    async def close(self) -> Any: ...


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a shared future's exception as seen (its waiters may all have gone)."""
    if not future.cancelled():
        future.exception()


class ReadBacks:
    """Confirms the broker has read a channel's frames, one round trip shared by many.

    Frames on a channel are read in order, so one passive declare sent after them
    confirms them all: settlements made while one is pending share it (a consumer's
    workers acking together pay one round trip between them, not one each).
    """

    def __init__(self, tasks: Background) -> None:
        self._tasks = tasks
        self._pending: dict[SettlingChannel, asyncio.Future[None]] = {}

    async def wait(self, channel: SettlingChannel) -> None:
        """Return once the broker has read every frame sent on ``channel`` so far."""
        sync = self._pending.get(channel)
        if sync is None:
            sync = asyncio.get_running_loop().create_future()
            sync.add_done_callback(_retrieve)
            self._pending[channel] = sync
            self._tasks.spawn(self._send(channel, sync))
        await asyncio.shield(sync)

    async def _send(self, channel: SettlingChannel, sync: asyncio.Future[None]) -> None:
        try:
            await asyncio.sleep(0)  # settlements sent in this turn of the loop join in
            # Frames sent from now on need the next read-back.
            if self._pending.get(channel) is sync:
                del self._pending[channel]
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
            if self._pending.get(channel) is sync:
                del self._pending[channel]


async def send_settlement(
    channel: SettlingChannel, tag: int, *, ack: bool, confirm: bool, read_backs: ReadBacks
) -> bool:
    """Ack, or nack with requeue, delivery ``tag``; False if no frame could be sent.

    False: the channel closed before the frame was written, so nothing reached the
    broker and the claim went with the channel. ``confirm``: wait until the broker has
    read the frame (neither frame has a reply): an ack that returned must not come back,
    and a pushed message nacked here must be visible before another channel asks.
    """
    try:
        if ack:
            await channel.basic_ack(tag)
        else:
            await channel.basic_nack(tag, requeue=True)
    except ChannelInvalidStateError:
        return False
    if confirm:
        await read_backs.wait(channel)
    return True


async def send_acks(
    deliveries: Sequence[tuple[SettlingChannel, int]], *, read_backs: ReadBacks
) -> list[bool]:
    """Ack every (channel, tag), then confirm them with one read-back per channel.

    The frames go out first, back to back, and only then does each channel that took
    one get its read-back, all awaited together: many acks cost one round trip, not one
    each. False for a delivery whose channel closed before its frame was written (the
    claim went with the channel). A read-back that fails raises, as for one ack: the
    outcome of those acks is unknown.
    """
    sent: list[bool] = []
    confirm: dict[SettlingChannel, None] = {}
    for channel, tag in deliveries:
        try:
            await channel.basic_ack(tag)
        except ChannelInvalidStateError:
            sent.append(False)
            continue
        sent.append(True)
        confirm[channel] = None
    outcomes = await asyncio.gather(
        *(read_backs.wait(channel) for channel in confirm), return_exceptions=True
    )
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return sent

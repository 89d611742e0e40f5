"""Typed commands and the bounded channel between intake (listener, poller) and workers.

The variants mirror the architecture's ``…FromMessage`` / ``…FromMessageEvent``: a full
message to process (claimed, or a copy to claim first), several claimed together (a
polled batch), or an event naming a message (or just a queue) that must be fetched.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

from mqcontract.messages import QueuedMessage

__all__ = [
    "Command",
    "CommandReceiver",
    "CommandSender",
    "Intake",
    "ProcessClaimed",
    "ProcessFromMessage",
    "ProcessFromMessageEvent",
    "command_channel",
]


class Intake(enum.StrEnum):
    """Which intake produced a command, push or poll (kept in statistics)."""

    PUSH = "push"
    POLL = "poll"


@dataclass(frozen=True, slots=True)
class ProcessFromMessage:
    """Process this message; ``claimed`` False means claim it by id first.

    ``claimed_at`` (the consumer's clock, taken before the receive that claimed it) is
    set for claims the consumer made itself, whose visibility timeout it knows: a worker
    does not start one that has aged past the usable part of its claim.
    """

    message: QueuedMessage
    claimed: bool
    path: Intake
    claimed_at: float | None = None


@dataclass(frozen=True, slots=True)
class ProcessClaimed:
    """Run these messages, claimed together at ``claimed_at``, in order (a polled batch,
    or a share of it: one command for many messages, not one each)."""

    messages: tuple[QueuedMessage, ...]
    path: Intake
    claimed_at: float


@dataclass(frozen=True, slots=True)
class ProcessFromMessageEvent:
    """A message is ready on ``queue_name``: fetch ``msg_id``, or catch up when None."""

    queue_name: str
    msg_id: int | None
    path: Intake = Intake.PUSH


Command = ProcessFromMessage | ProcessClaimed | ProcessFromMessageEvent


class _Demand:
    """How many receivers wait for a command right now, and a wake-up when that grows."""

    def __init__(self) -> None:
        self.idle = 0
        self.grew = asyncio.Event()


class CommandSender:
    """The sending half: ``send`` waits while the channel is full (back-pressure)."""

    def __init__(self, queue: asyncio.Queue[Command], demand: _Demand) -> None:
        self._queue = queue
        self._demand = demand

    async def send(self, command: Command) -> None:
        await self._queue.put(command)

    def offer(self, command: Command) -> bool:
        """Send without waiting; False when the channel is full."""
        try:
            self._queue.put_nowait(command)
        except asyncio.QueueFull:
            return False
        return True

    def waiting(self) -> int:
        """Commands sent and not received yet."""
        return self._queue.qsize()

    def idle(self) -> int:
        """Receivers waiting right now with nothing queued for them."""
        return max(self._demand.idle - self._queue.qsize(), 0)

    async def demand(self, limit: int) -> int:
        """Wait until a receiver is idle with nothing queued for it; how many (≤ ``limit``).

        An intake that claims messages asks first, so a claim starts when a worker is
        free to run it instead of expiring in the channel behind busy workers.
        """
        while True:
            if (free := self.idle()) > 0:
                return min(free, limit)
            self._demand.grew.clear()
            await self._demand.grew.wait()


class CommandReceiver:
    """The receiving half; ``done`` marks a received command finished (for draining)."""

    def __init__(self, queue: asyncio.Queue[Command], demand: _Demand) -> None:
        self._queue = queue
        self._demand = demand

    async def receive(self) -> Command:
        self._demand.idle += 1
        self._demand.grew.set()
        try:
            return await self._queue.get()
        finally:
            self._demand.idle -= 1

    def done(self) -> None:
        self._queue.task_done()

    def waiting(self) -> int:
        """Commands sent but not received yet."""
        return self._queue.qsize()

    def take_pending(self) -> list[Command]:
        """Remove and return commands nobody received (used when stopping)."""
        pending: list[Command] = []
        while not self._queue.empty():
            pending.append(self._queue.get_nowait())
            self._queue.task_done()
        return pending

    async def drained(self) -> None:
        """Wait until every command sent so far has been received and marked done."""
        await self._queue.join()


def command_channel(capacity: int) -> tuple[CommandSender, CommandReceiver]:
    """A bounded channel of commands."""
    queue: asyncio.Queue[Command] = asyncio.Queue(maxsize=capacity)
    demand = _Demand()
    return CommandSender(queue, demand), CommandReceiver(queue, demand)

"""Broken providers that keep in memory what a crash of their server must not lose (DUR).

They run under :class:`RestartHarness`, whose ``private_backend`` is an in-process
"server": a :class:`~.references.RestartableStore` that crashes and starts again in one
step (everything written down survives, everything only in the process's memory is
gone). The correct provider, :class:`~.references.RestartableMemory`, writes everything
down before it answers; each specimen keeps one thing back.
"""

from __future__ import annotations

import math

from mqcontract.clock import VirtualClock
from mqcontract.messages import Claim, QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService, _Entry, _Queue
from mqcontract.service import MessagingService
from mqcontract.testing import PrivateBackend
from mqcontract_conformance.selftest.catalogue import Specimen
from mqcontract_conformance.selftest.harness import SpecimenHarness
from mqcontract_conformance.selftest.references import RestartableMemory, RestartableStore

__all__ = ["SPECIMENS", "InProcessServer", "RestartHarness"]

#: Messages a write-behind buffer holds before it writes them down.
BUFFER = 64


class InProcessServer(PrivateBackend):
    """A private "server" for one harness: one store per clock (each case has its own
    loop and clock, and a store's wake-up event belongs to one loop).

    ``restart_seconds``: how long a restart keeps the server down, on the case's clock
    (a server slow to start again on a busy machine); ``replay_seconds``: how long after
    that it answers receives with nothing while it replays its log (the store's
    ``serving_from``, for providers that honour it).
    """

    def __init__(
        self,
        cls: type[InMemoryMessagingService],
        restart_seconds: float = 0.0,
        replay_seconds: float = 0.0,
    ) -> None:
        self.cls = cls
        self.restart_seconds = restart_seconds
        self.replay_seconds = replay_seconds
        self._stores: dict[int, tuple[RestartableStore, VirtualClock | None]] = {}

    async def open(self, clock: VirtualClock | None = None) -> MessagingService:
        store, _ = self._stores.setdefault(id(clock), (RestartableStore(), clock))
        return self.cls(clock=clock, store=store)

    async def restart(self, *, crash: bool = True) -> None:
        for store, clock in self._stores.values():
            store.crash()
            if clock is None:
                continue
            if self.restart_seconds > 0:
                await clock.advance(self.restart_seconds)
            store.serving_from = clock.now() + self.replay_seconds


class RestartHarness(SpecimenHarness):
    """The specimen harness with a ``private_backend``: an :class:`InProcessServer`."""

    def __init__(
        self,
        cls: type[InMemoryMessagingService],
        *,
        restart_seconds: float = 0.0,
        replay_seconds: float = 0.0,
    ) -> None:
        super().__init__(cls)
        self._server = InProcessServer(cls, restart_seconds, replay_seconds)

    async def private_backend(self) -> PrivateBackend:
        return self._server


class WriteBehindSends(RestartableMemory):
    """Confirms a send once the message is in a write-behind buffer, written down every
    64 messages: a crash loses the messages the buffer held."""

    def _enqueue(self, queue: _Queue, payload: bytes, delay: float) -> int:
        msg_id = super()._enqueue(queue, payload, delay)
        buffer: list[tuple[_Queue, int]] = self.store.__dict__.setdefault("_buffer", [])
        if not buffer:
            self.until_crash(lambda: _lose(buffer))
        buffer.append((queue, msg_id))
        if len(buffer) >= BUFFER:
            buffer.clear()  # written down
        return msg_id


def _lose(buffer: list[tuple[_Queue, int]]) -> None:
    for queue, msg_id in buffer:
        queue.entries.pop(msg_id, None)
    buffer.clear()


class AckedComeBack(RestartableMemory):
    """Acks delete in memory and write the delete down at the next checkpoint: a crash
    before it brings acked messages back."""

    async def _ack(self, queue: str, claim: Claim) -> None:
        q = self._existing(queue)
        entry = q.entries.get(claim.msg_id)
        await super()._ack(queue, claim)
        if entry is not None:
            self.until_crash(lambda: self._restore(q, entry))

    def _restore(self, queue: _Queue, entry: _Entry) -> None:
        entry.held = False
        entry.visible_at = self.clock.now()
        queue.entries[entry.msg_id] = entry
        self._schedule(queue, entry)


class ClaimsForgotten(RestartableMemory):
    """Keeps claim deadlines in memory only: after a crash every claimed message is
    visible at once, while its holder is still working on it."""

    def _claim(self, queue: _Queue, entry: _Entry, visibility_timeout: float) -> QueuedMessage:
        got = super()._claim(queue, entry, visibility_timeout)
        self.until_crash(lambda: self._release(queue, entry))
        return got

    def _release(self, queue: _Queue, entry: _Entry) -> None:
        if entry.held and queue.entries.get(entry.msg_id) is entry:
            entry.held = False
            entry.visible_at = self.clock.now()
            self._schedule(queue, entry)


class ClaimsHeldForGood(RestartableMemory):
    """Writes a claim down without its deadline: after a crash a claimed message stays
    held for good, though the consumer that held it is gone."""

    def _claim(self, queue: _Queue, entry: _Entry, visibility_timeout: float) -> QueuedMessage:
        got = super()._claim(queue, entry, visibility_timeout)
        self.until_crash(lambda: _hold_for_good(queue, entry))
        return got


def _hold_for_good(queue: _Queue, entry: _Entry) -> None:
    if entry.held and queue.entries.get(entry.msg_id) is entry:
        entry.version += 1  # its deadline's timer no longer counts
        entry.visible_at = math.inf


class CountsForgotten(RestartableMemory):
    """Keeps receive counts in memory only: after a crash every count starts again from
    zero, so a dead-letter policy never sees a message fail twice."""

    def _claim(self, queue: _Queue, entry: _Entry, visibility_timeout: float) -> QueuedMessage:
        got = super()._claim(queue, entry, visibility_timeout)
        self.until_crash(lambda: setattr(entry, "receive_count", 0))
        return got


class PushNotResumed(RestartableMemory):
    """Does not attach its subscriptions again when its connection comes back after a
    crash: a subscription open across it stays open, and silent."""

    def server_restarted(self) -> None:
        """Reconnects operations only."""


SPECIMENS: tuple[Specimen, ...] = (
    Specimen(WriteBehindSends, "DUR-1", RestartableMemory, RestartHarness),
    Specimen(AckedComeBack, "DUR-2", RestartableMemory, RestartHarness),
    Specimen(ClaimsForgotten, "DUR-3", RestartableMemory, RestartHarness),
    Specimen(CountsForgotten, "DUR-3", RestartableMemory, RestartHarness),
    Specimen(ClaimsHeldForGood, "DUR-3", RestartableMemory, RestartHarness),
    Specimen(PushNotResumed, "DUR-4", RestartableMemory, RestartHarness),
)

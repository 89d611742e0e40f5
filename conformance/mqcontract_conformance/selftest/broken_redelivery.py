"""Broken providers: redeliveries that change the message, or lose it, on one path.

Each is correct on every redelivery path but one (expiry, or a dropped connection), and
the rule that checks that path (VT-7, VT-8) must fail it; two lose what the connection
still carried when it dropped: its acks (ERR-9), its sends (ERR-10). The dropped
connection is the harness's ``sever_connection``, which the in-memory provider plays
with :meth:`~mqcontract.providers.memory.InMemoryMessagingService.sever`.
"""

from __future__ import annotations

from typing import Any

from mqcontract.messages import Claim, QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService, _Entry, _Queue
from mqcontract_conformance.selftest.catalogue import Specimen

__all__ = ["SPECIMENS"]


class _SeverReleases(InMemoryMessagingService):
    """Changes what a sever is about to release (the defects below say how)."""

    def sever(self) -> None:
        for q in self._queues.values():
            for entry in q.entries.values():
                if entry.held and entry.connection is self._connection:
                    self._releasing(q, entry)
        super().sever()

    def _releasing(self, queue: _Queue, entry: _Entry) -> None:
        """Correct: a released message is left as it was."""


class CountResetAfterSever(_SeverReleases):
    """Keeps delivery counts per connection: what a dropped connection held comes back
    with receive_count 1, as if never delivered."""

    def _releasing(self, queue: _Queue, entry: _Entry) -> None:
        entry.receive_count = 0


class RepublishedAfterSever(_SeverReleases):
    """Re-publishes what a dropped connection held, under the same id: it comes back with
    a new enqueued_at."""

    def _releasing(self, queue: _Queue, entry: _Entry) -> None:
        entry.enqueued_at = self.clock.wall()


class PushedRecountedAfterSever(_SeverReleases):
    """Counts the deliveries of its push connection afresh after a reconnect: a pushed
    message held at the sever is pushed again with receive_count 1 (receive is right)."""

    def _releasing(self, queue: _Queue, entry: _Entry) -> None:
        if entry.holder is not None:
            entry.receive_count = 0


class SeverLosesHeld(InMemoryMessagingService):
    """Forgets what a dropped connection held: those messages stay claimed by nobody and
    are never delivered again."""

    def sever(self) -> None:
        for q in self._queues.values():
            for entry in q.entries.values():
                if entry.held and entry.connection is self._connection:
                    entry.visible_at = self.clock.now() + 10.0**9
                    entry.connection = None
                    self._schedule(q, entry)
        super().sever()


class ReencodedOnExpiry(InMemoryMessagingService):
    """Re-encodes the payload of a message whose claim expired (CRLF becomes LF), as a
    provider that re-serializes what it puts back."""

    def _promote(self, queue: _Queue) -> None:
        lapsing = [
            queue.entries.get(msg_id) for at, msg_id, _ in queue.timed if at <= self.clock.now()
        ]
        super()._promote(queue)
        for entry in lapsing:
            if entry is not None and entry.receive_count and not entry.held:
                entry.payload = entry.payload.replace(b"\r\n", b"\n")


class ExpiryCountedTwice(InMemoryMessagingService):
    """Counts an expired claim as a delivery when it lapses, and again when it is
    claimed: receive_count grows by two after an expiry."""

    def _promote(self, queue: _Queue) -> None:
        held = {e.msg_id for e in queue.entries.values() if e.held}
        super()._promote(queue)
        for msg_id in held:
            entry = queue.entries.get(msg_id)
            if entry is not None and not entry.held:
                entry.receive_count += 1


class AcksUnconfirmed(InMemoryMessagingService):
    """Returns from an ack once it is written to the connection, not once the server has
    it: the acks a dropped connection still carried are lost with it, and their messages
    come back.

    A later receive or send confirms what was written before it (its answer comes after
    them), so only acks with nothing after them are at risk: an AMQP basic.ack, an MQTT
    PUBACK or a JetStream ack published without waiting for anything.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unconfirmed: list[tuple[_Queue, _Entry]] = []

    async def _ack(self, queue: str, claim: Claim) -> None:
        q = self._existing(queue)
        entry = self._held_entry(q, claim)
        await super()._ack(queue, claim)
        self._unconfirmed.append((q, entry))

    async def _receive(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        self._unconfirmed.clear()
        return await super()._receive(queue, limit, visibility_timeout)

    async def _send(self, queue: str, payload: bytes) -> int:
        self._unconfirmed.clear()
        return await super()._send(queue, payload)

    async def _send_batch(self, queue: str, payloads: list[bytes]) -> list[int]:
        self._unconfirmed.clear()
        return await super()._send_batch(queue, payloads)

    def sever(self) -> None:
        lost, self._unconfirmed = self._unconfirmed, []
        for q, entry in lost:  # the server never read them: still held on this connection
            if self._queues.get(q.name) is q and entry.msg_id not in q.entries:
                q.entries[entry.msg_id] = entry
        super().sever()


class SendsUnconfirmed(InMemoryMessagingService):
    """Returns from a send once it is written to the connection, not once the server has
    it: the sends a dropped connection still carried are lost with it, and the producer
    was told they were done.

    A later receive or ack confirms what was written before it (as for
    ``AcksUnconfirmed``), so only sends with nothing after them are at risk: AMQP
    without publisher confirms, a core NATS publish, a producer that batches in the
    background.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unconfirmed: list[tuple[_Queue, int]] = []

    async def _send(self, queue: str, payload: bytes) -> int:
        msg_id = await super()._send(queue, payload)
        self._unconfirmed.append((self._existing(queue), msg_id))
        return msg_id

    async def _send_batch(self, queue: str, payloads: list[bytes]) -> list[int]:
        ids = await super()._send_batch(queue, payloads)
        q = self._existing(queue)
        self._unconfirmed.extend((q, msg_id) for msg_id in ids)
        return ids

    async def _receive(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        self._unconfirmed.clear()
        return await super()._receive(queue, limit, visibility_timeout)

    async def _ack(self, queue: str, claim: Claim) -> None:
        self._unconfirmed.clear()
        await super()._ack(queue, claim)

    def sever(self) -> None:
        lost, self._unconfirmed = self._unconfirmed, []
        for q, msg_id in lost:  # the server never read them (so nobody received them)
            entry = q.entries.get(msg_id)
            if entry is not None and not entry.receive_count:
                del q.entries[msg_id]
        super().sever()


SPECIMENS: tuple[Specimen, ...] = (
    Specimen(CountResetAfterSever, "VT-8"),
    Specimen(RepublishedAfterSever, "VT-8"),
    Specimen(PushedRecountedAfterSever, "VT-8"),
    Specimen(SeverLosesHeld, "VT-8"),
    Specimen(ReencodedOnExpiry, "VT-7"),
    Specimen(ExpiryCountedTwice, "VT-7"),
    Specimen(AcksUnconfirmed, "ERR-9"),
    Specimen(SendsUnconfirmed, "ERR-10"),
)

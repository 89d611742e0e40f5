"""Broken providers that work for one message, one producer or one settle at a time.

Each slips only under volume: a limit that is not a round number, a second producer on
the queue, a consumer that keeps settling while it holds more. Capabilities stay honest,
so the rule that fails is the rule about the slip.
"""

from __future__ import annotations

import itertools
from typing import Any

from mqcontract.messages import Claim, QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService, _Entry, _Queue
from mqcontract_conformance.selftest.catalogue import Specimen

__all__ = [
    "SPECIMENS",
    "AckRecoversEarlierReceives",
    "BatchIdsCountedLocally",
    "IdsPerProducer",
    "NackRenewsSessionLeases",
    "NackRequeuesEarlierDeliveries",
    "OnePageOnly",
    "PagesDropRemainder",
    "PagesRoundedUp",
    "SettleRenewsSessionLeases",
]


# -- RECV-1: receives read in pages ------------------------------------------------------


class PagesDropRemainder(InMemoryMessagingService):
    """Reads in pages of 10 and asks for ``limit // 10`` of them (at least one), so the
    remainder of a limit that is no multiple of 10 is dropped: limit 13 returns 10 while
    more are visible."""

    page = 10

    async def _receive(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        out: list[QueuedMessage] = []
        for _ in range(max(1, limit // self.page)):
            got = await super()._receive(
                queue, min(self.page, limit - len(out)), visibility_timeout
            )
            out += got
            if len(got) < self.page:
                break
        return out


class PagesRoundedUp(InMemoryMessagingService):
    """Reads whole pages of 16 and returns everything it read, so a limit that is no
    multiple of 16 is rounded up: limit 7 claims and returns 16 messages."""

    page = 16

    async def _receive(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        out: list[QueuedMessage] = []
        while len(out) < limit:
            got = await super()._receive(queue, self.page, visibility_timeout)
            out += got
            if len(got) < self.page:
                break
        return out


class OnePageOnly(InMemoryMessagingService):
    """Reads one page of at most 32 messages whatever the limit (the backend's cap on one
    read, and no loop): limit 37 returns 32 while more are visible."""

    async def _receive(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        return await super()._receive(queue, min(limit, 32), visibility_timeout)


# -- SEND-1: ids counted per producer ----------------------------------------------------


class IdsPerProducer(InMemoryMessagingService):
    """Numbers each queue's ids from a counter of its own service (a client-side sequence
    per connection) and stores by id: a second producer on the queue is handed the ids the
    first already has, and its message overwrites the first's."""

    def _enqueue(self, queue: _Queue, payload: bytes, delay: float) -> int:
        counters: dict[_Queue, itertools.count[int]] = self.__dict__.setdefault("_ids", {})
        msg_id = next(counters.setdefault(queue, itertools.count(1)))
        now = self.clock.now()
        entry = _Entry(msg_id, payload, self.clock.wall(), now + delay)
        queue.entries[msg_id] = entry  # an upsert: replaces another producer's message
        self._schedule(queue, entry)
        self._dispatch(queue)
        return msg_id


class BatchIdsCountedLocally(InMemoryMessagingService):
    """send_batch numbers its messages on from the last id its own service was given (a
    round trip saved per batch), then moves the queue's sequence past them: a lone
    producer never sees a repeat, but a batch after another producer's sends reuses their
    ids and overwrites their messages."""

    def _last(self) -> dict[str, int]:
        last: dict[str, int] = self.__dict__.setdefault("_last_id", {})
        return last

    async def _send(self, queue: str, payload: bytes) -> int:
        msg_id = await super()._send(queue, payload)
        self._last()[queue] = msg_id
        return msg_id

    async def _send_batch(self, queue: str, payloads: list[bytes]) -> list[int]:
        q = self._existing(queue)
        first = self._last().get(queue, 0) + 1
        ids = list(range(first, first + len(payloads)))
        for msg_id, payload in zip(ids, payloads, strict=True):
            entry = _Entry(msg_id, payload, self.clock.wall(), self.clock.now())
            q.entries[msg_id] = entry  # an upsert: replaces another producer's message
            self._schedule(q, entry)
        q.ids = itertools.count(max(next(q.ids), first + len(payloads)))
        if ids:
            self._last()[queue] = ids[-1]
        self._dispatch(q)
        return ids


# -- ACK-8: a settle that reaches other claims -------------------------------------------


def _renew_leases(service: InMemoryMessagingService, queue: str) -> None:
    """Every live claim ``service``'s connection holds on ``queue`` runs its whole timeout
    again from now (lapsed ones are released first)."""
    q = service.store.queues.get(queue)
    if q is None:
        return
    service._promote(q)
    now = service.clock.now()
    for entry in q.entries.values():
        if entry.held and entry.connection is service._connection and entry.waiting is None:
            entry.visible_at = now + entry.claim_timeout
            service._schedule(q, entry)


class SettleRenewsSessionLeases(InMemoryMessagingService):
    """Every ack and nack renews all the claims its service holds on the queue (a settle
    counts as the session's heartbeat): a claim whose handler hung never lapses while the
    consumer keeps acking other messages."""

    async def _ack(self, queue: str, claim: Claim) -> None:
        await super()._ack(queue, claim)
        _renew_leases(self, queue)

    async def _nack(self, queue: str, claim: Claim) -> None:
        await super()._nack(queue, claim)
        _renew_leases(self, queue)


class NackRenewsSessionLeases(InMemoryMessagingService):
    """Every nack renews all the claims its service holds on the queue (a consumer that
    reports failures is alive); ack does not: a claim whose handler hung never lapses
    while the consumer keeps failing other messages."""

    async def _nack(self, queue: str, claim: Claim) -> None:
        await super()._nack(queue, claim)
        _renew_leases(self, queue)


class NackRequeuesEarlierDeliveries(InMemoryMessagingService):
    """Nack requeues the message and every message its service received on the queue
    before it (a nack with the 'multiple' flag set): the others come back at once, long
    before their timeouts run out."""

    async def _nack(self, queue: str, claim: Claim) -> None:
        await super()._nack(queue, claim)
        _release_earlier(self, queue, claim)


class AckRecoversEarlierReceives(InMemoryMessagingService):
    """An ack of a message from one receive hands back what the service still holds from
    its earlier receives on the queue (taken as abandoned: the consumer has moved on to a
    newer batch): those messages come back at once, long before their timeouts run out."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._receives: list[tuple[str, set[int]]] = []  # each receive: queue, ids

    async def _receive(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        got = await super()._receive(queue, limit, visibility_timeout)
        self._receives.append((queue, {m.msg_id for m in got}))
        return got

    async def _ack(self, queue: str, claim: Claim) -> None:
        await super()._ack(queue, claim)
        batches = [ids for name, ids in self._receives if name == queue]
        index = next((i for i, ids in enumerate(batches) if claim.msg_id in ids), 0)
        earlier = set().union(*batches[:index])
        q = self._existing(queue)
        for entry in list(q.entries.values()):
            mine = entry.held and entry.connection is self._connection
            if mine and entry.waiting is None and entry.msg_id in earlier:
                entry.held = False
                entry.visible_at = self.clock.now()
                self._detach(q, entry)
                self._schedule(q, entry)
        self._dispatch(q)


def _release_earlier(service: InMemoryMessagingService, queue: str, claim: Claim) -> None:
    """Make visible every message ``service`` holds on ``queue`` from before ``claim``."""
    q = service._existing(queue)
    delivered = claim.token if isinstance(claim.token, int) else 0  # tokens count up
    for entry in list(q.entries.values()):
        mine = entry.held and entry.connection is service._connection
        if mine and entry.waiting is None and entry.claim_token < delivered:
            entry.held = False
            entry.visible_at = service.clock.now()
            service._detach(q, entry)
            service._schedule(q, entry)
    service._dispatch(q)


SPECIMENS: tuple[Specimen, ...] = (
    Specimen(PagesDropRemainder, "RECV-1"),
    Specimen(PagesRoundedUp, "RECV-1"),
    Specimen(OnePageOnly, "RECV-1"),
    Specimen(IdsPerProducer, "SEND-1"),
    Specimen(BatchIdsCountedLocally, "SEND-1"),
    Specimen(SettleRenewsSessionLeases, "ACK-8"),
    Specimen(NackRenewsSessionLeases, "ACK-8"),
    Specimen(NackRequeuesEarlierDeliveries, "ACK-8"),
    Specimen(AckRecoversEarlierReceives, "ACK-8"),
)

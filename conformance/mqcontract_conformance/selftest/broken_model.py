"""Broken providers whose defect shows only in a sequence of operations (MODEL-1).

Each one passes a rule that checks its operations one at a time; the pair programs of
MODEL-1 put the two operations that expose it next to each other on every run.
"""

from __future__ import annotations

import itertools

from mqcontract.errors import StaleClaim
from mqcontract.messages import Claim, QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService, _Entry, _Queue
from mqcontract_conformance.selftest.catalogue import Specimen

__all__ = [
    "SPECIMENS",
    "HoldsKeyedByHolder",
    "IdsFromRowCount",
    "LapsedNackRequeuesCopy",
]


class HoldsKeyedByHolder(InMemoryMessagingService):
    """Holds are keyed by holder and message id: once this service has claimed a message
    again, its superseded claim on it settles too.

    (``ack_claim`` after a lapse and a redelivery to the same consumer is accepted.)
    """

    def _claim(self, queue: _Queue, entry: _Entry, visibility_timeout: float) -> QueuedMessage:
        got = super()._claim(queue, entry, visibility_timeout)
        self.__dict__.setdefault("_mine", set()).add((queue.name, entry.msg_id))
        return got

    def _held_entry(self, queue: _Queue, claim: Claim) -> _Entry:
        entry = queue.entries.get(claim.msg_id)
        mine = (queue.name, claim.msg_id) in self.__dict__.get("_mine", set())
        if entry is not None and entry.held and mine:
            return entry  # the holder matches: the claim itself is not compared
        return super()._held_entry(queue, claim)


class LapsedNackRequeuesCopy(InMemoryMessagingService):
    """A nack of a claim that already lapsed is accepted and re-publishes the message (as
    a reject-and-requeue would), so it is delivered twice."""

    async def _nack(self, queue: str, claim: Claim) -> None:
        try:
            await super()._nack(queue, claim)
        except StaleClaim:
            q = self._existing(queue)
            entry = q.entries.get(claim.msg_id)
            if entry is None or entry.held or entry.claim_token != claim.token:
                raise
            self._enqueue(q, entry.payload, 0.0)  # the lapsed copy stays as well


class IdsFromRowCount(InMemoryMessagingService):
    """The next id is the number of stored messages plus one (a row count), so after an
    ack a send reuses an id still or recently in use."""

    def _enqueue(self, queue: _Queue, payload: bytes, delay: float) -> int:
        queue.ids = itertools.count(len(queue.entries) + 1)
        return super()._enqueue(queue, payload, delay)


SPECIMENS: tuple[Specimen, ...] = (
    Specimen(HoldsKeyedByHolder, "MODEL-1"),
    Specimen(LapsedNackRequeuesCopy, "MODEL-1"),
    Specimen(IdsFromRowCount, "MODEL-1"),
)

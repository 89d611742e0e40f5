"""Broken providers whose claims go wrong on one delivery or settlement path only.

What a claim states (CLAIM-1), what a long batch of them reports (CLAIM-5), how long a
fetched claim holds (FETCH-1) and whether a fetch respects another consumer's claim
(FETCH-3): each is right on the path a provider was first written for and wrong on one
added later, in a unit or a chunk size nobody checked.
"""

from __future__ import annotations

from mqcontract.errors import MessageNotFound
from mqcontract.messages import Claim, QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService, _Entry, _Queue
from mqcontract.validation import is_message_id
from mqcontract_conformance.selftest._pushed import PushedClaims
from mqcontract_conformance.selftest.catalogue import Specimen

__all__ = [
    "SPECIMENS",
    "BatchResultsChunkLocal",
    "BatchTailChunkDropped",
    "FetchLeaseInMillis",
    "FetchTakesOverHeldClaims",
    "FetchTakesOverIdleClaims",
    "PolledLeaseInMillis",
    "PushedAckRequeues",
    "PushedLeaseArmedInMillis",
    "PushedLeaseInMillis",
]

#: Milliseconds in a second: the unit the backends below take or report leases in.
_MS = 1000.0


class PolledLeaseInMillis(PushedClaims):
    """Claims made by receive and fetch state the backend's lease in milliseconds as
    seconds (a 30 s claim says 30000 s), though the message is held for the right time.

    The push path, written later against a callback that converts, states seconds.
    """

    def _claim(self, queue: _Queue, entry: _Entry, visibility_timeout: float) -> QueuedMessage:
        got = super()._claim(queue, entry, visibility_timeout)
        if self._pushing:
            return got
        entry.claim_timeout = visibility_timeout * _MS  # lease_ms copied unconverted
        return entry.snapshot(queue.name)


class PushedLeaseInMillis(PushedClaims):
    """Claims made by a push state the configured push lease in milliseconds as seconds
    (a 60 s push claim says 60000 s), though the message is held for the right time."""

    def _claim_pushed(self, queue: _Queue, entry: _Entry, timeout: float) -> QueuedMessage:
        super()._claim_pushed(queue, entry, timeout)
        entry.claim_timeout = timeout * _MS  # the consumer's lease_ms, copied unconverted
        return entry.snapshot(queue.name)


class PushedLeaseArmedInMillis(PushedClaims):
    """A pushed claim is held for its timeout read as milliseconds (a timer armed with
    seconds where it takes ms): a 60 s push claim lapses after 60 ms and is pushed again,
    while the claim still states 60 s."""

    def _hold_pushed(self, queue: _Queue, entry: _Entry, timeout: float) -> None:
        entry.visible_at = self.clock.now() + timeout / _MS
        self._schedule(queue, entry)


class BatchResultsChunkLocal(InMemoryMessagingService):
    """ack_claims settles in chunks of 100 (the backend's batch limit) and maps each
    chunk's failures by their place in the chunk: past the first 100 claims, a stale claim
    is reported acked and a live one in the first chunk reported stale."""

    CHUNK = 100

    async def _ack_many(self, queue: str, claims: list[Claim]) -> list[bool]:
        failed: set[int] = set()
        for start in range(0, len(claims), self.CHUNK):
            for i, claim in enumerate(claims[start : start + self.CHUNK]):
                try:
                    await self._ack(queue, claim)
                except MessageNotFound:
                    failed.add(i)  # the chunk's index, not start + i
        return [i not in failed for i in range(len(claims))]


class BatchTailChunkDropped(InMemoryMessagingService):
    """ack_claims reports which claims were live (one look first), then deletes them in
    chunks of 16 with a loop that stops at the last whole chunk: the claims of a final
    partial chunk are reported acked and stay held."""

    CHUNK = 16

    async def _ack_many(self, queue: str, claims: list[Claim]) -> list[bool]:
        q = self._existing(queue)
        live: list[bool] = []
        seen: set[int | str] = set()
        for claim in claims:
            try:
                self._held_entry(q, claim)
            except MessageNotFound:
                live.append(False)
                continue
            live.append(claim.token not in seen)
            seen.add(claim.token)
        doomed = [claim for claim, ok in zip(claims, live, strict=True) if ok]
        for start in range(0, len(doomed) - self.CHUNK + 1, self.CHUNK):
            for claim in doomed[start : start + self.CHUNK]:
                await self._ack(queue, claim)
        return live


class FetchLeaseInMillis(InMemoryMessagingService):
    """fetch_message hands the backend its visibility timeout in seconds where the call
    takes milliseconds (the receive path converts): a fetched claim lapses after a
    thousandth of the time asked, while it states the time asked."""

    async def _fetch(
        self, queue: str, msg_id: int, visibility_timeout: float
    ) -> QueuedMessage | None:
        got = await super()._fetch(queue, msg_id, visibility_timeout / _MS)
        if got is None:
            return None
        entry = self._existing(queue).entries[got.msg_id]
        entry.claim_timeout = visibility_timeout  # what was asked, as the claim states it
        return entry.snapshot(queue)


class _TakesOver(InMemoryMessagingService):
    """fetch_message claims a message another connection holds once that claim has been
    idle for ``min_idle`` seconds (Redis XCLAIM's min-idle-time)."""

    min_idle = 0.0

    async def _fetch(
        self, queue: str, msg_id: int, visibility_timeout: float
    ) -> QueuedMessage | None:
        q = self._existing(queue)
        self._promote(q)
        entry = q.entries.get(msg_id) if is_message_id(msg_id) else None
        if (
            entry is not None
            and entry.held
            and entry.waiting is None
            and entry.connection is not self._connection
        ):
            idle = self.clock.now() - (entry.visible_at - entry.claim_timeout)
            if idle >= self.min_idle:
                self._detach(q, entry)
                return self._claim(q, entry, visibility_timeout)
        return await super()._fetch(queue, msg_id, visibility_timeout)


class FetchTakesOverHeldClaims(_TakesOver):
    """fetch_message claims a message another consumer holds (XCLAIM with a min-idle-time
    of 0): two consumers notified of one id both run it, and the first one's ack fails."""


class FetchTakesOverIdleClaims(_TakesOver):
    """fetch_message claims a message another consumer has held for a second or more
    (XCLAIM with a min-idle-time of 1000 ms, taking such a claim for abandoned): a handler
    still within its visibility timeout loses its message to a second consumer."""

    min_idle = 1.0


class PushedAckRequeues(InMemoryMessagingService):
    """An ack of a pushed claim goes out as a reject with requeue (the push path's flag
    mixed up): the message is pushed straight back to the subscription, where a check
    that only receives never sees it."""

    async def _ack(self, queue: str, claim: Claim) -> None:
        q = self._existing(queue)
        if self._held_entry(q, claim).holder is not None:  # a pushed claim
            await self._nack(queue, claim)
            return
        await super()._ack(queue, claim)


SPECIMENS: tuple[Specimen, ...] = (
    Specimen(PolledLeaseInMillis, "CLAIM-1"),
    Specimen(PushedLeaseInMillis, "CLAIM-1"),
    Specimen(PushedLeaseArmedInMillis, "CLAIM-1"),
    Specimen(BatchResultsChunkLocal, "CLAIM-5"),
    Specimen(BatchTailChunkDropped, "CLAIM-5"),
    Specimen(FetchLeaseInMillis, "FETCH-1"),
    Specimen(FetchTakesOverHeldClaims, "FETCH-3"),
    Specimen(FetchTakesOverIdleClaims, "FETCH-3"),
    Specimen(PushedAckRequeues, "CLAIM-6"),
)

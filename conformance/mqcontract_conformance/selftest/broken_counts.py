"""Broken counts and paths: right for a few deliveries, by receive, one settlement at a time.

Each keeps every promise while a message is delivered a handful of times, read by
receive, or settled by one call at once, and breaks it past a count nobody reached or on
another path: receive_count kept in a byte that wraps, or
recomputed through a signed byte when an expired claim is swept; fetch_message built
from another query than receive's (enqueued_at from the time the message last became
visible, the payload read as text); ack_claims that checks its claims in one step and
deletes them in the next, reporting what it read, or deleting claims a nack released
meanwhile, or fenced against single settlements but not against another batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

from mqcontract.errors import StaleClaim, StaleReason
from mqcontract.messages import Claim, QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService, _Entry, _Queue
from mqcontract_conformance.selftest.catalogue import Specimen

__all__ = [
    "SPECIMENS",
    "AckClaimsDeletesWhatItRead",
    "AckClaimsReportsItsRead",
    "BatchesNotFencedFromEachOther",
    "CountWrapsAtByte",
    "ExpiryRecountsInSignedByte",
    "FetchPayloadReadAsText",
    "FetchStampsLastVisible",
]


class CountWrapsAtByte(InMemoryMessagingService):
    """Keeps receive_count in an unsigned byte that wraps: the 256th delivery reports 0,
    the 257th 1."""

    def _claim(self, queue: _Queue, entry: _Entry, visibility_timeout: float) -> QueuedMessage:
        claimed = super()._claim(queue, entry, visibility_timeout)
        entry.receive_count %= 256  # the defect: a uint8 column
        return dataclasses.replace(claimed, receive_count=entry.receive_count)


def _signed_byte(value: int) -> int:
    return (value + 128) % 256 - 128


class ExpiryRecountsInSignedByte(InMemoryMessagingService):
    """The sweep that returns expired claims to the queue writes their receive_count back
    through a signed byte (nack and receive keep it whole): a message whose claim expires
    after its 127th delivery comes back with a wrapped count (delivery 257 reports 1)."""

    def _promote(self, queue: _Queue) -> None:
        now = self.clock.now()
        lapsing = [e for e in queue.entries.values() if e.held and e.visible_at <= now]
        super()._promote(queue)
        for entry in lapsing:
            if not entry.held:  # the defect: the sweep's narrow column
                entry.receive_count = _signed_byte(entry.receive_count)


class FetchStampsLastVisible(InMemoryMessagingService):
    """fetch_message reports as enqueued_at the moment the message last became visible
    (the column receive's query does not read): right for a message never delivered,
    later for one fetched after its claim expired or was nacked."""

    async def _fetch(
        self, queue: str, msg_id: int, visibility_timeout: float
    ) -> QueuedMessage | None:
        q = self._existing(queue)
        self._promote(q)
        entry = q.entries.get(msg_id)
        visible = (
            None if entry is None else self.clock.wall() - (self.clock.now() - entry.visible_at)
        )
        got = await super()._fetch(queue, msg_id, visibility_timeout)
        if got is None or got.receive_count == 1 or visible is None:
            return got
        return dataclasses.replace(got, enqueued_at=visible)  # the defect


class FetchPayloadReadAsText(InMemoryMessagingService):
    """fetch_message reads the payload column as text, with universal newlines: a
    payload holding ``\\r\\n`` is fetched with ``\\n``, though receive returns it exact."""

    async def _fetch(
        self, queue: str, msg_id: int, visibility_timeout: float
    ) -> QueuedMessage | None:
        got = await super()._fetch(queue, msg_id, visibility_timeout)
        if got is None:
            return None
        text = got.payload.decode("utf-8", "replace").replace("\r\n", "\n")  # the defect
        return dataclasses.replace(got, payload=text.encode())


class AckClaimsDeletesWhatItRead(InMemoryMessagingService):
    """ack_claims checks each claim, then deletes its message in a second round trip by
    id alone, reporting it acked: an ack or a nack of that claim landing in between
    returns too (two settlements win), and a message a nack released is deleted."""

    async def _ack_many(self, queue: str, claims: list[Claim]) -> list[bool]:
        q = self._existing(queue)
        settled: list[bool] = []
        for claim in claims:
            try:
                entry = self._held_entry(q, claim)
            except StaleClaim:
                settled.append(False)
                continue
            await asyncio.sleep(0)  # the round trip between the read and the write
            if q.entries.pop(entry.msg_id, None) is not None:  # the defect: by id alone
                self._detach(q, entry)
            settled.append(True)
        self._dispatch(q)
        return settled


class AckClaimsReportsItsRead(InMemoryMessagingService):
    """ack_claims reads which claims hold, then deletes them with the claim checked again
    (nothing is lost), but reports what it read: a claim a nack or an ack settled in
    between is reported acked as well, so two settlements of it both win."""

    async def _ack_many(self, queue: str, claims: list[Claim]) -> list[bool]:
        q = self._existing(queue)
        held: list[bool] = []
        for claim in claims:
            try:
                self._held_entry(q, claim)
            except StaleClaim:
                held.append(False)
            else:
                held.append(claim not in claims[: len(held)])
        await asyncio.sleep(0)  # the round trip between the read and the write
        for claim, live in zip(claims, held, strict=True):
            if live:
                with contextlib.suppress(StaleClaim):  # the defect: still reported acked
                    await self._ack(queue, claim)
        return held


class BatchesNotFencedFromEachOther(InMemoryMessagingService):
    """ack_claims marks the claims it read as being settled, which single acks and nacks
    respect (they raise MessageNotFound for a marked claim), then deletes them a round
    trip later; another ack_claims ignores the marks: two overlapping batches both read
    the shared claims as held and both report them acked."""

    def _marked(self) -> set[tuple[str, int]]:
        marks: set[tuple[str, int]] = self.store.__dict__.setdefault("settling", set())
        return marks

    def _fenced(self, queue: str, claim: Claim) -> None:
        if (queue, claim.msg_id) in self._marked():
            raise StaleClaim(queue, claim.msg_id, StaleReason.NOT_HELD)

    async def _ack(self, queue: str, claim: Claim) -> None:
        self._fenced(queue, claim)
        await super()._ack(queue, claim)

    async def _nack(self, queue: str, claim: Claim) -> None:
        self._fenced(queue, claim)
        await super()._nack(queue, claim)

    async def _ack_many(self, queue: str, claims: list[Claim]) -> list[bool]:
        q = self._existing(queue)
        marks = self._marked()
        held: list[bool] = []
        for claim in claims:
            try:
                self._held_entry(q, claim)  # the defect: another batch's marks not read
            except StaleClaim:
                held.append(False)
            else:
                held.append(claim not in claims[: len(held)])
                marks.add((queue, claim.msg_id))
        await asyncio.sleep(0)  # the round trip between the read and the write
        for claim, live in zip(claims, held, strict=True):
            if live:
                entry = q.entries.pop(claim.msg_id, None)
                if entry is not None:
                    self._detach(q, entry)
                marks.discard((queue, claim.msg_id))
        self._dispatch(q)
        return held


SPECIMENS: tuple[Specimen, ...] = (
    Specimen(CountWrapsAtByte, "VT-5"),
    Specimen(ExpiryRecountsInSignedByte, "VT-5"),
    Specimen(FetchStampsLastVisible, "VT-7"),
    Specimen(FetchPayloadReadAsText, "VT-7"),
    Specimen(AckClaimsDeletesWhatItRead, "CLAIM-9"),
    Specimen(AckClaimsReportsItsRead, "CLAIM-9"),
    Specimen(BatchesNotFencedFromEachOther, "CLAIM-9"),
)

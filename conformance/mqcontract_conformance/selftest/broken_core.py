"""The core broken providers: one defect each, across every rule group they were written for.

They are small subclasses of the in-memory provider (or of a correct reference in
:mod:`.references`), so everything but the one defect stays correct and the rule that fails
is the rule about that defect.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import weakref
from collections.abc import Sequence

from mqcontract.capabilities import Capabilities
from mqcontract.clock import Clock
from mqcontract.config import MemoryConfig
from mqcontract.errors import MessageNotFound
from mqcontract.messages import Claim, ClaimRef, QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService, MemoryStore, _Entry, _Queue
from mqcontract.subscription import QueueSubscription
from mqcontract.validation import check_queue_name
from mqcontract_conformance.selftest._pushed import PushedClaims
from mqcontract_conformance.selftest.catalogue import Specimen
from mqcontract_conformance.selftest.references import ForeignIdsMemory, SignalMemory, Unlisted

__all__ = [
    "CAUGHT_BY",
    "SPECIMENS",
    "BatchAcksByIds",
    "ClaimQueueIgnored",
    "ConcurrentDoubleDelivery",
    "DeadHoldersKeepClaims",
    "DeadlineFromSend",
    "DelayIgnored",
    "DeleteAfterClose",
    "DeleteKeepsMessages",
    "EmptyAckBatchSkipsTheQueue",
    "EnqueuedAtResetOnNack",
    "ForeignIdsHeldById",
    "IdSettlesCurrentClaim",
    "IdsRestartWhenEmpty",
    "LapsedAckAccepted",
    "LimitIgnored",
    "ListsWithoutClaiming",
    "LyingFetchFlag",
    "NackDeletes",
    "NoNameValidation",
    "NoopAck",
    "NormalizesLineEndings",
    "OversizeAccepted",
    "PushDropsEveryThird",
    "PushKeepsClaim",
    "PushedCopySettledByOldClaim",
    "RawKeyError",
    "ReceiveCountStuck",
    "ReceivesOneAtATime",
    "RepeatedClaims",
    "ReversedReceive",
    "SettlesAnyClaim",
    "SilentAckOfUnknown",
    "SilentDropOnMissingQueue",
    "StillWorksAfterClose",
    "SubscriptionOutlivesClose",
    "TrimsTrailingWhitespace",
    "UnparsedTokenIgnored",
    "VisibilityNeverExpires",
    "WrongAvailableId",
]


class NoopAck(InMemoryMessagingService):
    """Ack does nothing: an acked message comes back when its timeout passes."""

    async def ack_message(self, queue: str, msg_id: int) -> None:
        self._queue(queue)


class NackDeletes(InMemoryMessagingService):
    """Nack deletes the message instead of making it visible again."""

    async def nack_message(self, queue: str, msg_id: int) -> None:
        await super().ack_message(queue, msg_id)


class StorePerService(InMemoryMessagingService):
    """Keeps its queues in a store of its own, whatever store it is opened on, and still
    declares a shared backend: two services (two consumers, two processes) never see each
    other's queues."""

    def __init__(
        self,
        config: MemoryConfig | None = None,
        *,
        clock: Clock | None = None,
        store: MemoryStore | None = None,
    ) -> None:
        super().__init__(config, clock=clock)

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(super().capabilities, shared_backend=True)


class SecondNackDeletes(InMemoryMessagingService):
    """Requeues a message's first nack, then deletes it on the second: work that fails
    twice is lost."""

    _nacked: set[tuple[str, int]] | None = None

    async def nack_message(self, queue: str, msg_id: int) -> None:
        if self._nacked is None:
            self._nacked = set()
        if (queue, msg_id) in self._nacked:
            await super().ack_message(queue, msg_id)
            return
        self._nacked.add((queue, msg_id))
        await super().nack_message(queue, msg_id)


class VisibilityNeverExpires(InMemoryMessagingService):
    """Receive claims the messages it finds but returns none of them."""

    async def receive_messages(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        await super().receive_messages(queue, limit, visibility_timeout)  # validate only
        return []


class ReversedReceive(InMemoryMessagingService):
    """A batch receive returns its messages newest first."""

    async def receive_messages(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        return list(reversed(await super().receive_messages(queue, limit, visibility_timeout)))


class LimitIgnored(InMemoryMessagingService):
    """Receive ignores the limit and returns up to 1000 messages."""

    async def receive_messages(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        return await super().receive_messages(queue, 1000, visibility_timeout)


class DelayIgnored(InMemoryMessagingService):
    """A delayed send is delivered at once."""

    async def send_message_with_delay(
        self, queue: str, payload: bytes, delay_seconds: float
    ) -> int:
        return await super().send_message(queue, payload)


class PushDropsEveryThird(InMemoryMessagingService):
    """Push silently drops every third delivery."""

    async def subscribe_many(self, queues: Sequence[str]) -> QueueSubscription:
        sub = await super().subscribe_many(queues)
        original = sub.put
        count = 0

        def lossy_put(note: object) -> bool:
            nonlocal count
            count += 1
            return True if count % 3 == 0 else original(note)  # type: ignore[arg-type]

        sub.put = lossy_put  # type: ignore[method-assign,assignment]
        return sub


class WrongAvailableId(SignalMemory):
    """Each ``Available`` signal names the id after the one it announces."""

    announce_offset = 1


class LyingFetchFlag(InMemoryMessagingService):
    """``supports_fetch_by_message_id`` says no although capabilities claim ``fetch_by_id``."""

    @property
    def supports_fetch_by_message_id(self) -> bool:
        return False


class OversizeAccepted(InMemoryMessagingService):
    """Accepts a payload above the size limit it declares."""

    async def send_message(self, queue: str, payload: bytes) -> int:
        return self._enqueue(self._queue(queue), bytes(payload), 0.0)


class SilentAckOfUnknown(InMemoryMessagingService):
    """Acking an unknown message succeeds silently instead of raising."""

    async def ack_message(self, queue: str, msg_id: int) -> None:
        with contextlib.suppress(MessageNotFound):
            await super().ack_message(queue, msg_id)


class SilentDropOnMissingQueue(InMemoryMessagingService):
    """Sending to a missing queue returns id 0 and drops the message."""

    async def send_message(self, queue: str, payload: bytes) -> int:
        if not await self.queue_exists(queue):
            return 0
        return await super().send_message(queue, payload)


class EmptyAckBatchSkipsTheQueue(InMemoryMessagingService):
    """ack_claims returns at once when no claim in the batch is live (an empty batch, or
    only stale claims), so a missing queue answers ``[]`` or ``[False]``, not
    QueueNotFound."""

    async def ack_claims(self, queue: str, claims: Sequence[ClaimRef]) -> list[bool]:
        if not claims or all(getattr(c, "queue_name", queue) != queue for c in claims):
            return [False] * len(claims)  # the defect: nothing to settle, nothing asked
        return await super().ack_claims(queue, claims)


class NoNameValidation(InMemoryMessagingService):
    """Creates queues with any name, invalid ones included."""

    async def create_queue(self, name: str) -> None:
        self._queues.setdefault(name, _Queue(name))


class StillWorksAfterClose(InMemoryMessagingService):
    """Close does nothing: the service keeps working afterwards."""

    async def close(self) -> None:
        """Forgets to close."""


class RawKeyError(InMemoryMessagingService):
    """Receiving from a missing queue raises a raw ``KeyError``."""

    async def receive_messages(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        if queue not in self._queues:
            raise KeyError(queue)
        return await super().receive_messages(queue, limit, visibility_timeout)


class ReceiveCountStuck(InMemoryMessagingService):
    """Every delivery reports ``receive_count`` 1, however often it came."""

    async def receive_messages(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        got = await super().receive_messages(queue, limit, visibility_timeout)
        return [dataclasses.replace(m, receive_count=1) for m in got]


class DeleteKeepsMessages(InMemoryMessagingService):
    """A queue deleted and created again still holds its old messages."""

    async def delete_queue(self, name: str) -> None:
        queue = self._queues.get(name)
        await super().delete_queue(name)
        if queue is not None:
            self._stash = queue

    async def create_queue(self, name: str) -> None:
        stash = getattr(self, "_stash", None)
        if stash is not None and stash.name == name:
            self._queues[name] = stash
            return
        await super().create_queue(name)


class ConcurrentDoubleDelivery(InMemoryMessagingService):
    """A receive also hands out again a message received earlier and still held."""

    async def receive_messages(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        got = await super().receive_messages(queue, limit, visibility_timeout)
        self._last = [*getattr(self, "_last", []), *got][-3:]
        return got + self._last[:1] if got else got


class PushedCopySettledByOldClaim(InMemoryMessagingService):
    """Settles a pushed copy by message, so an earlier claim acks it.

    A pushed copy still waiting in a subscription counts as held, and any claim on the
    message settles it, so the previous holder's ack settles the copy about to be handed out.
    """

    def _held_entry(self, queue: _Queue, claim: Claim) -> _Entry:
        entry = queue.entries.get(claim.msg_id)
        if entry is not None:
            entry.waiting = None
            claim = dataclasses.replace(claim, token=entry.claim_token)
        return super()._held_entry(queue, claim)


class RepeatedClaims(InMemoryMessagingService):
    """Every delivery of a message carries the same claim (derived from its id).

    A claim is derived from the message, not made per delivery.
    """

    def _claim(self, queue: _Queue, entry: _Entry, visibility_timeout: float) -> QueuedMessage:
        got = super()._claim(queue, entry, visibility_timeout)
        entry.claim_token = entry.msg_id
        return dataclasses.replace(
            got, claim=Claim(queue.name, entry.msg_id, entry.msg_id, visibility_timeout)
        )


class LapsedAckAccepted(InMemoryMessagingService):
    """A claim whose timeout passed still settles while nobody else holds it.

    Checks that the claim is the latest one, not that it is still live.
    """

    def _held_entry(self, queue: _Queue, claim: Claim) -> _Entry:
        self._promote(queue)
        entry = queue.entries.get(claim.msg_id)
        if entry is not None and entry.claim_token == claim.token and entry.waiting is None:
            return entry
        return super()._held_entry(queue, claim)


class SettlesAnyClaim(InMemoryMessagingService):
    """Settles the message, whoever holds it: a live claim of anyone's will do."""

    def _held_entry(self, queue: _Queue, claim: Claim) -> _Entry:
        entry = queue.entries.get(claim.msg_id)
        if entry is not None and entry.held:
            claim = dataclasses.replace(claim, token=entry.claim_token)
        return super()._held_entry(queue, claim)


class IdSettlesCurrentClaim(InMemoryMessagingService):
    """``ack_message`` by id settles whatever claim the message is under now."""

    async def ack_message(self, queue: str, msg_id: int) -> None:
        entry = self._queue(queue).entries.get(msg_id)
        if entry is None:
            await super().ack_message(queue, msg_id)
            return
        token = entry.claim_token
        await self.ack_claim(queue, Claim(queue, msg_id, token, entry.claim_timeout))


class ClaimQueueIgnored(InMemoryMessagingService):
    """Settles on the queue the claim names, whatever queue the caller named."""

    async def ack_claim(self, queue: str, claim: ClaimRef) -> None:
        ref = claim.claim if isinstance(claim, QueuedMessage) else claim
        await super().ack_claim(ref.queue_name if ref is not None else queue, claim)

    async def nack_claim(self, queue: str, claim: ClaimRef) -> None:
        ref = claim.claim if isinstance(claim, QueuedMessage) else claim
        await super().nack_claim(ref.queue_name if ref is not None else queue, claim)


class ReadsThenSettles(InMemoryMessagingService):
    """Reads the claim, then settles the message in a second step with nothing tying the
    write to what it read (a round trip apart, as ``SELECT`` then an unconditional
    ``DELETE``, or a compare-and-set a replicated backend checks on its leader alone):
    settlements of one claim that overlap all pass the read and all win."""

    async def _ack(self, queue: str, claim: Claim) -> None:
        q = self._existing(queue)
        entry = self._held_entry(q, claim)
        await asyncio.sleep(0)  # the round trip between the read and the write
        if q.entries.pop(entry.msg_id, None) is entry:
            self._detach(q, entry)
        self._dispatch(q)

    async def _nack(self, queue: str, claim: Claim) -> None:
        q = self._existing(queue)
        entry = self._held_entry(q, claim)
        await asyncio.sleep(0)
        if q.entries.get(entry.msg_id) is entry and entry.held:
            entry.held = False
            entry.visible_at = self.clock.now()
            self._detach(q, entry)
            self._schedule(q, entry)
        self._dispatch(q)


class BatchAcksByIds(InMemoryMessagingService):
    """Batch ack deletes by id (``DELETE ... WHERE msg_id = ANY(ids)``), claims unchecked."""

    async def _ack_many(self, queue: str, claims: list[Claim]) -> list[bool]:
        q = self._existing(queue)
        for claim in claims:
            q.entries.pop(claim.msg_id, None)
        return [True] * len(claims)


class BatchMatchesDeletedIds(InMemoryMessagingService):
    """Batch ack checks each claim, deletes the live ones, then reports by the ids deleted
    (``DELETE ... RETURNING msg_id``): a superseded claim on a message acked in the same
    batch is reported settled too."""

    async def _ack_many(self, queue: str, claims: list[Claim]) -> list[bool]:
        deleted: set[int] = set()
        for claim in claims:
            try:
                await self._ack(queue, claim)
            except MessageNotFound:
                continue
            deleted.add(claim.msg_id)
        return [claim.msg_id in deleted for claim in claims]


class PushKeepsClaim(PushedClaims):
    """A message pushed again keeps the claim of its first push."""

    def _claim_pushed(self, queue: _Queue, entry: _Entry, timeout: float) -> QueuedMessage:
        first = entry.claim_token
        got = super()._claim_pushed(queue, entry, timeout)
        if first:
            entry.claim_token = first
            got = entry.snapshot(queue.name)
        return got


class UnparsedTokenIgnored(InMemoryMessagingService):
    """A token it cannot read counts as "no token": the claim settles by id."""

    def _held_entry(self, queue: _Queue, claim: Claim) -> _Entry:
        entry = queue.entries.get(claim.msg_id)
        if entry is not None and not isinstance(claim.token, int):
            claim = dataclasses.replace(claim, token=entry.claim_token)
        return super()._held_entry(queue, claim)


class ForeignIdsHeldById(ForeignIdsMemory):
    """Holds are keyed by message id, so a later claim on a shared id hides the earlier.

    The latest claim on an id replaces the record of the earlier one, so the earlier
    message's claim no longer settles anything.
    """

    def _entry_of(self, queue: _Queue, claim: Claim) -> _Entry | None:
        latest: _Entry | None = None
        for key, entry in queue.entries.items():
            same_id = self._public.get((queue.name, key)) == claim.msg_id and entry.held
            if same_id and (latest is None or entry.claim_token > latest.claim_token):
                latest = entry
        return latest

    def _held_entry(self, queue: _Queue, claim: Claim) -> _Entry:
        entry = self._entry_of(queue, claim)
        if entry is not None:
            claim = dataclasses.replace(claim, msg_id=entry.msg_id)
        return InMemoryMessagingService._held_entry(self, queue, claim)


class ListsWithoutClaiming(Unlisted):
    """Answers ``list_queues`` without claiming it (so LIFE-5 is skipped)."""

    async def list_queues(self) -> list[str]:
        return sorted(self._queues)


class NormalizesLineEndings(InMemoryMessagingService):
    """Stores text the way a text column would: ``\\r\\n`` becomes ``\\n``."""

    async def _send_batch(self, queue: str, payloads: list[bytes]) -> list[int]:
        return await super()._send_batch(queue, [p.replace(b"\r\n", b"\n") for p in payloads])

    async def _send(self, queue: str, payload: bytes) -> int:
        return await super()._send(queue, payload.replace(b"\r\n", b"\n"))


class TrimsTrailingWhitespace(InMemoryMessagingService):
    """Trims trailing whitespace off payloads (every single byte still round-trips)."""

    async def _send_batch(self, queue: str, payloads: list[bytes]) -> list[int]:
        return await super()._send_batch(queue, [p.rstrip(b" \t\n") for p in payloads])


class IdsRestartWhenEmpty(InMemoryMessagingService):
    """The next id is one above the highest stored: after the queue empties, ids repeat."""

    def _enqueue(self, queue: _Queue, payload: bytes, delay: float) -> int:
        queue.ids = itertools.count(max(queue.entries, default=0) + 1)
        return super()._enqueue(queue, payload, delay)


class ReceivesOneAtATime(InMemoryMessagingService):
    """Returns one message per receive whatever the limit ("at most limit" holds)."""

    async def _receive(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        return await super()._receive(queue, 1, visibility_timeout)


#: When each message was sent, whichever instance on the store sent it (DeadlineFromSend).
_SENT_AT: weakref.WeakKeyDictionary[_Entry, float] = weakref.WeakKeyDictionary()


class DeadlineFromSend(InMemoryMessagingService):
    """Counts the visibility timeout from the send (``vt = sent_at + timeout``)."""

    def _enqueue(self, queue: _Queue, payload: bytes, delay: float) -> int:
        msg_id = super()._enqueue(queue, payload, delay)
        if msg_id in queue.entries:
            _SENT_AT.setdefault(queue.entries[msg_id], self.clock.now())
        return msg_id

    def _claim(self, queue: _Queue, entry: _Entry, visibility_timeout: float) -> QueuedMessage:
        got = super()._claim(queue, entry, visibility_timeout)
        sent_at = _SENT_AT.setdefault(entry, self.clock.now())  # pushed while being sent
        if sent_at + visibility_timeout <= self.clock.now():  # already over: not held at all
            entry.held = False
            entry.visible_at = self.clock.now()
            self._schedule(queue, entry)
        return got


class EnqueuedAtResetOnNack(InMemoryMessagingService):
    """A nacked message is re-enqueued: it gets a new ``enqueued_at``."""

    async def _nack(self, queue: str, claim: Claim) -> None:
        await super()._nack(queue, claim)
        entry = self._existing(queue).entries[claim.msg_id]
        entry.enqueued_at = self.clock.wall()


class DeleteAfterClose(InMemoryMessagingService):
    """Overrides ``delete_queue`` and forgets the closed check the base class made."""

    async def delete_queue(self, name: str) -> None:
        await self._delete_queue(check_queue_name(name))


class SubscriptionOutlivesClose(InMemoryMessagingService):
    """``close`` leaves open subscriptions waiting forever."""

    async def close(self) -> None:
        self._subscribers.clear()
        await super().close()


#: Who made each claim (see DeadHoldersKeepClaims).
_CLAIMED_BY: weakref.WeakKeyDictionary[_Entry, InMemoryMessagingService] = (
    weakref.WeakKeyDictionary()
)


class DeadHoldersKeepClaims(InMemoryMessagingService):
    """What a killed process held never comes back: claims stay with their holder.

    After its timeout only the instance that made the claim receives the message again.
    """

    def _claim(self, queue: _Queue, entry: _Entry, visibility_timeout: float) -> QueuedMessage:
        _CLAIMED_BY[entry] = self
        return super()._claim(queue, entry, visibility_timeout)

    def _pop_visible(self, queue: _Queue) -> _Entry | None:
        others: list[_Entry] = []
        try:
            while (entry := super()._pop_visible(queue)) is not None:
                if _CLAIMED_BY.get(entry, self) is self:
                    return entry
                others.append(entry)
            return None
        finally:
            for entry in others:
                heapq.heappush(queue.ready, entry.msg_id)


#: broken provider -> the rule that must catch it
CAUGHT_BY: dict[type[InMemoryMessagingService], str] = {
    NoopAck: "ACK-1",
    NackDeletes: "ACK-2",
    SecondNackDeletes: "ACK-2",
    StorePerService: "LIFE-12",
    VisibilityNeverExpires: "VT-2",
    ReversedReceive: "ORD-2",
    LimitIgnored: "RECV-1",
    DelayIgnored: "DLY-1",
    PushDropsEveryThird: "PUSH-1",
    WrongAvailableId: "PUSH-3",
    LyingFetchFlag: "PUSH-11",
    OversizeAccepted: "SEND-7",
    SilentAckOfUnknown: "ACK-4",
    SilentDropOnMissingQueue: "LIFE-6",
    EmptyAckBatchSkipsTheQueue: "LIFE-6",
    NoNameValidation: "LIFE-7",
    StillWorksAfterClose: "ERR-3",
    RawKeyError: "ERR-1",
    ReceiveCountStuck: "VT-5",
    DeleteKeepsMessages: "LIFE-2",
    ConcurrentDoubleDelivery: "VT-3",
    PushedCopySettledByOldClaim: "PUSH-12",
    DeadHoldersKeepClaims: "ERR-8",
    RepeatedClaims: "CLAIM-1",
    LapsedAckAccepted: "CLAIM-2",
    SettlesAnyClaim: "CLAIM-3",
    IdSettlesCurrentClaim: "CLAIM-3",
    ClaimQueueIgnored: "CLAIM-4",
    ReadsThenSettles: "CLAIM-9",
    BatchAcksByIds: "CLAIM-5",
    BatchMatchesDeletedIds: "CLAIM-5",
    PushKeepsClaim: "CLAIM-6",
    UnparsedTokenIgnored: "CLAIM-8",
    ForeignIdsHeldById: "CLAIM-7",
    ListsWithoutClaiming: "LIFE-11",
    NormalizesLineEndings: "SEND-10",
    TrimsTrailingWhitespace: "SEND-10",
    IdsRestartWhenEmpty: "SEND-11",
    ReceivesOneAtATime: "RECV-1",
    DeadlineFromSend: "VT-6",
    EnqueuedAtResetOnNack: "VT-7",
    DeleteAfterClose: "ERR-3",
    SubscriptionOutlivesClose: "ERR-3",
}


def _reference(cls: type[InMemoryMessagingService]) -> type[InMemoryMessagingService]:
    """The correct provider a specimen was derived from (its rule must pass that)."""
    for reference in (SignalMemory, ForeignIdsMemory, Unlisted):
        if issubclass(cls, reference):
            return reference
    return InMemoryMessagingService


SPECIMENS: tuple[Specimen, ...] = tuple(
    Specimen(cls, rule, reference=_reference(cls)) for cls, rule in CAUGHT_BY.items()
)

"""Broken providers for the rule groups with few or none: FETCH, EVT, ORD, DLY, LIFE,
SEND, RECV, ERR and ACK.

Each is a slip a competent author could ship: a missing condition in a query, a cache
nobody invalidates, a default that swallows a bad value. Capabilities stay honest, so the
rule that fails is the rule about the slip.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import weakref
from collections.abc import Sequence
from typing import Any

from mqcontract.capabilities import Capabilities
from mqcontract.errors import (
    InvalidArgument,
    InvalidQueueName,
    MessageNotFound,
    MessageTooLarge,
    QueueNotFound,
)
from mqcontract.messages import Claim, QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService, _Entry, _Queue
from mqcontract.service import BaseMessagingService, MessagingService
from mqcontract.validation import check_queue_name, is_message_id
from mqcontract_conformance.selftest.catalogue import Specimen
from mqcontract_conformance.selftest.harness import SpecimenHarness

__all__ = ["SPECIMENS"]


# -- FETCH -------------------------------------------------------------------------------


class FetchPeeks(InMemoryMessagingService):
    """fetch_message reads the message without claiming it (a SELECT, not an UPDATE)."""

    async def _fetch(
        self, queue: str, msg_id: int, visibility_timeout: float
    ) -> QueuedMessage | None:
        q = self._existing(queue)
        self._promote(q)
        entry = q.entries.get(msg_id) if is_message_id(msg_id) else None
        if entry is None or entry.held or entry.visible_at > self.clock.now():
            return None
        return dataclasses.replace(entry.snapshot(q.name), receive_count=entry.receive_count + 1)


class FetchClaimsDelayed(InMemoryMessagingService):
    """fetch_message checks that nobody holds the message, not that its delay has passed."""

    async def _fetch(
        self, queue: str, msg_id: int, visibility_timeout: float
    ) -> QueuedMessage | None:
        q = self._existing(queue)
        self._promote(q)
        entry = q.entries.get(msg_id) if is_message_id(msg_id) else None
        if entry is None or entry.held:
            return None
        return self._claim(q, entry, visibility_timeout)


class FetchOnlyFresh(InMemoryMessagingService):
    """fetch_message claims only messages never delivered before (it filters on read_ct = 0)."""

    async def _fetch(
        self, queue: str, msg_id: int, visibility_timeout: float
    ) -> QueuedMessage | None:
        entry = self._existing(queue).entries.get(msg_id) if is_message_id(msg_id) else None
        if entry is not None and entry.receive_count > 0:
            return None
        return await super()._fetch(queue, msg_id, visibility_timeout)


class NoFetchMemory(InMemoryMessagingService):
    """Correct: does not claim fetch-by-id, so the base class refuses ``fetch_message``."""

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(super().capabilities, fetch_by_id=False)

    # The base class's own ``_fetch``: fetch_message raises UnsupportedOperation.
    _fetch = BaseMessagingService._fetch


class FetchUnsupportedReturnsNone(NoFetchMemory):
    """Without fetch-by-id, fetch_message answers None ("not visible") instead of refusing."""

    async def fetch_message(
        self, queue: str, msg_id: int, visibility_timeout: float
    ) -> QueuedMessage | None:
        self._queue(queue)
        return None


# -- EVT ---------------------------------------------------------------------------------


class BatchAckKeepsPushCredit(InMemoryMessagingService):
    """Batch acks (ack_claims) do not return push credit, so push stops after a prefetch.

    Acks one by one free the subscriber's slot; the batch path used by the event system
    forgets to, and after a prefetch's worth the subscription receives nothing more."""

    async def _ack_many(self, queue: str, claims: list[Claim]) -> list[bool]:
        q = self._existing(queue)
        settled: list[bool] = []
        for claim in claims:
            try:
                entry = self._held_entry(q, claim)
            except MessageNotFound:
                settled.append(False)
                continue
            del q.entries[entry.msg_id]  # the subscriber's in-flight slot stays taken
            settled.append(True)
        return settled


#: How long the listener of :class:`ReconnectingListenerMemory` takes to come back.
RECONNECT_AFTER = 0.5


class ReconnectingListenerMemory(InMemoryMessagingService):
    """Correct: push runs over a listener connection that can die (``kill_listener``); the
    provider notices, and re-attaches its subscriptions half a second later."""

    def kill_listener(self) -> None:
        """The fault: the broker forgets this provider's consumers; subscriptions stay open."""
        dropped = 0
        for q in self._queues.values():
            for subscriber in list(q.subscribers):
                if subscriber.subscription in self._subscribers:
                    q.subscribers.remove(subscriber)
                    dropped += 1
        if dropped:
            self._on_listener_lost()

    def _on_listener_lost(self) -> None:
        task = asyncio.get_running_loop().create_task(self._reconnect())
        self.__dict__.setdefault("_reconnects", set()).add(task)
        task.add_done_callback(self.__dict__["_reconnects"].discard)

    async def _reconnect(self) -> None:
        await self.clock.sleep(RECONNECT_AFTER)
        if self._closed:
            return
        for subscription, subscriber in list(self._subscribers.items()):
            for name in subscription.queues:
                q = self._queues.get(name)
                if q is not None and subscriber not in q.subscribers:
                    q.subscribers.append(subscriber)
                    self._dispatch(q)
        self._wake.set()

    async def close(self) -> None:
        for task in list(self.__dict__.get("_reconnects", ())):
            task.cancel()
        await super().close()


class ListenerNeverReconnects(ReconnectingListenerMemory):
    """Does not re-subscribe after its listener connection dies: push stays silent.

    Only a fallback poller still finds the messages sent from then on."""

    def _on_listener_lost(self) -> None:
        """Forgets to reconnect."""


class ListenerHarness(SpecimenHarness):
    """The specimen harness with a ``kill_listener`` hook: the provider's listener
    connection drops."""

    async def kill_listener(self, service: MessagingService) -> None:
        assert isinstance(service, ReconnectingListenerMemory)
        service.kill_listener()


# -- ORD ---------------------------------------------------------------------------------

#: When each entry last went back to the ready set (see _ScannedOrder).
_REQUEUED: weakref.WeakKeyDictionary[_Entry, int] = weakref.WeakKeyDictionary()
_REQUEUES = itertools.count(1)


class _ScannedOrder(InMemoryMessagingService):
    """The in-memory provider choosing the next visible message by ``_order_key``
    (by default its id, which is exactly the provider's own order)."""

    def _order_key(self, entry: _Entry) -> tuple[Any, ...]:
        return (entry.msg_id,)

    def _pop_visible(self, queue: _Queue) -> _Entry | None:
        self._promote(queue)
        now = self.clock.now()
        visible = [e for e in queue.entries.values() if not e.held and e.visible_at <= now]
        return min(visible, key=self._order_key, default=None)


class NackRepublishedAtBack(_ScannedOrder):
    """Declares the original requeue position, but a nacked message goes to the back.

    Nack re-publishes the message, so it waits behind every message already waiting."""

    def _order_key(self, entry: _Entry) -> tuple[Any, ...]:
        return (_REQUEUED.get(entry, 0), entry.msg_id)

    async def _nack(self, queue: str, claim: Claim) -> None:
        await super()._nack(queue, claim)
        _REQUEUED[self._existing(queue).entries[claim.msg_id]] = next(_REQUEUES)


class ExpiredRequeuedAtBack(_ScannedOrder):
    """Declares the original requeue position, but an expired message goes to the back."""

    def _order_key(self, entry: _Entry) -> tuple[Any, ...]:
        return (_REQUEUED.get(entry, 0), entry.msg_id)

    def _promote(self, queue: _Queue) -> None:
        now = self.clock.now()
        expired = [e for e in queue.entries.values() if e.held and e.visible_at <= now]
        super()._promote(queue)
        for entry in expired:
            if not entry.held:
                _REQUEUED[entry] = next(_REQUEUES)


class OrdersIdsAsText(_ScannedOrder):
    """Orders messages by their id as text (a varchar key): id 10 comes before id 2."""

    def _order_key(self, entry: _Entry) -> tuple[Any, ...]:
        return (str(entry.msg_id),)


# -- DLY ---------------------------------------------------------------------------------


class DelayTruncatedToSeconds(InMemoryMessagingService):
    """Stores delays in whole seconds (an integer column): 0.6 s becomes no delay at all."""

    async def _send_delayed(self, queue: str, payload: bytes, delay_seconds: float) -> int:
        return await super()._send_delayed(queue, payload, float(int(delay_seconds)))


class OneDelayLine(InMemoryMessagingService):
    """Delayed messages wait in one line (a TTL wait queue): a short delay waits for longer ones."""

    async def _send_delayed(self, queue: str, payload: bytes, delay_seconds: float) -> int:
        line: dict[str, float] = self.__dict__.setdefault("_line_ends", {})
        now = self.clock.now()
        release = max(now + delay_seconds, line.get(queue, now))
        line[queue] = release
        return self._enqueue(self._existing(queue), payload, release - now)


class ZeroDelayRejected(InMemoryMessagingService):
    """Checks delays like visibility timeouts (> 0), so a computed delay of 0 is refused."""

    async def send_message_with_delay(
        self, queue: str, payload: bytes, delay_seconds: float
    ) -> int:
        if isinstance(delay_seconds, int | float) and delay_seconds == 0:
            raise InvalidArgument("delay_seconds", delay_seconds, "> 0", queue)
        return await super().send_message_with_delay(queue, payload, delay_seconds)


class NegativeDelayMeansNow(InMemoryMessagingService):
    """Clamps a negative delay to zero (``max(0, delay)``) instead of rejecting it."""

    async def send_message_with_delay(
        self, queue: str, payload: bytes, delay_seconds: float
    ) -> int:
        if isinstance(delay_seconds, int | float) and delay_seconds < 0:
            delay_seconds = 0.0
        return await super().send_message_with_delay(queue, payload, delay_seconds)


# -- LIFE --------------------------------------------------------------------------------


class CreateReplacesQueue(InMemoryMessagingService):
    """create_queue of an existing queue re-creates it (DROP + CREATE), losing its messages."""

    async def _create_queue(self, name: str) -> None:
        self._queues[name] = _Queue(name)


class ListFromStaleCache(InMemoryMessagingService):
    """list_queues answers from a cache that create_queue fills and delete_queue forgets."""

    async def _create_queue(self, name: str) -> None:
        await super()._create_queue(name)
        self.__dict__.setdefault("_listed", set()).add(name)

    async def _list_queues(self) -> list[str]:
        return sorted(set(self.__dict__.get("_listed", ())) | set(self._queues))


class ReceiveDeclaresQueue(InMemoryMessagingService):
    """receive_messages on a missing queue declares it instead of raising QueueNotFound.

    As an AMQP consumer declaring what it reads might: a typo creates an empty queue."""

    async def _receive(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        if queue not in self._queues:
            await self._create_queue(queue)
        return await super()._receive(queue, limit, visibility_timeout)


class DeleteMissingRaises(InMemoryMessagingService):
    """delete_queue of a queue that does not exist raises QueueNotFound (DROP without IF EXISTS)."""

    async def _delete_queue(self, name: str) -> None:
        if name not in self._queues:
            raise QueueNotFound(name)
        await super()._delete_queue(name)


class ExistsSkipsNameCheck(InMemoryMessagingService):
    """queue_exists answers False for an invalid name instead of rejecting it."""

    async def queue_exists(self, name: str) -> bool:
        try:
            check_queue_name(name)
        except InvalidQueueName:
            return False
        return await super().queue_exists(name)


class NameLimitOffByOne(InMemoryMessagingService):
    """Counts the 47-character name limit exclusively: a name of exactly 47 is refused."""

    async def create_queue(self, name: str) -> None:
        if isinstance(name, str) and len(name) >= 47:
            raise InvalidQueueName(name, "longer than 46 characters")
        await super().create_queue(name)


# -- SEND --------------------------------------------------------------------------------


class BatchIdsUnordered(InMemoryMessagingService):
    """send_batch returns its ids out of order (INSERT ... RETURNING without ORDER BY).

    Here newest first, so the ids no longer line up with the payloads."""

    async def _send_batch(self, queue: str, payloads: list[bytes]) -> list[int]:
        return list(reversed(await super()._send_batch(queue, payloads)))


class BatchSentOneByOne(InMemoryMessagingService):
    """send_batch sends payload by payload, so an oversized one leaves the earlier ones sent."""

    async def send_batch(self, queue: str, payloads: Sequence[bytes]) -> list[int]:
        return [await self.send_message(queue, payload) for payload in payloads]


class EmptyPayloadAsNull(InMemoryMessagingService):
    """Stores an empty payload as JSON null (``payload or None``): it comes back as b"null"."""

    async def _send(self, queue: str, payload: bytes) -> int:
        return await super()._send(queue, payload or b"null")


class LimitExclusive(InMemoryMessagingService):
    """Refuses a payload of exactly max_message_size_bytes (``>=`` where ``>`` was meant)."""

    async def _send(self, queue: str, payload: bytes) -> int:
        limit = self.capabilities.max_message_size_bytes
        if len(payload) >= limit:
            raise MessageTooLarge(queue, len(payload), limit)
        return await super()._send(queue, payload)


class JsonReserialized(InMemoryMessagingService):
    """Declares bytes fidelity but stores JSON payloads parsed, as a jsonb column would.

    Whitespace and key order of a JSON payload change."""

    async def _send(self, queue: str, payload: bytes) -> int:
        try:
            value = json.loads(payload)
        except (ValueError, RecursionError):
            return await super()._send(queue, payload)
        return await super()._send(queue, json.dumps(value, sort_keys=True).encode())


# -- RECV --------------------------------------------------------------------------------


class ZeroLimitMeansAll(InMemoryMessagingService):
    """Treats a receive limit of 0 as "no limit" (as some client libraries do)."""

    async def receive_messages(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        if limit == 0 and not isinstance(limit, bool):
            limit = self.capabilities.max_receive_limit
        return await super().receive_messages(queue, limit, visibility_timeout)


class ZeroTimeoutMeansDefault(InMemoryMessagingService):
    """A visibility timeout of 0 falls back to a default of 30 s (``timeout or 30``)."""

    async def receive_messages(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        if visibility_timeout == 0 and not isinstance(visibility_timeout, bool):
            visibility_timeout = 30.0
        return await super().receive_messages(queue, limit, visibility_timeout)


class CountsRedeliveries(InMemoryMessagingService):
    """receive_count counts redeliveries, not deliveries: a first delivery carries 0."""

    def _claim(self, queue: _Queue, entry: _Entry, visibility_timeout: float) -> QueuedMessage:
        got = super()._claim(queue, entry, visibility_timeout)
        return dataclasses.replace(got, receive_count=got.receive_count - 1)


# -- ERR ---------------------------------------------------------------------------------


class ErrorsOmitQueue(InMemoryMessagingService):
    """QueueNotFound says "queue does not exist" without naming the queue."""

    def _existing(self, name: str) -> _Queue:
        try:
            return super()._existing(name)
        except QueueNotFound as exc:
            exc.args = ("queue does not exist",)
            raise


class PayloadTypeUnchecked(InMemoryMessagingService):
    """send_message converts the payload with bytes(): a str payload raises a raw TypeError."""

    async def send_message(self, queue: str, payload: bytes) -> int:
        q = self._queue(queue)
        data = bytes(payload)
        limit = self.capabilities.max_message_size_bytes
        if len(data) > limit:
            raise MessageTooLarge(queue, len(data), limit)
        return self._enqueue(q, data, 0.0)


# -- ACK ---------------------------------------------------------------------------------


class RepeatAckIgnored(InMemoryMessagingService):
    """Remembers acked ids and answers a second ack of one as a success (idempotent ack)."""

    async def ack_message(self, queue: str, msg_id: int) -> None:
        done: set[tuple[str, int]] = self.__dict__.setdefault("_acked", set())
        if (queue, msg_id) in done:
            return
        await super().ack_message(queue, msg_id)
        done.add((queue, msg_id))


class NackKeepsClaim(InMemoryMessagingService):
    """nack keeps the nacking consumer's claim valid, so its ack after the nack deletes.

    The message is visible again, but until someone else receives it the old claim
    still settles it."""

    async def nack_message(self, queue: str, msg_id: int) -> None:
        entry = self._queue(queue).entries.get(msg_id)
        token = entry.claim_token if entry is not None else None
        await super().nack_message(queue, msg_id)
        self.__dict__.setdefault("_nacked", {})[(queue, msg_id)] = token

    async def ack_message(self, queue: str, msg_id: int) -> None:
        try:
            await super().ack_message(queue, msg_id)
        except MessageNotFound:
            token = self.__dict__.get("_nacked", {}).pop((queue, msg_id), None)
            q = self._queue(queue)
            entry = q.entries.get(msg_id)
            if entry is None or token is None or entry.claim_token != token:
                raise
            del q.entries[msg_id]


class NackUnknownIgnored(InMemoryMessagingService):
    """nack of an id it does not hold returns quietly (an UPDATE whose row count is ignored)."""

    async def nack_message(self, queue: str, msg_id: int) -> None:
        with contextlib.suppress(MessageNotFound):
            await super().nack_message(queue, msg_id)
        self._queue(queue)


class AckByIdDeletes(InMemoryMessagingService):
    """ack_message deletes the message with that id whether or not anyone holds it.

    ``DELETE ... WHERE msg_id = $1``, without the claim in the condition."""

    async def ack_message(self, queue: str, msg_id: int) -> None:
        try:
            await super().ack_message(queue, msg_id)
        except MessageNotFound:
            if self._queue(queue).entries.pop(msg_id, None) is None:
                raise


class AckSettlesWholeBatch(InMemoryMessagingService):
    """Acking one message acks every message of its receive (``multiple=True`` on the tag)."""

    async def _receive(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        got = await super()._receive(queue, limit, visibility_timeout)
        batches: dict[tuple[str, int], list[int]] = self.__dict__.setdefault("_batches", {})
        for m in got:
            batches[(queue, m.msg_id)] = [n.msg_id for n in got]
        return got

    async def ack_message(self, queue: str, msg_id: int) -> None:
        await super().ack_message(queue, msg_id)
        batch = self.__dict__.get("_batches", {}).pop((queue, msg_id), [])
        for other in batch:
            if other != msg_id:
                with contextlib.suppress(MessageNotFound):
                    await super().ack_message(queue, other)


SPECIMENS: tuple[Specimen, ...] = (
    Specimen(FetchPeeks, "FETCH-1"),
    Specimen(FetchClaimsDelayed, "FETCH-1"),
    Specimen(FetchOnlyFresh, "FETCH-1"),
    Specimen(FetchUnsupportedReturnsNone, "FETCH-2", NoFetchMemory),
    Specimen(BatchAckKeepsPushCredit, "EVT-5"),
    Specimen(ListenerNeverReconnects, "EVT-3", ReconnectingListenerMemory, ListenerHarness),
    Specimen(NackRepublishedAtBack, "ORD-3"),
    Specimen(ExpiredRequeuedAtBack, "ORD-4"),
    Specimen(OrdersIdsAsText, "ORD-1"),
    Specimen(DelayTruncatedToSeconds, "DLY-2"),
    Specimen(OneDelayLine, "DLY-3"),
    Specimen(ZeroDelayRejected, "DLY-5"),
    Specimen(NegativeDelayMeansNow, "DLY-4"),
    Specimen(CreateReplacesQueue, "LIFE-1"),
    Specimen(ListFromStaleCache, "LIFE-5"),
    Specimen(ReceiveDeclaresQueue, "LIFE-6"),
    Specimen(DeleteMissingRaises, "LIFE-3"),
    Specimen(ExistsSkipsNameCheck, "LIFE-8"),
    Specimen(NameLimitOffByOne, "LIFE-10"),
    Specimen(BatchIdsUnordered, "SEND-8"),
    Specimen(BatchSentOneByOne, "SEND-9"),
    Specimen(EmptyPayloadAsNull, "SEND-3"),
    Specimen(LimitExclusive, "SEND-6"),
    Specimen(JsonReserialized, "SEND-2"),
    Specimen(ZeroLimitMeansAll, "RECV-3"),
    Specimen(ZeroTimeoutMeansDefault, "RECV-4"),
    Specimen(CountsRedeliveries, "RECV-5"),
    Specimen(ErrorsOmitQueue, "ERR-2"),
    Specimen(PayloadTypeUnchecked, "ERR-1"),
    Specimen(RepeatAckIgnored, "ACK-3"),
    Specimen(NackKeepsClaim, "ACK-5"),
    Specimen(NackUnknownIgnored, "ACK-6"),
    Specimen(AckByIdDeletes, "ACK-7"),
    Specimen(AckSettlesWholeBatch, "ACK-8"),
)

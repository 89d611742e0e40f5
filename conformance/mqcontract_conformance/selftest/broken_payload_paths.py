"""Broken payload paths: providers right on the path a payload was first tried on.

Each returns the bytes sent, numbers messages uniquely and notifies subscribers on the
path the suite used to look at (a plain send, received at once, a single send to a
subscription opened first), and slips on another: a decoder that unwraps what looks
enveloped or compressed (on every read, or only when fetched by id), a push channel
that ends a payload at its first NUL or cuts it at 65,535 bytes, a single send that
reads the id sequence a round trip before it writes, a re-declare that starts an empty
queue's ids again, a bulk batch insert that notifies nobody, a timer task cancelled with a
service's last subscription.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import gzip
import itertools

from mqcontract.messages import QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService, _Entry, _Queue
from mqcontract.subscription import QueueSubscription
from mqcontract_conformance.selftest._pushed import PushedClaims
from mqcontract_conformance.selftest.catalogue import Specimen

__all__ = [
    "SPECIMENS",
    "BulkBatchNotNotified",
    "EmptyQueueRedeclaredAnew",
    "FetchInflatesGzip",
    "PrefixMarkedEnvelope",
    "PumpCancelledWithLastSubscription",
    "PushCappedAt65535",
    "PushEndsAtNul",
    "SendPeeksIdSequence",
]

#: The marker the broken envelope below puts before the base64 of a binary payload.
_MARKER = b"b64:"


def _unwrapped(stored: bytes) -> bytes:
    """What the broken envelope reads back: anything that starts with the marker and is
    base64 after it is decoded, whoever marked it."""
    if stored.startswith(_MARKER):
        try:
            return base64.b64decode(stored[len(_MARKER) :], validate=True)
        except binascii.Error:
            pass
    return stored


class PrefixMarkedEnvelope(InMemoryMessagingService):
    """Stores a payload that is not UTF-8 text as ``b64:`` and its base64, and on every
    read decodes any stored payload that starts with ``b64:`` and is base64 after it,
    rather than keeping a flag beside it: a producer's own ``b64:aGVsbG8=`` is received
    as ``hello``. Binary payloads, text and JSON all round-trip."""

    def _enqueue(self, queue: _Queue, payload: bytes, delay: float) -> int:
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            payload = _MARKER + base64.b64encode(payload)
        return super()._enqueue(queue, payload, delay)

    def _claim(self, queue: _Queue, entry: _Entry, visibility_timeout: float) -> QueuedMessage:
        claimed = super()._claim(queue, entry, visibility_timeout)
        return dataclasses.replace(claimed, payload=_unwrapped(claimed.payload))


class FetchInflatesGzip(InMemoryMessagingService):
    """fetch_message (a separate query that decodes archived payloads) inflates any
    payload that starts with the gzip magic ``1f 8b``: a producer's own gzip stream
    fetched by id comes back decompressed. receive and push return it as sent."""

    async def _fetch(
        self, queue: str, msg_id: int, visibility_timeout: float
    ) -> QueuedMessage | None:
        got = await super()._fetch(queue, msg_id, visibility_timeout)
        if got is not None and got.payload[:2] == b"\x1f\x8b":  # the defect: a sniff
            try:
                return dataclasses.replace(got, payload=gzip.decompress(got.payload))
            except (OSError, EOFError):
                pass
        return got


class PushEndsAtNul(PushedClaims):
    """Relays a pushed message's payload as a C string: it ends at its first NUL byte, so
    a payload ending in NUL (or holding one) is pushed short. receive returns it whole."""

    def _claim_pushed(self, queue: _Queue, entry: _Entry, timeout: float) -> QueuedMessage:
        got = super()._claim_pushed(queue, entry, timeout)
        return dataclasses.replace(got, payload=got.payload.split(b"\x00", 1)[0])


#: The largest frame the broken push relay below carries.
_FRAME = 65535


class PushCappedAt65535(PushedClaims):
    """Pushes a message through a relay whose frames hold at most 65,535 bytes and drops
    the rest of a larger payload: a pushed payload of 65,536 bytes or more arrives cut
    (payloads up to 16 KiB are exact). receive returns it whole."""

    def _claim_pushed(self, queue: _Queue, entry: _Entry, timeout: float) -> QueuedMessage:
        got = super()._claim_pushed(queue, entry, timeout)
        return dataclasses.replace(got, payload=got.payload[:_FRAME])


class SendPeeksIdSequence(InMemoryMessagingService):
    """send_message reads the id sequence, writes its row a round trip later and only then
    moves the sequence on: another send (or a batch) that runs in between is given the
    same id, and one of the two messages overwrites the other. Sends one after another
    are right."""

    async def _send(self, queue: str, payload: bytes) -> int:
        q = self._existing(queue)
        msg_id = next(q.ids)
        q.ids = itertools.count(msg_id)  # the defect: read, not reserved
        await asyncio.sleep(0)  # the round trip
        q = self._existing(queue)
        q.ids = itertools.count(msg_id + 1)
        entry = _Entry(msg_id, payload, self.clock.wall(), self.clock.now())
        q.entries[msg_id] = entry
        self._schedule(q, entry)
        self._dispatch(q)
        return msg_id


class EmptyQueueRedeclaredAnew(InMemoryMessagingService):
    """create_queue of an existing queue that holds no message starts its id sequence
    again at 1 (as if it created the queue), while a queue holding messages is left as
    it is: once every message was acked, a re-declare (a restart) reissues old ids."""

    async def _create_queue(self, name: str) -> None:
        q = self._queues.get(name)
        if q is not None and not q.entries:
            q.ids = itertools.count(1)  # the defect
            return
        await super()._create_queue(name)


class BulkBatchNotNotified(InMemoryMessagingService):
    """Inserts a batch of two or more payloads through a bulk path (a COPY) that bypasses
    the notification a row insert fires: an idle subscription never hears such a batch
    until something else wakes its queue. Single sends and one-payload batches are
    notified."""

    async def _send_batch(self, queue: str, payloads: list[bytes]) -> list[int]:
        if len(payloads) < 2:
            return await super()._send_batch(queue, payloads)
        q = self._existing(queue)
        ids: list[int] = []
        for data in payloads:
            entry = _Entry(next(q.ids), data, self.clock.wall(), self.clock.now())
            q.entries[entry.msg_id] = entry
            self._schedule(q, entry)
            ids.append(entry.msg_id)
        return ids  # the defect: no notification


class PumpCancelledWithLastSubscription(InMemoryMessagingService):
    """Cancels its timer task when the service's last subscription closes and starts it
    only for the service's first subscription ever: a later subscription is pushed
    what is sent to it, but never a delayed message once it is due."""

    async def _unsubscribe(self, subscription: QueueSubscription) -> None:
        await super()._unsubscribe(subscription)
        if not self._subscribers and self._pump_task is not None:
            self._pump_task.cancel()  # the defect: _pump_task stays set, so never restarted


SPECIMENS: tuple[Specimen, ...] = (
    Specimen(PrefixMarkedEnvelope, "SEND-4"),
    Specimen(FetchInflatesGzip, "SEND-4"),
    Specimen(PushEndsAtNul, "PUSH-2", reference=PushedClaims),
    Specimen(PushCappedAt65535, "PUSH-2", reference=PushedClaims),
    Specimen(SendPeeksIdSequence, "SEND-1"),
    Specimen(EmptyQueueRedeclaredAnew, "SEND-11"),
    Specimen(BulkBatchNotNotified, "PUSH-1"),
    Specimen(PumpCancelledWithLastSubscription, "PUSH-1"),
)

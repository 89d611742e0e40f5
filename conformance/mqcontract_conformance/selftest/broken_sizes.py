"""Broken sizes: providers that are right at the sizes and on the path tried first.

Each keeps every promise for a few messages, a small payload or a single send, and
breaks one past a size nobody tried or on another send path: a receive read in pages of
500 that drops the remainder of a limit, a long batch sent in chunks that land last
first, a batch settlement handed to one backend call capped at 256 claims, a batch send
stamping enqueued_at in milliseconds, large payloads offloaded under a key made of their
length and first KiB; and on the path added later: delayed payloads held as text, a long
batch checked and sent chunk by chunk, a batch insert numbering its rows from what is
stored. Capabilities stay honest, so the rule that fails is the rule about the slip.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from mqcontract.errors import InvalidArgument
from mqcontract.messages import Claim, QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService, _Entry
from mqcontract_conformance.selftest.catalogue import Specimen

__all__ = [
    "SPECIMENS",
    "AckManyCappedAt256",
    "BatchChecksChunkByChunk",
    "BatchChunksLandLastFirst",
    "BatchIdsFromStored",
    "BatchStampedInMillis",
    "DelayedPayloadsAsText",
    "LargePayloadsKeyedByPrefix",
    "ReceivePagesOf500",
]

#: The rows one backend read returns at most.
_PAGE = 500


class ReceivePagesOf500(InMemoryMessagingService):
    """Reads a receive above 500 in pages of 500 and asks for ``limit // 500`` of them,
    forgetting the remainder: limits up to 500 and multiples of 500 (1000, the declared
    maximum) are exact, limit 701 returns 500 while more are visible."""

    async def _receive(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        if limit <= _PAGE:
            return await super()._receive(queue, limit, visibility_timeout)
        out: list[QueuedMessage] = []
        for _ in range(limit // _PAGE):  # the defect: the last, partial page is not read
            out += await super()._receive(queue, _PAGE, visibility_timeout)
        return out


#: The payloads one backend insert takes at most.
_CHUNK = 100


class BatchChunksLandLastFirst(InMemoryMessagingService):
    """Sends a batch above 100 payloads as chunks of 100 at once, which land in the order
    they complete (here the last first), and returns the ids in payload order: a long
    batch is stored, and received, out of the order it was sent in, and its ids do not
    increase."""

    async def _send_batch(self, queue: str, payloads: list[bytes]) -> list[int]:
        if len(payloads) <= _CHUNK:
            return await super()._send_batch(queue, payloads)
        chunks = [payloads[i : i + _CHUNK] for i in range(0, len(payloads), _CHUNK)]
        landed: dict[int, list[int]] = {}
        for k in reversed(range(len(chunks))):  # the defect: in completion order
            landed[k] = await super()._send_batch(queue, chunks[k])
        return [msg_id for k in range(len(chunks)) for msg_id in landed[k]]


#: The arguments one backend settle call takes at most.
_SETTLE_CAP = 256


class AckManyCappedAt256(InMemoryMessagingService):
    """Hands every claim of an ack_claims to one backend call that takes at most 256, with
    no chunking: a batch of more than 256 claims raises InvalidArgument and settles
    nothing."""

    async def _ack_many(self, queue: str, claims: list[Claim]) -> list[bool]:
        if len(claims) > _SETTLE_CAP:  # the defect: the cap is the backend's, not the caller's
            raise InvalidArgument("claims", len(claims), f"at most {_SETTLE_CAP} claims", queue)
        return await super()._ack_many(queue, claims)


class BatchStampedInMillis(InMemoryMessagingService):
    """Builds a batch's rows with the bulk API's timestamp, epoch milliseconds, where
    single and delayed sends stamp seconds: every message sent by send_batch reports an
    enqueued_at about 55,000 years ahead."""

    async def _send_batch(self, queue: str, payloads: list[bytes]) -> list[int]:
        q = self._existing(queue)
        ids: list[int] = []
        for data in payloads:
            stamp = float(int(self.clock.wall() * 1000))  # the defect: milliseconds
            entry = _Entry(next(q.ids), data, stamp, self.clock.now())
            q.entries[entry.msg_id] = entry
            self._schedule(q, entry)
            ids.append(entry.msg_id)
        self._dispatch(q)
        return ids


#: Payloads above this are offloaded to the blob store.
_OFFLOAD_ABOVE = 64 * 1024


class LargePayloadsKeyedByPrefix(InMemoryMessagingService):
    """Offloads payloads above 64 KiB to a deduplicating blob store keyed by their length
    and first KiB, not their content: a large payload that differs from one stored before
    only past its first KiB is stored as, and received with, the earlier one's bytes."""

    def _offload(self, payload: bytes) -> bytes:
        if len(payload) <= _OFFLOAD_ABOVE:
            return payload
        blobs: dict[tuple[int, bytes], bytes] = self.__dict__.setdefault("_blobs", {})
        return blobs.setdefault((len(payload), payload[:1024]), payload)  # the defect

    async def _send(self, queue: str, payload: bytes) -> int:
        return await super()._send(queue, self._offload(payload))

    async def _send_delayed(self, queue: str, payload: bytes, delay_seconds: float) -> int:
        return await super()._send_delayed(queue, self._offload(payload), delay_seconds)

    async def _send_batch(self, queue: str, payloads: list[bytes]) -> list[int]:
        return await super()._send_batch(queue, [self._offload(p) for p in payloads])


class DelayedPayloadsAsText(InMemoryMessagingService):
    """Holds a delayed message in a scheduler that takes text, decoding its payload as
    UTF-8 (invalid bytes replaced): a binary payload sent with a delay comes back
    changed, though send_message and send_batch keep it exact."""

    async def _send_delayed(self, queue: str, payload: bytes, delay_seconds: float) -> int:
        text = payload.decode("utf-8", "replace")  # the defect: bytes taken for text
        return await super()._send_delayed(queue, text.encode(), delay_seconds)


class BatchChecksChunkByChunk(InMemoryMessagingService):
    """Sends a long batch in chunks of 100, checking each chunk's sizes as it comes to it:
    an oversized payload past the first chunk raises MessageTooLarge after the chunks
    before it were sent (a short batch is still rejected whole)."""

    async def send_batch(self, queue: str, payloads: Sequence[bytes]) -> list[int]:
        ids: list[int] = []
        for start in range(0, len(payloads), _CHUNK):  # the defect: checked per chunk
            ids += await super().send_batch(queue, payloads[start : start + _CHUNK])
        return ids


class BatchIdsFromStored(InMemoryMessagingService):
    """Numbers a batch's rows from the highest id stored (the bulk insert computes them;
    single sends take the queue's counter): a batch sent once the queue emptied reuses
    ids it issued before."""

    async def _send_batch(self, queue: str, payloads: list[bytes]) -> list[int]:
        q = self._existing(queue)
        q.ids = itertools.count(max(q.entries, default=0) + 1)  # the defect: from the rows
        return await super()._send_batch(queue, payloads)


SPECIMENS: tuple[Specimen, ...] = (
    Specimen(ReceivePagesOf500, "RECV-1"),
    Specimen(BatchChunksLandLastFirst, "SEND-8"),
    Specimen(AckManyCappedAt256, "CLAIM-5"),
    Specimen(BatchStampedInMillis, "RECV-5"),
    Specimen(LargePayloadsKeyedByPrefix, "SEND-6"),
    Specimen(DelayedPayloadsAsText, "SEND-4"),
    Specimen(BatchChecksChunkByChunk, "SEND-9"),
    Specimen(BatchIdsFromStored, "SEND-11"),
)

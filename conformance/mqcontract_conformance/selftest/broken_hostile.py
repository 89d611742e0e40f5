"""Broken providers for the HOST rules: each mishandles one kind of hostile input."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from mqcontract.capabilities import Capabilities, PushKind
from mqcontract.errors import MessageTooLarge
from mqcontract.messages import Available, Claim, Message, QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService, _Entry, _Queue
from mqcontract.subscription import QueueSubscription
from mqcontract_conformance.selftest.catalogue import Specimen

__all__ = ["SPECIMENS", "MixedPushMemory"]


class SendSkipsNameCheck(InMemoryMessagingService):
    """Validates names only where the queue is looked up, and sends to unknown ones."""

    async def send_batch(self, queue: str, payloads: Sequence[bytes]) -> list[int]:
        if queue not in self._queues:
            return []
        return await super().send_batch(queue, payloads)


class CoercedIds(InMemoryMessagingService):
    """Turns any id into an int first, as a database driver would."""

    async def ack_message(self, queue: str, msg_id: int) -> None:
        await super().ack_message(queue, int(msg_id))


class CountsCharacters(InMemoryMessagingService):
    """Checks the size limit in characters, not bytes."""

    async def send_message(self, queue: str, payload: bytes) -> int:
        if len(payload.decode("utf-8", "replace")) > self.capabilities.max_message_size_bytes:
            raise MessageTooLarge(queue, len(payload), self.capabilities.max_message_size_bytes)
        return self._enqueue(self._queue(queue), bytes(payload), 0.0)


class FloatTimeouts(InMemoryMessagingService):
    """Converts timeouts with float() before checking them."""

    async def receive_messages(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        seconds = float(visibility_timeout)
        return await super().receive_messages(queue, limit, 1.0 if math.isnan(seconds) else seconds)


class TextPayloads(InMemoryMessagingService):
    """Stores payloads as text, replacing what is not UTF-8."""

    async def send_message(self, queue: str, payload: bytes) -> int:
        text = bytes(payload).decode("utf-8", "replace").encode()
        return await super().send_message(queue, text)


#: The push threshold of :class:`MixedPushMemory`, in bytes.
MIXED_THRESHOLD = 1000


class MixedPushMemory(InMemoryMessagingService):
    """Correct: mixed push as over NOTIFY: a payload of at most the threshold (in bytes)
    comes as an unclaimed Message, a larger one as Available, claimed by fetch_message."""

    provider_name = "mixed-memory"

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(
            super().capabilities,
            push=PushKind.MIXED,
            pushed_messages_claimed=False,
            push_payload_threshold_bytes=MIXED_THRESHOLD,
        )

    def _fits(self, payload: bytes) -> bool:
        """Whether ``payload`` is small enough to be pushed whole."""
        return len(payload) <= MIXED_THRESHOLD

    async def _subscribe(self, names: tuple[str, ...]) -> QueueSubscription:
        for name in names:
            self._existing(name)
        subscription = QueueSubscription(names, on_close=self._drop_mixed_sub)
        self.__dict__.setdefault("_mixed_subs", []).append(subscription)
        return subscription

    async def _drop_mixed_sub(self, subscription: QueueSubscription) -> None:
        self.__dict__["_mixed_subs"].remove(subscription)

    async def close(self) -> None:
        for subscription in list(self.__dict__.get("_mixed_subs", [])):
            await subscription.aclose()
        await super().close()

    def _enqueue(self, queue: _Queue, payload: bytes, delay: float) -> int:
        msg_id = super()._enqueue(queue, payload, delay)
        self._announce(queue, queue.entries[msg_id])
        return msg_id

    async def _nack(self, queue: str, claim: Claim) -> None:
        await super()._nack(queue, claim)
        q = self._existing(queue)
        self._announce(q, q.entries[claim.msg_id])

    def _announce(self, queue: _Queue, entry: _Entry) -> None:
        """Notify every subscription to ``queue`` of ``entry`` (a copy, or a signal)."""
        for subscription in self.__dict__.get("_mixed_subs", []):
            if queue.name not in subscription.queues:
                continue
            if self._fits(entry.payload):
                copy = QueuedMessage(
                    entry.msg_id,
                    queue.name,
                    entry.payload,
                    entry.receive_count + 1,  # what a claim now would show
                    entry.enqueued_at,
                )
                subscription.put(Message(copy, claimed=False))
            else:
                subscription.put(Available(queue.name, entry.msg_id))


class MixedCountsCharacters(MixedPushMemory):
    """Counts the mixed-push threshold in characters, so multibyte text over it is pushed whole."""

    def _fits(self, payload: bytes) -> bool:
        return len(payload.decode("utf-8", "replace")) <= MIXED_THRESHOLD


SPECIMENS: tuple[Specimen, ...] = (
    Specimen(SendSkipsNameCheck, "HOST-1"),
    Specimen(TextPayloads, "HOST-2"),
    Specimen(CountsCharacters, "HOST-3"),
    Specimen(FloatTimeouts, "HOST-4"),
    Specimen(CoercedIds, "HOST-5"),
    Specimen(MixedCountsCharacters, "HOST-6", MixedPushMemory),
)

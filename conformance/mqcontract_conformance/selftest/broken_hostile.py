"""Broken providers for the HOST rules: each mishandles one kind of hostile input."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from mqcontract.capabilities import Capabilities, PushKind
from mqcontract.errors import MessageTooLarge, QueueNotFound
from mqcontract.messages import Available, Claim, ClaimRef, Message, QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService, _Entry, _Queue
from mqcontract.subscription import QueueSubscription
from mqcontract.validation import check_queue_name
from mqcontract_conformance.selftest.catalogue import Specimen

__all__ = [
    "SPECIMENS",
    "ChannelResetOnMissingQueue",
    "ClosedChecksArgumentsFirst",
    "HeldIndexOutlivesDelete",
    "MixedPushMemory",
]


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


class HeldIndexOutlivesDelete(InMemoryMessagingService):
    """Settles the claims it made through its own index of them, which delete_queue does not
    purge: a claim made before its queue was deleted raises KeyError instead of an error."""

    async def _receive(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        got = await super()._receive(queue, limit, visibility_timeout)
        index = self.__dict__.setdefault("_held_index", {})
        for message in got:
            index[(queue, message.msg_id)] = message.claim
        return got

    async def _settle(self, queue: str, claim: Claim, *, ack: bool) -> None:
        index = self.__dict__.setdefault("_held_index", {})
        if (queue, claim.msg_id) in index:
            # "We made this claim, so its queue exists": the fast path trusts the index.
            self._queues[queue]  # KeyError once the queue is deleted
        if ack:
            await super()._ack(queue, claim)
        else:
            await super()._nack(queue, claim)
        index.pop((queue, claim.msg_id), None)

    async def _ack(self, queue: str, claim: Claim) -> None:
        await self._settle(queue, claim, ack=True)

    async def _nack(self, queue: str, claim: Claim) -> None:
        await self._settle(queue, claim, ack=False)


class ChannelResetOnMissingQueue(InMemoryMessagingService):
    """Reopens its channel when the broker refuses an operation on a missing queue, as an
    AMQP client must after a 404, so every message it held, on every queue, is released."""

    def _existing(self, name: str) -> _Queue:
        try:
            return super()._existing(name)
        except QueueNotFound:
            self.sever()  # the channel's unacked deliveries go back to their queues
            raise


class ClosedChecksArgumentsFirst(InMemoryMessagingService):
    """Validates queue names at its API edge before delegating, so a closed service
    answers a bad name with InvalidQueueName instead of ProviderClosed."""

    async def create_queue(self, name: str) -> None:
        await super().create_queue(check_queue_name(name))

    async def delete_queue(self, name: str) -> None:
        await super().delete_queue(check_queue_name(name))

    async def queue_exists(self, name: str) -> bool:
        return await super().queue_exists(check_queue_name(name))

    async def send_message(self, queue: str, payload: bytes) -> int:
        return await super().send_message(check_queue_name(queue), payload)

    async def send_batch(self, queue: str, payloads: Sequence[bytes]) -> list[int]:
        return await super().send_batch(check_queue_name(queue), payloads)

    async def receive_messages(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        return await super().receive_messages(check_queue_name(queue), limit, visibility_timeout)

    async def ack_message(self, queue: str, msg_id: int) -> None:
        await super().ack_message(check_queue_name(queue), msg_id)

    async def nack_message(self, queue: str, msg_id: int) -> None:
        await super().nack_message(check_queue_name(queue), msg_id)

    async def ack_claim(self, queue: str, claim: ClaimRef) -> None:
        await super().ack_claim(check_queue_name(queue), claim)

    async def nack_claim(self, queue: str, claim: ClaimRef) -> None:
        await super().nack_claim(check_queue_name(queue), claim)


SPECIMENS: tuple[Specimen, ...] = (
    Specimen(SendSkipsNameCheck, "HOST-1"),
    Specimen(TextPayloads, "HOST-2"),
    Specimen(CountsCharacters, "HOST-3"),
    Specimen(FloatTimeouts, "HOST-4"),
    Specimen(CoercedIds, "HOST-5"),
    Specimen(MixedCountsCharacters, "HOST-6", MixedPushMemory),
    Specimen(HeldIndexOutlivesDelete, "HOST-7"),
    Specimen(ChannelResetOnMissingQueue, "HOST-7"),
    Specimen(ClosedChecksArgumentsFirst, "HOST-7"),
)

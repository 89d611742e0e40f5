"""A service wrapper that notes when each claim began and how each ack ended.

The stress handler needs the start of its claim to know whether it finished inside its
visibility timeout. A claim begins no earlier than the receive or fetch call that made
it (the call's start is a safe lower bound), or the moment a provider queued a claimed
push notification (``put`` is called right after the claim).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from mqcontract.capabilities import Capabilities
from mqcontract.messages import Claim, ClaimRef, Message, MessageNotification, QueuedMessage
from mqcontract.service import MessagingService, Subscription
from mqcontract.subscription import QueueSubscription

__all__ = ["RecordingService"]

ClaimKey = Claim | tuple[str, int, int]


def _key(message: QueuedMessage) -> ClaimKey:
    """The claim itself; a provider that hands out none is keyed by its receive count."""
    if message.claim is not None:
        return message.claim
    return (message.queue_name, message.msg_id, message.receive_count)


class RecordingService:
    """Delegates every operation to ``inner``; records claims and ack outcomes."""

    def __init__(
        self,
        inner: MessagingService,
        *,
        on_ack: Callable[[str, int, bool], None],
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self._on_ack = on_ack
        self._now = now
        self._claims: dict[ClaimKey, float] = {}

    def claim_start(self, message: QueuedMessage) -> float | None:
        """When the claim that produced ``message`` began, if it was seen."""
        return self._claims.pop(_key(message), None)

    def _note(self, messages: Sequence[QueuedMessage], started: float) -> None:
        for m in messages:
            self._claims[_key(m)] = started

    # -- recorded operations -------------------------------------------------------------

    async def receive_messages(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        started = self._now()
        got = await self.inner.receive_messages(queue, limit, visibility_timeout)
        self._note(got, started)
        return got

    async def fetch_message(
        self, queue: str, msg_id: int, visibility_timeout: float
    ) -> QueuedMessage | None:
        started = self._now()
        got = await self.inner.fetch_message(queue, msg_id, visibility_timeout)
        if got is not None:
            self._note([got], started)
        return got

    async def ack_message(self, queue: str, msg_id: int) -> None:
        try:
            await self.inner.ack_message(queue, msg_id)
        except BaseException:
            self._on_ack(queue, msg_id, False)
            raise
        self._on_ack(queue, msg_id, True)

    async def ack_claim(self, queue: str, claim: ClaimRef) -> None:
        msg_id = claim.msg_id
        try:
            await self.inner.ack_claim(queue, claim)
        except BaseException:
            self._on_ack(queue, msg_id, False)
            raise
        self._on_ack(queue, msg_id, True)

    async def ack_claims(self, queue: str, claims: Sequence[ClaimRef]) -> list[bool]:
        try:
            settled = await self.inner.ack_claims(queue, claims)
        except BaseException:
            for claim in claims:
                self._on_ack(queue, claim.msg_id, False)
            raise
        for claim, ok in zip(claims, settled, strict=True):
            self._on_ack(queue, claim.msg_id, ok)
        return settled

    async def subscribe(self, queue: str) -> Subscription:
        return await self.subscribe_many([queue])

    async def subscribe_many(self, queues: Sequence[str]) -> Subscription:
        subscription = await self.inner.subscribe_many(queues)
        if isinstance(subscription, QueueSubscription):
            original = subscription.put

            def put(notification: MessageNotification) -> bool:
                if isinstance(notification, Message) and notification.claimed:
                    self._note([notification.message], self._now())
                return original(notification)

            subscription.put = put  # type: ignore[method-assign]
        return subscription

    # -- plain delegation ----------------------------------------------------------------

    @property
    def provider_name(self) -> str:
        return self.inner.provider_name

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    @property
    def requires_fallback_polling(self) -> bool:
        return self.inner.requires_fallback_polling

    @property
    def fallback_polling_interval(self) -> float | None:
        return self.inner.fallback_polling_interval

    @property
    def supports_fetch_by_message_id(self) -> bool:
        return self.inner.supports_fetch_by_message_id

    async def create_queue(self, name: str) -> None:
        await self.inner.create_queue(name)

    async def delete_queue(self, name: str) -> None:
        await self.inner.delete_queue(name)

    async def queue_exists(self, name: str) -> bool:
        return await self.inner.queue_exists(name)

    async def list_queues(self) -> list[str]:
        return await self.inner.list_queues()

    async def send_message(self, queue: str, payload: bytes) -> int:
        return await self.inner.send_message(queue, payload)

    async def send_message_with_delay(
        self, queue: str, payload: bytes, delay_seconds: float
    ) -> int:
        return await self.inner.send_message_with_delay(queue, payload, delay_seconds)

    async def send_batch(self, queue: str, payloads: Sequence[bytes]) -> list[int]:
        return await self.inner.send_batch(queue, payloads)

    async def nack_message(self, queue: str, msg_id: int) -> None:
        await self.inner.nack_message(queue, msg_id)

    async def nack_claim(self, queue: str, claim: ClaimRef) -> None:
        await self.inner.nack_claim(queue, claim)

    async def close(self) -> None:
        await self.inner.close()

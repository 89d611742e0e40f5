"""The provider boundary: the protocols and the base class providers build on.

The contract in prose (the numbered rules in ``conformance/RULES.md`` are the executable
form):

* Queue names follow :func:`mqcontract.validation.check_queue_name`; a bad name raises
  ``InvalidQueueName`` before the backend is touched. ``create_queue`` and
  ``delete_queue`` are idempotent; every other operation on a missing queue raises
  ``QueueNotFound`` and never creates it.
* ``send_message`` returns an id unique within the queue and increasing for one producer.
* ``receive_messages`` claims up to ``limit`` visible messages, oldest first: each stays
  invisible to every receiver until ``visibility_timeout`` seconds pass, then comes back
  with ``receive_count`` + 1, unless it is acked (gone for good) or nacked (visible now).
* ``ack_message``/``nack_message`` act on a message this provider currently holds for a
  receiver; any other id (unknown, already acked, already nacked) raises
  ``MessageNotFound`` and leaves the provider fully usable.
* Times are float seconds; sub-second values are honoured to the declared precision.
* Every failure is a ``MessagingError``; no operation blocks past its bound.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from mqcontract.capabilities import Capabilities, PushKind
from mqcontract.errors import UnsupportedOperation
from mqcontract.messages import MessageNotification, QueuedMessage
from mqcontract.subscription import QueueSubscription
from mqcontract.validation import check_payload

__all__ = [
    "BaseMessagingService",
    "MessagingService",
    "Subscription",
    "SupportsPushNotifications",
]


@runtime_checkable
class Subscription(Protocol):
    """An async iterator of notifications that stops cleanly after :meth:`aclose`."""

    queues: tuple[str, ...]

    def __aiter__(self) -> Subscription: ...

    async def __anext__(self) -> MessageNotification: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class MessagingService(Protocol):
    """Queue lifecycle, send, receive with a visibility timeout, ack and nack."""

    @property
    def provider_name(self) -> str: ...

    @property
    def capabilities(self) -> Capabilities: ...

    async def create_queue(self, name: str) -> None: ...

    async def delete_queue(self, name: str) -> None: ...

    async def queue_exists(self, name: str) -> bool: ...

    async def list_queues(self) -> list[str]: ...

    async def send_message(self, queue: str, payload: bytes) -> int: ...

    async def send_message_with_delay(
        self, queue: str, payload: bytes, delay_seconds: float
    ) -> int: ...

    async def send_batch(self, queue: str, payloads: Sequence[bytes]) -> list[int]: ...

    async def receive_messages(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]: ...

    async def ack_message(self, queue: str, msg_id: int) -> None: ...

    async def nack_message(self, queue: str, msg_id: int) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class SupportsPushNotifications(MessagingService, Protocol):
    """Push delivery on top of :class:`MessagingService`."""

    async def subscribe(self, queue: str) -> Subscription: ...

    async def subscribe_many(self, queues: Sequence[str]) -> Subscription: ...

    @property
    def requires_fallback_polling(self) -> bool: ...

    @property
    def fallback_polling_interval(self) -> float | None: ...

    @property
    def supports_fetch_by_message_id(self) -> bool: ...

    async def fetch_message(
        self, queue: str, msg_id: int, visibility_timeout: float
    ) -> QueuedMessage | None: ...


class BaseMessagingService(abc.ABC):
    """Shared defaults: capability-derived properties, batch send, context manager.

    Subclasses implement the abstract operations; push and fetch-by-id raise
    ``UnsupportedOperation`` unless overridden.
    """

    provider_name: str = "abstract"

    @property
    @abc.abstractmethod
    def capabilities(self) -> Capabilities:
        """The declared capabilities (constant for the provider's lifetime)."""

    @abc.abstractmethod
    async def create_queue(self, name: str) -> None:
        """Create ``name`` if missing."""

    @abc.abstractmethod
    async def delete_queue(self, name: str) -> None:
        """Delete ``name`` and its messages if present."""

    @abc.abstractmethod
    async def queue_exists(self, name: str) -> bool:
        """Whether ``name`` exists."""

    @abc.abstractmethod
    async def list_queues(self) -> list[str]:
        """Every queue this provider can see, sorted."""

    @abc.abstractmethod
    async def send_message(self, queue: str, payload: bytes) -> int:
        """Enqueue ``payload``; return its id."""

    @abc.abstractmethod
    async def send_message_with_delay(
        self, queue: str, payload: bytes, delay_seconds: float
    ) -> int:
        """Enqueue ``payload``, invisible for ``delay_seconds``; return its id."""

    async def send_batch(self, queue: str, payloads: Sequence[bytes]) -> list[int]:
        """Enqueue several payloads in order; ids are returned in the same order.

        Every payload is checked first, so an oversized one rejects the whole batch.
        """
        for payload in payloads:
            check_payload(queue, payload, self.capabilities)
        return [await self.send_message(queue, payload) for payload in payloads]

    @abc.abstractmethod
    async def receive_messages(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        """Claim up to ``limit`` visible messages, oldest first."""

    @abc.abstractmethod
    async def ack_message(self, queue: str, msg_id: int) -> None:
        """Remove a held message for good."""

    @abc.abstractmethod
    async def nack_message(self, queue: str, msg_id: int) -> None:
        """Release a held message: visible again at once."""

    async def subscribe(self, queue: str) -> QueueSubscription:
        """Push notifications for one queue."""
        return await self.subscribe_many([queue])

    async def subscribe_many(self, queues: Sequence[str]) -> QueueSubscription:
        """Push notifications for several queues on one subscription."""
        raise UnsupportedOperation(self.provider_name, "subscribe")

    async def fetch_message(
        self, queue: str, msg_id: int, visibility_timeout: float
    ) -> QueuedMessage | None:
        """Claim one specific visible message; ``None`` if it is not visible now."""
        raise UnsupportedOperation(self.provider_name, "fetch_message")

    @property
    def requires_fallback_polling(self) -> bool:
        """Whether push can miss messages, so a poller must back it up."""
        return self.capabilities.requires_fallback_polling

    @property
    def fallback_polling_interval(self) -> float | None:
        """Suggested poll interval in seconds when fallback polling is required."""
        return self.capabilities.fallback_polling_interval

    @property
    def supports_fetch_by_message_id(self) -> bool:
        """Whether :meth:`fetch_message` is available."""
        return self.capabilities.fetch_by_id

    @property
    def supports_push(self) -> bool:
        """Whether :meth:`subscribe` delivers anything."""
        return self.capabilities.push is not PushKind.NONE

    async def close(self) -> None:
        """Release connections; further operations raise ``ProviderClosed``."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

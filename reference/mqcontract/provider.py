"""``MessagingProvider``: the one object application code holds, whichever backend it is.

It opens the provider named by configuration and delegates the whole protocol to it,
bounding every operation by ``operation_timeout_seconds`` (``OperationTimeout``) so no
caller waits forever on a wedged backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from types import TracebackType
from typing import Self, TypeVar

from mqcontract.capabilities import Capabilities
from mqcontract.config import MessagingConfig, load_config
from mqcontract.errors import OperationTimeout
from mqcontract.messages import ClaimRef, QueuedMessage
from mqcontract.registry import resolve
from mqcontract.service import MessagingService, Subscription

__all__ = ["MessagingProvider", "open_provider"]

T = TypeVar("T")


async def open_provider(
    config: MessagingConfig | None = None, *, backend: str | None = None
) -> MessagingProvider:
    """Open the provider named by ``backend`` or ``config.backend``."""
    config = config or load_config()
    if backend is not None:
        config = config.with_backend(backend)
    service = await resolve(config.backend)(config)
    return MessagingProvider(service, name=config.backend, timeout=config.operation_timeout_seconds)


class MessagingProvider:
    """Delegates :class:`MessagingService` to the selected provider, with bounds."""

    def __init__(self, service: MessagingService, *, name: str, timeout: float) -> None:
        self.service = service
        self.name = name
        self.timeout = timeout

    async def _bounded(self, operation: str, queue: str, call: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.timeout):
                return await call
        except TimeoutError:
            raise OperationTimeout(operation, self.timeout, queue) from None

    @property
    def provider_name(self) -> str:
        return self.service.provider_name

    @property
    def capabilities(self) -> Capabilities:
        return self.service.capabilities

    @property
    def requires_fallback_polling(self) -> bool:
        return self.service.requires_fallback_polling

    @property
    def fallback_polling_interval(self) -> float | None:
        return self.service.fallback_polling_interval

    @property
    def supports_fetch_by_message_id(self) -> bool:
        return self.service.supports_fetch_by_message_id

    async def create_queue(self, name: str) -> None:
        await self._bounded("create_queue", name, self.service.create_queue(name))

    async def delete_queue(self, name: str) -> None:
        await self._bounded("delete_queue", name, self.service.delete_queue(name))

    async def queue_exists(self, name: str) -> bool:
        return await self._bounded("queue_exists", name, self.service.queue_exists(name))

    async def list_queues(self) -> list[str]:
        return await self._bounded("list_queues", "", self.service.list_queues())

    async def send_message(self, queue: str, payload: bytes) -> int:
        return await self._bounded("send_message", queue, self.service.send_message(queue, payload))

    async def send_message_with_delay(
        self, queue: str, payload: bytes, delay_seconds: float
    ) -> int:
        call = self.service.send_message_with_delay(queue, payload, delay_seconds)
        return await self._bounded("send_message_with_delay", queue, call)

    async def send_batch(self, queue: str, payloads: Sequence[bytes]) -> list[int]:
        return await self._bounded("send_batch", queue, self.service.send_batch(queue, payloads))

    async def receive_messages(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        call = self.service.receive_messages(queue, limit, visibility_timeout)
        return await self._bounded("receive_messages", queue, call)

    async def ack_message(self, queue: str, msg_id: int) -> None:
        await self._bounded("ack_message", queue, self.service.ack_message(queue, msg_id))

    async def nack_message(self, queue: str, msg_id: int) -> None:
        await self._bounded("nack_message", queue, self.service.nack_message(queue, msg_id))

    async def ack_claim(self, queue: str, claim: ClaimRef) -> None:
        await self._bounded("ack_claim", queue, self.service.ack_claim(queue, claim))

    async def nack_claim(self, queue: str, claim: ClaimRef) -> None:
        await self._bounded("nack_claim", queue, self.service.nack_claim(queue, claim))

    async def ack_claims(self, queue: str, claims: Sequence[ClaimRef]) -> list[bool]:
        return await self._bounded("ack_claims", queue, self.service.ack_claims(queue, claims))

    async def fetch_message(
        self, queue: str, msg_id: int, visibility_timeout: float
    ) -> QueuedMessage | None:
        call = self.service.fetch_message(queue, msg_id, visibility_timeout)
        return await self._bounded("fetch_message", queue, call)

    async def subscribe(self, queue: str) -> Subscription:
        return await self._bounded("subscribe", queue, self.service.subscribe(queue))

    async def subscribe_many(self, queues: Sequence[str]) -> Subscription:
        call = self.service.subscribe_many(queues)
        return await self._bounded("subscribe_many", ",".join(queues), call)

    async def close(self) -> None:
        await self._bounded("close", "", self.service.close())

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

"""A ready-made subscription any provider can hand out.

Providers push notifications into it with :meth:`QueueSubscription.put`; consumers iterate
it; ``aclose`` ends the iteration at once and runs the provider's release callback (to
cancel a consumer, UNLISTEN, or requeue claimed messages that were never handed out).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType

from mqcontract.messages import MessageNotification

__all__ = ["QueueSubscription"]

_CLOSED = object()


class QueueSubscription(AsyncIterator[MessageNotification]):
    """An async iterator of notifications for a fixed set of queues."""

    def __init__(
        self,
        queues: tuple[str, ...],
        on_close: Callable[[QueueSubscription], Awaitable[None]] | None = None,
        on_take: Callable[[MessageNotification], None] | None = None,
    ) -> None:
        """``on_take`` runs as each notification is handed to the consumer (so a provider
        knows which pushed claims a caller can hold: one still queued here it cannot)."""
        self.queues = queues
        self._items: asyncio.Queue[object] = asyncio.Queue()
        self._on_close = on_close
        self._on_take = on_take
        self._observers: list[Callable[[MessageNotification], None]] = []
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` ran or the provider ended the subscription."""
        return self._closed

    def observe_takes(self, observer: Callable[[MessageNotification], None]) -> None:
        """Also call ``observer`` with each notification as it is handed out (after
        ``on_take``): the base class records pushed claims this way."""
        self._observers.append(observer)

    def put(self, notification: MessageNotification) -> bool:
        """Queue a notification; False (dropped) if the subscription is closed."""
        if self._closed:
            return False
        self._items.put_nowait(notification)
        return True

    def pending(self) -> list[MessageNotification]:
        """Remove and return notifications not yet handed to the consumer."""
        drained: list[MessageNotification] = []
        while not self._items.empty():
            item = self._items.get_nowait()
            if item is not _CLOSED:
                drained.append(item)  # type: ignore[arg-type]
        return drained

    def __aiter__(self) -> QueueSubscription:
        return self

    async def __anext__(self) -> MessageNotification:
        if self._closed and self._items.empty():
            raise StopAsyncIteration
        item = await self._items.get()
        if item is _CLOSED:
            raise StopAsyncIteration
        if self._on_take is not None:
            self._on_take(item)  # type: ignore[arg-type]
        for observer in self._observers:
            observer(item)  # type: ignore[arg-type]
        return item  # type: ignore[return-value]

    async def aclose(self) -> None:
        """End the subscription; idempotent."""
        if self._closed:
            return
        self._closed = True
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            await on_close(self)
        self.pending()
        self._items.put_nowait(_CLOSED)

    async def __aenter__(self) -> QueueSubscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

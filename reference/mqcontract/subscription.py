"""A ready-made subscription any provider can hand out.

Providers push notifications into it with :meth:`QueueSubscription.put`; consumers iterate
it; ``aclose`` ends the iteration at once and runs the provider's release callback (to
cancel a consumer, UNLISTEN, or requeue claimed messages that were never handed out).

A consumer that treats unclaimed notifications as hints only (the event system) may ask
for them to be folded: see :meth:`QueueSubscription.coalesce_hints`. Past
:data:`HINT_BACKLOG` waiting notifications every subscription folds hints that way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType

from mqcontract.messages import Available, Message, MessageNotification

__all__ = ["QueueSubscription"]

_CLOSED = object()
#: Hints (signals, unclaimed copies) a subscription holds one by one before it folds
#: further ones into a catch-up of their queue: a subscription nobody reads while a
#: producer floods its queue (push of unclaimed copies has no prefetch to bound it) must
#: not grow without end. A catch-up (``Available(queue, None)``) is what the contract
#: allows a provider to say instead of each message, so nothing is lost by it.
HINT_BACKLOG = 10_000


class _Hint:
    """A hint waiting in the buffer; later hints of its queue fold into it."""

    __slots__ = ("notification",)

    def __init__(self, notification: MessageNotification) -> None:
        self.notification = notification


def _is_hint(notification: MessageNotification) -> bool:
    """A signal or an unclaimed copy: it says the queue has work, it holds no claim."""
    return not (type(notification) is Message and notification.claimed)


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
        self._coalescing = False
        #: The untaken hint of each queue, while coalescing.
        self._hints: dict[str, _Hint] = {}
        #: Hints folded into one already waiting (see :meth:`coalesce_hints`).
        self.folded = 0

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` ran or the provider ended the subscription."""
        return self._closed

    def observe_takes(self, observer: Callable[[MessageNotification], None]) -> None:
        """Also call ``observer`` with each notification as it is handed out (after
        ``on_take``): the base class records pushed claims this way."""
        self._observers.append(observer)

    def coalesce_hints(self) -> None:
        """From now on, fold a hint into the one of its queue still waiting here.

        For a consumer to which a signal or an unclaimed copy only says "this queue has
        work, claim it": a burst of N sends then costs it one catch-up, not N wake-ups.
        The waiting hint becomes ``Available(queue, None)`` (catch up on the queue), so
        no folded message is left behind: the catch-up is taken after the last hint
        folded into it arrived, and claims whatever was visible by then. Claimed
        pushes are never folded. Other subscriptions deliver every notification one by
        one, until :data:`HINT_BACKLOG` wait unread.
        """
        self._coalescing = True

    def hint_waiting(self, queue: str) -> bool:
        """Whether a hint of ``queue`` waits here to be folded into:
        a provider may then pass a cheap ``Available(queue, None)`` instead of parsing
        what it heard."""
        return queue in self._hints

    def put(self, notification: MessageNotification) -> bool:
        """Queue a notification; False (dropped) if the subscription is closed."""
        if self._closed:
            return False
        if _is_hint(notification):
            queue = notification.queue_name
            waiting = self._hints.get(queue)
            if waiting is not None:
                waiting.notification = Available(queue, None)
                self.folded += 1
                return True
            if self._coalescing or self._items.qsize() >= HINT_BACKLOG:
                hint = self._hints[queue] = _Hint(notification)
                self._items.put_nowait(hint)
                return True
        self._items.put_nowait(notification)
        return True

    def _unwrap(self, item: object) -> object:
        if type(item) is _Hint:
            notification = item.notification
            queue = notification.queue_name
            if self._hints.get(queue) is item:
                del self._hints[queue]
            return notification
        return item

    def pending(self) -> list[MessageNotification]:
        """Remove and return notifications not yet handed to the consumer."""
        drained: list[MessageNotification] = []
        while not self._items.empty():
            item = self._unwrap(self._items.get_nowait())
            if item is not _CLOSED:
                drained.append(item)  # type: ignore[arg-type]
        return drained

    def __aiter__(self) -> QueueSubscription:
        return self

    async def __anext__(self) -> MessageNotification:
        if self._closed and self._items.empty():
            raise StopAsyncIteration
        item = self._unwrap(await self._items.get())
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

"""The queue listener: turns a subscription's notifications into commands."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from mqcontract.errors import MessagingError
from mqcontract.events.commands import (
    CommandSender,
    Intake,
    ProcessFromMessage,
    ProcessFromMessageEvent,
)
from mqcontract.events.stats import ConsumerStats
from mqcontract.messages import Available, Message
from mqcontract.service import MessagingService, Subscription

__all__ = ["QueueListener"]

log = logging.getLogger(__name__)


class QueueListener:
    """Subscribes to ``queues`` and routes ``Message`` and ``Available`` to their commands."""

    def __init__(
        self,
        service: MessagingService,
        queues: Sequence[str],
        sender: CommandSender,
        stats: ConsumerStats,
    ) -> None:
        self._service = service
        self._queues = list(queues)
        self._sender = sender
        self._stats = stats
        self._subscription: Subscription | None = None

    async def open(self) -> None:
        """Subscribe (raises the provider's error, e.g. QueueNotFound)."""
        self._subscription = await self._service.subscribe_many(self._queues)

    async def run(self) -> None:
        """Route notifications until the subscription ends."""
        if self._subscription is None:
            await self.open()
        assert self._subscription is not None
        try:
            async for note in self._subscription:
                self._stats.notifications += 1
                match note:
                    case Message(message=message, claimed=claimed):
                        await self._sender.send(ProcessFromMessage(message, claimed, Intake.PUSH))
                    case Available(queue_name=queue, msg_id=msg_id):
                        if msg_id is None:
                            self._stats.catch_ups += 1
                        await self._sender.send(ProcessFromMessageEvent(queue, msg_id))
        except MessagingError as exc:
            self._stats.record_error(f"listener: {exc}")
            log.warning("listener stopped: %s", exc)

    async def close(self) -> None:
        """Close the subscription; claimed messages not yet handed out are released."""
        if self._subscription is not None:
            await self._subscription.aclose()

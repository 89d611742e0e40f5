"""The queue listener: turns a subscription's notifications into commands.

An unclaimed pushed copy (or a signal) is only a hint that the queue has work: the
worker must claim the message first. In a burst (commands are waiting already) a copy
becomes a catch-up of its queue instead, and further copies of that queue are folded
into it while it waits for a worker (it claims them in batches when it starts: a
notification that arrived before a catch-up started is on the queue by then). Claimed
pushes are never folded: each is a claim to run or release, stamped with the time it
arrived, so a worker does not start it once it has waited past half its timeout.

Hints are folded earlier still where the subscription can (a :class:`QueueSubscription`
asked to ``coalesce_hints``): a hint that arrives while one of its queue waits in the
subscription, not yet taken by this listener, never becomes a notification of its own.
Both kinds of folding count in ``coalesced``, and every hint heard in ``notifications``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from mqcontract.clock import Clock, SystemClock
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
from mqcontract.subscription import QueueSubscription

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
        clock: Clock | None = None,
    ) -> None:
        self._service = service
        self._queues = list(queues)
        self._sender = sender
        self._stats = stats
        self._clock: Clock = clock or SystemClock()
        self._subscription: Subscription | None = None
        #: Queues with a catch-up sent and not started yet (a worker starting one
        #: calls :meth:`catch_up_started`).
        self._pending_catch_ups: set[str] = set()
        #: Hints the subscription had folded when this listener last took one.
        self._folded_seen = 0

    def catch_up_started(self, queue: str) -> None:
        """A worker starts catching up on ``queue``: later copies need a new one."""
        self._pending_catch_ups.discard(queue)

    async def open(self) -> None:
        """Subscribe (raises the provider's error, e.g. QueueNotFound)."""
        self._subscription = await self._service.subscribe_many(self._queues)
        if isinstance(self._subscription, QueueSubscription):
            self._subscription.coalesce_hints()

    async def run(self) -> None:
        """Route notifications until the subscription ends."""
        if self._subscription is None:
            await self.open()
        assert self._subscription is not None
        try:
            async for note in self._subscription:
                self._stats.notifications += 1
                self._count_folded()
                match note:
                    case Message(message=message, claimed=True):
                        arrived = self._clock.now()
                        command = ProcessFromMessage(message, True, Intake.PUSH, arrived)
                        await self._sender.send(command)
                    case Message(message=message):
                        if not await self._folded(message.queue_name):
                            await self._sender.send(ProcessFromMessage(message, False, Intake.PUSH))
                    case Available(queue_name=queue, msg_id=msg_id):
                        if msg_id is None:
                            self._stats.catch_ups += 1
                        if not await self._folded(queue):
                            await self._sender.send(ProcessFromMessageEvent(queue, msg_id))
        except MessagingError as exc:
            self._stats.record_error(f"listener: {exc}")
            log.warning("listener stopped: %s", exc)

    def _count_folded(self) -> None:
        subscription = self._subscription
        if isinstance(subscription, QueueSubscription) and subscription.folded != self._folded_seen:
            folded = subscription.folded - self._folded_seen
            self._folded_seen = subscription.folded
            self._stats.notifications += folded
            self._stats.coalesced += folded

    async def _folded(self, queue: str) -> bool:
        """Whether a hint for ``queue`` went into a catch-up (sent now, or waiting)."""
        if queue in self._pending_catch_ups:
            self._stats.coalesced += 1
            return True
        if not self._sender.waiting():
            return False  # no burst: the copy itself goes (one claim by id)
        self._pending_catch_ups.add(queue)
        await self._sender.send(ProcessFromMessageEvent(queue, None))
        return True

    async def close(self) -> None:
        """Close the subscription; claimed messages not yet handed out are released."""
        if self._subscription is not None:
            await self._subscription.aclose()

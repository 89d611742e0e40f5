"""Broken multi-queue bookkeeping: providers that file a subscription's state in the wrong place.

Each keeps every promise to a subscription to one queue, alone on it, and breaks one
about a subscription listing several queues or sharing them: what it is parked, pushed
or gives back is looked up under its first queue only, what it gives back is
republished (a fresh enqueued_at), or a closing service ends the subscriptions it finds
on its queues, other services' included.
"""

from __future__ import annotations

import asyncio

from mqcontract.providers.memory import InMemoryMessagingService, _Entry, _Queue, _Subscriber
from mqcontract.subscription import QueueSubscription
from mqcontract_conformance.selftest.catalogue import Specimen

__all__ = [
    "SPECIMENS",
    "BacklogOfFirstQueueOnly",
    "CloseEndsOthersSubscriptions",
    "GiveBackRepublishes",
    "GivesBackFirstQueueOnly",
    "OrphansFiledUnderFirstQueue",
]


class OrphansFiledUnderFirstQueue(InMemoryMessagingService):
    """Parks the open subscribers of a deleted queue, to re-attach them when it is
    created again, under their subscription's first queue instead of the deleted one: a
    subscription whose other queue is deleted and created again never hears of it."""

    async def _delete_queue(self, name: str) -> None:
        queue = self._queues.pop(name, None)
        if queue is None:
            return
        for subscriber in queue.subscribers:
            subscriber.in_flight = {k for k in subscriber.in_flight if k[0] != name}
            for other in subscriber.subscription.queues:
                if (kept := self._queues.get(other)) is not None:
                    self._dispatch(kept)
            first = subscriber.subscription.queues[0]  # the defect: not ``name``
            self.store.orphaned.setdefault(first, []).append(subscriber)


class BacklogOfFirstQueueOnly(InMemoryMessagingService):
    """Declares push_delivers_backlog but dispatches a new subscription the backlog of
    its first queue only: the messages waiting on its other queues are pushed only once
    something new happens there (its timer pump looks only at queues with a timer due)."""

    async def _subscribe(self, names: tuple[str, ...]) -> QueueSubscription:
        targets = [self._existing(name) for name in names]
        subscription = QueueSubscription(names, on_close=self._unsubscribe, on_take=self._taken)
        subscriber = _Subscriber(
            subscription, self._config.prefetch_count, connection=self._connection
        )
        self._subscribers[subscription] = subscriber
        for q in targets:
            q.subscribers.append(subscriber)
        if self._pump_task is None:
            self._pump_task = asyncio.create_task(self._pump())
        self._dispatch_one(targets[0])  # the defect: every target's backlog is due
        return subscription

    async def _pump(self) -> None:
        """Promote and push only the queues whose earliest timer is due."""
        while not self._closed:
            now = self.clock.now()
            for q in list(self._queues.values()):
                if q.subscribers and q.timed and q.timed[0][0] <= now:
                    self._promote(q)
                    self._dispatch(q)
            due = [q.timed[0][0] for q in self._queues.values() if q.subscribers and q.timed]
            self._wake.clear()
            waits: set[asyncio.Task[object]] = {asyncio.create_task(self._wake.wait())}
            if due:
                waits.add(asyncio.create_task(self.clock.sleep(min(due) - self.clock.now())))
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in waits:
                    task.cancel()


class GivesBackFirstQueueOnly(InMemoryMessagingService):
    """Closing a subscription gives back what it claimed and never handed out on its
    first queue only: its other queues' prefetched messages stay held by nobody until
    the push visibility timeout ends."""

    async def _unsubscribe(self, subscription: QueueSubscription) -> None:
        self.__dict__["_closing_first"] = subscription.queues[0]
        try:
            await super()._unsubscribe(subscription)
        finally:
            del self.__dict__["_closing_first"]

    def _give_back(self, q: _Queue, entry: _Entry) -> None:
        first = self.__dict__.get("_closing_first")
        if first is None or q.name == first:  # the defect: the other queues' are kept
            super()._give_back(q, entry)


class GiveBackRepublishes(InMemoryMessagingService):
    """Gives back a pushed claim a closing subscription never handed out by publishing it
    again (same id and payload), which stamps a fresh enqueued_at: released messages
    look as if they were sent when the subscription closed."""

    def _give_back(self, q: _Queue, entry: _Entry) -> None:
        entry.enqueued_at = self.clock.wall()  # the defect: a republish restamps
        super()._give_back(q, entry)


class CloseEndsOthersSubscriptions(InMemoryMessagingService):
    """Its close ends every open subscription on the queues it subscribed to, found in
    the backend's per-queue consumer lists rather than its own: closing one service
    silently ends other services' subscriptions to those queues."""

    async def close(self) -> None:
        if not self._closed:
            names = {name for s in self._subscribers for name in s.queues}
            found = {
                subscriber.subscription
                for name in names
                if (q := self._queues.get(name)) is not None
                for subscriber in q.subscribers
            }
            for subscription in found:
                if subscription not in self._subscribers:  # the defect: not ours
                    await subscription.aclose()
        await super().close()


SPECIMENS: tuple[Specimen, ...] = (
    Specimen(OrphansFiledUnderFirstQueue, "PUSH-18"),
    Specimen(BacklogOfFirstQueueOnly, "PUSH-14"),
    Specimen(GivesBackFirstQueueOnly, "PUSH-6"),
    Specimen(GiveBackRepublishes, "PUSH-6"),
    Specimen(CloseEndsOthersSubscriptions, "PUSH-19"),
)

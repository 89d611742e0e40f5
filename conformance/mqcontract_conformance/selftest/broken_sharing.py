"""Broken sharing: providers that forget a queue or a subscription has company.

Each keeps every promise to a service alone with its queues and subscriptions, and breaks
one about what others (another subscription, another service) share with it: a consumer
found by its queue names, a durable consumer named after its queue, a subscription's
queues cut at 16, queue handles, existence or absence cached per service, queues deleted
by the service that closes or with their last consumer, a deleted queue listed while
somebody listens to it.
"""

from __future__ import annotations

from mqcontract.errors import QueueNotFound
from mqcontract.providers.memory import InMemoryMessagingService, _Queue
from mqcontract.subscription import QueueSubscription
from mqcontract_conformance.selftest.catalogue import Specimen

__all__ = [
    "SPECIMENS",
    "CloseDeletesDeclaredQueues",
    "CloseDeletesEmptyQueues",
    "ConsumerFoundByQueueNames",
    "DurableConsumerPerQueue",
    "ExistenceCachedPerService",
    "ListsQueuesSubscribedTo",
    "MissingQueuesRemembered",
    "QueueHandlesCachedPerService",
    "QueuesDeletedWithLastConsumer",
    "SubscribeManyReadsSixteen",
]


class ConsumerFoundByQueueNames(InMemoryMessagingService):
    """Finds a subscription's consumer by the queue names it lists: the second
    subscription to the same queues takes the first's entry, so closing the first cancels
    the second's consumer while the first's stays, pushed to and never read."""

    async def _subscribe(self, names: tuple[str, ...]) -> QueueSubscription:
        subscription = await super()._subscribe(names)
        self.__dict__.setdefault("_consumers", {})[names] = subscription
        return subscription

    async def _unsubscribe(self, subscription: QueueSubscription) -> None:
        consumers: dict[tuple[str, ...], QueueSubscription] = self.__dict__["_consumers"]
        found = consumers.pop(subscription.queues, subscription)  # the defect: by names
        if found in self._subscribers:
            await super()._unsubscribe(found)


class DurableConsumerPerQueue(InMemoryMessagingService):
    """Names its durable consumer after the queue, so every service's subscriptions to a
    queue share one; when a service's last subscription to the queue closes it deletes
    that consumer, and the other services' subscriptions to the queue go silent."""

    async def _unsubscribe(self, subscription: QueueSubscription) -> None:
        await super()._unsubscribe(subscription)
        for name in subscription.queues:
            queue = self._queues.get(name)
            if queue is not None and not any(name in s.queues for s in self._subscribers):
                queue.subscribers.clear()  # the defect: everybody's consumer, not ours


#: How many queues one blocking read takes.
_READ_LIMIT = 16


class SubscribeManyReadsSixteen(InMemoryMessagingService):
    """Reads a subscription's queues with one blocking read that takes at most 16 names:
    subscribe_many checks every name but listens to the first 16 only, and never
    delivers what is sent to the others."""

    async def _subscribe(self, names: tuple[str, ...]) -> QueueSubscription:
        for name in names:
            self._existing(name)
        subscription = await super()._subscribe(names[:_READ_LIMIT])
        subscription.queues = names  # the caller sees every name it asked for
        return subscription


class QueueHandlesCachedPerService(InMemoryMessagingService):
    """Caches each queue's handle by name and drops it only on its own delete_queue:
    once another service deleted the queue (and created it again), this one keeps
    sending into, and receiving from, the deleted queue."""

    def _existing(self, name: str) -> _Queue:
        handles: dict[str, _Queue] = self.__dict__.setdefault("_handles", {})
        if name not in handles:
            handles[name] = super()._existing(name)
        return handles[name]

    async def _delete_queue(self, name: str) -> None:
        self.__dict__.setdefault("_handles", {}).pop(name, None)
        await super()._delete_queue(name)


class ExistenceCachedPerService(InMemoryMessagingService):
    """Remembers the queues it saw existing and forgets one only on its own delete_queue:
    queue_exists still says True for a queue another service deleted."""

    async def _queue_exists(self, name: str) -> bool:
        seen: set[str] = self.__dict__.setdefault("_seen", set())
        if name not in seen and await super()._queue_exists(name):
            seen.add(name)
        return name in seen

    async def _delete_queue(self, name: str) -> None:
        self.__dict__.setdefault("_seen", set()).discard(name)
        await super()._delete_queue(name)


class MissingQueuesRemembered(InMemoryMessagingService):
    """Remembers the queues it found missing, to spare a lookup per call, and forgets one
    only on its own create_queue: once another service created the queue again, this
    one's sends and receives still raise QueueNotFound."""

    def _existing(self, name: str) -> _Queue:
        missing: set[str] = self.__dict__.setdefault("_missing", set())
        if name in missing:
            raise QueueNotFound(name)
        try:
            return super()._existing(name)
        except QueueNotFound:
            missing.add(name)
            raise

    async def _create_queue(self, name: str) -> None:
        self.__dict__.setdefault("_missing", set()).discard(name)
        await super()._create_queue(name)


class _TidiesOnClose(InMemoryMessagingService):
    """Remembers the queues it created and, when it closes, deletes those
    :meth:`_doomed` picks."""

    async def _create_queue(self, name: str) -> None:
        self.__dict__.setdefault("_declared", set()).add(name)
        await super()._create_queue(name)

    def _doomed(self, name: str) -> bool:
        return True

    async def close(self) -> None:
        if not self._closed:
            for name in sorted(self.__dict__.get("_declared", ())):
                if self._doomed(name):
                    await self._delete_queue(name)
        await super().close()


class CloseDeletesDeclaredQueues(_TidiesOnClose):
    """Deletes the queues it declared when it closes (tidying up after itself): every
    queue this service created goes, those other services created too and still use
    included, with their messages."""


class CloseDeletesEmptyQueues(_TidiesOnClose):
    """Tidies up on close: deletes the queues it created that hold no message, taken
    for temporary ones, though other services still use them."""

    def _doomed(self, name: str) -> bool:
        queue = self._queues.get(name)
        return queue is not None and not queue.entries


class QueuesDeletedWithLastConsumer(InMemoryMessagingService):
    """Declares its queues auto-delete, as RabbitMQ's flag does: a queue goes when its
    last subscription closes, the service's close included, whoever still uses it."""

    async def _unsubscribe(self, subscription: QueueSubscription) -> None:
        await super()._unsubscribe(subscription)
        for name in subscription.queues:
            queue = self._queues.get(name)
            if queue is not None and not queue.subscribers:
                await self._delete_queue(name)


class ListsQueuesSubscribedTo(InMemoryMessagingService):
    """Builds list_queues from the queues and the bindings of open subscriptions: a
    deleted queue is listed (while queue_exists says False) for as long as anybody is
    subscribed to it."""

    async def _list_queues(self) -> list[str]:
        return sorted(set(self._queues) | set(self.store.orphaned))  # deleted, still bound


SPECIMENS: tuple[Specimen, ...] = (
    Specimen(ConsumerFoundByQueueNames, "PUSH-19"),
    Specimen(DurableConsumerPerQueue, "PUSH-19"),
    Specimen(SubscribeManyReadsSixteen, "PUSH-5"),
    Specimen(QueueHandlesCachedPerService, "LIFE-14"),
    Specimen(ExistenceCachedPerService, "LIFE-14"),
    Specimen(MissingQueuesRemembered, "LIFE-14"),
    Specimen(CloseDeletesDeclaredQueues, "LIFE-15"),
    Specimen(CloseDeletesEmptyQueues, "LIFE-15"),
    Specimen(QueuesDeletedWithLastConsumer, "LIFE-15"),
    Specimen(ListsQueuesSubscribedTo, "LIFE-5"),
)

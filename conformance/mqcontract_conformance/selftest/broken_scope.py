"""Broken scope: providers that reach past the queue or the subscription they were given.

Each keeps every promise about one queue at a time and breaks one about several: names
matched by prefix, a storage key cut short, a claimed push handed to every subscriber,
the wrong queue named, a close that keeps what its subscriptions took, or a signal
subscription left unaware of what was sent while its listener was down.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref

from mqcontract.errors import QueueNotFound
from mqcontract.messages import Available, Message
from mqcontract.providers.memory import InMemoryMessagingService, MemoryStore, _Queue
from mqcontract.service import MessagingService
from mqcontract.subscription import QueueSubscription
from mqcontract_conformance.selftest.catalogue import Specimen
from mqcontract_conformance.selftest.harness import SpecimenHarness
from mqcontract_conformance.selftest.references import SignalMemory

__all__ = [
    "SPECIMENS",
    "ClaimedPushToEverySubscriber",
    "CloseKeepsWhatSubscriptionsTook",
    "DeleteByPrefix",
    "DeleteEndsOwnSubscriptions",
    "ListenerBackMidBatch",
    "ListenerBackWithoutCatchUp",
    "SignalListenerHarness",
    "SignalListenerMemory",
    "StorageKeyTruncated",
    "SubscribeByPrefix",
    "SubscribeManyNamesTheFirst",
    "SubscriptionForgetsDeletedQueue",
]


class SubscribeByPrefix(InMemoryMessagingService):
    """Subscribes by name pattern (``PSUBSCRIBE name*``): a subscriber of ``jobs`` is also
    pushed, and holds, the messages of ``jobs_dlq`` and every other queue whose name
    extends ``jobs``."""

    async def _subscribe(self, names: tuple[str, ...]) -> QueueSubscription:
        subscription = await super()._subscribe(names)
        subscriber = self._subscribers[subscription]
        for name, queue in self._queues.items():
            if name not in names and any(name.startswith(n) for n in names):
                queue.subscribers.append(subscriber)
                self._dispatch(queue)
        return subscription


class DeleteByPrefix(InMemoryMessagingService):
    """Deletes by name pattern (``SCAN MATCH name*`` then ``DEL``): deleting ``jobs``
    also deletes ``jobs_dlq`` with every message in it."""

    async def _delete_queue(self, name: str) -> None:
        for other in [n for n in self._queues if n.startswith(name)]:
            await super()._delete_queue(other)


#: The names each store's services created (the registry beside the truncated keys).
_NAMES: weakref.WeakKeyDictionary[MemoryStore, set[str]] = weakref.WeakKeyDictionary()
#: Where the truncated storage key ends (an identifier limit once a prefix is added).
_KEY = 40


class StorageKeyTruncated(InMemoryMessagingService):
    """Keys its storage on the first 40 characters of a name while a registry keeps full
    names: two valid names sharing those 40 characters share one queue, messages and
    all."""

    @property
    def _names(self) -> set[str]:
        return _NAMES.setdefault(self.store, set())

    def _existing(self, name: str) -> _Queue:
        if name not in self._names:
            raise QueueNotFound(name)
        return super()._existing(name[:_KEY])

    async def _create_queue(self, name: str) -> None:
        self._names.add(name)
        self._queues.setdefault(name[:_KEY], _Queue(name))

    async def _delete_queue(self, name: str) -> None:
        self._names.discard(name)
        if not any(n[:_KEY] == name[:_KEY] for n in self._names):
            await super()._delete_queue(name[:_KEY])

    async def _queue_exists(self, name: str) -> bool:
        return name in self._names

    async def _list_queues(self) -> list[str]:
        return sorted(self._names)


class ClaimedPushToEverySubscriber(InMemoryMessagingService):
    """Publishes each claimed push on a channel every subscriber of the queue reads: one
    subscriber holds the claim, and every competing worker is handed the message."""

    def _dispatch(self, queue: _Queue) -> None:
        if not queue.subscribers or queue.push_paused:
            return
        timeout = self._config.push_visibility_timeout_seconds
        while True:
            room = [s for s in queue.subscribers if len(s.in_flight) < s.capacity]
            entry = self._pop_visible(queue) if room else None
            if entry is None:
                return
            subscriber = room[queue.turn % len(room)]
            queue.turn += 1
            note = Message(self._claim(queue, entry, timeout), claimed=True)
            entry.holder = subscriber
            entry.connection = subscriber.connection
            entry.waiting = note
            subscriber.in_flight.add((queue.name, entry.msg_id))
            for listener in queue.subscribers:  # the defect: one claim, every listener
                listener.subscription.put(note)


class SubscribeManyNamesTheFirst(InMemoryMessagingService):
    """Checks a subscription's queues in one query and, when one is missing, raises
    ``QueueNotFound`` naming the first queue of the list (which exists)."""

    async def _subscribe(self, names: tuple[str, ...]) -> QueueSubscription:
        if any(name not in self._queues for name in names):
            raise QueueNotFound(names[0])
        return await super()._subscribe(names)


class CloseKeepsWhatSubscriptionsTook(InMemoryMessagingService):
    """Closes fast: it drops its subscriptions without releasing the pushed messages they
    never handed out, so they stay held for the whole push timeout."""

    async def close(self) -> None:
        if self._closed:
            return
        for subscription, subscriber in list(self._subscribers.items()):
            subscription._on_close = None  # skip the release, as a "fast shutdown" does
            await subscription.aclose()
            del self._subscribers[subscription]
            for queue in self._queues.values():
                if subscriber in queue.subscribers:
                    queue.subscribers.remove(subscriber)
        self._closed = True
        if self._pump_task is not None:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump_task
        if self._owns_store:
            self._queues.clear()


class SubscriptionForgetsDeletedQueue(InMemoryMessagingService):
    """Drops a deleted queue's subscribers with it, as a broker cancels their consumers,
    and never looks again: a subscription open across the queue's deletion and creation
    stays open and silent for good."""

    async def _create_queue(self, name: str) -> None:
        self._queues.setdefault(name, _Queue(name))


class DeleteEndsOwnSubscriptions(InMemoryMessagingService):
    """Deleting a queue ends this service's own subscriptions that list it, silently
    (no QueueNotFound), as if their consumers had nothing left to do; another service's
    delete leaves them open and they hear the queue again once it is created."""

    async def _delete_queue(self, name: str) -> None:
        queue = self._queues.get(name)
        listed = [] if queue is None else queue.subscribers
        mine = [s.subscription for s in listed if s.subscription in self._subscribers]
        await super()._delete_queue(name)
        for subscription in mine:  # the defect: ended, not told
            await subscription.aclose()


#: How long the listener of :class:`SignalListenerMemory` takes to come back.
LISTENER_DOWN = 0.5


class SignalListenerMemory(SignalMemory):
    """Correct: signals travel over a listener connection that can die, and what is
    announced while it is down is gone (as PostgreSQL NOTIFY or Redis pub/sub); when it
    comes back it signals a catch-up (``Available(queue, None)``) for each queue its
    subscriptions list."""

    def kill_listener(self) -> None:
        self.__dict__["_down"] = True
        task = asyncio.get_running_loop().create_task(self._come_back())
        self.__dict__.setdefault("_returns", set()).add(task)
        task.add_done_callback(self.__dict__["_returns"].discard)

    async def _come_back(self) -> None:
        await self.clock.sleep(LISTENER_DOWN)
        self.__dict__["_down"] = False
        if not self._closed:
            self._catch_up()

    def _catch_up(self) -> None:
        for sub in getattr(self, "_own_subs", []):
            for queue in sub.queues:
                sub.put(Available(queue, None))

    def _announce(self, queue: str, msg_id: int) -> None:
        own = getattr(self, "_own_subs", [])
        for sub in list(self._signal_subs):
            if queue in sub.queues and not (self.__dict__.get("_down") and sub in own):
                sub.put(Available(queue, msg_id + self.announce_offset))

    async def close(self) -> None:
        for task in list(self.__dict__.get("_returns", ())):
            task.cancel()
        await super().close()


class ListenerBackWithoutCatchUp(SignalListenerMemory):
    """Its listener reconnects without saying that signals were lost meanwhile (no
    catch-up): a subscription never hears of what was sent while it was down."""

    def _catch_up(self) -> None:
        """The defect: the reconnect is silent."""


class ListenerBackMidBatch(SignalListenerMemory):
    """Its listener is back while a batch is being announced: the first two signals are
    lost, the third arrives, and nothing says a catch-up is due (a batch announced one
    NOTIFY at a time across a reconnect)."""

    def kill_listener(self) -> None:
        self.__dict__["_lose"] = 2  # back in time for the third signal

    def _catch_up(self) -> None:
        """The defect: a silent reconnect."""

    def _announce(self, queue: str, msg_id: int) -> None:
        if self.__dict__.get("_lose", 0) > 0:
            self.__dict__["_lose"] -= 1  # sent while down: gone
            return
        super()._announce(queue, msg_id)


class SignalListenerHarness(SpecimenHarness):
    """The specimen harness whose ``kill_listener`` drops the provider's signal listener."""

    async def kill_listener(self, service: MessagingService) -> None:
        assert isinstance(service, SignalListenerMemory)
        service.kill_listener()


SPECIMENS: tuple[Specimen, ...] = (
    Specimen(SubscribeByPrefix, "PUSH-15"),
    Specimen(DeleteByPrefix, "LIFE-13"),
    Specimen(StorageKeyTruncated, "LIFE-9"),
    Specimen(ClaimedPushToEverySubscriber, "PUSH-16"),
    Specimen(SubscribeManyNamesTheFirst, "PUSH-9"),
    Specimen(CloseKeepsWhatSubscriptionsTook, "PUSH-17"),
    Specimen(SubscriptionForgetsDeletedQueue, "PUSH-18"),
    Specimen(DeleteEndsOwnSubscriptions, "PUSH-18"),
    Specimen(
        ListenerBackWithoutCatchUp,
        "PUSH-20",
        reference=SignalListenerMemory,
        harness=SignalListenerHarness,
    ),
    Specimen(
        ListenerBackMidBatch,
        "PUSH-20",
        reference=SignalListenerMemory,
        harness=SignalListenerHarness,
    ),
)

"""Correct providers the broken specimens derive from, beyond the plain in-memory one.

Each turns on a capability the in-memory provider lacks (signal-only push, ids chosen by
a foreign producer, a store that outlives a crash of its "server") or drops one
(``list_queues``), so rules that apply only then have a correct provider to pass, and a
specimen derived from it breaks just one promise.
"""

from __future__ import annotations

import asyncio
import dataclasses
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mqcontract.capabilities import Capabilities, PushKind
from mqcontract.clock import Clock
from mqcontract.config import MemoryConfig
from mqcontract.messages import Available, Claim, Message, MessageNotification, QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService, MemoryStore, _Entry, _Queue
from mqcontract.subscription import QueueSubscription

__all__ = [
    "DeliveriesInFlight",
    "ForeignIdsMemory",
    "RestartableMemory",
    "RestartableStore",
    "SignalMemory",
    "Unlisted",
]


#: The open signal subscriptions of each store (what the store's services share).
_SIGNAL_SUBS: weakref.WeakKeyDictionary[MemoryStore, list[QueueSubscription]] = (
    weakref.WeakKeyDictionary()
)


class SignalMemory(InMemoryMessagingService):
    """A correct signal-only provider (Available + fetch by id), to exercise SIGNAL rules."""

    provider_name = "signal-memory"
    #: Added to the id each ``Available`` announces (0: the true id).
    announce_offset = 0

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(super().capabilities, push=PushKind.SIGNAL)

    @property
    def _signal_subs(self) -> list[QueueSubscription]:
        """Every open signal subscription of the store's services: a send through one
        service is announced to the subscriptions of all, as a server announces it."""
        return _SIGNAL_SUBS.setdefault(self.store, [])

    async def _subscribe(self, names: tuple[str, ...]) -> QueueSubscription:
        for name in names:
            self._existing(name)
        sub = QueueSubscription(names, on_close=self._drop_signal_sub)
        self._signal_subs.append(sub)
        self._own_subs = [*getattr(self, "_own_subs", []), sub]
        return sub

    async def _drop_signal_sub(self, sub: QueueSubscription) -> None:
        self._signal_subs.remove(sub)

    async def close(self) -> None:
        for sub in list(getattr(self, "_own_subs", [])):
            await sub.aclose()
        await super().close()

    def _enqueue(self, queue: _Queue, payload: bytes, delay: float) -> int:
        msg_id = super()._enqueue(queue, payload, delay)
        self._announce(queue.name, msg_id)
        return msg_id

    async def _nack(self, queue: str, claim: Claim) -> None:
        await super()._nack(queue, claim)
        self._announce(queue, claim.msg_id)  # visible again: announced, as PGMQ's nack does

    def _announce(self, queue: str, msg_id: int) -> None:
        for sub in list(self._signal_subs):
            if queue in sub.queues:
                sub.put(Available(queue, msg_id + self.announce_offset))


class ForeignIdsMemory(InMemoryMessagingService):
    """Correct: the in-memory provider where a foreign producer may choose message ids
    (as on RabbitMQ), so two messages can share one; each claim finds its own message
    by its token."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._public: dict[tuple[str, int], int] = {}

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(super().capabilities, producer_assigned_ids=True)

    def publish_foreign(self, queue: str, msg_id: int, payload: bytes) -> None:
        """What the harness hook calls: a message whose id the producer chose."""
        key = self._enqueue(self._queue(queue), payload, 0.0)
        self._public[(queue, key)] = msg_id

    def _claim(self, queue: _Queue, entry: _Entry, visibility_timeout: float) -> QueuedMessage:
        got = super()._claim(queue, entry, visibility_timeout)
        public = self._public.get((queue.name, entry.msg_id))
        if public is None or got.claim is None:
            return got
        claim = dataclasses.replace(got.claim, msg_id=public)
        return dataclasses.replace(got, msg_id=public, claim=claim)

    def _entry_of(self, queue: _Queue, claim: Claim) -> _Entry | None:
        for entry in queue.entries.values():
            if entry.claim_token == claim.token:
                return entry
        return None

    def _held_entry(self, queue: _Queue, claim: Claim) -> _Entry:
        entry = self._entry_of(queue, claim)
        if entry is not None:
            claim = dataclasses.replace(claim, msg_id=entry.msg_id)
        return super()._held_entry(queue, claim)


class Unlisted(InMemoryMessagingService):
    """Correct: does not claim ``list_queues``, so the base class refuses it."""

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(super().capabilities, list_queues=False)


@dataclass(eq=False)
class RestartableStore(MemoryStore):
    """The storage of an in-process "server" that can crash and start again.

    What a crash keeps is what a durable server writes down before it answers: queues,
    messages, ids, receive counts and claim deadlines. What it loses is what only the
    running process knew: its consumers (every subscription must be attached again), and
    whatever a provider chose to keep only in memory, which it registers in
    :attr:`on_crash` as the way to undo it.
    """

    #: Called (and forgotten) when the server crashes: each undoes something kept only
    #: in the server's memory.
    on_crash: list[Callable[[], None]] = field(default_factory=list)
    connections: weakref.WeakSet[RestartableMemory] = field(default_factory=weakref.WeakSet)
    #: Until when (the clock's time) receives find nothing: the server replays its log
    #: after a restart (set by :class:`~.broken_durability.InProcessServer`).
    serving_from: float = 0.0

    def crash(self) -> None:
        """The server process dies (SIGKILL) and starts again on its storage."""
        for undo in self.on_crash:
            undo()
        self.on_crash.clear()
        for queue in self.queues.values():
            queue.subscribers.clear()  # the new process has no consumers yet
            for entry in queue.entries.values():
                entry.holder, entry.waiting = None, None
        for service in list(self.connections):
            service.server_restarted()


class RestartableMemory(InMemoryMessagingService):
    """Correct: the in-memory provider on a :class:`RestartableStore`, which promises
    ``survives_restart``; when its connection comes back after a crash it attaches its
    open subscriptions again, so push resumes without the caller doing anything."""

    def __init__(
        self,
        config: MemoryConfig | None = None,
        *,
        clock: Clock | None = None,
        store: MemoryStore | None = None,
    ) -> None:
        super().__init__(config, clock=clock, store=store)
        if isinstance(self.store, RestartableStore):
            self.store.connections.add(self)

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(super().capabilities, survives_restart=True)

    async def _receive(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        serving_from = getattr(self.store, "serving_from", 0.0)
        if self.clock.now() < serving_from:
            return []  # the server is still replaying its log after a restart
        return await super()._receive(queue, limit, visibility_timeout)

    def until_crash(self, undo: Callable[[], None]) -> None:
        """Something the server keeps only in memory: ``undo`` runs if it crashes (a store
        that cannot crash never runs it)."""
        if isinstance(self.store, RestartableStore):
            self.store.on_crash.append(undo)

    def server_restarted(self) -> None:
        """The connection to the server dropped and came back: the server knows none of
        this service's consumers, so each open subscription is attached again."""
        if self._closed:
            return
        for subscription, subscriber in list(self._subscribers.items()):
            subscriber.in_flight.clear()
            for name in subscription.queues:
                q = self._queues.get(name)
                if q is not None and subscriber not in q.subscribers:
                    q.subscribers.append(subscriber)
                    self._dispatch(q)
        self._wake.set()


class DeliveriesInFlight(InMemoryMessagingService):
    """Pushes travel, as a broker's do: a message pushed once the subscription exists is
    claimed when it is pushed and reaches its subscription one loop step later, so some
    are on their way when the subscription closes. One that arrives after the close goes
    straight back to its queue; one voided on its way (``sever``) is dropped."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Pushed claims on their way to a subscription, by ``id`` of the notification.
        self._travelling: dict[int, Message] = {}

    async def _subscribe(self, names: tuple[str, ...]) -> QueueSubscription:
        subscription = await super()._subscribe(names)
        arrive = subscription.put
        loop = asyncio.get_running_loop()

        def travel(note: MessageNotification) -> bool:
            if isinstance(note, Message):
                self._travelling[id(note)] = note
            loop.call_soon(self._arrive, arrive, note)
            return True

        subscription.put = travel  # type: ignore[method-assign, assignment]
        return subscription

    def _arrive(
        self, arrive: Callable[[MessageNotification], bool], note: MessageNotification
    ) -> None:
        if not isinstance(note, Message):
            arrive(note)
            return
        self._travelling.pop(id(note), None)
        entry = self._entry_waiting(note)
        if entry is None:
            return  # voided on its way (the claim was released by a sever)
        if not arrive(note):
            self._arrived_after_close(note)

    def _entry_waiting(self, note: Message) -> _Entry | None:
        """The entry whose pushed claim ``note`` still is, if any."""
        q = self._queues.get(note.queue_name)
        entry = q.entries.get(note.message.msg_id) if q is not None else None
        if entry is None or entry.waiting is not note or not entry.held:
            return None
        return entry

    def _arrived_after_close(self, note: Message) -> None:
        """Correct: the claim it carries is released at once."""
        q = self._queues.get(note.queue_name)
        entry = self._entry_waiting(note)
        if q is not None and entry is not None:
            self._give_back(q, entry)

    def sever(self) -> None:
        """As the memory provider's: a push still on its way was never a delivery."""
        for note in self._travelling.values():
            entry = self._entry_waiting(note)
            if entry is not None:
                entry.receive_count -= 1
                entry.waiting = None
        self._travelling.clear()
        super().sever()

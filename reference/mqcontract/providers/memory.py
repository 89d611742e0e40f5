"""The in-memory provider: complete semantics, in process, with an injectable clock.

Visibility timeouts, delays, FIFO with redelivered messages back at their original
position, nack, fetch-by-id and full-message push (each pushed message is claimed for
``push_visibility_timeout_seconds`` and must be acked or nacked; until the subscription
hands it out nobody holds it, so an earlier holder's ack of the same id raises
``MessageNotFound``, as on RabbitMQ: PUSH-12). With a
:class:`~mqcontract.clock.VirtualClock` every timing rule runs instantly.

Every claim gets a token from the store's counter; a settlement must name the entry's
current token while the entry is held, so a lapsed, settled or superseded claim is
``StaleClaim``. Services built on one :class:`MemoryStore` share their queues, as two
processes share a broker (the harness does this, so rules can play a second consumer).

A service's claims live on its "connection" to the store; :meth:`InMemoryMessagingService.sever`
drops that connection as a broker drops a closed channel's deliveries (see there).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from dataclasses import dataclass, field

from mqcontract.capabilities import Capabilities, PayloadFidelity, PushKind, RequeuePosition
from mqcontract.clock import Clock, SystemClock
from mqcontract.config import MemoryConfig, MessagingConfig
from mqcontract.errors import ProviderClosed, QueueNotFound, StaleClaim, StaleReason
from mqcontract.messages import Claim, Message, MessageNotification, QueuedMessage
from mqcontract.service import BaseMessagingService
from mqcontract.subscription import QueueSubscription
from mqcontract.validation import check_queue_name, is_message_id

__all__ = ["InMemoryMessagingService", "MemoryStore", "open_memory"]


@dataclass(eq=False)
class _Entry:
    msg_id: int
    payload: bytes
    enqueued_at: float
    visible_at: float
    receive_count: int = 0
    held: bool = False
    version: int = 0
    holder: _Subscriber | None = None
    #: The token of the latest claim (0: never claimed).
    claim_token: int = 0
    claim_timeout: float = 0.0
    #: The notification of a pushed claim while it waits in its subscription: nobody
    #: holds it yet, so an ack or nack naming the id comes from an earlier claim and
    #: must not settle it. None once handed out, and for claims made by receive.
    waiting: Message | None = None
    #: The connection (of a service) whose claim holds it: :meth:`~InMemoryMessagingService.sever`
    #: releases the claims of the connection it drops.
    connection: object | None = None

    def snapshot(self, queue: str) -> QueuedMessage:
        claim = Claim(queue, self.msg_id, self.claim_token, self.claim_timeout)
        return QueuedMessage(
            self.msg_id, queue, self.payload, self.receive_count, self.enqueued_at, claim
        )


@dataclass(eq=False)
class _Subscriber:
    subscription: QueueSubscription
    capacity: int
    in_flight: set[tuple[str, int]] = field(default_factory=set)
    #: The connection of the service that subscribed: its pushed claims live on it.
    connection: object | None = None


@dataclass(eq=False)
class _Queue:
    name: str
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    entries: dict[int, _Entry] = field(default_factory=dict)
    #: msg_ids that may be visible now (lazy: stale items are skipped), lowest id first
    ready: list[int] = field(default_factory=list)
    #: (visible_at, msg_id, version) for messages that become visible later
    timed: list[tuple[float, int, int]] = field(default_factory=list)
    subscribers: list[_Subscriber] = field(default_factory=list)
    turn: int = 0
    push_paused: bool = False


@dataclass(eq=False)
class MemoryStore:
    """The queues and the claim counter that services on one in-process "broker" share."""

    queues: dict[str, _Queue] = field(default_factory=dict)
    #: The open subscribers of deleted queues, by name: a queue created again under that
    #: name is pushed to them (a subscription outlives its queue's deletion, PUSH-18).
    orphaned: dict[str, list[_Subscriber]] = field(default_factory=dict)
    tokens: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class InMemoryMessagingService(BaseMessagingService):
    """Queues held in this process; nothing survives :meth:`close` unless a
    :class:`MemoryStore` was given (then the store's owner decides)."""

    provider_name = "memory"

    def __init__(
        self,
        config: MemoryConfig | None = None,
        *,
        clock: Clock | None = None,
        store: MemoryStore | None = None,
    ) -> None:
        self._config = config or MemoryConfig()
        self.clock: Clock = clock or SystemClock()
        self._owns_store = store is None
        self.store = store or MemoryStore()
        self._queues: dict[str, _Queue] = self.store.queues
        self._closed = False
        self._wake = self.store.wake
        self._pump_task: asyncio.Task[None] | None = None
        self._subscribers: dict[QueueSubscription, _Subscriber] = {}
        #: This service's connection to the store: what its claims are held on.
        self._connection = object()
        self._capabilities = Capabilities(
            push=PushKind.FULL,
            pushed_messages_claimed=True,
            fetch_by_id=True,
            requires_fallback_polling=False,
            fallback_polling_interval=None,
            delay=True,
            visibility_precision_seconds=0.001,
            requeue_position=RequeuePosition.ORIGINAL,
            exact_receive_count=True,
            fifo=True,
            payload_fidelity=PayloadFidelity.BYTES,
            max_message_size_bytes=self._config.max_message_size_bytes,
            list_queues=True,
            # The store lives in this process: a restart of it is a restart of the store.
            survives_restart=False,
            push_delivers_backlog=True,  # a new subscriber is dispatched what is visible
            # Built without a store, a service keeps one of its own: nothing is shared.
            shared_backend=store is not None,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    # -- helpers -----------------------------------------------------------------------

    def _queue(self, name: str) -> _Queue:
        """The queue, checked in full: for fault hooks, and subclasses overriding public methods."""
        if self._closed:
            raise ProviderClosed(self.provider_name)
        return self._existing(check_queue_name(name))

    def _existing(self, name: str) -> _Queue:
        """The queue named ``name`` (already checked); ``QueueNotFound`` if missing."""
        queue = self._queues.get(name)
        if queue is None:
            raise QueueNotFound(name)
        return queue

    def _schedule(self, queue: _Queue, entry: _Entry) -> None:
        entry.version += 1
        if entry.visible_at <= self.clock.now():
            heapq.heappush(queue.ready, entry.msg_id)
        else:
            heapq.heappush(queue.timed, (entry.visible_at, entry.msg_id, entry.version))
            self._wake.set()

    def _promote(self, queue: _Queue) -> None:
        now = self.clock.now()
        while queue.timed and queue.timed[0][0] <= now:
            _, msg_id, version = heapq.heappop(queue.timed)
            entry = queue.entries.get(msg_id)
            if entry is None or entry.version != version:
                continue
            if entry.held:  # its visibility expired: the claim is void
                entry.held = False
                self._detach(queue, entry)
            heapq.heappush(queue.ready, msg_id)

    def _detach(self, queue: _Queue, entry: _Entry) -> None:
        if entry.holder is not None:
            entry.holder.in_flight.discard((queue.name, entry.msg_id))
            entry.holder = None

    def _pop_visible(self, queue: _Queue) -> _Entry | None:
        self._promote(queue)
        now = self.clock.now()
        while queue.ready:
            msg_id = heapq.heappop(queue.ready)
            entry = queue.entries.get(msg_id)
            if entry is not None and not entry.held and entry.visible_at <= now:
                return entry
        return None

    def _claim(self, queue: _Queue, entry: _Entry, visibility_timeout: float) -> QueuedMessage:
        entry.receive_count += 1
        entry.held = True
        entry.waiting = None
        entry.claim_token = next(self.store.tokens)
        entry.claim_timeout = visibility_timeout
        entry.visible_at = self.clock.now() + visibility_timeout
        entry.connection = self._connection
        self._schedule(queue, entry)
        return entry.snapshot(queue.name)

    def _held_entry(self, queue: _Queue, claim: Claim) -> _Entry:
        """The entry ``claim`` still holds; else ``StaleClaim`` saying why."""
        self._promote(queue)
        entry = queue.entries.get(claim.msg_id) if is_message_id(claim.msg_id) else None
        if entry is None:
            raise StaleClaim(queue.name, claim.msg_id, StaleReason.SETTLED)
        if entry.claim_token != claim.token:
            newer = isinstance(claim.token, int) and claim.token < entry.claim_token
            reason = StaleReason.SUPERSEDED if newer else StaleReason.NOT_HELD
            raise StaleClaim(queue.name, claim.msg_id, reason)
        if not entry.held:
            raise StaleClaim(queue.name, claim.msg_id, StaleReason.LAPSED)
        if entry.waiting is not None:  # still queued in a subscription: nobody has it
            raise StaleClaim(queue.name, claim.msg_id, StaleReason.NOT_HELD)
        return entry

    def _enqueue(self, queue: _Queue, payload: bytes, delay: float) -> int:
        now = self.clock.now()
        entry = _Entry(next(queue.ids), payload, self.clock.wall(), now + delay)
        queue.entries[entry.msg_id] = entry
        self._schedule(queue, entry)
        self._dispatch(queue)
        return entry.msg_id

    # -- lifecycle ---------------------------------------------------------------------

    async def _create_queue(self, name: str) -> None:
        if name in self._queues:
            return
        queue = self._queues[name] = _Queue(name)
        waiting = self.store.orphaned.pop(name, [])
        queue.subscribers = [s for s in waiting if not s.subscription.closed]

    async def _delete_queue(self, name: str) -> None:
        queue = self._queues.pop(name, None)
        if queue is not None:
            for subscriber in queue.subscribers:
                subscriber.in_flight = {k for k in subscriber.in_flight if k[0] != name}
                for other in subscriber.subscription.queues:  # the room it got back
                    if (kept := self._queues.get(other)) is not None:
                        self._dispatch(kept)
            if queue.subscribers:
                self.store.orphaned.setdefault(name, []).extend(queue.subscribers)

    async def _queue_exists(self, name: str) -> bool:
        return name in self._queues

    async def _list_queues(self) -> list[str]:
        return sorted(self._queues)

    # -- messages ----------------------------------------------------------------------

    async def _send(self, queue: str, payload: bytes) -> int:
        return self._enqueue(self._existing(queue), payload, 0.0)

    async def _send_delayed(self, queue: str, payload: bytes, delay_seconds: float) -> int:
        return self._enqueue(self._existing(queue), payload, delay_seconds)

    async def _send_batch(self, queue: str, payloads: list[bytes]) -> list[int]:
        q = self._existing(queue)
        return [self._enqueue(q, data, 0.0) for data in payloads]

    async def _receive(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        q = self._existing(queue)
        claimed: list[QueuedMessage] = []
        while len(claimed) < limit and (entry := self._pop_visible(q)) is not None:
            claimed.append(self._claim(q, entry, visibility_timeout))
        await asyncio.sleep(0)
        return claimed

    async def _fetch(
        self, queue: str, msg_id: int, visibility_timeout: float
    ) -> QueuedMessage | None:
        q = self._existing(queue)
        self._promote(q)
        entry = q.entries.get(msg_id) if is_message_id(msg_id) else None
        if entry is None or entry.held or entry.visible_at > self.clock.now():
            return None
        return self._claim(q, entry, visibility_timeout)

    async def _ack(self, queue: str, claim: Claim) -> None:
        q = self._existing(queue)
        entry = self._held_entry(q, claim)
        del q.entries[entry.msg_id]
        self._detach(q, entry)
        self._dispatch(q)

    async def _nack(self, queue: str, claim: Claim) -> None:
        q = self._existing(queue)
        entry = self._held_entry(q, claim)
        entry.held = False
        entry.visible_at = self.clock.now()
        self._detach(q, entry)
        self._schedule(q, entry)
        self._dispatch(q)

    def stored_ids(self, queue: str) -> list[int]:
        """Backdoor for tests: every stored id on ``queue``, whatever its visibility."""
        return sorted(self._queue(queue).entries)

    # -- push --------------------------------------------------------------------------

    async def _subscribe(self, names: tuple[str, ...]) -> QueueSubscription:
        targets = [self._existing(name) for name in names]
        subscription = QueueSubscription(names, on_close=self._unsubscribe, on_take=self._taken)
        subscriber = _Subscriber(
            subscription, self._config.prefetch_count, connection=self._connection
        )
        self._subscribers[subscriber.subscription] = subscriber
        for q in targets:
            q.subscribers.append(subscriber)
        if self._pump_task is None:
            self._pump_task = asyncio.create_task(self._pump(), name="mqcontract-memory-pump")
        for q in targets:
            self._dispatch(q)
        return subscriber.subscription

    def _taken(self, note: MessageNotification) -> None:
        """A pushed claim reached the caller: from now on it may settle it."""
        if isinstance(note, Message):
            q = self._queues.get(note.queue_name)
            entry = q.entries.get(note.message.msg_id) if q is not None else None
            if entry is not None and entry.waiting is note:  # not a stale copy
                entry.waiting = None

    async def _unsubscribe(self, subscription: QueueSubscription) -> None:
        subscriber = self._subscribers.pop(subscription)
        for name in subscription.queues:
            q = self._queues.get(name)
            if q is not None and subscriber in q.subscribers:
                q.subscribers.remove(subscriber)
            waiting = self.store.orphaned.get(name, [])
            if subscriber in waiting:
                waiting.remove(subscriber)
                if not waiting:
                    del self.store.orphaned[name]
        # Claimed messages never handed to the consumer go straight back.
        for notification in subscription.pending():
            if isinstance(notification, Message):
                q = self._queues.get(notification.queue_name)
                entry = q.entries.get(notification.message.msg_id) if q else None
                if q is not None and entry is not None and entry.holder is subscriber:
                    self._give_back(q, entry)
        for key in list(subscriber.in_flight):
            q = self._queues.get(key[0])
            entry = q.entries.get(key[1]) if q else None
            if entry is not None and entry.holder is subscriber:
                entry.holder = None
        subscriber.in_flight.clear()

    def _give_back(self, q: _Queue, entry: _Entry) -> None:
        """A pushed claim never handed out goes straight back: visible now, pushed again,
        and not counted as a delivery."""
        entry.held = False
        entry.waiting = None
        entry.receive_count -= 1
        entry.visible_at = self.clock.now()
        self._detach(q, entry)
        self._schedule(q, entry)
        self._dispatch(q)

    def sever(self) -> None:
        """Fault hook: this service's connection to its store drops and comes back at once.

        As a broker requeues the unsettled deliveries of a closed connection, every claim
        held on it (made by receive, fetch or push) is released: the message is visible
        now with its id, payload and enqueued_at, and is pushed again to open
        subscriptions, which survive (the reconnect resubscribes). A delivery that reached
        the caller counted (the next claim shows receive_count + 1); a pushed claim still
        waiting in a subscription did not, and its notification is void and dropped.
        Settling a claim made before the sever raises ``MessageNotFound``.
        """
        if self._closed:
            raise ProviderClosed(self.provider_name)
        for subscriber in self._subscribers.values():
            for note in subscriber.subscription.pending():
                if not isinstance(note, Message):
                    subscriber.subscription.put(note)
                    continue
                q = self._queues.get(note.queue_name)
                entry = q.entries.get(note.message.msg_id) if q is not None else None
                if entry is not None and entry.held and entry.waiting is note:
                    entry.receive_count -= 1  # never handed out: not a delivery
                    entry.waiting = None
        for q in list(self._queues.values()):
            dropped = [e for e in q.entries.values() if e.held and e.connection is self._connection]
            for entry in dropped:
                entry.held = False
                entry.visible_at = self.clock.now()
                self._detach(q, entry)
                self._schedule(q, entry)
            if dropped:
                self._dispatch(q)

    def pause_push(self, queue: str) -> None:
        """Fault hook: stop pushing ``queue``'s messages (they stay receivable)."""
        self._queue(queue).push_paused = True

    def resume_push(self, queue: str) -> None:
        """Undo :meth:`pause_push`; messages that are visible now are pushed."""
        q = self._queue(queue)
        q.push_paused = False
        self._dispatch(q)

    def _dispatch(self, queue: _Queue) -> None:
        """Push ``queue``'s visible messages to its subscribers with room; a subscriber's
        room is one prefetch for all its queues, so room left (a settle gave some back)
        serves its other queues too."""
        self._dispatch_one(queue)
        for subscriber in list(queue.subscribers):
            if len(subscriber.in_flight) >= subscriber.capacity:
                continue
            for name in subscriber.subscription.queues:
                other = self._queues.get(name)
                if other is not None and other is not queue:
                    self._dispatch_one(other)

    def _dispatch_one(self, queue: _Queue) -> None:
        if not queue.subscribers or queue.push_paused:
            return
        vt = self._config.push_visibility_timeout_seconds
        while True:
            open_subs = [s for s in queue.subscribers if len(s.in_flight) < s.capacity]
            if not open_subs:
                return
            entry = self._pop_visible(queue)
            if entry is None:
                return
            subscriber = open_subs[queue.turn % len(open_subs)]
            queue.turn += 1
            note = Message(self._claim(queue, entry, vt), claimed=True)
            entry.holder = subscriber
            entry.connection = subscriber.connection
            entry.waiting = note  # until the subscription yields it
            subscriber.in_flight.add((queue.name, entry.msg_id))
            subscriber.subscription.put(note)

    async def _pump(self) -> None:
        """Make delayed and expired messages reach subscribers when they become visible."""
        while not self._closed:
            for q in list(self._queues.values()):
                if q.subscribers:
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

    async def close(self) -> None:
        if self._closed:
            return
        for subscription in list(self._subscribers):
            await subscription.aclose()
        self._closed = True
        if self._pump_task is not None:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump_task
        if self._owns_store:
            self._queues.clear()


async def open_memory(config: MessagingConfig) -> InMemoryMessagingService:
    """Provider factory for the ``memory`` entry point."""
    return InMemoryMessagingService(config.memory)

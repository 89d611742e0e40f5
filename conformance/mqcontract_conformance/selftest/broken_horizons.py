"""Broken horizons: providers correct wherever the suite used to look, wrong just past it.

Each keeps every promise at the scale, the moment or the name a rule happened to use,
and breaks it one step beyond: durations past a minute kept in whole seconds, a delayed
message handed to a waiting subscriber at once, a fetch that checks a message is free
and claims it a round trip later, a deleted queue listed while its messages are held,
a list in the backend's order, queue names canonicalized into one storage key.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Any

from mqcontract.messages import Message, QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService, _Entry, _Queue
from mqcontract.validation import is_message_id
from mqcontract_conformance.selftest.catalogue import Specimen

__all__ = [
    "SPECIMENS",
    "DelayedPushedAtOnce",
    "DeletedQueuesListedWhileHeld",
    "FetchChecksThenClaims",
    "LongClaimsInWholeSeconds",
    "LongDelaysInWholeSeconds",
    "QueuesListedInCreationOrder",
    "UnderscoreRunsCollapsed",
]

#: Past this many seconds, the broken tiers below keep durations in whole seconds.
_COARSE_AFTER = 60.0


class LongDelaysInWholeSeconds(InMemoryMessagingService):
    """Keeps delays over a minute in a scheduled tier of whole seconds and truncates
    them: a delay of 90.75 s ends after 90 s, far sooner than the declared 1 ms."""

    async def _send_delayed(self, queue: str, payload: bytes, delay_seconds: float) -> int:
        if delay_seconds > _COARSE_AFTER:
            delay_seconds = float(int(delay_seconds))  # the defect: seconds, truncated
        return await super()._send_delayed(queue, payload, delay_seconds)


class LongClaimsInWholeSeconds(InMemoryMessagingService):
    """Stores visibility timeouts over a minute in whole seconds, truncated: a claim of
    90.75 s ends after 90 s, far sooner than the declared 1 ms (the claim it returns
    still says 90.75 s)."""

    def _claim(self, queue: _Queue, entry: _Entry, visibility_timeout: float) -> QueuedMessage:
        claimed = super()._claim(queue, entry, visibility_timeout)
        if visibility_timeout > _COARSE_AFTER:  # the defect: the backend's deadline truncated
            entry.visible_at = self.clock.now() + int(visibility_timeout)
            self._schedule(queue, entry)
        return claimed


class DelayedPushedAtOnce(InMemoryMessagingService):
    """Hands a newly sent message straight to a waiting subscriber (a fast path that
    skips the store) without looking at its delay: with a subscription open, a delayed
    send is pushed, claimed, at once. Receive still honours the delay."""

    def _enqueue(self, queue: _Queue, payload: bytes, delay: float) -> int:
        msg_id = super()._enqueue(queue, payload, delay)
        entry = queue.entries[msg_id]
        room = [s for s in queue.subscribers if len(s.in_flight) < s.capacity]
        if delay > 0 and room and not queue.push_paused:  # the defect: the delay ignored
            subscriber = room[queue.turn % len(room)]
            queue.turn += 1
            vt = self._config.push_visibility_timeout_seconds
            note = Message(self._claim(queue, entry, vt), claimed=True)
            entry.holder = subscriber
            entry.connection = subscriber.connection
            entry.waiting = note
            subscriber.in_flight.add((queue.name, msg_id))
            subscriber.subscription.put(note)
        return msg_id


class FetchChecksThenClaims(InMemoryMessagingService):
    """fetch_message checks that the message is free, then claims it after a round trip
    to its backend without checking again: a receive or another fetch that ran in
    between holds it too."""

    async def _fetch(
        self, queue: str, msg_id: int, visibility_timeout: float
    ) -> QueuedMessage | None:
        q = self._existing(queue)
        self._promote(q)
        entry = q.entries.get(msg_id) if is_message_id(msg_id) else None
        if entry is None or entry.held or entry.visible_at > self.clock.now():
            return None
        await asyncio.sleep(0)  # the round trip: others run meanwhile
        if msg_id not in q.entries:
            return None
        return self._claim(q, entry, visibility_timeout)  # the defect: `held` not re-checked


class DeletedQueuesListedWhileHeld(InMemoryMessagingService):
    """Drops a deleted queue's storage only once its held messages are settled or
    expire (a draining tombstone), and lists tombstones: a queue deleted while one of
    its messages is held stays in list_queues, though queue_exists says it is gone."""

    def _draining(self) -> set[str]:
        found: set[str] = self.store.__dict__.setdefault("draining", set())
        return found

    async def _delete_queue(self, name: str) -> None:
        q = self._queues.get(name)
        if q is not None and any(e.held for e in q.entries.values()):
            self._draining().add(name)
        await super()._delete_queue(name)

    async def _create_queue(self, name: str) -> None:
        self._draining().discard(name)
        await super()._create_queue(name)

    async def _list_queues(self) -> list[str]:
        return sorted(set(self._queues) | self._draining())  # the defect: tombstones too


class QueuesListedInCreationOrder(InMemoryMessagingService):
    """list_queues returns the backend's key order (the order queues were created in),
    not sorted."""

    async def _list_queues(self) -> list[str]:
        return list(self._queues)  # the defect: not sorted


def _slug(name: str) -> str:
    """The broken storage key: runs of underscores collapsed into one."""
    return re.sub("_+", "_", name)


class _SlugKeyed(dict[str, _Queue]):
    """The store's queues, found by the slug of their name."""

    def __getitem__(self, name: str) -> _Queue:
        return super().__getitem__(_slug(name))

    def __setitem__(self, name: str, queue: _Queue) -> None:
        super().__setitem__(_slug(name), queue)

    def __delitem__(self, name: str) -> None:
        super().__delitem__(_slug(name))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(_slug(name))

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(_slug(name), default)

    def pop(self, name: str, *default: Any) -> Any:
        return super().pop(_slug(name), *default)


class UnderscoreRunsCollapsed(InMemoryMessagingService):
    """Keys its storage on a slug of the queue name, runs of underscores collapsed:
    queues named a__b and a_b share one store, each other's messages and deletion. What
    it hands out still carries the name the caller used."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.store.queues, _SlugKeyed):  # the defect
            self.store.queues = _SlugKeyed(self.store.queues)
        self._queues = self.store.queues

    @staticmethod
    def _named(message: QueuedMessage, queue: str) -> QueuedMessage:
        claim = message.claim
        return dataclasses.replace(
            message,
            queue_name=queue,
            claim=None if claim is None else dataclasses.replace(claim, queue_name=queue),
        )

    async def _receive(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        got = await super()._receive(queue, limit, visibility_timeout)
        return [self._named(m, queue) for m in got]

    async def _fetch(
        self, queue: str, msg_id: int, visibility_timeout: float
    ) -> QueuedMessage | None:
        got = await super()._fetch(queue, msg_id, visibility_timeout)
        return None if got is None else self._named(got, queue)


SPECIMENS: tuple[Specimen, ...] = (
    Specimen(LongDelaysInWholeSeconds, "DLY-1"),
    Specimen(DelayedPushedAtOnce, "DLY-1"),
    Specimen(LongClaimsInWholeSeconds, "VT-2"),
    Specimen(FetchChecksThenClaims, "VT-3"),
    Specimen(DeletedQueuesListedWhileHeld, "LIFE-5"),
    Specimen(QueuesListedInCreationOrder, "LIFE-5"),
    Specimen(UnderscoreRunsCollapsed, "LIFE-9"),
)

"""Broken re-creation: providers right about one queue's life, wrong across two of them.

Each keeps every promise while a queue lives once, and lets state of a deleted queue
reach another queue under a close or equal name: long delays kept by a scheduler keyed
by the name and not purged with it, claim tokens counted per queue (restarted by a
re-create, so an old claim settles a new message), a payload cache filled on read and
dropped only on the service's own delete, a retry route and a batch route keyed on a
truncated name; and a requeue that moves a message from its third nack on, or when it
was claimed by fetch.
"""

from __future__ import annotations

import heapq
import itertools
import weakref

from mqcontract.messages import Claim, QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService, MemoryStore, _Entry, _Queue
from mqcontract_conformance.selftest.catalogue import Specimen

__all__ = [
    "SPECIMENS",
    "BatchRouteTruncated",
    "ClaimTokensPerQueue",
    "FetchedNackToBack",
    "LargePayloadsCachedOnRead",
    "LongDelaysOutliveDelete",
    "NackRouteTruncated",
    "ThirdNackToBack",
]

#: Delays longer than this go to the store-wide scheduler of LongDelaysOutliveDelete.
_SCHEDULED_AFTER = 10.0

#: Store-wide state the broken providers keep beside the store (by store).
_SCHEDULERS: weakref.WeakKeyDictionary[MemoryStore, dict[str, list[_Entry]]] = (
    weakref.WeakKeyDictionary()
)
_ROUTES: weakref.WeakKeyDictionary[MemoryStore, dict[str, str]] = weakref.WeakKeyDictionary()
_TOKENS: weakref.WeakKeyDictionary[_Queue, itertools.count[int]] = weakref.WeakKeyDictionary()


class LongDelaysOutliveDelete(InMemoryMessagingService):
    """Keeps messages delayed by more than 10 s in a store-wide scheduler keyed by queue
    name that delete_queue does not purge: they fire, when due, into a queue created
    again under the name (short delays, kept in the queue, go with it)."""

    async def _delete_queue(self, name: str) -> None:
        q = self._queues.get(name)
        if q is not None:
            now = self.clock.now()
            long = [
                e
                for e in q.entries.values()
                if e.receive_count == 0 and e.visible_at > now + _SCHEDULED_AFTER
            ]
            _SCHEDULERS.setdefault(self.store, {}).setdefault(name, []).extend(long)
        await super()._delete_queue(name)

    def _promote(self, queue: _Queue) -> None:
        due = _SCHEDULERS.get(self.store, {}).get(queue.name, [])
        now = self.clock.now()
        for old in [e for e in due if e.visible_at <= now]:  # the defect: fires anyway
            due.remove(old)
            entry = _Entry(next(queue.ids), old.payload, old.enqueued_at, now)
            queue.entries[entry.msg_id] = entry
            heapq.heappush(queue.ready, entry.msg_id)
        super()._promote(queue)


class ClaimTokensPerQueue(InMemoryMessagingService):
    """Numbers claim tokens per queue, from 1 again when a queue is created again: a
    claim made before a delete_queue matches a new message's claim of the same id and
    token, and settling it settles the new message."""

    def _claim(self, queue: _Queue, entry: _Entry, visibility_timeout: float) -> QueuedMessage:
        super()._claim(queue, entry, visibility_timeout)
        entry.claim_token = next(_TOKENS.setdefault(queue, itertools.count(1)))
        return entry.snapshot(queue.name)


#: Payloads of at least this many bytes go through LargePayloadsCachedOnRead's cache.
_CACHED_FROM = 256 * 1024


class LargePayloadsCachedOnRead(InMemoryMessagingService):
    """Caches payloads of 256 KiB and more per service, by queue and id, when it reads
    them, and drops the cache only on its own delete_queue: after another service
    deletes and re-creates the queue (ids restart), a new large message is read as the
    old one's payload."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._read_cache: dict[tuple[str, int], bytes] = {}

    def _claim(self, queue: _Queue, entry: _Entry, visibility_timeout: float) -> QueuedMessage:
        msg = super()._claim(queue, entry, visibility_timeout)
        if len(entry.payload) < _CACHED_FROM:
            return msg
        payload = self._read_cache.setdefault((queue.name, entry.msg_id), entry.payload)
        return QueuedMessage(
            msg.msg_id, msg.queue_name, payload, msg.receive_count, msg.enqueued_at, msg.claim
        )

    async def _delete_queue(self, name: str) -> None:
        self._read_cache = {k: v for k, v in self._read_cache.items() if k[0] != name}
        await super()._delete_queue(name)


def _truncated(prefix: str, name: str) -> str:
    """A derived identifier cut to the 47-character limit."""
    return (prefix + name)[:47]


class _Routed(InMemoryMessagingService):
    """Routes one path through a key derived from the queue name (see subclasses)."""

    prefix = ""

    async def _create_queue(self, name: str) -> None:
        existed = name in self._queues
        await super()._create_queue(name)
        if not existed:  # the later-created of two names with one key takes the route
            _ROUTES.setdefault(self.store, {})[_truncated(self.prefix, name)] = name

    def _routed(self, name: str) -> _Queue:
        target = _ROUTES.get(self.store, {}).get(_truncated(self.prefix, name), name)
        return self._queues.get(target) or self._existing(name)


class NackRouteTruncated(_Routed):
    """Requeues a nacked message through a retry route keyed 'rty_' + queue name, cut to
    47 characters: of two longest names differing only in their last character, a nack
    on the first moves its message to the second."""

    prefix = "rty_"

    async def _nack(self, queue: str, claim: Claim) -> None:
        await super()._nack(queue, claim)
        q = self._existing(queue)
        target = self._routed(queue)
        if target is not q:  # the defect: the retry route is the other queue's
            entry = q.entries.pop(claim.msg_id)
            self._enqueue(target, entry.payload, 0.0)


class BatchRouteTruncated(_Routed):
    """Sends a batch through a bulk route keyed 'blk_' + queue name, cut to 47
    characters: of two longest names differing only in their last character, a batch
    sent to the first lands in the second."""

    prefix = "blk_"

    async def _send_batch(self, queue: str, payloads: list[bytes]) -> list[int]:
        self._existing(queue)
        return await super()._send_batch(self._routed(queue).name, payloads)


def _pop_demoted_last(svc: InMemoryMessagingService, queue: _Queue) -> _Entry | None:
    """The first visible entry not in ``svc``'s demoted set; the demoted ones (moved to
    the back) only when nothing else is visible."""
    demoted: set[tuple[str, int]] = getattr(svc, "_demoted", set())
    svc._promote(queue)
    now = svc.clock.now()
    deferred: list[int] = []
    found = None
    while queue.ready:
        msg_id = heapq.heappop(queue.ready)
        entry = queue.entries.get(msg_id)
        if entry is None or entry.held or entry.visible_at > now:
            continue
        if (queue.name, msg_id) in demoted:
            deferred.append(msg_id)
            continue
        found = entry
        break
    if found is None and deferred:
        found = queue.entries[deferred.pop(0)]
    for msg_id in deferred:
        heapq.heappush(queue.ready, msg_id)
    return found


class ThirdNackToBack(InMemoryMessagingService):
    """Requeues a message nacked for the third time or more at the back (a retry tier),
    though the declared requeue position is original: its first two nacks keep it in
    place."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._demoted: set[tuple[str, int]] = set()
        self._nacks: dict[tuple[str, int], int] = {}

    def _pop_visible(self, queue: _Queue) -> _Entry | None:
        return _pop_demoted_last(self, queue)

    async def _nack(self, queue: str, claim: Claim) -> None:
        await super()._nack(queue, claim)
        key = (queue, claim.msg_id)
        self._nacks[key] = self._nacks.get(key, 0) + 1
        if self._nacks[key] >= 3:  # the defect
            self._demoted.add(key)


class FetchedNackToBack(InMemoryMessagingService):
    """Requeues a nacked claim made by fetch_message at the back, though the declared
    requeue position is original: nacks of received claims keep their place."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._demoted: set[tuple[str, int]] = set()
        self._fetched: set[tuple[str, int]] = set()

    def _pop_visible(self, queue: _Queue) -> _Entry | None:
        return _pop_demoted_last(self, queue)

    async def _fetch(
        self, queue: str, msg_id: int, visibility_timeout: float
    ) -> QueuedMessage | None:
        got = await super()._fetch(queue, msg_id, visibility_timeout)
        if got is not None:
            self._fetched.add((queue, msg_id))
        return got

    async def _nack(self, queue: str, claim: Claim) -> None:
        await super()._nack(queue, claim)
        if (queue, claim.msg_id) in self._fetched:  # the defect
            self._fetched.discard((queue, claim.msg_id))
            self._demoted.add((queue, claim.msg_id))


SPECIMENS: tuple[Specimen, ...] = (
    Specimen(LongDelaysOutliveDelete, "LIFE-2"),
    Specimen(ClaimTokensPerQueue, "LIFE-2"),
    Specimen(LargePayloadsCachedOnRead, "LIFE-14"),
    Specimen(NackRouteTruncated, "LIFE-9"),
    Specimen(BatchRouteTruncated, "LIFE-9"),
    Specimen(ThirdNackToBack, "ORD-3"),
    Specimen(FetchedNackToBack, "ORD-3"),
)

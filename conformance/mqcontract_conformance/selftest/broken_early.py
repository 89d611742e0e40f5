"""Broken timing at the edges: claims taken early, positions picked by the wrong key.

Two take a claimed message from its holder a little before the claim's timeout ends (a
"clock skew tolerance" in one path's visibility check): every watch that stops a margin
before the end passes them (VT-1). Two pick the messages a receive returns by the wrong
key: when each became visible, hidden by a final sort of the batch whenever a receive's
limit covers every visible message (ORD-3); or, declaring the back position, put an
expired message at the tail when a receive first finds it lapsed rather than where it
became visible (ORD-4).
"""

from __future__ import annotations

import asyncio
import dataclasses

from mqcontract.capabilities import Capabilities, RequeuePosition
from mqcontract.messages import QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService, _Entry, _Queue
from mqcontract.validation import is_message_id
from mqcontract_conformance.selftest.catalogue import Specimen

__all__ = [
    "SPECIMENS",
    "ExpiredToTailWhenFound",
    "FetchSkewTolerance",
    "PickedByVisibleSortedById",
    "ReceiveSkewTolerance",
    "RequeuedToBack",
]

#: The "clock skew tolerance" of the early specimens: seconds a claim is cut short by.
_SKEW = 0.05
#: The attribute a :class:`RequeuedToBack` entry keeps its place in line in.
_PLACE = "back_place"


class FetchSkewTolerance(InMemoryMessagingService):
    """fetch_message treats a message as visible 50 ms before its claim's visibility
    timeout (or its delay) runs out, a "clock skew tolerance": another consumer's fetch
    takes a message whose claim still holds, and the holder's ack then fails StaleClaim."""

    async def _fetch(
        self, queue: str, msg_id: int, visibility_timeout: float
    ) -> QueuedMessage | None:
        q = self._existing(queue)
        self._promote(q)
        entry = q.entries.get(msg_id) if is_message_id(msg_id) else None
        if entry is None or entry.visible_at - _SKEW > self.clock.now():  # the defect
            return None
        if entry.held:  # "lapsed", by the tolerance: the claim is void
            entry.held = False
            self._detach(q, entry)
        return self._claim(q, entry, visibility_timeout)


class ReceiveSkewTolerance(InMemoryMessagingService):
    """receive_messages treats a message as visible 50 ms before its claim's visibility
    timeout (or its delay) runs out, a "clock skew tolerance" in the receive path's
    visibility check: another consumer's receive takes a message whose claim still holds."""

    async def _receive(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        q = self._existing(queue)
        now = self.clock.now()
        for entry in q.entries.values():
            if now < entry.visible_at <= now + _SKEW:  # the defect: "visible" already
                entry.held = False
                entry.visible_at = now
                self._detach(q, entry)
                self._schedule(q, entry)
        return await super()._receive(queue, limit, visibility_timeout)


class PickedByVisibleSortedById(InMemoryMessagingService):
    """receive_messages picks the messages it returns by when each became visible, then
    id (``ORDER BY visible_at, id``), and sorts the batch by id: a nacked or expired
    message is picked after every message sent before it, though it is declared to keep
    its original position, which the sort hides whenever the limit covers them all."""

    async def _receive(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        q = self._existing(queue)
        self._promote(q)
        now = self.clock.now()
        visible = [e for e in q.entries.values() if not e.held and e.visible_at <= now]
        visible.sort(key=lambda e: (e.visible_at, e.msg_id))  # the defect: the key
        claimed = [self._claim(q, entry, visibility_timeout) for entry in visible[:limit]]
        await asyncio.sleep(0)
        return sorted(claimed, key=lambda m: m.msg_id)


class RequeuedToBack(InMemoryMessagingService):
    """Correct, declaring the back requeue position: a message nacked, or whose claim
    expired, goes behind every message visible when it became visible (messages are
    picked by when they became visible, ties in the order they were put in line)."""

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(super().capabilities, requeue_position=RequeuePosition.BACK)

    def _schedule(self, queue: _Queue, entry: _Entry) -> None:
        # In line when it is scheduled (sent, claimed: due back at its end, nacked);
        # numbered from the store's counter, which every service on the store shares.
        setattr(entry, _PLACE, next(self.store.tokens))
        super()._schedule(queue, entry)

    def _pop_visible(self, queue: _Queue) -> _Entry | None:
        self._promote(queue)
        now = self.clock.now()
        visible = [e for e in queue.entries.values() if not e.held and e.visible_at <= now]
        if not visible:
            return None
        return min(visible, key=lambda e: (e.visible_at, getattr(e, _PLACE, 0)))


class ExpiredToTailWhenFound(RequeuedToBack):
    """A message whose claim expired goes to the tail when a receive first finds it lapsed
    (a lazy sweep stamps it with the receive's time), not where it became visible: behind
    messages sent, and claims that ended, after its own claim ended."""

    async def _receive(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        q = self._existing(queue)
        now = self.clock.now()
        for entry in q.entries.values():
            if entry.held and entry.visible_at <= now:  # the sweep
                entry.held = False
                entry.visible_at = now  # the defect: in line from now on
                self._detach(q, entry)
                self._schedule(q, entry)
        return await super()._receive(queue, limit, visibility_timeout)


SPECIMENS: tuple[Specimen, ...] = (
    Specimen(FetchSkewTolerance, "VT-1"),
    Specimen(ReceiveSkewTolerance, "VT-1"),
    Specimen(PickedByVisibleSortedById, "ORD-3"),
    Specimen(ExpiredToTailWhenFound, "ORD-4", reference=RequeuedToBack),
)

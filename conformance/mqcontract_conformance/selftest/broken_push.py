"""Broken providers: pushed claims that are not held as declared, and nacks push forgets.

Each breaks one promise about what a claimed push holds (PUSH-7), about redelivering a
nacked message to an open subscription (PUSH-13), about pushing the backlog a new
subscription finds (PUSH-14), or about releasing deliveries on their way to a closing
subscription (PUSH-6); everything else is the in-memory
provider's, so only that rule fails.
"""

from __future__ import annotations

import heapq
from typing import Any

from mqcontract.messages import Claim, Message, MessageNotification
from mqcontract.providers.memory import InMemoryMessagingService, _Entry, _Queue
from mqcontract.subscription import QueueSubscription
from mqcontract_conformance.selftest._pushed import PushedClaims
from mqcontract_conformance.selftest.catalogue import Specimen
from mqcontract_conformance.selftest.references import DeliveriesInFlight, SignalMemory

__all__ = ["SPECIMENS"]


class AcksOnHandOff(InMemoryMessagingService):
    """Deletes a pushed message as the subscription hands it out (auto-ack), so a handler
    that crashes loses it; acking it later is silently accepted."""

    def _taken(self, note: MessageNotification) -> None:
        super()._taken(note)
        if isinstance(note, Message):
            q = self._queues.get(note.queue_name)
            if q is not None and q.entries.pop(note.message.msg_id, None) is not None:
                self._dispatch(q)

    async def _ack(self, queue: str, claim: Claim) -> None:
        if claim.msg_id in self._existing(queue).entries:
            await super()._ack(queue, claim)


class HalvedPushTimeout(PushedClaims):
    """Holds a pushed claim for half the push timeout its claim states (a timer armed in
    milliseconds from a value in seconds halved for "safety")."""

    def _hold_pushed(self, queue: _Queue, entry: _Entry, timeout: float) -> None:
        entry.visible_at = self.clock.now() + timeout / 2
        self._schedule(queue, entry)


class OneSecondPushClaim(PushedClaims):
    """Holds every pushed claim for a fixed second, whatever the configured push timeout."""

    def _hold_pushed(self, queue: _Queue, entry: _Entry, timeout: float) -> None:
        entry.visible_at = self.clock.now() + 1.0
        self._schedule(queue, entry)


class PushClaimNeverLapses(PushedClaims):
    """Holds a pushed claim until it is settled, ignoring the push timeout: a handler
    that hangs keeps its message for good."""

    def _hold_pushed(self, queue: _Queue, entry: _Entry, timeout: float) -> None:
        entry.visible_at = self.clock.now() + 10.0**9
        self._schedule(queue, entry)


class NackNotPushedAgain(InMemoryMessagingService):
    """Makes a nacked message visible without pushing it: an open subscription sees it
    only when something else is sent (a receive finds it at once)."""

    async def _nack(self, queue: str, claim: Claim) -> None:
        q = self._existing(queue)
        entry = self._held_entry(q, claim)
        entry.held = False
        entry.visible_at = self.clock.now()
        self._detach(q, entry)
        self._schedule(q, entry)


class ReceivedNackNotPushed(InMemoryMessagingService):
    """Pushes a nacked message again only if push delivered it; one claimed by receive
    and nacked waits for the next receive."""

    async def _nack(self, queue: str, claim: Claim) -> None:
        q = self._existing(queue)
        entry = q.entries.get(claim.msg_id)
        if entry is None or entry.holder is not None:
            await super()._nack(queue, claim)
            return
        paused, q.push_paused = q.push_paused, True
        try:
            await super()._nack(queue, claim)
        finally:
            q.push_paused = paused


class NackRepushesOldCount(InMemoryMessagingService):
    """Re-pushes a nacked message with the receive_count of the delivery that was nacked
    (the count is taken back with the nack)."""

    async def _nack(self, queue: str, claim: Claim) -> None:
        entry = self._existing(queue).entries.get(claim.msg_id)
        if entry is not None:
            entry.receive_count -= 1
        await super()._nack(queue, claim)


class SignalsOnlyInserts(SignalMemory):
    """Signal-only push announces new messages only (an insert trigger): a nacked message
    waits for the fallback poller, or for nobody."""

    async def _nack(self, queue: str, claim: Claim) -> None:
        await InMemoryMessagingService._nack(self, queue, claim)


class BacklogNotPushed(InMemoryMessagingService):
    """Declares push_delivers_backlog but pushes a subscription only what was sent after
    the queue's first subscription opened (a pub/sub feed): an earlier backlog is left to
    receive."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._backlog_upto: dict[str, int] = {}
        self._pushing = False

    async def _subscribe(self, names: tuple[str, ...]) -> QueueSubscription:
        for name in names:
            self._backlog_upto.setdefault(name, max(self._existing(name).entries, default=0))
        return await super()._subscribe(names)

    def _dispatch(self, queue: _Queue) -> None:
        self._pushing = True
        try:
            super()._dispatch(queue)
        finally:
            self._pushing = False

    def _pop_visible(self, queue: _Queue) -> _Entry | None:
        if not self._pushing:
            return super()._pop_visible(queue)
        skipped: list[int] = []
        try:
            while (entry := super()._pop_visible(queue)) is not None:
                if entry.msg_id > self._backlog_upto.get(queue.name, 0):
                    return entry
                skipped.append(entry.msg_id)
            return None
        finally:
            for msg_id in skipped:
                heapq.heappush(queue.ready, msg_id)


class StrandsDeliveriesInFlight(DeliveriesInFlight):
    """Drops a pushed delivery that reaches its subscription after the close without
    releasing its claim (a cancel that forgets its consumer at once), so the message is
    invisible to everyone until its push timeout."""

    def _arrived_after_close(self, note: Message) -> None:
        pass


SPECIMENS: tuple[Specimen, ...] = (
    Specimen(AcksOnHandOff, "PUSH-7"),
    Specimen(HalvedPushTimeout, "PUSH-7"),
    Specimen(OneSecondPushClaim, "PUSH-7"),
    Specimen(PushClaimNeverLapses, "PUSH-7"),
    Specimen(NackNotPushedAgain, "PUSH-13"),
    Specimen(ReceivedNackNotPushed, "PUSH-13"),
    Specimen(NackRepushesOldCount, "PUSH-13"),
    Specimen(SignalsOnlyInserts, "PUSH-13", reference=SignalMemory),
    Specimen(BacklogNotPushed, "PUSH-14"),
    Specimen(StrandsDeliveriesInFlight, "PUSH-6", reference=DeliveriesInFlight),
)

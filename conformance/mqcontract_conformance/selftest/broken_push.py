"""Broken providers: pushed claims that are not held as declared, and nacks push forgets.

Each breaks one promise about what a claimed push holds (PUSH-7) or about redelivering a
nacked message to an open subscription (PUSH-13); everything else is the in-memory
provider's, so only that rule fails.
"""

from __future__ import annotations

from mqcontract.messages import Claim, Message, MessageNotification
from mqcontract.providers.memory import InMemoryMessagingService, _Entry, _Queue
from mqcontract_conformance.selftest._pushed import PushedClaims
from mqcontract_conformance.selftest.catalogue import Specimen
from mqcontract_conformance.selftest.references import SignalMemory

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


SPECIMENS: tuple[Specimen, ...] = (
    Specimen(AcksOnHandOff, "PUSH-7"),
    Specimen(HalvedPushTimeout, "PUSH-7"),
    Specimen(OneSecondPushClaim, "PUSH-7"),
    Specimen(PushClaimNeverLapses, "PUSH-7"),
    Specimen(NackNotPushedAgain, "PUSH-13"),
    Specimen(ReceivedNackNotPushed, "PUSH-13"),
    Specimen(NackRepushesOldCount, "PUSH-13"),
    Specimen(SignalsOnlyInserts, "PUSH-13", reference=SignalMemory),
)

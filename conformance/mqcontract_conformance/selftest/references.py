"""Correct providers the broken specimens derive from, beyond the plain in-memory one.

Each turns on a capability the in-memory provider lacks (signal-only push, ids chosen by
a foreign producer) or drops one (``list_queues``), so rules that apply only then have a
correct provider to pass, and a specimen derived from it breaks just one promise.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mqcontract.capabilities import Capabilities, PushKind
from mqcontract.messages import Available, Claim, QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService, _Entry, _Queue
from mqcontract.subscription import QueueSubscription

__all__ = ["ForeignIdsMemory", "SignalMemory", "Unlisted"]


class SignalMemory(InMemoryMessagingService):
    """A correct signal-only provider (Available + fetch by id), to exercise SIGNAL rules."""

    provider_name = "signal-memory"
    #: Added to the id each ``Available`` announces (0: the true id).
    announce_offset = 0

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(super().capabilities, push=PushKind.SIGNAL)

    async def _subscribe(self, names: tuple[str, ...]) -> QueueSubscription:
        for name in names:
            self._existing(name)
        sub = QueueSubscription(names, on_close=self._drop_signal_sub)
        self._signal_subs = [*getattr(self, "_signal_subs", []), sub]
        return sub

    async def _drop_signal_sub(self, sub: QueueSubscription) -> None:
        self._signal_subs.remove(sub)

    async def close(self) -> None:
        for sub in list(getattr(self, "_signal_subs", [])):
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
        for sub in getattr(self, "_signal_subs", []):
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

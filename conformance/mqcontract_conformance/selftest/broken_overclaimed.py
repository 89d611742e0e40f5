"""Broken promises: providers that declare more than they do.

Each behaves as the in-memory provider except for one thing its capabilities promise and
it does not keep. The rules tolerate what a loaded machine adds (seconds of slack past a
timeout) and ask for a few messages where a few prove the point, so only the rules that
hold a declaration to its word, measured, catch these.
"""

from __future__ import annotations

import math

from mqcontract.messages import QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService
from mqcontract_conformance.selftest.catalogue import Specimen

__all__ = [
    "SPECIMENS",
    "ClaimsCappedBelowDeclared",
    "DelaysCappedBelowDeclared",
    "LateTimeoutsDeclaredExact",
    "ReceiveCappedBelowDeclared",
]


class LateTimeoutsDeclaredExact(InMemoryMessagingService):
    """Rounds every visibility timeout up to whole seconds while declaring millisecond
    precision: a claim of 0.3 s keeps its message for a second."""

    async def _receive(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        return await super()._receive(queue, limit, float(math.ceil(visibility_timeout)))


class ReceiveCappedBelowDeclared(InMemoryMessagingService):
    """Returns at most 100 messages per receive while declaring a limit of 1000, so a
    consumer asking for the declared limit gets a tenth of it."""

    async def _receive(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        return await super()._receive(queue, min(limit, 100), visibility_timeout)


class DelaysCappedBelowDeclared(InMemoryMessagingService):
    """Declares a maximum delay of seven days and keeps at most fifteen minutes (SQS's
    cap): a week's back-off is over in a quarter of an hour."""

    async def _send_delayed(self, queue: str, payload: bytes, delay_seconds: float) -> int:
        return await super()._send_delayed(queue, payload, min(delay_seconds, 900.0))


class ClaimsCappedBelowDeclared(InMemoryMessagingService):
    """Declares a maximum visibility timeout of twelve hours and ends every claim after
    thirty minutes at most (a broker's consumer timeout)."""

    async def _receive(
        self, queue: str, limit: int, visibility_timeout: float
    ) -> list[QueuedMessage]:
        return await super()._receive(queue, limit, min(visibility_timeout, 1800.0))


SPECIMENS: tuple[Specimen, ...] = (
    Specimen(DelaysCappedBelowDeclared, "CAP-3"),
    Specimen(ClaimsCappedBelowDeclared, "CAP-4"),
    Specimen(LateTimeoutsDeclaredExact, "CAP-2"),
    Specimen(ReceiveCappedBelowDeclared, "RECV-6"),
)

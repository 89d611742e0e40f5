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

__all__ = ["SPECIMENS", "LateTimeoutsDeclaredExact", "ReceiveCappedBelowDeclared"]


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


SPECIMENS: tuple[Specimen, ...] = (
    Specimen(LateTimeoutsDeclaredExact, "CAP-2"),
    Specimen(ReceiveCappedBelowDeclared, "RECV-6"),
)

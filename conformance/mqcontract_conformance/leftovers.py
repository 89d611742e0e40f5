"""What the kit prepares once for several cases, removed when their harness is torn down.

A case cleans up after itself. What the kit makes for the cases still to come (the DUR
rules' queues, aged by one clean restart of the private server for all of them) outlives
the case that made it, and nobody knows which case is the last: it is removed when the
harness is torn down through :class:`~.provisioning.Provisioner` (or by calling
:func:`clean_up` before ``harness.teardown()``), before the harness's own teardown,
which may stop the server it is on.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from mqcontract.testing import Harness

__all__ = ["CLEANUP_BOUND", "Cleanup", "PerHarness", "at_teardown", "clean_up"]

Cleanup = Callable[[], Awaitable[None]]
V = TypeVar("V")

#: Seconds one cleanup may take: a server left down by the last crash must not hang the
#: teardown on a provider's connect timeout.
CLEANUP_BOUND = 30.0

_log = logging.getLogger(__name__)


class PerHarness(Generic[V]):
    """A value for each harness, by identity: a harness may compare equal to another,
    or be unhashable (``__eq__`` without ``__hash__``). Forgotten once the harness is
    collected."""

    def __init__(self) -> None:
        self._values: dict[int, tuple[weakref.ref[Harness], V]] = {}

    def get(self, harness: Harness) -> V | None:
        entry = self._values.get(id(harness))
        return entry[1] if entry is not None and entry[0]() is harness else None

    def set(self, harness: Harness, value: V) -> None:
        key = id(harness)

        def forget(ref: weakref.ref[Harness]) -> None:
            if (entry := self._values.get(key)) is not None and entry[0] is ref:
                del self._values[key]

        self._values[key] = (weakref.ref(harness, forget), value)

    def pop(self, harness: Harness) -> V | None:
        value = self.get(harness)
        if value is not None:
            del self._values[id(harness)]
        return value


_PENDING: PerHarness[list[Cleanup]] = PerHarness()


def at_teardown(harness: Harness, cleanup: Cleanup) -> None:
    """Run ``cleanup`` (in the teardown's event loop) when ``harness`` is torn down."""
    pending = _PENDING.get(harness)
    if pending is None:
        _PENDING.set(harness, pending := [])
    pending.append(cleanup)


async def clean_up(harness: Harness) -> None:
    """Run what was left for ``harness``, newest first, each within :data:`CLEANUP_BOUND`;
    a failure is logged, not raised (the harness's own teardown must still run)."""
    for cleanup in reversed(_PENDING.pop(harness) or []):
        try:
            async with asyncio.timeout(CLEANUP_BOUND):
                await cleanup()
        except Exception as exc:  # teardown goes on; the log says why
            _log.warning("%s: a cleanup left for teardown failed: %r", harness.name, exc)

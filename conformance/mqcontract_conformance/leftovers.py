"""What the kit prepares once for several cases, removed when their harness is torn down.

A case cleans up after itself. What the kit makes for the cases still to come (the DUR
rules' queues, aged by one clean restart of the private server for all of them) outlives
the case that made it, and nobody knows which case is the last: it is removed when the
harness is torn down through :class:`~.provisioning.Provisioner`, before the harness's
own teardown (which may stop the server it is on).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Awaitable, Callable

from mqcontract.testing import Harness

__all__ = ["Cleanup", "at_teardown", "clean_up"]

Cleanup = Callable[[], Awaitable[None]]

_log = logging.getLogger(__name__)
_PENDING: weakref.WeakKeyDictionary[Harness, list[Cleanup]] = weakref.WeakKeyDictionary()


def at_teardown(harness: Harness, cleanup: Cleanup) -> None:
    """Run ``cleanup`` (in the teardown's event loop) when ``harness`` is torn down."""
    _PENDING.setdefault(harness, []).append(cleanup)


async def clean_up(harness: Harness) -> None:
    """Run what was left for ``harness``, newest first; a failure is logged, not raised
    (the harness's own teardown must still run)."""
    for cleanup in reversed(_PENDING.pop(harness, [])):
        try:
            await cleanup()
        except Exception as exc:  # teardown goes on; the log says why
            _log.warning("%s: a cleanup left for teardown failed: %r", harness.name, exc)

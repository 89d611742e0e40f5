"""Running one operation's statements: on which connection, within which bound, how often.

After a lost connection every pool connection is expired (a server restart or a mass
termination kills them all) and the work is tried again on a fresh one if it certainly
did not run (no connection was got for it, or ``never_executed`` says so from the
exception and the connection's state) or is idempotent; otherwise the driver's exception
propagates, for the provider's edge to translate (``ConnectionLost``). Either way the
pool replaces dead connections, so the next operation works.

``work`` may run a second statement only after a first one that changed nothing (a
``jsonb`` refusal, a settlement that matched no row): what ``never_executed`` says of
the statement that failed then holds for the whole of it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from mqcontract.providers.pgmq._errors import is_connection_lost, never_executed
from mqcontract.providers.pgmq._lane import PoolLane

__all__ = ["StatementRunner"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Tries of one operation across connection failures.
MAX_ATTEMPTS = 3


class StatementRunner:
    """Runs work on the lane's kept connection or a pool one; see the module docstring."""

    def __init__(self, pool: Any, *, timeout: float, is_closed: Callable[[], bool]) -> None:
        self.pool = pool
        self.lane = PoolLane(pool)
        self._timeout = timeout
        self._is_closed = is_closed

    async def run(
        self, work: Callable[[Any], Awaitable[T]], *, idempotent: bool, single: bool = False
    ) -> T:
        """Run ``work`` on a connection, retrying after a lost connection when safe.

        ``single``: ``work`` is one statement (two at most, for a payload ``jsonb``
        refused), each bounded by the pool's ``command_timeout``. On the kept connection
        nothing else can wait, so the ``asyncio.timeout`` around it is skipped: its timer
        cost as much client CPU as the rest of the provider's own work per call.
        """
        attempt = 0
        while True:
            attempt += 1
            conn: Any = None  # stays None until ``work`` has a connection
            finished = False  # ``work`` returned (a failure after it is no retry's cue)
            try:
                if single and self.lane.ready:
                    async with self.lane.connection() as conn:
                        result = await work(conn)
                        finished = True
                else:
                    async with asyncio.timeout(self._timeout):
                        async with self.lane.connection() as conn:
                            result = await work(conn)
                            finished = True
            except Exception as exc:
                if finished:  # done on the server; only giving the connection back failed
                    log.warning("pgmq: a connection could not be released: %r", exc)
                    return result
                if self._is_closed() or not is_connection_lost(exc):
                    raise
                await self.pool.expire_connections()
                if attempt >= MAX_ATTEMPTS:
                    raise
                # Failing to get a connection, ``work`` never started.
                if not (idempotent or conn is None or never_executed(exc, conn)):
                    raise
                continue
            return result

    async def close(self, timeout: float) -> None:
        """Give the kept connection back and close the pool (terminated if it hangs)."""
        try:
            async with asyncio.timeout(timeout):
                await self.lane.close()
                await self.pool.close()
        except Exception:
            self.pool.terminate()

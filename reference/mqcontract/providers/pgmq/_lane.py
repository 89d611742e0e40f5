"""A connection kept out of the pool for operations that run one at a time.

asyncpg's ``pool.acquire()``/``release()`` costs about as much client CPU as the
statement itself (a task per release, queue hand-offs, proxy bookkeeping): measured with
``mqcontract bench``, it was most of the provider's overhead over raw asyncpg. The lane
keeps one pool connection and lends it to whoever asks while it is free; concurrent
callers get ordinary pool connections, so concurrency is still bounded by the pool.

Anything that escapes the borrower (a broken connection, a cancelled statement, a
statement error) hands the connection back to the pool, which checks and recycles it as
it always does; the next operation borrows a fresh one.

A kept connection can also die while nobody borrows it (the server terminated it): asyncpg
then releases it back to the pool on its own, and every later call on what the lane kept
fails with "connection has been released back to the pool" before anything is sent. So
the lane lends the kept connection only while :func:`usable`, and otherwise gives it up
and takes a fresh one from the pool.
"""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import Any

from asyncpg import exceptions as pgerr  # type: ignore[import-untyped]

__all__ = ["PoolLane", "usable"]


def usable(conn: Any) -> bool:
    """Whether ``conn`` (a connection, or a pool's proxy of one) can still run a statement:
    not closed and, for a proxy, not released back to its pool (asyncpg refuses every
    call on a released proxy with ``InterfaceError``, ``is_closed`` too)."""
    try:
        return not conn.is_closed()
    except pgerr.InterfaceError:
        return False


class _Borrow:
    """``async with lane.connection() as conn``: the kept connection or a pool one."""

    __slots__ = ("_conn", "_lane", "_pooled")

    def __init__(self, lane: PoolLane) -> None:
        self._lane = lane
        self._pooled: Any = None
        self._conn: Any = None

    async def __aenter__(self) -> Any:
        lane = self._lane
        if lane.busy or lane.closed:
            self._pooled = lane.pool.acquire()
            return await self._pooled.__aenter__()
        lane.busy = True
        try:
            kept = lane.kept
            if kept is not None and not usable(kept):
                lane.kept = None
                # Released already (a no-op) or closed: the pool finishes its cleanup.
                with contextlib.suppress(Exception):
                    await lane.pool.release(kept)
                kept = None
            if kept is None:
                lane.kept = kept = await lane.pool.acquire()
        except BaseException:
            lane.busy = False
            raise
        self._conn = kept
        return kept

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._pooled is not None:
            await self._pooled.__aexit__(exc_type, exc, tb)
            return
        lane = self._lane
        try:
            if exc_type is not None or lane.closed:
                lane.kept = None
                await lane.pool.release(self._conn)
        finally:
            lane.busy = False


class PoolLane:
    """See the module docstring."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.kept: Any = None
        self.busy = False
        self.closed = False

    @property
    def ready(self) -> bool:
        """Whether the kept connection is there, free and usable (borrowing it will not
        wait)."""
        kept = self.kept
        return kept is not None and not self.busy and not self.closed and usable(kept)

    def connection(self) -> _Borrow:
        """A connection for one operation (use with ``async with``)."""
        return _Borrow(self)

    async def close(self) -> None:
        """Give the kept connection back (at once, or when its borrower is done)."""
        self.closed = True
        if self.kept is not None and not self.busy:
            conn, self.kept = self.kept, None
            await self.pool.release(conn)

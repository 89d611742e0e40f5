"""A connection kept out of the pool for operations that run one at a time.

asyncpg's ``pool.acquire()``/``release()`` costs about as much client CPU as the
statement itself (a task per release, queue hand-offs, proxy bookkeeping): measured with
``mqcontract bench``, it was most of the provider's overhead over raw asyncpg. The lane
keeps one pool connection and lends it to whoever asks while it is free; concurrent
callers get ordinary pool connections, so concurrency is still bounded by the pool.

Anything that escapes the borrower (a broken connection, a cancelled statement, a
statement error) hands the connection back to the pool, which checks and recycles it as
it always does; the next operation borrows a fresh one.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

__all__ = ["PoolLane"]


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
            if lane.kept is None:
                lane.kept = await lane.pool.acquire()
        except BaseException:
            lane.busy = False
            raise
        self._conn = lane.kept
        return self._conn

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
        """Whether the kept connection is there and free (borrowing it will not wait)."""
        return self.kept is not None and not self.busy and not self.closed

    def connection(self) -> _Borrow:
        """A connection for one operation (use with ``async with``)."""
        return _Borrow(self)

    async def close(self) -> None:
        """Give the kept connection back (at once, or when its borrower is done)."""
        self.closed = True
        if self.kept is not None and not self.busy:
            conn, self.kept = self.kept, None
            await self.pool.release(conn)

"""One sqlite3 connection driven by one dedicated worker thread."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from . import store
from .settings import SqliteSettings

T = TypeVar("T")


class LinkSevered(Exception):
    """The connection was cut under (or before) this call; it did not run to completion."""


class LinkClosed(Exception):
    """The link was shut down; nothing runs on it any more."""


class Link:
    """Serializes every statement of one service on a single thread and connection.

    The connection is opened lazily in the worker thread and reopened by the first call
    after a :meth:`cut`; the call that meets the cut connection fails with
    :class:`LinkSevered`, as it would on a networked database.
    """

    def __init__(self, settings: SqliteSettings) -> None:
        self._settings = settings
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mq-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._cut_pending = False
        self._shut = False
        self.opened = 0  # connections opened so far (observable by tests)

    # -- worker-thread side -------------------------------------------------------------

    def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._shut:
            raise LinkClosed()
        if self._conn is None:
            s = self._settings
            self._conn = store.open_connection(s.path, s.busy_timeout_seconds, s.synchronous)
            self.opened += 1
        conn = self._conn
        try:
            return fn(conn)
        except sqlite3.Error as exc:
            if not self._cut_pending:
                raise
            self._cut_pending = False
            self._discard()
            raise LinkSevered(str(exc)) from exc

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _close_under(self) -> None:
        # Leave the dead handle in place: the next call meets it, like a dropped socket.
        if self._conn is not None:
            self._conn.close()
        else:
            self._cut_pending = False

    def _shutdown(self) -> None:
        self._shut = True
        self._discard()

    # -- event-loop side ----------------------------------------------------------------

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._run, fn)

    def interrupt(self) -> None:
        """Abort whatever statement is running now (safe from any thread)."""
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.interrupt()

    async def cut(self) -> None:
        """Kill the connection under the service: a running statement is aborted, the
        handle is closed, and the next call fails once before a fresh connection is made.
        Returns when the handle is closed."""
        self._cut_pending = True
        self.interrupt()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._close_under)

    async def shutdown(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._thread, self._shutdown)
        finally:
            self._thread.shutdown(wait=False)

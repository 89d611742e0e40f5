"""Conformance harness: one database file per run and worker, plus fault hooks.

Use it as ``mqcontract verify --provider mq_sqlite.harness:make_harness``.

``crash_holder`` / ``freeze_holder`` start a separate process (``mqcontract_fixtures``)
that opens the provider on this run's database file, holds messages and is SIGKILLed /
SIGSTOPped. A claim is a ``visible_at`` time in the file, so the database returns the
messages when it passes, whatever became of the holder.

``private_backend`` is a database file of its own with ``synchronous=FULL`` (what an
application that must not lose a commit even to a power cut sets; WAL's ``NORMAL`` can
lose the last commits then). SQLite has no server: the provider's process is the
server, so a restart is what that process's death leaves behind: every connection
opened on the file is cut at once (statements interrupted, handles closed, nothing
committed by them), and the services open the file again on their next call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import sqlite3
import tempfile
import weakref
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from mqcontract import SupportsPushNotifications, VirtualClock
from mqcontract.errors import BackendUnavailable
from mqcontract.testing import PrivateBackend
from mqcontract_conformance import Harness, HarnessSettings, HookUnavailable
from mqcontract_fixtures.holders import Opener, crash_holder, freeze_holder

from . import __version__, store
from .service import SqliteQueue
from .settings import PROVIDER_NAME, SqliteSettings, load_settings


def run_directory(run_id: str) -> Path:
    """Where a run keeps its database: private to the run id, removed by ``teardown``."""
    return Path(tempfile.gettempdir()) / f"mq_sqlite_{run_id}"


class PrivateFile(PrivateBackend):
    """A database file of its own whose "restart" cuts every connection opened on it."""

    def __init__(self, settings: SqliteSettings, operation_timeout: float) -> None:
        self.settings = settings
        self.operation_timeout = operation_timeout
        self._services: weakref.WeakSet[SqliteQueue] = weakref.WeakSet()

    async def open(self, clock: VirtualClock | None = None) -> SqliteQueue:
        service = await SqliteQueue.connect(self.settings, operation_timeout=self.operation_timeout)
        self._services.add(service)
        return service

    async def restart(self, *, crash: bool = True) -> None:
        for service in list(self._services):
            await service.cut_connection()

    def describe(self) -> dict[str, str]:
        return {"server": "none (embedded)", "synchronous": self.settings.synchronous}


class SqliteHarness(Harness):
    known_broken: Mapping[str, str] = {}

    def __init__(self, name: str, settings: HarnessSettings) -> None:
        super().__init__(name, settings)
        configured = load_settings(settings.config)  # a bad key stops the run here
        self.directory = run_directory(settings.run_id)
        self.sqlite = dataclasses.replace(configured, path=str(self.directory / "queues.db"))
        self._facts: dict[str, str] = {}
        self._private: PrivateFile | None = None

    async def _connect(self) -> SqliteQueue:
        return await SqliteQueue.connect(
            self.sqlite, operation_timeout=self.settings.config.operation_timeout_seconds
        )

    async def setup(self) -> None:
        service = await self._connect()
        try:
            mode = await asyncio.to_thread(self._journal_mode)
        finally:
            await service.close()
        self._facts = {
            "version": __version__,
            "sqlite": sqlite3.sqlite_version,
            "journal_mode": mode,
        }

    def _journal_mode(self) -> str:
        conn = sqlite3.connect(self.sqlite.path)
        try:
            row = conn.execute("PRAGMA journal_mode").fetchone()
            return str(row[0]) if row else "unknown"
        finally:
            conn.close()

    async def teardown(self) -> None:
        await asyncio.to_thread(shutil.rmtree, self.directory, True)

    async def private_backend(self) -> PrivateBackend:
        """A file beside the run's own, kept for the run; removed with the run's directory."""
        if self._private is None:
            path = str(self.directory / "private.db")
            settings = dataclasses.replace(self.sqlite, path=path, synchronous="FULL")
            timeout = self.settings.config.operation_timeout_seconds
            self._private = PrivateFile(settings, timeout)
        return self._private

    async def open(self, clock: VirtualClock | None = None) -> SupportsPushNotifications:
        return await self._connect()

    def describe(self) -> dict[str, str]:
        return dict(self._facts)

    # -- fault hooks -----------------------------------------------------------------------

    @staticmethod
    def _ours(service: SupportsPushNotifications) -> SqliteQueue:
        if not isinstance(service, SqliteQueue):
            raise HookUnavailable(f"not a {PROVIDER_NAME} service: {type(service).__name__}")
        return service

    async def sever_connection(self, service: SupportsPushNotifications) -> None:
        # SQLite has no server to kill a backend on: the closest honest fault is the
        # connection handle dying under the service. A running statement is interrupted,
        # the handle is closed, and the next call meets it dead (ConnectionLost) before
        # the service reconnects. Claims live in the file, so they survive.
        await self._ours(service).cut_connection()

    async def kill_listener(self, service: SupportsPushNotifications) -> None:
        raise HookUnavailable("the sqlite provider has no push, so no listener to kill")

    async def suppress_notifications(
        self, service: SupportsPushNotifications, queue: str
    ) -> Callable[[], Awaitable[None]]:
        raise HookUnavailable("the sqlite provider has no push, so no notification to lose")

    async def crash_holder(
        self,
        service: SupportsPushNotifications,
        queue: str,
        count: int,
        visibility_timeout: float,
    ) -> list[int]:
        self._ours(service)
        return await crash_holder(
            self._opener(), self.settings.config, queue, count, visibility_timeout
        )

    def freeze_holder(
        self,
        service: SupportsPushNotifications,
        queue: str,
        count: int,
        visibility_timeout: float,
    ) -> AbstractAsyncContextManager[list[int]]:
        self._ours(service)
        return freeze_holder(self._opener(), self.settings.config, queue, count, visibility_timeout)

    def _opener(self) -> Opener:
        """How a holder process opens this provider on this run's database file."""
        return Opener(
            f"{__name__}:open_holder",
            {
                "settings": dataclasses.asdict(self.sqlite),
                "operation_timeout": self.settings.config.operation_timeout_seconds,
            },
        )

    async def stored_ids(self, service: SupportsPushNotifications, queue: str) -> list[int]:
        # A separate read-only connection: claims nothing, counts no delivery.
        return await asyncio.to_thread(self._read_ids, queue)

    def _read_ids(self, queue: str) -> list[int]:
        uri = Path(self.sqlite.path).resolve().as_uri() + "?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=self.sqlite.busy_timeout_seconds)
        except sqlite3.Error as exc:
            raise BackendUnavailable(PROVIDER_NAME, self.sqlite.path, str(exc)) from exc
        try:
            return store.stored_ids(conn, queue)
        finally:
            conn.close()


async def open_holder(settings: dict[str, Any], operation_timeout: float) -> SqliteQueue:
    """Opens the provider in a holder process (``crash_holder``, ``freeze_holder``)."""
    return await SqliteQueue.connect(
        SqliteSettings(**settings), operation_timeout=operation_timeout
    )


def make_harness(settings: HarnessSettings) -> Harness:
    return SqliteHarness(PROVIDER_NAME, settings)

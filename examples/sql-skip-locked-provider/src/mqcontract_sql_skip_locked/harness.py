"""The harnesses mqcontract's suite drives the two providers through.

Each run (and xdist worker) gets a database of its own, ``mqc_sql_<run id>``, created in
``setup`` on the configured server and dropped in ``teardown`` (sessions still in it are
ended first), so ``list_queues`` in one run never sees another run's queues. ``setup``
raises ``BackendUnavailable`` when the server does not answer (the suite skips, or fails
with ``--require-backends``). Hooks:

* ``sever_connection``: ends every session of the service from the server's side, as a
  restart or a proxy would — ``pg_terminate_backend`` on the sessions carrying the
  service's ``application_name`` (PostgreSQL), ``KILL CONNECTION`` on the thread ids the
  service has used (MariaDB has no session names) — and returns once they are gone.
* ``stored_ids``: a plain ``SELECT`` of the queue's ids; it claims nothing.
* ``crash_holder`` / ``freeze_holder``: a separate process opens the provider on this
  run's database, holds messages and is SIGKILLed / SIGSTOPped (``mqcontract_fixtures``).
  A frozen holder's claims end by their ``vt`` like any other: the server keeps time.
* ``kill_listener`` (PostgreSQL): ``pg_terminate_backend`` on the LISTEN session;
  ``suppress_notifications`` (PostgreSQL): disables the announcing triggers, then enables
  them again. MariaDB does not push, so neither applies there.
* Ids come from the table, so ``publish_foreign`` does not apply.
* ``private_backend``: a server of the run's own (``mqcontract_fixtures.private``:
  PostgreSQL with fsync and synchronous commit on; MariaDB with the redo log fsynced at
  every commit), started on first use; the DUR rules crash it; ``teardown`` removes it.
* ``raw_sides``: the same statements on the bare driver, for ``mqcontract bench``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiomysql  # type: ignore[import-untyped]
import asyncpg  # type: ignore[import-untyped]
from mqcontract._redact import redact
from mqcontract.clock import VirtualClock
from mqcontract.errors import BackendUnavailable
from mqcontract.service import MessagingService
from mqcontract.testing import Harness, HarnessSettings, HookUnavailable, PrivateBackend
from mqcontract.testing.sides import Side
from mqcontract_fixtures.holders import Opener, crash_holder, freeze_holder
from mqcontract_fixtures.private._server import PrivateSlot, ServerBackend, require

from mqcontract_sql_skip_locked import __version__, _mariadb, _postgres
from mqcontract_sql_skip_locked._config import MARIADB, POSTGRES, SqlQueueConfig, load_settings
from mqcontract_sql_skip_locked.connect import connect_sql_mariadb, connect_sql_postgres
from mqcontract_sql_skip_locked.service import (
    MariaDbQueueService,
    PostgresQueueService,
    SqlQueueService,
)

__all__ = ["MariaDbHarness", "PostgresHarness", "mariadb_harness", "postgres_harness"]

#: Bound on the harness's own calls.
PROBE_TIMEOUT = 5.0


def run_database_name(run_id: str) -> str:
    """``mqc_sql_<run id>`` as a safe lower-case identifier (at most 63 characters)."""
    return f"mqc_sql_{re.sub(r'[^a-z0-9_]', '_', run_id.lower())}"[:63]


def with_database(url: str, database: str) -> str:
    """``url`` pointing at ``database`` instead of its own."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


class SqlHarness(Harness):
    """What both dialects' harnesses share: the run's database, holders, the backdoor."""

    provider = ""

    def __init__(self, settings: HarnessSettings) -> None:
        super().__init__(self.provider, settings)
        base = load_settings(settings.config, self.provider)
        self.admin_url = base.url
        self.database = run_database_name(settings.run_id)
        self.config: SqlQueueConfig = dataclasses.replace(
            base, url=with_database(base.url, self.database)
        )
        self._facts: dict[str, str] = {}

    async def _connect(self, operation_timeout: float) -> SqlQueueService:
        raise NotImplementedError

    async def _create(self) -> None:
        raise NotImplementedError

    async def _drop(self) -> None:
        raise NotImplementedError

    def _driver(self) -> str:
        raise NotImplementedError

    async def setup(self) -> None:
        try:
            await self._create()
        except (OSError, TimeoutError, asyncpg.PostgresError, aiomysql.Error) as exc:
            raise BackendUnavailable(
                self.name, self.admin_url, f"{type(exc).__name__}: {exc}"
            ) from exc
        service = await self._connect(PROBE_TIMEOUT)  # creates the tables
        try:
            self._facts = {
                "version": __version__,
                "server": service.store.server,
                "driver": self._driver(),
                "database": redact(self.config.url),
            }
        finally:
            await service.close()

    async def teardown(self) -> None:
        await self._drop()

    async def open(self, clock: VirtualClock | None = None) -> MessagingService:
        return await self._connect(self.settings.config.operation_timeout_seconds)

    def describe(self) -> dict[str, str]:
        return dict(self._facts)

    # -- hooks -------------------------------------------------------------------------

    def _service(self, service: MessagingService) -> SqlQueueService:
        if not isinstance(service, SqlQueueService) or service.provider_name != self.name:
            raise HookUnavailable(f"not a {self.name} service: {type(service).__name__}")
        return service

    async def stored_ids(self, service: MessagingService, queue: str) -> list[int]:
        return await self._service(service).stored_ids(queue)

    def _opener(self) -> Opener:
        """How a holder process opens this provider on this run's database."""
        return Opener(
            f"{__name__}:open_holder",
            {
                "provider": self.name,
                "settings": dataclasses.asdict(self.config),
                "operation_timeout": self.settings.config.operation_timeout_seconds,
            },
        )

    async def crash_holder(
        self, service: MessagingService, queue: str, count: int, visibility_timeout: float
    ) -> list[int]:
        self._service(service)
        return await crash_holder(
            self._opener(), self.settings.config, queue, count, visibility_timeout
        )

    def freeze_holder(
        self, service: MessagingService, queue: str, count: int, visibility_timeout: float
    ) -> AbstractAsyncContextManager[list[int]]:
        self._service(service)
        return freeze_holder(self._opener(), self.settings.config, queue, count, visibility_timeout)

    def raw_sides(self, workers: int) -> Sequence[Side]:
        from mqcontract_sql_skip_locked.raw import raw_side

        return [raw_side(self.name, self.config, workers=workers)]


class PostgresHarness(SqlHarness):
    """``sql-postgres``: a database per run on the configured PostgreSQL server."""

    provider = POSTGRES
    known_broken: Mapping[str, str] = {}

    def __init__(self, settings: HarnessSettings) -> None:
        super().__init__(settings)
        self._private = PrivateSlot(self.name, self._start_private)

    async def teardown(self) -> None:
        try:
            await super().teardown()
        finally:
            await self._private.close()

    async def private_backend(self) -> PrivateBackend:
        return await self._private.get()

    async def _start_private(self) -> ServerBackend:
        from mqcontract_fixtures.private.postgres import PrivatePostgres

        require(PrivatePostgres, "postgres")
        server = PrivatePostgres()
        try:
            await server.start()
            url = await server.create_database(self.database)
        except BaseException:
            await server.close()
            raise
        config = dataclasses.replace(self.config, url=url)
        timeout = self.settings.config.operation_timeout_seconds

        async def opener(clock: VirtualClock | None) -> MessagingService:
            return await connect_sql_postgres(config, operation_timeout=timeout)

        facts = {"server": f"private PostgreSQL on port {server.port}", **server.settings()}
        return ServerBackend(server, opener, facts)

    async def _connect(self, operation_timeout: float) -> PostgresQueueService:
        return await connect_sql_postgres(self.config, operation_timeout=operation_timeout)

    async def _create(self) -> None:
        await _postgres.create_database(self.admin_url, self.database, timeout=PROBE_TIMEOUT)

    async def _drop(self) -> None:
        await _postgres.drop_database(self.admin_url, self.database, timeout=PROBE_TIMEOUT)

    def _driver(self) -> str:
        return f"asyncpg {asyncpg.__version__}"

    def _postgres(self, service: MessagingService) -> PostgresQueueService:
        if not isinstance(service, PostgresQueueService):
            raise HookUnavailable(f"not a {self.name} service: {type(service).__name__}")
        return service

    async def sever_connection(self, service: MessagingService) -> None:
        name = self._postgres(service).session_name  # the pool's sessions, not the listener's
        await _postgres.terminate_sessions(self.config.url, name, timeout=PROBE_TIMEOUT)

    async def kill_listener(self, service: MessagingService) -> None:
        pid = self._postgres(service).listener.backend_pid
        if pid is None:
            raise HookUnavailable(f"{self.name}: no listener connected (no subscription yet)")
        await _postgres.terminate_pid(self.config.url, pid, timeout=PROBE_TIMEOUT)

    async def suppress_notifications(
        self, service: MessagingService, queue: str
    ) -> Callable[[], Awaitable[None]]:
        """Disable the announcing triggers: the messages are stored, nothing is announced.
        (Triggers are per table, so every queue of this run's database goes quiet.)"""
        self._postgres(service)
        url, prefix = self.config.url, self.config.table_prefix
        await _postgres.set_announcing(url, prefix, on=False, timeout=PROBE_TIMEOUT)

        async def restore() -> None:
            await _postgres.set_announcing(url, prefix, on=True, timeout=PROBE_TIMEOUT)

        return restore


class MariaDbHarness(SqlHarness):
    """``sql-mariadb``: a database per run on the configured MariaDB server."""

    provider = MARIADB
    known_broken: Mapping[str, str] = {}

    def __init__(self, settings: HarnessSettings) -> None:
        super().__init__(settings)
        self._private = PrivateSlot(self.name, self._start_private)

    async def teardown(self) -> None:
        try:
            await super().teardown()
        finally:
            await self._private.close()

    async def private_backend(self) -> PrivateBackend:
        return await self._private.get()

    async def _start_private(self) -> ServerBackend:
        from mqcontract_fixtures.private.mariadb import PrivateMariaDb

        require(PrivateMariaDb, "mariadbd")
        server = PrivateMariaDb()
        try:
            await server.start()
            await _mariadb.create_database(server.url, self.database, timeout=PROBE_TIMEOUT)
        except BaseException:
            await server.close()
            raise
        config = dataclasses.replace(self.config, url=server.database_url(self.database))
        timeout = self.settings.config.operation_timeout_seconds

        async def opener(clock: VirtualClock | None) -> MessagingService:
            return await connect_sql_mariadb(config, operation_timeout=timeout)

        facts = {"server": f"private MariaDB on port {server.port}", **server.settings()}
        return ServerBackend(server, opener, facts)

    async def _connect(self, operation_timeout: float) -> MariaDbQueueService:
        return await connect_sql_mariadb(self.config, operation_timeout=operation_timeout)

    async def _create(self) -> None:
        await _mariadb.create_database(self.admin_url, self.database, timeout=PROBE_TIMEOUT)

    async def _drop(self) -> None:
        await _mariadb.drop_database(self.admin_url, self.database, timeout=PROBE_TIMEOUT)

    def _driver(self) -> str:
        return f"aiomysql {aiomysql.__version__}"

    async def sever_connection(self, service: MessagingService) -> None:
        store = self._service(service).store
        if not isinstance(store, _mariadb.MariaDbStore):
            raise HookUnavailable(f"{self.name}: not a MariaDB store")
        await _mariadb.kill_sessions(self.admin_url, store.thread_ids, timeout=PROBE_TIMEOUT)


async def open_holder(
    provider: str, settings: dict[str, Any], operation_timeout: float
) -> SqlQueueService:
    """Opens the provider in a holder process (``crash_holder``, ``freeze_holder``)."""
    config = SqlQueueConfig(**settings)
    if provider == POSTGRES:
        return await connect_sql_postgres(config, operation_timeout=operation_timeout)
    return await connect_sql_mariadb(config, operation_timeout=operation_timeout)


def postgres_harness(settings: HarnessSettings) -> Harness:
    """Harness factory for the ``sql-postgres`` entry point (``mqcontract.harnesses``)."""
    return PostgresHarness(settings)


def mariadb_harness(settings: HarnessSettings) -> Harness:
    """Harness factory for the ``sql-mariadb`` entry point (``mqcontract.harnesses``)."""
    return MariaDbHarness(settings)

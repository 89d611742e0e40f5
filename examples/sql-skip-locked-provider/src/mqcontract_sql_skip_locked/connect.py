"""Opening the two providers: the factories behind the ``mqcontract.providers`` entry points.

Connecting opens the dialect's pool, reads the server's version and creates the tables if
they are missing; any failure on the way is ``BackendUnavailable`` (its message never
holds the URL's password).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from mqcontract.config import MessagingConfig
from mqcontract.errors import BackendUnavailable, ConfigurationError

from mqcontract_sql_skip_locked._config import MARIADB, POSTGRES, SqlQueueConfig, load_settings
from mqcontract_sql_skip_locked._mariadb import connect_kwargs, connect_mariadb
from mqcontract_sql_skip_locked._postgres import connect_postgres
from mqcontract_sql_skip_locked._store import Store
from mqcontract_sql_skip_locked.service import MariaDbQueueService, PostgresQueueService

__all__ = ["connect_sql_mariadb", "connect_sql_postgres", "open_sql_mariadb", "open_sql_postgres"]


async def _installed(provider: str, settings: SqlQueueConfig, store: Store, bound: float) -> None:
    try:
        async with asyncio.timeout(bound):
            await store.install()
    except Exception as exc:
        with contextlib.suppress(Exception):
            await store.close()
        raise BackendUnavailable(provider, settings.url, f"{type(exc).__name__}: {exc}") from exc


async def connect_sql_postgres(
    settings: SqlQueueConfig, *, operation_timeout: float = 30.0, session_name: str | None = None
) -> PostgresQueueService:
    """Connect to PostgreSQL, create the tables if missing, and return the service."""
    if not settings.url.startswith(("postgresql://", "postgres://")):
        raise ConfigurationError(f"providers.{POSTGRES}.url", "(hidden)", "not a postgresql:// URL")
    name = session_name or f"mqc-sql-{uuid.uuid4().hex[:12]}"
    bound = settings.connect_timeout_seconds
    try:
        async with asyncio.timeout(bound):
            store = await connect_postgres(
                settings.url,
                table_prefix=settings.table_prefix,
                pool_size=settings.pool_size,
                application_name=name,
                timeout=bound,
            )
    except Exception as exc:  # any failure to reach the server means unavailable
        raise BackendUnavailable(POSTGRES, settings.url, f"{type(exc).__name__}: {exc}") from exc
    await _installed(POSTGRES, settings, store, max(bound, operation_timeout))
    return PostgresQueueService(
        store, settings, operation_timeout=operation_timeout, session_name=name
    )


async def connect_sql_mariadb(
    settings: SqlQueueConfig, *, operation_timeout: float = 30.0
) -> MariaDbQueueService:
    """Connect to MariaDB, create the tables if missing, and return the service."""
    try:
        connect_kwargs(settings.url)
    except ValueError as exc:
        raise ConfigurationError(f"providers.{MARIADB}.url", "(hidden)", str(exc)) from None
    bound = settings.connect_timeout_seconds
    try:
        async with asyncio.timeout(bound):
            store = await connect_mariadb(
                settings.url,
                table_prefix=settings.table_prefix,
                pool_size=settings.pool_size,
                timeout=bound,
            )
    except Exception as exc:
        raise BackendUnavailable(MARIADB, settings.url, f"{type(exc).__name__}: {exc}") from exc
    try:
        async with asyncio.timeout(bound):
            sysdate_moves = await store.sysdate_moves()
    except Exception as exc:
        with contextlib.suppress(Exception):
            await store.close()
        raise BackendUnavailable(MARIADB, settings.url, f"{type(exc).__name__}: {exc}") from exc
    if not sysdate_moves:
        await store.close()
        raise ConfigurationError(
            f"providers.{MARIADB}.url",
            "(hidden)",
            "the server runs with --sysdate-is-now: SYSDATE() is frozen like NOW(), and a "
            "settlement that waited for a row lock would settle a claim released meanwhile",
        )
    await _installed(MARIADB, settings, store, max(bound, operation_timeout))
    return MariaDbQueueService(
        store, settings, operation_timeout=operation_timeout, session_name=""
    )


async def open_sql_postgres(config: MessagingConfig) -> PostgresQueueService:
    """Provider factory for the ``sql-postgres`` entry point."""
    return await connect_sql_postgres(
        load_settings(config, POSTGRES), operation_timeout=config.operation_timeout_seconds
    )


async def open_sql_mariadb(config: MessagingConfig) -> MariaDbQueueService:
    """Provider factory for the ``sql-mariadb`` entry point."""
    return await connect_sql_mariadb(
        load_settings(config, MARIADB), operation_timeout=config.operation_timeout_seconds
    )

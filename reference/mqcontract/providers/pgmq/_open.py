"""Opening the PGMQ provider: its pool, and the check that PGMQ is installed."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from mqcontract._redact import scrubbed
from mqcontract.config import MessagingConfig, check_postgres_url
from mqcontract.errors import BackendUnavailable
from mqcontract.providers.pgmq import _sql
from mqcontract.providers.pgmq._errors import ERRORS, PROVIDER
from mqcontract.providers.pgmq._install import (
    NOTIFY_FUNCTION_REVISION,
    installed_version,
    refresh_notify_function,
)
from mqcontract.providers.pgmq._versions import UnsupportedPgmqVersion, is_supported
from mqcontract.providers.pgmq.service import CONNECT_TIMEOUT, PgmqMessagingService
from mqcontract.translation import Failure

__all__ = ["open_pgmq"]


async def _keep_session(conn: Any) -> None:
    """Pool release without asyncpg's default reset query (a second round trip per call).

    The provider leaves no session state behind: no SET, no session advisory locks, no
    cursors, no LISTEN (the listener has a connection of its own). asyncpg still rolls
    back a transaction left open and drops listeners before this runs.
    """


async def open_pgmq(config: MessagingConfig) -> PgmqMessagingService:
    """Provider factory for the ``pgmq`` entry point: a connected service.

    PGMQ and mqcontract's notify function must be installed (``mqcontract pgmq install``
    or :func:`mqcontract.providers.pgmq.install_pgmq`); otherwise ``BackendUnavailable``.
    A notify function from an older mqcontract is replaced in place when the role owns it.
    A PGMQ version the provider was not tested with raises ``UnsupportedPgmqVersion``.
    """
    pg = config.pgmq
    check_postgres_url(pg.database_url)  # also for a configuration built in code
    timeout = config.operation_timeout_seconds
    application_name = f"mqcontract-pgmq-{secrets.token_hex(4)}"
    connect_bound = min(timeout, CONNECT_TIMEOUT)
    try:
        async with asyncio.timeout(connect_bound + 1.0):
            pool = await asyncpg.create_pool(
                pg.database_url,
                min_size=min(pg.pool_min_size, max(pg.pool_max_size, 1)),
                max_size=max(pg.pool_max_size, 1),
                timeout=connect_bound,
                command_timeout=timeout,
                server_settings={"application_name": application_name},
                reset=_keep_session,
            )
    except Exception as exc:
        connecting = Failure(
            PROVIDER, pg.database_url, "connect", timeout=connect_bound, connecting=True
        )
        error = ERRORS.translate(exc, connecting)
        if not isinstance(error, BackendUnavailable):  # any failure to connect
            error = BackendUnavailable(PROVIDER, pg.database_url, str(error or exc))
        raise error from scrubbed(exc)
    try:
        async with asyncio.timeout(timeout):
            row = await pool.fetchrow(_sql.INSTALLED, NOTIFY_FUNCTION_REVISION)
            notify_current = bool(row["notify_current"])
            if row["pgmq"] and row["notify"] and not notify_current:
                # Installed by an older mqcontract: its function names a partitioned
                # queue's notifications after the partition.
                async with pool.acquire() as conn:
                    notify_current = await refresh_notify_function(conn)
    except Exception as exc:
        pool.terminate()
        checking = Failure(PROVIDER, pg.database_url, "connect", timeout=timeout)
        raise (ERRORS.translate(exc, checking) or exc) from scrubbed(exc)
    if not (row["pgmq"] and row["notify"]):
        pool.terminate()
        missing = " and ".join(
            name
            for name, present in (
                ("PGMQ (schema pgmq)", row["pgmq"]),
                ("mqcontract's notify function (schema mqcontract)", row["notify"]),
            )
            if not present
        )
        raise BackendUnavailable(
            PROVIDER,
            pg.database_url,
            f"{missing} missing from this database; "
            f"run `mqcontract pgmq install --dsn {pg.database_url}` (idempotent)",  # redacted
        )
    version = installed_version(row["extension_version"], row["schema_comment"])
    if not is_supported(version):
        pool.terminate()
        raise UnsupportedPgmqVersion(
            version, f"Upgrade it: `mqcontract pgmq install --dsn {pg.database_url}`"
        )
    return PgmqMessagingService(
        pool,
        config=pg,
        operation_timeout=timeout,
        application_name=application_name,
        notify_current=notify_current,
    )

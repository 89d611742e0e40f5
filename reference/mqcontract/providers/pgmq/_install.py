"""Installing PGMQ (the SQL shipped in the ``pgmq`` PyPI package) and our notify function.

PGMQ's SQL script is not idempotent, so the install runs in ONE transaction that first
takes a fixed advisory lock and then checks ``to_regclass('pgmq.meta')``: concurrent
installers serialize and exactly one of them installs. An installed ``pgmq`` extension is
used as it is. No superuser is needed; the database owner suffices.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, Literal

import asyncpg  # type: ignore[import-untyped]

from mqcontract._redact import redact, remember_secrets, scrubbed
from mqcontract.errors import BackendUnavailable, MessagingError
from mqcontract.providers.pgmq._errors import ERRORS, PROVIDER
from mqcontract.translation import Failure

__all__ = [
    "NOTIFY_FUNCTION_SQL",
    "InstallResult",
    "embedded_pgmq_version",
    "install_pgmq",
    "install_pgmq_sync",
]

#: Key of the transaction-level advisory lock serializing installers (arbitrary, fixed).
INSTALL_LOCK_KEY = 0x6D71_6370_676D_71  # "mqcpgmq"
_VERSION_COMMENT = "PGMQ {version} (SQL install by mqcontract)"
_VERSION_IN_COMMENT = re.compile(r"PGMQ (\d+\.\d+\.\d+)")

#: Our schema, the NOTIFY payload builder and the per-queue trigger function.
#: Channel: ``mqcontract_<queue>``. Payload: a JSON object with ``queue`` and ``msg_id``,
#: ``delay`` (seconds until visible) when the row is not visible yet, and ``read_ct``,
#: ``enqueued_at`` (epoch seconds) and ``message`` (always the LAST key) when the whole
#: payload fits in the trigger's byte threshold (clamped below NOTIFY's 8000-byte limit).
NOTIFY_FUNCTION_SQL = r"""
CREATE SCHEMA IF NOT EXISTS mqcontract;
GRANT USAGE ON SCHEMA mqcontract TO PUBLIC;

CREATE OR REPLACE FUNCTION mqcontract.pgmq_notify_payload(
    queue_name text, msg_id bigint, read_ct integer, enqueued_at timestamptz,
    vt timestamptz, message jsonb, threshold_bytes integer
) RETURNS text LANGUAGE plpgsql AS $fn$
DECLARE
    head text := '{"queue":' || to_json(queue_name)::text || ',"msg_id":' || msg_id;
    delay numeric := extract(epoch FROM vt - clock_timestamp());
    whole text;
BEGIN
    IF delay > 0 THEN
        head := head || ',"delay":' || delay;
    END IF;
    IF message IS NOT NULL THEN
        whole := head || ',"read_ct":' || read_ct
            || ',"enqueued_at":' || extract(epoch FROM enqueued_at)
            || ',"message":' || message::text || '}';
        IF octet_length(whole) <= least(coalesce(threshold_bytes, 7000), 7999) THEN
            RETURN whole;
        END IF;
    END IF;
    RETURN head || '}';
END
$fn$;

CREATE OR REPLACE FUNCTION mqcontract.pgmq_notify_insert() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    queue_name text := substring(TG_TABLE_NAME FROM 3);
BEGIN
    PERFORM pg_notify(
        'mqcontract_' || queue_name,
        mqcontract.pgmq_notify_payload(
            queue_name, NEW.msg_id, NEW.read_ct, NEW.enqueued_at, NEW.vt, NEW.message,
            TG_ARGV[0]::integer));
    RETURN NULL;
END
$fn$;
"""


@dataclass(frozen=True, slots=True)
class InstallResult:
    """What :func:`install_pgmq` found or did."""

    #: ``installed``: this call ran PGMQ's SQL; ``found``: PGMQ was already there.
    action: Literal["installed", "found"]
    #: ``extension`` (CREATE EXTENSION pgmq) or ``sql`` (the SQL-only install).
    method: Literal["extension", "sql"]
    #: The PGMQ version, or ``unknown`` for a SQL install made by another tool.
    version: str
    #: The database, credentials redacted.
    target: str

    @property
    def installed(self) -> bool:
        """Whether this call installed PGMQ."""
        return self.action == "installed"

    def describe(self) -> str:
        """One line for a CLI."""
        verb = "installed" if self.installed else "found"
        return f"PGMQ {self.version} ({self.method}) {verb} in {self.target}"


def embedded_pgmq_version() -> str:
    """The PGMQ version of the SQL shipped in the ``pgmq`` package (its ``sql/VERSION``)."""
    text = files("pgmq").joinpath("sql", "VERSION").read_text(encoding="utf-8")
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            return line.strip()
    raise MessagingError("the pgmq package's sql/VERSION file is empty")


def _embedded_pgmq_sql() -> str:
    return files("pgmq").joinpath("sql", "pgmq.sql").read_text(encoding="utf-8")


async def install_into(conn: Any, target: str) -> InstallResult:
    """Install on an open connection (must not be inside a transaction)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1::bigint)", INSTALL_LOCK_KEY)
        ext_version = await conn.fetchval(
            "SELECT extversion FROM pg_extension WHERE extname = 'pgmq'"
        )
        if ext_version is not None:
            result = InstallResult("found", "extension", str(ext_version), target)
        elif await conn.fetchval("SELECT to_regclass('pgmq.meta') IS NOT NULL"):
            comment = await conn.fetchval(
                "SELECT obj_description('pgmq'::regnamespace, 'pg_namespace')"
            )
            match = _VERSION_IN_COMMENT.search(comment or "")
            result = InstallResult("found", "sql", match[1] if match else "unknown", target)
        else:
            version = embedded_pgmq_version()
            await conn.execute(_embedded_pgmq_sql())
            # The SQL-only install records no version; keep it where tools can read it.
            comment = _VERSION_COMMENT.format(version=version).replace("'", "''")
            await conn.execute(f"COMMENT ON SCHEMA pgmq IS '{comment}'")
            result = InstallResult("installed", "sql", version, target)
        await conn.execute(NOTIFY_FUNCTION_SQL)
    return result


async def install_pgmq(dsn: str, *, within: float = 30.0) -> InstallResult:
    """Install PGMQ and mqcontract's notify function into ``dsn``'s database (idempotent).

    Safe under concurrency: exactly one of several simultaneous installers runs the SQL.
    ``within`` bounds the whole call in seconds. Raises
    :class:`~mqcontract.errors.BackendUnavailable` when the database is unreachable.
    """
    remember_secrets(dsn)  # the driver may quote pieces of a password it cannot parse
    target = redact(dsn)
    try:
        async with asyncio.timeout(within):
            conn = await asyncpg.connect(dsn, timeout=min(within, 10.0))
            try:
                return await install_into(conn, target)
            finally:
                await conn.close()
    except TimeoutError:
        raise BackendUnavailable(
            "pgmq", dsn, f"install did not finish within {within:g} s"
        ) from None
    except MessagingError:
        raise
    except Exception as exc:
        failure = Failure(PROVIDER, dsn, "install", connecting=True)
        raise (ERRORS.translate(exc, failure) or exc) from scrubbed(exc)


def install_pgmq_sync(dsn: str, *, within: float = 30.0) -> InstallResult:
    """:func:`install_pgmq` for synchronous callers (a CLI); runs its own event loop."""
    return asyncio.run(install_pgmq(dsn, within=within))

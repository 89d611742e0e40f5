"""Installing PGMQ (the SQL shipped in the ``pgmq`` PyPI package) and our notify function.

PGMQ's SQL script is not idempotent, so the install runs in ONE transaction that first
takes a fixed advisory lock and then checks ``to_regclass('pgmq.meta')``: concurrent
installers serialize and exactly one of them installs. An installed ``pgmq`` extension is
used as it is. No superuser is needed; the database owner suffices.

A SQL install records its version in the ``pgmq`` schema's comment. An older one is
upgraded in place by PGMQ's own upgrade scripts where they can be had (``_versions``); a
version the provider was not tested with is refused, here and when the provider opens.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

import asyncpg  # type: ignore[import-untyped]

from mqcontract._redact import redact, remember_secrets, scrubbed
from mqcontract.errors import BackendUnavailable, MessagingError
from mqcontract.providers.pgmq._errors import ERRORS, PROVIDER
from mqcontract.providers.pgmq._versions import (
    UNKNOWN,
    UnsupportedPgmqVersion,
    available_steps,
    is_supported,
    script_sql,
    shipped_directories,
    upgrade_path,
)
from mqcontract.translation import Failure

__all__ = [
    "NOTIFY_FUNCTION_REVISION",
    "NOTIFY_FUNCTION_SQL",
    "InstallResult",
    "embedded_pgmq_version",
    "install_pgmq",
    "install_pgmq_sync",
    "installed_version",
    "refresh_notify_function",
]

#: Key of the transaction-level advisory lock serializing installers (arbitrary, fixed).
INSTALL_LOCK_KEY = 0x6D71_6370_676D_71  # "mqcpgmq"
_VERSION_COMMENT = "PGMQ {version} (SQL install by mqcontract)"
_VERSION_IN_COMMENT = re.compile(r"PGMQ (\d+\.\d+\.\d+)")

#: Marks the current notify function (its ``COMMENT``): an older one is replaced in place.
NOTIFY_FUNCTION_REVISION = "mqcontract notify 3: infinite times are announced, never refused"

#: Our schema (created once, with the install).
NOTIFY_SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS mqcontract;
GRANT USAGE ON SCHEMA mqcontract TO PUBLIC;
"""

#: The NOTIFY payload builder and the per-queue trigger function.
#: Channel: ``mqcontract_<queue>``. Payload: a JSON object with ``queue`` and ``msg_id``,
#: ``delay`` (seconds until visible) when the row is not visible yet, and ``read_ct``,
#: ``enqueued_at`` (epoch seconds) and ``message`` (always the LAST key) when the whole
#: payload fits in the trigger's byte threshold (clamped below NOTIFY's 8000-byte limit).
#: The queue is named after the table the trigger fires on, taken at its partition root:
#: on a partitioned queue (``pgmq.create_partitioned``) the trigger made on ``q_<queue>``
#: is cloned onto, and fires on, partitions such as ``q_<queue>_p0``. A plain table is
#: no partition (``pg_partition_root`` is NULL) and costs no catalog look-up.
#: A foreign producer may write infinite times, which plain PGMQ takes, so the trigger
#: must not refuse them: a ``vt`` of ``infinity`` (never visible) is not announced, one of
#: ``-infinity`` is visible now (no ``delay``), and a row whose ``enqueued_at`` is not
#: finite is announced as a signal (JSON has no infinity).
NOTIFY_FUNCTIONS_SQL = (
    r"""
CREATE OR REPLACE FUNCTION mqcontract.pgmq_notify_payload(
    queue_name text, msg_id bigint, read_ct integer, enqueued_at timestamptz,
    vt timestamptz, message jsonb, threshold_bytes integer
) RETURNS text LANGUAGE plpgsql AS $fn$
DECLARE
    head text := '{"queue":' || to_json(queue_name)::text || ',"msg_id":' || msg_id;
    delay numeric;
    whole text;
BEGIN
    IF vt = 'infinity' THEN
        RETURN NULL;
    END IF;
    IF isfinite(vt) THEN
        delay := extract(epoch FROM vt - clock_timestamp());
        IF delay > 0 THEN
            head := head || ',"delay":' || delay;
        END IF;
    END IF;
    IF message IS NOT NULL AND isfinite(enqueued_at) THEN
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
    root regclass := pg_partition_root(TG_RELID);
    queue_name text := substring(TG_TABLE_NAME FROM 3);
    payload text;
BEGIN
    IF root IS NOT NULL AND root <> TG_RELID THEN
        SELECT substring(c.relname FROM 3) INTO queue_name FROM pg_class c WHERE c.oid = root;
    END IF;
    payload := mqcontract.pgmq_notify_payload(
        queue_name, NEW.msg_id, NEW.read_ct, NEW.enqueued_at, NEW.vt, NEW.message,
        TG_ARGV[0]::integer);
    IF payload IS NOT NULL THEN
        PERFORM pg_notify('mqcontract_' || queue_name, payload);
    END IF;
    RETURN NULL;
END
$fn$;
"""
    + f"""
COMMENT ON FUNCTION mqcontract.pgmq_notify_insert() IS '{NOTIFY_FUNCTION_REVISION}';
"""
)

#: Everything of ours that the install creates.
NOTIFY_FUNCTION_SQL = NOTIFY_SCHEMA_SQL + NOTIFY_FUNCTIONS_SQL


@dataclass(frozen=True, slots=True)
class InstallResult:
    """What :func:`install_pgmq` found or did."""

    #: ``installed``: this call ran PGMQ's SQL; ``upgraded``: it ran PGMQ's upgrade
    #: scripts from ``previous`` to ``version``; ``found``: PGMQ was there and stays as is.
    action: Literal["installed", "upgraded", "found"]
    #: ``extension`` (CREATE EXTENSION pgmq) or ``sql`` (the SQL-only install).
    method: Literal["extension", "sql"]
    #: The PGMQ version now installed, or ``unknown`` for a SQL install made by another tool.
    version: str
    #: The database, credentials redacted.
    target: str
    #: The version before an upgrade.
    previous: str | None = None
    #: The upgrade scripts run, in order (file names).
    scripts: tuple[str, ...] = ()

    @property
    def installed(self) -> bool:
        """Whether this call installed PGMQ."""
        return self.action == "installed"

    @property
    def supported(self) -> bool:
        """Whether the provider is tested with the version now installed."""
        return is_supported(self.version)

    def describe(self) -> str:
        """One line for a CLI: what was found or done, and against what this ships."""
        if self.action == "upgraded":
            done = f"PGMQ {self.previous} -> {self.version} ({self.method}) upgraded in"
            return f"{done} {self.target} by {', '.join(self.scripts)}"
        line = f"PGMQ {self.version} ({self.method}) {self.action} in {self.target}"
        if self.action == "found":
            line += f"; this mqcontract ships PGMQ {embedded_pgmq_version()}"
        return line


def embedded_pgmq_version() -> str:
    """The PGMQ version of the SQL shipped in the ``pgmq`` package (its ``sql/VERSION``)."""
    text = files("pgmq").joinpath("sql", "VERSION").read_text(encoding="utf-8")
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            return line.strip()
    raise MessagingError("the pgmq package's sql/VERSION file is empty")


def installed_version(extension_version: str | None, schema_comment: str | None) -> str:
    """PGMQ's version from ``pg_extension`` or the schema comment of a SQL install."""
    if extension_version is not None:
        return str(extension_version)
    match = _VERSION_IN_COMMENT.search(schema_comment or "")
    return match[1] if match else UNKNOWN


def _embedded_pgmq_sql() -> str:
    return files("pgmq").joinpath("sql", "pgmq.sql").read_text(encoding="utf-8")


async def refresh_notify_function(conn: Any) -> bool:
    """Replace an older notify function in place (under the install lock); False when the
    role may not (it does not own the function): then the older one stays in use."""
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1::bigint)", INSTALL_LOCK_KEY)
            await conn.execute(NOTIFY_FUNCTIONS_SQL)
    except asyncpg.InsufficientPrivilegeError:
        return False
    return True


async def install_into(
    conn: Any,
    target: str,
    *,
    upgrade: bool = False,
    upgrade_scripts: Sequence[Path] = (),
) -> InstallResult:
    """Install on an open connection (must not be inside a transaction). With ``upgrade``,
    an older SQL install is brought to the shipped version by PGMQ's upgrade scripts (the
    ``pgmq`` package's, then those in ``upgrade_scripts``), in the same transaction."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1::bigint)", INSTALL_LOCK_KEY)
        ext_version = await conn.fetchval(
            "SELECT extversion FROM pg_extension WHERE extname = 'pgmq'"
        )
        if ext_version is not None:
            # The server's extension scripts are its administrator's: ALTER EXTENSION.
            result = InstallResult("found", "extension", str(ext_version), target)
        elif await conn.fetchval("SELECT to_regclass('pgmq.meta') IS NOT NULL"):
            comment = await conn.fetchval(
                "SELECT obj_description('pgmq'::regnamespace, 'pg_namespace')"
            )
            result = InstallResult("found", "sql", installed_version(None, comment), target)
            if upgrade and result.version not in (UNKNOWN, embedded_pgmq_version()):
                result = await _upgrade(conn, result, upgrade_scripts)
        else:
            version = embedded_pgmq_version()
            if not is_supported(version):
                raise UnsupportedPgmqVersion(
                    version,
                    "The installed pgmq package ships it: install one that ships a tested version",
                )
            await conn.execute(_embedded_pgmq_sql())
            await _record_version(conn, version)
            result = InstallResult("installed", "sql", version, target)
        await conn.execute(NOTIFY_FUNCTION_SQL)
    return result


async def _record_version(conn: Any, version: str) -> None:
    """The SQL-only install records no version; keep it where tools can read it."""
    comment = _VERSION_COMMENT.format(version=version).replace("'", "''")
    await conn.execute(f"COMMENT ON SCHEMA pgmq IS '{comment}'")


async def _upgrade(conn: Any, found: InstallResult, directories: Sequence[Path]) -> InstallResult:
    """Run the chain of PGMQ upgrade scripts from ``found.version`` to the shipped one, if
    there is one; otherwise ``found`` as it is (refused later when not supported)."""
    shipped = embedded_pgmq_version()
    steps = available_steps([*shipped_directories(), *directories])
    path = upgrade_path(steps, found.version, shipped)
    if not path:
        return found
    for step in path:
        await conn.execute(script_sql(step))
    await _record_version(conn, shipped)
    names = tuple(step.script.name for step in path)
    return InstallResult("upgraded", "sql", shipped, found.target, found.version, names)


def _refusal(result: InstallResult, directories: Sequence[Path]) -> UnsupportedPgmqVersion:
    shipped = embedded_pgmq_version()
    if result.method == "extension":
        how = f"upgrade the extension (ALTER EXTENSION pgmq UPDATE TO '{shipped}')"
    else:
        looked = ", ".join(str(d) for d in [*shipped_directories(), *directories])
        how = (
            f"no chain of PGMQ upgrade scripts (pgmq--{result.version}--...sql) to "
            f"{shipped} in {looked}; pass PGMQ's sql/ directory with --upgrade-scripts"
        )
    return UnsupportedPgmqVersion(result.version, how)


async def install_pgmq(
    dsn: str,
    *,
    within: float = 30.0,
    upgrade: bool = True,
    upgrade_scripts: Sequence[Path] = (),
) -> InstallResult:
    """Install PGMQ and mqcontract's notify function into ``dsn``'s database (idempotent).

    An older SQL install is upgraded in place with PGMQ's upgrade scripts (``upgrade``;
    see :mod:`._versions`). Safe under concurrency: exactly one of several simultaneous
    installers runs the SQL. ``within`` bounds the whole call in seconds. Raises
    :class:`~mqcontract.errors.BackendUnavailable` when the database is unreachable and
    :class:`UnsupportedPgmqVersion` when it ends with a PGMQ version the provider was not
    tested with (the notify function is installed all the same).
    """
    remember_secrets(dsn)  # the driver may quote pieces of a password it cannot parse
    target = redact(dsn)
    try:
        async with asyncio.timeout(within):
            conn = await asyncpg.connect(dsn, timeout=min(within, 10.0))
            try:
                result = await install_into(
                    conn, target, upgrade=upgrade, upgrade_scripts=upgrade_scripts
                )
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
    if not result.supported:
        raise _refusal(result, upgrade_scripts)
    return result


def install_pgmq_sync(
    dsn: str, *, within: float = 30.0, upgrade: bool = True, upgrade_scripts: Sequence[Path] = ()
) -> InstallResult:
    """:func:`install_pgmq` for synchronous callers (a CLI); runs its own event loop."""
    return asyncio.run(
        install_pgmq(dsn, within=within, upgrade=upgrade, upgrade_scripts=upgrade_scripts)
    )

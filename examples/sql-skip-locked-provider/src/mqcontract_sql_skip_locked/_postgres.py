"""The PostgreSQL dialect: asyncpg, no extension, every operation one statement.

Data-modifying CTEs let each operation be a single autocommitted statement that also
tells whether the queue exists: the first CTE finds the queue's row, the statement works
on it, and the result carries the queue's id (``NULL``: no such queue) beside what it did.
Timestamps are ``timestamptz`` (microseconds) taken from ``clock_timestamp()``, the
actual time, not the transaction's start (``now()``). PostgreSQL locks only the rows a
``FOR UPDATE SKIP LOCKED`` returns, so the index on ``(queue_id, id)`` serves the
id-ordered scan; rows it passes over (held, delayed) stay unlocked. Two triggers announce
messages that become visible by an event (sent without delay, released by nack) with
NOTIFY, for push (:mod:`._listen`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from mqcontract_sql_skip_locked._store import ClaimKey, NoSuchQueue, Outcome, Row

__all__ = [
    "PostgresStore",
    "admin_connection",
    "announce_channel",
    "connect_postgres",
    "create_database",
    "database_url",
    "drop_database",
    "set_announcing",
    "terminate_pid",
    "terminate_sessions",
    "trigger_names",
]

#: Serializes concurrent installs (``CREATE TABLE IF NOT EXISTS`` can still collide).
_INSTALL_LOCK = 0x6D71_6373_716C


def database_url(url: str, database: str) -> str:
    """``url`` pointing at ``database`` instead of its own."""
    return re.sub(r"(://[^/?#]*)(/[^?#]*)?", lambda m: f"{m.group(1)}/{database}", url, count=1)


def _schema(p: str) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS {p}_queues (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS {p}_messages (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue_id      bigint NOT NULL REFERENCES {p}_queues (id) ON DELETE CASCADE,
    body          bytea NOT NULL,
    enqueued_at   timestamptz NOT NULL,
    vt            timestamptz NOT NULL,
    receive_count integer NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS {p}_messages_by_queue ON {p}_messages (queue_id, id);
CREATE OR REPLACE FUNCTION {p}_announce() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_notify('{p}_announce', q.name || ' ' || NEW.id)
    FROM {p}_queues AS q WHERE q.id = NEW.queue_id;
    RETURN NULL;
END $fn$;
CREATE OR REPLACE TRIGGER {p}_announce_sent AFTER INSERT ON {p}_messages
    FOR EACH ROW WHEN (NEW.vt <= NEW.enqueued_at) EXECUTE FUNCTION {p}_announce();
CREATE OR REPLACE TRIGGER {p}_announce_released AFTER UPDATE OF vt ON {p}_messages
    FOR EACH ROW WHEN (NEW.vt < OLD.vt) EXECUTE FUNCTION {p}_announce();
"""


def announce_channel(p: str) -> str:
    """The NOTIFY channel of every table with prefix ``p``; payload ``'<queue> <id>'``."""
    return f"{p}_announce"


def trigger_names(p: str) -> tuple[str, str]:
    """The triggers that announce a message sent without delay, and one released by nack."""
    return f"{p}_announce_sent", f"{p}_announce_released"


class _Sql:
    """The statements, for one table prefix."""

    def __init__(self, p: str) -> None:
        q = f"q AS (SELECT id FROM {p}_queues WHERE name = $1)"
        self.create = f"INSERT INTO {p}_queues (name) VALUES ($1) ON CONFLICT (name) DO NOTHING"
        self.drop = f"DELETE FROM {p}_queues WHERE name = $1"
        self.exists = f"SELECT EXISTS (SELECT 1 FROM {p}_queues WHERE name = $1)"
        self.names = f"SELECT name FROM {p}_queues"
        self.insert = f"""
WITH {q}, t AS (SELECT clock_timestamp() AS now),
ins AS (
    INSERT INTO {p}_messages (queue_id, body, enqueued_at, vt)
    SELECT q.id, b.body, t.now, t.now + make_interval(secs => $3)
    FROM q, t, unnest($2::bytea[]) WITH ORDINALITY AS b (body, n)
    ORDER BY b.n
    RETURNING id)
SELECT (SELECT id FROM q) AS queue_id, ins.id FROM (SELECT 1) AS one LEFT JOIN ins ON true
ORDER BY ins.id"""
        claim = f"""
WITH {q},
picked AS (
    SELECT m.id FROM {p}_messages AS m
    WHERE m.queue_id = (SELECT id FROM q) AND m.vt <= clock_timestamp() {{only}}
    ORDER BY m.id LIMIT $2
    FOR UPDATE SKIP LOCKED),
got AS (
    UPDATE {p}_messages AS m
    SET vt = clock_timestamp() + make_interval(secs => $3), receive_count = m.receive_count + 1
    FROM picked WHERE m.id = picked.id
    RETURNING m.id, m.body, m.receive_count, extract(epoch FROM m.enqueued_at)::float8 AS sent)
SELECT (SELECT id FROM q) AS queue_id, got.* FROM (SELECT 1) AS one LEFT JOIN got ON true
ORDER BY got.id"""
        self.claim = claim.format(only="")
        self.claim_one = claim.format(only="AND m.id = $4")
        held = "m.id = c.id AND m.receive_count = c.token AND m.vt > clock_timestamp()"
        settle = f"""
WITH {q},
c AS (SELECT * FROM unnest($2::bigint[], $3::int[]) WITH ORDINALITY AS c (id, token, n)),
done AS ({{change}} AND m.queue_id = (SELECT id FROM q) AND {held}
         RETURNING m.id, m.receive_count AS token)
SELECT (SELECT id FROM q) AS queue_id, (c.id, c.token) IN (SELECT * FROM done) AS settled,
       m.receive_count
FROM c LEFT JOIN {p}_messages AS m ON m.id = c.id AND m.queue_id = (SELECT id FROM q)
ORDER BY c.n"""
        self.ack = settle.format(change=f"DELETE FROM {p}_messages AS m USING c WHERE true")
        self.nack = settle.format(
            change=f"UPDATE {p}_messages AS m SET vt = clock_timestamp() FROM c WHERE true"
        )
        self.stored_ids = (
            f"SELECT m.id FROM {p}_messages AS m JOIN {p}_queues AS q ON q.id = m.queue_id"
            " WHERE q.name = $1 ORDER BY m.id"
        )
        self.install = _schema(p)
        self.installed = (
            "SELECT count(*) FROM pg_trigger"
            f" WHERE tgrelid = to_regclass('{p}_messages') AND tgname = ANY($1::text[])"
        )
        self.triggers = list(trigger_names(p))


class PostgresStore:
    """:class:`~._store.Store` on an asyncpg pool whose connections carry ``application_name``."""

    def __init__(self, pool: Any, url: str, table_prefix: str, server: str) -> None:
        self._pool = pool
        self._url = url
        self._sql = _Sql(table_prefix)
        self.server = server
        #: The NOTIFY channel the announcing triggers use.
        self.channel = announce_channel(table_prefix)

    async def install(self) -> None:
        """Create what is missing; an installed schema is left alone (a trigger disabled
        on purpose stays disabled)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _INSTALL_LOCK)
            if await conn.fetchval(self._sql.installed, self._sql.triggers) < 2:
                await conn.execute(self._sql.install)

    async def listen_connection(self, application_name: str) -> Any:
        """A new connection of its own for LISTEN (never a pooled one)."""
        return await asyncpg.connect(
            self._url, server_settings={"application_name": application_name}
        )

    async def create_queue(self, queue: str) -> None:
        await self._pool.execute(self._sql.create, queue)

    async def drop_queue(self, queue: str) -> None:
        await self._pool.execute(self._sql.drop, queue)

    async def queue_exists(self, queue: str) -> bool:
        return bool(await self._pool.fetchval(self._sql.exists, queue))

    async def queue_names(self) -> list[str]:
        return sorted(str(r[0]) for r in await self._pool.fetch(self._sql.names))

    async def insert(self, queue: str, bodies: Sequence[bytes], delay: float) -> list[int]:
        rows = await self._pool.fetch(self._sql.insert, queue, list(bodies), delay)
        if rows[0]["queue_id"] is None:
            raise NoSuchQueue(queue)
        return [int(r["id"]) for r in rows if r["id"] is not None]

    async def claim(
        self, queue: str, limit: int, visibility_timeout: float, msg_id: int | None = None
    ) -> list[Row]:
        if msg_id is None:
            rows = await self._pool.fetch(self._sql.claim, queue, limit, visibility_timeout)
        else:
            rows = await self._pool.fetch(
                self._sql.claim_one, queue, limit, visibility_timeout, msg_id
            )
        if rows[0]["queue_id"] is None:
            raise NoSuchQueue(queue)
        return [
            Row(int(r["id"]), bytes(r["body"]), int(r["receive_count"]), float(r["sent"]))
            for r in rows
            if r["id"] is not None
        ]

    async def settle(self, queue: str, keys: Sequence[ClaimKey], *, remove: bool) -> list[Outcome]:
        sql = self._sql.ack if remove else self._sql.nack
        ids, tokens = [k[0] for k in keys], [k[1] for k in keys]
        rows = await self._pool.fetch(sql, queue, ids, tokens)
        if not rows or rows[0]["queue_id"] is None:
            raise NoSuchQueue(queue)
        return [Outcome(bool(r["settled"]), r["receive_count"]) for r in rows]

    async def stored_ids(self, queue: str) -> list[int]:
        return [int(r[0]) for r in await self._pool.fetch(self._sql.stored_ids, queue)]

    async def close(self) -> None:
        await self._pool.close()


async def connect_postgres(
    url: str, *, table_prefix: str, pool_size: int, application_name: str, timeout: float
) -> PostgresStore:
    """Open the pool (one connection at once, up to ``pool_size``) and read the version."""
    pool = await asyncpg.create_pool(
        url,
        min_size=1,
        max_size=pool_size,
        timeout=timeout,
        server_settings={"application_name": application_name},
    )
    try:
        version = await pool.fetchval("SHOW server_version")
    except BaseException:
        await pool.close()
        raise
    return PostgresStore(pool, url, table_prefix, f"PostgreSQL {version}")


# -- administration (the harness: a database per run, killing sessions) -----------------


async def admin_connection(url: str, timeout: float) -> Any:
    return await asyncpg.connect(url, timeout=timeout)


async def create_database(url: str, database: str, *, timeout: float) -> None:
    """(Re)create ``database`` (a checked identifier) on the server of ``url``."""
    conn = await admin_connection(url, timeout)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {database}")
    finally:
        await conn.close()


async def drop_database(url: str, database: str, *, timeout: float) -> None:
    """Drop ``database``, ending every session still in it."""
    conn = await admin_connection(url, timeout)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    finally:
        await conn.close()


async def terminate_sessions(url: str, application_name: str, *, timeout: float) -> int:
    """``pg_terminate_backend`` every session named ``application_name``; return once those
    are gone (or ``timeout`` passed). How many there were. (asyncpg's pool may open a
    fresh session under the same name meanwhile, to keep its minimum size.)"""
    conn = await admin_connection(url, timeout)
    try:
        pids = [
            r[0]
            for r in await conn.fetch(
                "SELECT pid FROM pg_stat_activity"
                " WHERE application_name = $1 AND pid <> pg_backend_pid()",
                application_name,
            )
        ]
        for pid in pids:
            await conn.execute("SELECT pg_terminate_backend($1)", pid)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            alive = "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])"
            if not await conn.fetchval(alive, pids):
                break
            await asyncio.sleep(0.01)  # polling the server: there is no event to wait for
        return len(pids)
    finally:
        await conn.close()


async def terminate_pid(url: str, pid: int, *, timeout: float) -> None:
    """``pg_terminate_backend(pid)`` and return once that session is gone."""
    conn = await admin_connection(url, timeout)
    try:
        await conn.execute("SELECT pg_terminate_backend($1)", pid)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if not await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
                break
            await asyncio.sleep(0.01)  # polling the server: there is no event to wait for
    finally:
        await conn.close()


async def set_announcing(url: str, table_prefix: str, *, on: bool, timeout: float) -> None:
    """Enable or disable the announcing triggers (for every queue of these tables)."""
    action = "ENABLE" if on else "DISABLE"
    conn = await admin_connection(url, timeout)
    try:
        async with conn.transaction():
            for name in trigger_names(table_prefix):
                await conn.execute(f"ALTER TABLE {table_prefix}_messages {action} TRIGGER {name}")
    finally:
        await conn.close()

"""The MariaDB dialect: aiomysql, InnoDB, short explicit transactions.

What MariaDB 10.11 needs that PostgreSQL does not (each checked on the server):

* **READ COMMITTED, set per session.** Under the default REPEATABLE READ, InnoDB keeps a
  lock on every row a locking read *passed over* until commit, so an ack of a held
  message waits for a concurrent receive's transaction; under READ COMMITTED rows that
  do not match the ``WHERE`` are unlocked at once.
* **A claim scans ``(queue_id, id)`` in order, forced.** ``… ORDER BY id LIMIT n FOR
  UPDATE SKIP LOCKED`` planned as a range on ``(queue_id, vt, id)`` plus a filesort
  (MariaDB 10.11's plan for a batch sent together: ``EXPLAIN`` says ``Using filesort``)
  locks every visible row of the queue until its transaction ends, so concurrent
  receivers find the queue empty, or skip ahead of rows they get later. Scanning the
  ``(queue_id, id)`` index (``FORCE INDEX``) stops after ``n`` rows; rows not yet visible
  that it passes are unlocked at once (READ COMMITTED, below). No statement needs
  ``(queue_id, vt, id)`` any more; it stays so that tables made before keep their
  schema but for one added index.
* **No ``UPDATE … RETURNING``.** A claim is ``SELECT … FOR UPDATE SKIP LOCKED`` then an
  ``UPDATE`` of the rows it locked, in one transaction; the new ``receive_count`` is the
  one read plus one (the row stays locked in between). ``INSERT``/``DELETE … RETURNING``
  exist and are used.
* **``NOW(6)``, never ``NOW()``**, which is whole seconds (and ``SYSDATE(6)`` where a
  statement re-checks a row another session changed, see ``_Sql._held``); ``DATETIME(6)`` keeps
  microseconds (fractions beyond are truncated). The session's ``time_zone`` is UTC, so
  ``UNIX_TIMESTAMP`` of a stored ``DATETIME`` is the epoch.
* **Autocommit on.** Both drivers start with it off; a poller on a connection left in a
  REPEATABLE READ transaction would keep reading its first snapshot.
* A connection whose call was cancelled or failed is closed, never returned to the pool:
  its unread reply would be the next caller's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomysql  # type: ignore[import-untyped]
import pymysql  # type: ignore[import-untyped]

from mqcontract_sql_skip_locked._store import ClaimKey, NoSuchQueue, Outcome, Row

__all__ = [
    "SESSION_SETUP",
    "MariaDbStore",
    "admin_cursor",
    "connect_kwargs",
    "connect_mariadb",
    "create_database",
    "drop_database",
    "kill_sessions",
]

#: Run on every new connection (``init_command``).
SESSION_SETUP = "SET SESSION tx_isolation = 'READ-COMMITTED', time_zone = '+00:00'"


def connect_kwargs(url: str, *, database: str | None = None) -> dict[str, Any]:
    """aiomysql's keyword arguments for a ``mysql://user:password@host:port/db`` URL."""
    parts = urlsplit(url)
    if parts.scheme not in {"mysql", "mariadb"}:
        raise ValueError("expected a mysql:// or mariadb:// URL")
    db = database if database is not None else unquote(parts.path.lstrip("/"))
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": unquote(parts.username or "root"),
        "password": unquote(parts.password or ""),
        "db": db or None,
    }


def _schema(p: str) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS {p}_queues (
    id          BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name        VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL UNIQUE,
    created_at  DATETIME(6) NOT NULL
) ENGINE = InnoDB""",
        f"""CREATE TABLE IF NOT EXISTS {p}_messages (
    id            BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    queue_id      BIGINT NOT NULL,
    body          LONGBLOB NOT NULL,
    enqueued_at   DATETIME(6) NOT NULL,
    vt            DATETIME(6) NOT NULL,
    receive_count INT NOT NULL DEFAULT 0,
    KEY {p}_messages_due (queue_id, vt, id),
    KEY {p}_messages_order (queue_id, id),
    CONSTRAINT {p}_messages_queue FOREIGN KEY (queue_id)
        REFERENCES {p}_queues (id) ON DELETE CASCADE
) ENGINE = InnoDB""",
    ]


def _marks(n: int, mark: str = "%s") -> str:
    return ", ".join([mark] * n)


class _Sql:
    """The statements, for one table prefix."""

    def __init__(self, p: str) -> None:
        self.install = _schema(p)
        self.table_names = (f"{p}_queues", f"{p}_messages")
        self.tables = (
            "SELECT COUNT(*) FROM information_schema.TABLES"
            " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN (%s, %s)"
        )
        #: Tables made before claims scanned ``(queue_id, id)`` get its index.
        self.order_index = (
            "SELECT COUNT(*) FROM information_schema.STATISTICS"
            " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s AND INDEX_NAME = %s"
        )
        self.order_index_names = (f"{p}_messages", f"{p}_messages_order")
        self.add_order_index = f"CREATE INDEX {p}_messages_order ON {p}_messages (queue_id, id)"
        self.create = (
            f"INSERT INTO {p}_queues (name, created_at) VALUES (%s, NOW(6))"
            " ON DUPLICATE KEY UPDATE name = name"  # INSERT IGNORE would warn
        )
        self.drop = f"DELETE FROM {p}_queues WHERE name = %s"
        self.queue_id = f"SELECT id FROM {p}_queues WHERE name = %s"
        self.names = f"SELECT name FROM {p}_queues"
        self.p = p
        self.stored_ids = (
            f"SELECT m.id FROM {p}_messages AS m JOIN {p}_queues AS q ON q.id = m.queue_id"
            " WHERE q.name = %s ORDER BY m.id"
        )

    def insert(self, n: int) -> str:
        """``n`` bodies as a derived table, inserted in their order (ids follow it)."""
        rows = " UNION ALL ".join(["SELECT %s AS n, %s AS body"] * n)
        return (
            f"INSERT INTO {self.p}_messages (queue_id, body, enqueued_at, vt)"
            " SELECT q.id, b.body, NOW(6), NOW(6) + INTERVAL %s MICROSECOND"
            f" FROM {self.p}_queues AS q JOIN ({rows}) AS b WHERE q.name = %s"
            " ORDER BY b.n RETURNING id"
        )

    def pick(self, only: bool) -> str:
        one = " AND id = %s" if only else ""
        return (
            "SELECT id, body, receive_count, UNIX_TIMESTAMP(enqueued_at)"
            f" FROM {self.p}_messages FORCE INDEX ({self.p}_messages_order)"
            f" WHERE queue_id = %s AND vt <= NOW(6){one}"
            " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED"
        )

    def hold(self, n: int) -> str:
        return (
            f"UPDATE {self.p}_messages SET vt = NOW(6) + INTERVAL %s MICROSECOND,"
            f" receive_count = receive_count + 1 WHERE id IN ({_marks(n)})"
        )

    def _held(self, n: int) -> str:
        """The rows still held by these claims. ``SYSDATE(6)``, not ``NOW(6)``: a settlement
        that waited for another's row lock re-checks the row as that session left it, and
        ``NOW(6)`` is frozen when the statement began; a nack committed meanwhile sets
        ``vt`` to its own, later ``NOW(6)``, which the frozen clock would still call held
        (two nacks, or a nack and an ack, of one claim would both take effect)."""
        pairs = _marks(n, "(%s, %s)")
        return (
            f" WHERE queue_id = (SELECT id FROM {self.p}_queues WHERE name = %s)"
            f" AND id IN ({_marks(n)}) AND (id, receive_count) IN ({pairs}) AND vt > SYSDATE(6)"
        )

    def ack(self, n: int) -> str:
        return f"DELETE FROM {self.p}_messages{self._held(n)} RETURNING id, receive_count"

    def nack(self) -> str:
        return f"UPDATE {self.p}_messages SET vt = NOW(6){self._held(1)}"

    def counts(self, n: int) -> str:
        return (
            f"SELECT id, receive_count FROM {self.p}_messages"
            f" WHERE queue_id = %s AND id IN ({_marks(n)})"
        )


#: Most payload bytes one ``INSERT`` carries (see :meth:`MariaDbStore.insert`).
CHUNK_BYTES = 4 * 1_048_576


def _chunks(bodies: Sequence[bytes]) -> list[Sequence[bytes]]:
    """``bodies`` in consecutive runs of at most :data:`CHUNK_BYTES` (at least one each)."""
    chunks: list[Sequence[bytes]] = []
    start, size = 0, 0
    for i, body in enumerate(bodies):
        if i > start and size + len(body) > CHUNK_BYTES:
            chunks.append(bodies[start:i])
            start, size = i, 0
        size += len(body)
    chunks.append(bodies[start:])
    return chunks


def _micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


#: InnoDB's "Deadlock found when trying to get lock; try restarting transaction".
DEADLOCK = 1213
#: Times a settlement chosen as a deadlock's victim is run (its statement rolled back).
DEADLOCK_RETRIES = 3


class MariaDbStore:
    """:class:`~._store.Store` on an aiomysql pool; remembers its sessions' thread ids."""

    def __init__(self, pool: Any, table_prefix: str, server: str) -> None:
        self._pool = pool
        self._sql = _Sql(table_prefix)
        self.server = server
        #: Server thread ids of every connection this store has used (for KILL).
        self.thread_ids: set[int] = set()

    @contextlib.asynccontextmanager
    async def _cursor(self) -> AsyncIterator[Any]:
        conn = await self._pool.acquire()
        self.thread_ids.add(conn.thread_id())
        try:
            async with conn.cursor() as cur:
                yield cur
        except NoSuchQueue:  # a clean answer: the connection is fine
            raise
        except BaseException:
            conn.close()  # half-read replies or an open transaction: never reuse it
            raise
        finally:
            self._pool.release(conn)

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Any]:
        async with self._cursor() as cur:
            await cur.execute("BEGIN")
            try:
                yield cur
            except NoSuchQueue:  # nothing changed: end the transaction, keep the connection
                await cur.execute("ROLLBACK")
                raise
            await cur.execute("COMMIT")

    async def _queue_id(self, cur: Any, queue: str) -> int:
        await cur.execute(self._sql.queue_id, (queue,))
        row = await cur.fetchone()
        if row is None:
            raise NoSuchQueue(queue)
        return int(row[0])

    async def install(self) -> None:
        """Create the tables unless both exist, under a named lock (concurrent installers
        serialize; ``IF NOT EXISTS`` on an existing table would raise a warning)."""
        async with self._cursor() as cur:
            await cur.execute("SELECT GET_LOCK(CONCAT(DATABASE(), '.mqc_install'), 30)")
            try:
                await cur.execute(self._sql.tables, self._sql.table_names)
                (present,) = await cur.fetchone()
                if int(present) < len(self._sql.table_names):
                    for statement in self._sql.install:
                        await cur.execute(statement)
                await cur.execute(self._sql.order_index, self._sql.order_index_names)
                (indexed,) = await cur.fetchone()
                if not int(indexed):
                    await cur.execute(self._sql.add_order_index)
            finally:
                await cur.execute("SELECT RELEASE_LOCK(CONCAT(DATABASE(), '.mqc_install'))")

    async def create_queue(self, queue: str) -> None:
        async with self._cursor() as cur:
            await cur.execute(self._sql.create, (queue,))

    async def drop_queue(self, queue: str) -> None:
        async with self._cursor() as cur:
            await cur.execute(self._sql.drop, (queue,))

    async def queue_exists(self, queue: str) -> bool:
        async with self._cursor() as cur:
            await cur.execute(self._sql.queue_id, (queue,))
            return await cur.fetchone() is not None

    async def queue_names(self) -> list[str]:
        async with self._cursor() as cur:
            await cur.execute(self._sql.names)
            return sorted(str(r[0]) for r in await cur.fetchall())

    async def insert(self, queue: str, bodies: Sequence[bytes], delay: float) -> list[int]:
        """One ``INSERT … SELECT`` per chunk of at most :data:`CHUNK_BYTES`, all chunks in
        one transaction: a statement must fit in ``max_allowed_packet`` (16 MiB here, and
        escaping can double binary data)."""
        chunks = _chunks(bodies)
        ids: list[int] = []
        async with self._transaction() if len(chunks) > 1 else self._cursor() as cur:
            for chunk in chunks:
                args: list[object] = [_micros(delay)]
                for n, body in enumerate(chunk):
                    args += [n, body]
                args.append(queue)
                await cur.execute(self._sql.insert(len(chunk)), args)
                got = sorted(int(r[0]) for r in await cur.fetchall())
                if not got:
                    raise NoSuchQueue(queue)
                ids += got
        return ids

    async def claim(
        self, queue: str, limit: int, visibility_timeout: float, msg_id: int | None = None
    ) -> list[Row]:
        async with self._transaction() as cur:
            queue_id = await self._queue_id(cur, queue)
            only = () if msg_id is None else (msg_id,)
            await cur.execute(self._sql.pick(msg_id is not None), (queue_id, *only, limit))
            rows = await cur.fetchall()
            if rows:
                ids = [int(r[0]) for r in rows]
                await cur.execute(self._sql.hold(len(ids)), (_micros(visibility_timeout), *ids))
        return [Row(int(r[0]), bytes(r[1]), int(r[2]) + 1, float(r[3])) for r in rows]

    async def settle(self, queue: str, keys: Sequence[ClaimKey], *, remove: bool) -> list[Outcome]:
        """:meth:`_settle`, again when InnoDB chose it as a deadlock's victim (1213):
        the victim's statement is rolled back whole, so running it again is safe (two
        overlapping settlements of the same rows deadlock now and then)."""
        for attempt in range(DEADLOCK_RETRIES):
            try:
                return await self._settle(queue, keys, remove=remove)
            except aiomysql.OperationalError as exc:
                if exc.args[:1] != (DEADLOCK,) or attempt == DEADLOCK_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    async def _settle(self, queue: str, keys: Sequence[ClaimKey], *, remove: bool) -> list[Outcome]:
        """One autocommitted statement decides; only when it left a claim unsettled do
        two more reads say whether the queue exists and what the rows' counts are now."""
        ids = [k[0] for k in keys]
        pairs = [v for k in keys for v in k]
        async with self._cursor() as cur:
            done: set[ClaimKey]
            if remove:
                await cur.execute(self._sql.ack(len(keys)), (queue, *ids, *pairs))
                done = {(int(r[0]), int(r[1])) for r in await cur.fetchall()}
            else:  # nack settles one claim at a time: the row count says whether it did
                await cur.execute(self._sql.nack(), (queue, *ids, *pairs))
                done = set(keys) if cur.rowcount == 1 else set()
            counts: dict[int, int] = {}
            if not done.issuperset(keys):
                queue_id = await self._queue_id(cur, queue)
                await cur.execute(self._sql.counts(len(ids)), (queue_id, *ids))
                counts = {int(r[0]): int(r[1]) for r in await cur.fetchall()}
        return [Outcome(key in done, counts.get(key[0])) for key in keys]

    async def sysdate_moves(self) -> bool:
        """Whether ``SYSDATE(6)`` is the time it is read, as the settlements need (see
        ``_Sql._held``); a server started with ``--sysdate-is-now`` makes it ``NOW(6)``."""
        async with self._cursor() as cur:
            await cur.execute("SELECT NOW(6) < SYSDATE(6) FROM (SELECT SLEEP(0.002)) AS pause")
            (moves,) = await cur.fetchone()
        return bool(moves)

    async def stored_ids(self, queue: str) -> list[int]:
        async with self._cursor() as cur:
            await cur.execute(self._sql.stored_ids, (queue,))
            return [int(r[0]) for r in await cur.fetchall()]

    async def close(self) -> None:
        self._pool.close()
        await self._pool.wait_closed()


async def connect_mariadb(
    url: str, *, table_prefix: str, pool_size: int, timeout: float
) -> MariaDbStore:
    """Open the pool (autocommit, READ COMMITTED, UTC) and read the server's version."""
    pool = await aiomysql.create_pool(
        minsize=1,
        maxsize=pool_size,
        autocommit=True,
        init_command=SESSION_SETUP,
        connect_timeout=timeout,
        **connect_kwargs(url),
    )
    try:
        async with pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute("SELECT VERSION()")
            (version,) = await cur.fetchone()
    except BaseException:
        pool.close()
        await pool.wait_closed()
        raise
    return MariaDbStore(pool, table_prefix, f"MariaDB {str(version).split('-')[0]}")


# -- administration (the harness: a database per run, killing sessions) -----------------


@contextlib.asynccontextmanager
async def admin_cursor(url: str, *, timeout: float) -> AsyncIterator[Any]:
    """A cursor on a connection of its own (no database selected), closed afterwards."""
    conn = await aiomysql.connect(
        autocommit=True, connect_timeout=timeout, **connect_kwargs(url, database="")
    )
    try:
        async with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


async def create_database(url: str, database: str, *, timeout: float) -> None:
    """(Re)create ``database`` (a checked identifier) on the server of ``url``."""
    async with admin_cursor(url, timeout=timeout) as cur:
        await cur.execute(
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (database,)
        )
        (present,) = await cur.fetchone()
        if present:
            await cur.execute(f"DROP DATABASE {database}")
        await cur.execute(f"CREATE DATABASE {database}")


async def drop_database(url: str, database: str, *, timeout: float) -> None:
    """Kill every session using ``database``, then drop it."""
    async with admin_cursor(url, timeout=timeout) as cur:
        await cur.execute(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s AND ID <> CONNECTION_ID()",
            (database,),
        )
        for (thread_id,) in await cur.fetchall():
            with contextlib.suppress(pymysql.err.MySQLError):  # ended meanwhile
                await cur.execute(f"KILL CONNECTION {int(thread_id)}")
        await cur.execute(
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (database,)
        )
        (present,) = await cur.fetchone()
        if present:
            await cur.execute(f"DROP DATABASE {database}")


async def kill_sessions(url: str, thread_ids: set[int], *, timeout: float) -> int:
    """``KILL CONNECTION`` each of ``thread_ids`` still connected; return once none is
    left (or ``timeout`` passed). How many were killed."""
    if not thread_ids:
        return 0
    marks = _marks(len(thread_ids))
    alive = f"SELECT ID FROM information_schema.PROCESSLIST WHERE ID IN ({marks})"
    ids = sorted(thread_ids)
    async with admin_cursor(url, timeout=timeout) as cur:
        await cur.execute(alive, ids)
        found = [int(r[0]) for r in await cur.fetchall()]
        for thread_id in found:
            with contextlib.suppress(pymysql.err.MySQLError):  # ended meanwhile
                await cur.execute(f"KILL CONNECTION {thread_id}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            await cur.execute(alive, ids)
            if not await cur.fetchall():
                break
            await asyncio.sleep(0.01)
        return len(found)

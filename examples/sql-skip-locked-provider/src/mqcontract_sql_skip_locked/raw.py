"""The table queue without mqcontract, for ``mqcontract bench``: the same statements on the
bare driver, the way one writes ``SKIP LOCKED`` by hand.

Both sides work on the queues the provider created (same tables, same index). A send is
one ``INSERT``; a receive claims with ``FOR UPDATE SKIP LOCKED`` and deletes each message
by id and read count; consumers are drain loops that sleep for the poll interval when a
claim comes back empty (neither side has push). The queue's id is looked up once per
queue, as a hand-written consumer would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import aiomysql  # type: ignore[import-untyped]
import asyncpg  # type: ignore[import-untyped]
from mqcontract.testing.sides import Side, batches

from mqcontract_sql_skip_locked._config import POSTGRES, SqlQueueConfig
from mqcontract_sql_skip_locked._mariadb import SESSION_SETUP, connect_kwargs

__all__ = ["MariaDbRawSide", "PostgresRawSide", "raw_side"]

#: The visibility timeout raw receives use (seconds).
VT_SECONDS = 30


class _Claimer(Protocol):
    async def claim_delete(self, queue: str, limit: int, on_message: Callable[[], None]) -> int:
        """Claim up to ``limit``, call ``on_message`` and delete each; how many."""


class _DrainConsumer:
    """``workers`` loops claiming ``batch`` at a time; an empty claim sleeps ``idle``."""

    def __init__(
        self,
        claimer: _Claimer,
        queue: str,
        on_message: Callable[[], None],
        *,
        workers: int,
        batch: int,
        idle: float,
    ) -> None:
        self._claimer = claimer
        self._queue = queue
        self._on_message = on_message
        self._workers = workers
        self._batch = batch
        self._idle = idle
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.acked = 0

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop()) for _ in range(self._workers)]

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            done = await self._claimer.claim_delete(self._queue, self._batch, self._on_message)
            self.acked += done
            if not done:
                try:
                    async with asyncio.timeout(self._idle):
                        await self._stopping.wait()
                except TimeoutError:
                    pass

    async def stop(self) -> None:
        # Each loop finishes its statement: cancelling one mid-transaction would leave
        # its connection (and the rows it locked) in limbo.
        self._stopping.set()
        await asyncio.gather(*self._tasks)


class PostgresRawSide:
    """asyncpg, one pool, one statement per operation."""

    label = "raw"

    def __init__(self, settings: SqlQueueConfig, *, workers: int) -> None:
        p = settings.table_prefix
        self._url = settings.url
        self._workers = workers
        self._idle = settings.poll_interval_seconds
        self._pool: Any = None
        self._queue_ids: dict[str, int] = {}
        self._queue_id_sql = f"SELECT id FROM {p}_queues WHERE name = $1"
        self._send = (
            f"INSERT INTO {p}_messages (queue_id, body, enqueued_at, vt)"
            " VALUES ($1, $2, clock_timestamp(), clock_timestamp()) RETURNING id"
        )
        self._send_batch = (
            f"INSERT INTO {p}_messages (queue_id, body, enqueued_at, vt)"
            " SELECT $1, b, clock_timestamp(), clock_timestamp() FROM unnest($2::bytea[]) AS b"
            " RETURNING id"
        )
        self._claim = f"""
UPDATE {p}_messages AS m
SET vt = clock_timestamp() + make_interval(secs => {VT_SECONDS}),
    receive_count = m.receive_count + 1
FROM (SELECT id FROM {p}_messages WHERE queue_id = $1 AND vt <= clock_timestamp()
      ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) AS picked
WHERE m.id = picked.id
RETURNING m.id, m.body, m.receive_count"""
        self._delete = f"DELETE FROM {p}_messages WHERE id = $1 AND receive_count = $2"
        self.description = (
            f"asyncpg {asyncpg.__version__}: INSERT / UPDATE … FROM (SELECT … FOR UPDATE SKIP "
            "LOCKED) RETURNING / DELETE by id and read count, one statement each, polling"
        )

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(self._url, min_size=1, max_size=self._workers + 2)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def _queue_id(self, queue: str) -> int:
        if queue not in self._queue_ids:
            self._queue_ids[queue] = int(await self._pool.fetchval(self._queue_id_sql, queue))
        return self._queue_ids[queue]

    async def send(self, queue: str, payloads: Sequence[bytes]) -> None:
        queue_id = await self._queue_id(queue)
        async with self._pool.acquire() as conn:
            for payload in payloads:
                await conn.fetchval(self._send, queue_id, payload)

    async def send_batch(self, queue: str, payloads: Sequence[bytes], batch: int) -> None:
        queue_id = await self._queue_id(queue)
        async with self._pool.acquire() as conn:
            for chunk in batches(payloads, batch):
                await conn.fetch(self._send_batch, queue_id, list(chunk))

    async def claim_delete(self, queue: str, limit: int, on_message: Callable[[], None]) -> int:
        queue_id = await self._queue_id(queue)
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(self._claim, queue_id, limit)
            for row in rows:
                bytes(row["body"])
                on_message()
                await conn.execute(self._delete, row["id"], row["receive_count"])
        return len(rows)

    async def receive_ack(self, queue: str, count: int, limit: int) -> int:
        return await _receive_ack(self, queue, count, limit)

    def consumer(
        self, queue: str, on_message: Callable[[], None], *, mode: str, workers: int, batch: int
    ) -> _DrainConsumer:
        return _DrainConsumer(
            self, queue, on_message, workers=workers, batch=batch, idle=self._idle
        )


class MariaDbRawSide:
    """aiomysql, one pool (autocommit, READ COMMITTED), a claim is one short transaction."""

    label = "raw"

    def __init__(self, settings: SqlQueueConfig, *, workers: int) -> None:
        p = settings.table_prefix
        self._url = settings.url
        self._workers = workers
        self._idle = settings.poll_interval_seconds
        self._pool: Any = None
        self._queue_ids: dict[str, int] = {}
        self._p = p
        self._send = (
            f"INSERT INTO {p}_messages (queue_id, body, enqueued_at, vt)"
            " VALUES (%s, %s, NOW(6), NOW(6))"
        )
        self._send_many = (
            f"INSERT INTO {p}_messages (queue_id, body, enqueued_at, vt) VALUES {{rows}}"
        )
        self._pick = (
            f"SELECT id, body, receive_count FROM {p}_messages"
            " WHERE queue_id = %s AND vt <= NOW(6) ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED"
        )
        self._delete = f"DELETE FROM {p}_messages WHERE id = %s AND receive_count = %s"
        self.description = (
            f"aiomysql {aiomysql.__version__}: INSERT (multi-row for a batch) / BEGIN; "
            "SELECT … FOR UPDATE SKIP LOCKED; UPDATE; COMMIT / DELETE by id and read count, "
            "polling"
        )

    async def open(self) -> None:
        self._pool = await aiomysql.create_pool(
            minsize=1,
            maxsize=self._workers + 2,
            autocommit=True,
            init_command=SESSION_SETUP,
            **connect_kwargs(self._url),
        )

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            await self._pool.wait_closed()

    async def _run(self, work: Callable[[Any], Awaitable[int]]) -> int:
        async with self._pool.acquire() as conn, conn.cursor() as cur:
            return await work(cur)

    async def _queue_id(self, queue: str) -> int:
        if queue not in self._queue_ids:

            async def lookup(cur: Any) -> int:
                await cur.execute(f"SELECT id FROM {self._p}_queues WHERE name = %s", (queue,))
                (queue_id,) = await cur.fetchone()
                return int(queue_id)

            self._queue_ids[queue] = await self._run(lookup)
        return self._queue_ids[queue]

    async def send(self, queue: str, payloads: Sequence[bytes]) -> None:
        queue_id = await self._queue_id(queue)

        async def work(cur: Any) -> int:
            for payload in payloads:
                await cur.execute(self._send, (queue_id, payload))
            return len(payloads)

        await self._run(work)

    async def send_batch(self, queue: str, payloads: Sequence[bytes], batch: int) -> None:
        queue_id = await self._queue_id(queue)

        async def work(cur: Any) -> int:
            for chunk in batches(payloads, batch):
                rows = ", ".join(["(%s, %s, NOW(6), NOW(6))"] * len(chunk))
                args = [v for p in chunk for v in (queue_id, p)]
                await cur.execute(self._send_many.format(rows=rows), args)
            return len(payloads)

        await self._run(work)

    async def claim_delete(self, queue: str, limit: int, on_message: Callable[[], None]) -> int:
        queue_id = await self._queue_id(queue)

        async def work(cur: Any) -> int:
            await cur.execute("BEGIN")
            await cur.execute(self._pick, (queue_id, limit))
            rows = await cur.fetchall()
            if rows:
                marks = ", ".join(["%s"] * len(rows))
                await cur.execute(
                    f"UPDATE {self._p}_messages SET vt = NOW(6) + INTERVAL {VT_SECONDS} SECOND,"
                    f" receive_count = receive_count + 1 WHERE id IN ({marks})",
                    [r[0] for r in rows],
                )
            await cur.execute("COMMIT")
            for msg_id, body, count in rows:
                bytes(body)
                on_message()
                await cur.execute(self._delete, (msg_id, count + 1))
            return len(rows)

        return await self._run(work)

    async def receive_ack(self, queue: str, count: int, limit: int) -> int:
        return await _receive_ack(self, queue, count, limit)

    def consumer(
        self, queue: str, on_message: Callable[[], None], *, mode: str, workers: int, batch: int
    ) -> _DrainConsumer:
        return _DrainConsumer(
            self, queue, on_message, workers=workers, batch=batch, idle=self._idle
        )


async def _receive_ack(claimer: _Claimer, queue: str, count: int, limit: int) -> int:
    acked = 0
    while acked < count:
        done = await claimer.claim_delete(queue, min(limit, count - acked), lambda: None)
        if not done:
            break
        acked += done
    return acked


def raw_side(provider: str, settings: SqlQueueConfig, *, workers: int) -> Side:
    """The raw side of ``provider`` on the database of ``settings``."""
    if provider == POSTGRES:
        return PostgresRawSide(settings, workers=workers)
    return MariaDbRawSide(settings, workers=workers)

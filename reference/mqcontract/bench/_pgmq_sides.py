"""PGMQ without mqcontract: asyncpg calling PGMQ's functions, and the ``pgmq`` client.

Both work on the same queues as the provider (made by ``create_queue``, so the same
table and the same notify trigger do the same server-side work); only the client
differs. Raw consumers drain with ``pgmq.read`` + ``pgmq.delete`` and sleep between
drains until a NOTIFY on the queue's channel wakes them (a dedicated LISTEN connection),
which is how one would write a PGMQ consumer by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from mqcontract.providers.pgmq._sql import channel

from ._sides import Wakeup, batches

__all__ = ["AsyncpgSide", "PgmqClientSide"]

SEND = "SELECT pgmq.send($1::text, $2::jsonb)"
SEND_BATCH = "SELECT * FROM pgmq.send_batch($1::text, $2::jsonb[])"
READ = "SELECT msg_id, read_ct, enqueued_at, message FROM pgmq.read($1::text, $2::int, $3::int)"
DELETE = "SELECT pgmq.delete($1::text, $2::bigint)"
CREATE = "SELECT pgmq.create($1::text)"
DROP = "SELECT pgmq.drop_queue($1::text)"
#: Whole seconds: PGMQ's own ``read`` truncates the visibility timeout to an integer.
VT_SECONDS = 30
#: Longest sleep of an idle drain loop when no notification arrives.
IDLE_WAIT = 0.5


class _Listen:
    """One LISTEN connection per side for its whole life, like a real consumer process."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: Any = None

    async def open(self) -> None:
        self._conn = await asyncpg.connect(self._dsn)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    async def add(self, queue: str, wakeup: Wakeup) -> Callable[[], Any]:
        """LISTEN on ``queue``'s channel; returns the coroutine function that UNLISTENs."""

        def on_notify(*_: object) -> None:
            wakeup.fire()

        await self._conn.add_listener(channel(queue), on_notify)

        async def remove() -> None:
            await self._conn.remove_listener(channel(queue), on_notify)

        return remove


class _DrainConsumer:
    """``workers`` drain loops woken by NOTIFY; ``drain`` does one read + deletes."""

    def __init__(self, listen: _Listen, queue: str, workers: int, drain: Callable[[], Any]) -> None:
        self._listen = listen
        self._queue = queue
        self._workers = workers
        self._drain = drain
        self._wakeup = Wakeup()
        self._unlisten: Callable[[], Any] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.acked = 0

    async def start(self) -> None:
        self._unlisten = await self._listen.add(self._queue, self._wakeup)
        self._tasks = [asyncio.create_task(self._loop()) for _ in range(self._workers)]

    async def _loop(self) -> None:
        drain = self._drain()
        async with drain as step:
            while not self._stopping:
                generation = self._wakeup.generation
                done = await step()
                self.acked += done
                if not done and not self._stopping:
                    await self._wakeup.wait_after(generation, IDLE_WAIT)

    async def stop(self) -> None:
        # Let every loop finish its statement (cancelling one mid-statement would leave
        # its connection in a transaction); idle loops wake up at once.
        self._stopping = True
        self._wakeup.fire()
        await asyncio.gather(*self._tasks)
        if self._unlisten is not None:
            await self._unlisten()


class AsyncpgSide:
    """asyncpg, one pool, statements prepared once per connection, connections held."""

    label = "raw"

    def __init__(self, dsn: str, *, workers: int) -> None:
        self._dsn = dsn
        self._workers = workers
        self._pool: Any = None
        self._listen = _Listen(dsn)
        self.description = (
            f"asyncpg {asyncpg.__version__}: pgmq.send / pgmq.send_batch / pgmq.read / "
            "pgmq.delete as statements prepared once on a connection held for the whole run"
        )

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=self._workers + 2)
        await self._listen.open()

    async def close(self) -> None:
        await self._listen.close()
        if self._pool is not None:
            await self._pool.close()

    async def send(self, queue: str, payloads: Sequence[bytes]) -> None:
        async with self._pool.acquire() as conn:
            stmt = await conn.prepare(SEND)
            for payload in payloads:
                await stmt.fetchval(queue, payload.decode())

    async def send_batch(self, queue: str, payloads: Sequence[bytes], batch: int) -> None:
        async with self._pool.acquire() as conn:
            stmt = await conn.prepare(SEND_BATCH)
            for chunk in batches(payloads, batch):
                await stmt.fetch(queue, [p.decode() for p in chunk])

    async def receive_ack(self, queue: str, count: int, limit: int) -> int:
        async with self._pool.acquire() as conn:
            read = await conn.prepare(READ)
            delete = await conn.prepare(DELETE)
            acked = 0
            while acked < count:
                rows = await read.fetch(queue, VT_SECONDS, min(limit, count - acked))
                if not rows:
                    break
                for row in rows:
                    row["message"].encode()  # what a caller gets: the payload's bytes
                    await delete.fetchval(queue, row["msg_id"])
                acked += len(rows)
            return acked

    def consumer(
        self, queue: str, on_message: Callable[[], None], *, mode: str, workers: int, batch: int
    ) -> _DrainConsumer:
        pool = self._pool

        @contextlib.asynccontextmanager
        async def drain() -> Any:
            async with pool.acquire() as conn:
                read = await conn.prepare(READ)
                delete = await conn.prepare(DELETE)

                async def step() -> int:
                    rows = await read.fetch(queue, VT_SECONDS, batch)
                    for row in rows:
                        row["message"].encode()
                        on_message()
                        await delete.fetchval(queue, row["msg_id"])
                    return len(rows)

                yield step

        return _DrainConsumer(self._listen, queue, workers, drain)

    async def facts(self) -> dict[str, str]:
        """Server settings that decide what a commit costs."""
        names = ("synchronous_commit", "fsync", "wal_sync_method", "shared_buffers")
        async with self._pool.acquire() as conn:
            return {name: str(await conn.fetchval(f"SHOW {name}")) for name in names}

    # -- what the notify trigger costs (raw only) ----------------------------------------

    async def create_plain_queue(self, queue: str) -> None:
        """A PGMQ queue made by ``pgmq.create`` alone: no mqcontract trigger."""
        await self._pool.execute(CREATE, queue)

    async def drop_plain_queue(self, queue: str) -> None:
        await self._pool.execute(DROP, queue)


class PgmqClientSide:
    """The ``pgmq`` PyPI client's async API (``pgmq.async_queue.PGMQueue``), as documented."""

    label = "pgmq-client"

    def __init__(self, dsn: str, *, workers: int) -> None:
        from importlib.metadata import version

        from pgmq.async_queue import PGMQueue

        self._dsn = dsn
        # Its own pool (it acquires one connection per call); PGMQ is installed already.
        self._client = PGMQueue(conn_string=dsn, pool_size=workers + 2, init_extension=False)
        self._dicts: dict[bytes, Any] = {}
        # The client cannot LISTEN on mqcontract's channel: asyncpg does, as above.
        self._listen = _Listen(dsn)
        self.description = (
            f"pgmq {version('pgmq')} PGMQueue (asyncpg pool, orjson): send / send_batch / "
            "read / delete with dict messages"
        )

    def _message(self, payload: bytes) -> Any:
        # The client takes dicts: parse each distinct payload once, outside any timing.
        message = self._dicts.get(payload)
        if message is None:
            message = self._dicts[payload] = json.loads(payload)
        return message

    async def open(self) -> None:
        await self._client.init()
        await self._listen.open()

    async def close(self) -> None:
        await self._listen.close()
        await self._client.close()

    async def send(self, queue: str, payloads: Sequence[bytes]) -> None:
        messages = [self._message(p) for p in payloads]
        send = self._client.send
        for message in messages:
            await send(queue, message)

    async def send_batch(self, queue: str, payloads: Sequence[bytes], batch: int) -> None:
        messages = [self._message(p) for p in payloads]
        for i in range(0, len(messages), batch):
            await self._client.send_batch(queue, messages[i : i + batch])

    async def _read(self, queue: str, limit: int) -> list[Any]:
        got = await self._client.read(queue, vt=VT_SECONDS, qty=limit)
        if got is None:
            return []
        return got if isinstance(got, list) else [got]

    async def receive_ack(self, queue: str, count: int, limit: int) -> int:
        acked = 0
        while acked < count:
            messages = await self._read(queue, min(limit, count - acked))
            if not messages:
                break
            for message in messages:
                await self._client.delete(queue, message.msg_id)
            acked += len(messages)
        return acked

    def consumer(
        self, queue: str, on_message: Callable[[], None], *, mode: str, workers: int, batch: int
    ) -> _DrainConsumer:
        @contextlib.asynccontextmanager
        async def drain() -> Any:
            async def step() -> int:
                messages = await self._read(queue, batch)
                for message in messages:
                    on_message()
                    await self._client.delete(queue, message.msg_id)
                return len(messages)

            yield step

        return _DrainConsumer(self._listen, queue, workers, drain)

"""What SKIP LOCKED buys, on both dialects: receivers never wait for each other and a row
locked elsewhere is passed over; and what MariaDB's sessions need for it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiomysql  # type: ignore[import-untyped]
import asyncpg  # type: ignore[import-untyped]
import pytest
from mqcontract.errors import StaleClaim, StaleReason
from mqcontract.messages import QueuedMessage

from mqcontract_sql_skip_locked import POSTGRES, SqlQueueService
from mqcontract_sql_skip_locked._mariadb import SESSION_SETUP, MariaDbStore, connect_kwargs
from mqcontract_sql_skip_locked.harness import SqlHarness
from support import eventually


@contextlib.asynccontextmanager
async def row_locked(harness: SqlHarness, msg_id: int) -> AsyncIterator[None]:
    """Another session holds ``msg_id``'s row lock (an open transaction) meanwhile."""
    async with holder(harness, "", msg_id):
        yield


async def test_a_row_locked_elsewhere_is_skipped_not_waited_for(
    harness: SqlHarness, service: SqlQueueService, queue: str
) -> None:
    ids = await service.send_batch(queue, [b"a", b"b", b"c"])
    async with row_locked(harness, ids[0]), asyncio.timeout(2):
        got = await service.receive_messages(queue, 10, 60)
        assert [m.msg_id for m in got] == ids[1:]
    (first,) = await service.receive_messages(queue, 10, 60)  # unlocked: visible again
    assert (first.msg_id, first.receive_count) == (ids[0], 1)


async def test_concurrent_receivers_split_the_queue_without_overlap(
    harness: SqlHarness, service: SqlQueueService, queue: str
) -> None:
    ids = await service.send_batch(queue, [b"m%d" % i for i in range(60)])
    others = [await harness.open() for _ in range(3)]
    try:
        everyone = [service, *others]

        async def drain(svc: SqlQueueService | Any) -> list[QueuedMessage]:
            taken: list[QueuedMessage] = []
            while got := await svc.receive_messages(queue, 3, 60):
                taken.extend(got)
            return taken

        async with asyncio.timeout(20):
            shares = await asyncio.gather(*(drain(svc) for svc in everyone))
        taken = sorted(m.msg_id for share in shares for m in share)
        assert taken == ids  # every message once, none twice
        for share in shares:  # each receiver saw its own messages oldest first
            assert [m.msg_id for m in share] == sorted(m.msg_id for m in share)
    finally:
        for other in others:
            await other.close()


async def test_a_receive_in_progress_elsewhere_locks_only_the_rows_it_takes(
    harness: SqlHarness, service: SqlQueueService, queue: str
) -> None:
    """Another session runs this provider's own claim scan and keeps its transaction
    open (a receiver between its SELECT and its COMMIT): this receive gets the next rows
    in order, not nothing. A scan sorted after the fact locked every visible row."""
    if not isinstance(service.store, MariaDbStore):
        pytest.skip("MariaDB's plan")
    ids = await service.send_batch(queue, [b"m%d" % i for i in range(60)])
    store = service.store
    my: Any = await aiomysql.connect(
        autocommit=True, init_command=SESSION_SETUP, **connect_kwargs(harness.config.url)
    )
    try:
        async with my.cursor() as cur:
            await cur.execute(store._sql.queue_id, (queue,))
            (queue_id,) = await cur.fetchone()
            await cur.execute("BEGIN")
            await cur.execute(store._sql.pick(False), (queue_id, 3))
            assert [row[0] for row in await cur.fetchall()] == ids[:3]
            async with asyncio.timeout(2):
                got = await service.receive_messages(queue, 3, 60)
            await cur.execute("ROLLBACK")
    finally:
        my.close()
    assert [m.msg_id for m in got] == ids[3:6]


async def test_mariadb_sessions_read_committed_in_autocommit_on_utc(
    harness: SqlHarness, service: SqlQueueService
) -> None:
    # Under REPEATABLE READ a locking scan keeps every row it passed locked until commit
    # (an ack would wait for someone else's receive), and with autocommit off a poller
    # keeps reading its first snapshot; DATETIME has no zone, so the session's is UTC.
    if not isinstance(service.store, MariaDbStore):
        pytest.skip("MariaDB sessions only")
    async with service.store._cursor() as cur:
        await cur.execute("SELECT @@tx_isolation, @@autocommit, @@time_zone")
        assert await cur.fetchone() == ("READ-COMMITTED", 1, "+00:00")


async def test_a_sub_second_delay_and_timeout_are_kept_to_the_millisecond(
    service: SqlQueueService, queue: str
) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = await service.send_message_with_delay(queue, b"later", 0.3)

    async def due() -> list[QueuedMessage]:
        return await service.receive_messages(queue, 1, 0.2)

    (got,) = await eventually(due, 5, "delayed message due")
    assert got.msg_id == sent
    assert loop.time() - start >= 0.29  # NOW() in whole seconds would have shown it early
    (again,) = await eventually(due, 5, "claim lapsed")
    assert again.receive_count == 2
    assert again.enqueued_at == got.enqueued_at


@contextlib.asynccontextmanager
async def holder(harness: SqlHarness, queue: str, msg_id: int) -> AsyncIterator[Holder]:
    """Another session, in an open transaction, holds ``msg_id``'s row lock meanwhile;
    it commits when the block ends."""
    table = f"{harness.config.table_prefix}_messages"
    lock = f"SELECT id FROM {table} WHERE id = {int(msg_id)} FOR UPDATE"
    if harness.name == POSTGRES:
        conn: Any = await asyncpg.connect(harness.config.url)
        try:
            async with conn.transaction():
                await conn.execute(lock)
                me = await conn.fetchval("SELECT pg_backend_pid()")

                async def blocking() -> bool:
                    count = await conn.fetchval(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE $1::int = ANY(pg_blocking_pids(pid))",
                        me,
                    )
                    return bool(count)

                async def release() -> None:
                    await conn.execute(
                        f"UPDATE {table} SET vt = clock_timestamp() WHERE id = {int(msg_id)}"
                    )

                yield Holder(blocking, release)
        finally:
            await conn.close()
        return
    my: Any = await aiomysql.connect(
        autocommit=True, init_command=SESSION_SETUP, **connect_kwargs(harness.config.url)
    )
    try:
        async with my.cursor() as cur:
            await cur.execute("BEGIN")
            await cur.execute(lock)

            async def blocking_mariadb() -> bool:
                # InnoDB lists no lock wait for an autocommitted statement that has not
                # written yet; the process list shows the statement (its NOW(6) already
                # set) and this session holds the lock it needs.
                await cur.execute(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST"
                    " WHERE id <> CONNECTION_ID() AND command = 'Query' AND info LIKE %s",
                    (f"%{table}%{queue}%",),
                )
                (count,) = await cur.fetchone()
                return bool(count)

            async def release_mariadb() -> None:
                await cur.execute(f"UPDATE {table} SET vt = NOW(6) WHERE id = {int(msg_id)}")

            yield Holder(blocking_mariadb, release_mariadb)
            await cur.execute("COMMIT")
    finally:
        my.close()


@dataclasses.dataclass(frozen=True)
class Holder:
    """What the session holding a row lock can say and do."""

    #: Whether the settlement's statement has started (it then waits for this lock).
    blocking: Callable[[], Awaitable[bool]]
    #: Release the claim on the row the way a nack does (``vt`` = now), not yet committed.
    release: Callable[[], Awaitable[None]]


@pytest.mark.parametrize("settle", ["nack", "ack"])
async def test_a_settlement_that_waited_for_a_lock_sees_the_claim_released_meanwhile(
    harness: SqlHarness, service: SqlQueueService, queue: str, settle: str
) -> None:
    """The settlement's statement starts, then waits for the row lock of a session that
    releases the claim (as a nack does) and commits. The claim has lapsed by the time the
    row is free: the settlement must say so and change nothing. Checking ``vt`` against
    the time the statement started (MariaDB's ``NOW(6)``) called it still held, so two
    settlements of one claim both took effect (CLAIM-9)."""
    sent = await service.send_message(queue, b"x")
    (got,) = await service.receive_messages(queue, 1, 60)
    assert got.claim is not None
    settle_claim = service.nack_claim if settle == "nack" else service.ack_claim
    async with asyncio.timeout(10):
        async with holder(harness, queue, sent) as session:
            waiting = asyncio.create_task(settle_claim(queue, got.claim))
            await eventually(session.blocking, 5, f"the {settle} waits for the row lock")
            await session.release()
        with pytest.raises(StaleClaim) as info:
            await waiting
    assert info.value.reason is StaleReason.LAPSED
    assert await service.stored_ids(queue) == [sent]
    (again,) = await service.receive_messages(queue, 1, 60)
    assert (again.msg_id, again.receive_count) == (sent, 2)

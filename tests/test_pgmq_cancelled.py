"""A statement the server cancels is an ``OperationTimeout``, not a bare error.

``statement_timeout``, ``lock_timeout`` (set on a database or role by its owner) and
``pg_cancel_backend`` from another session cancel a statement, which PostgreSQL rolls
back. That was a plain ``MessagingError`` quoting SQLSTATE 57014 or 55P03: neither the
caller nor the event system could tell it passes (a hint whose claim failed so was not
retried). It is now ``StatementCancelled``, an ``OperationTimeout`` naming the queue.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from mqcontract.errors import OperationTimeout
from mqcontract.providers.pgmq import PgmqMessagingService, StatementCancelled
from tests import pgmq_support

service = pgmq_support.service
queue = pgmq_support.queue

BOUND = 10.0  # seconds the blocked statement may take to show up


async def _blocked_pid(admin: Any, table: str) -> int:
    """The backend waiting for a lock on ``table`` (found within the bound)."""
    deadline = time.monotonic() + BOUND
    while True:
        pid = await admin.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE '%' || $1::text || '%' AND pid <> pg_backend_pid() LIMIT 1",
            table,
        )
        if pid is not None:
            return int(pid)
        assert time.monotonic() < deadline, f"nothing waited on {table} within {BOUND:g} s"
        await asyncio.sleep(0.02)


async def test_a_statement_cancelled_by_another_session_is_an_operation_timeout(
    service: PgmqMessagingService, queue: str, pgmq_db_url: str
) -> None:
    await service.send_message(queue, b'{"n": 1}')
    admin = await asyncpg.connect(pgmq_db_url, timeout=5)
    locker = await asyncpg.connect(pgmq_db_url, timeout=5)
    try:
        tx = locker.transaction()
        await tx.start()
        await locker.execute(f"LOCK TABLE pgmq.q_{queue} IN ACCESS EXCLUSIVE MODE")
        receive = asyncio.create_task(service.receive_messages(queue, 1, 30))
        pid = await _blocked_pid(admin, f"q_{queue}")
        assert await admin.fetchval("SELECT pg_cancel_backend($1)", pid)
        try:
            await asyncio.wait_for(receive, BOUND)
        except StatementCancelled as exc:
            error = exc
        else:
            raise AssertionError("the cancelled receive returned")
        await tx.rollback()
    finally:
        await locker.close()
        await admin.close()
    assert isinstance(error, OperationTimeout)
    assert error.queue == queue
    assert error.sqlstate == "57014"
    assert queue in str(error)
    assert "cancelled by the server" in str(error)
    # Rolled back: the message was not claimed, and the service goes on.
    (got,) = await service.receive_messages(queue, 1, 30)
    assert got.receive_count == 1
    await service.ack_claim(queue, got)

"""Which failed PGMQ statements are retried: exactly those that certainly did not run.

An outside tester terminated the provider's backends every 0.25 s: some sends failed
with ``ConnectionLost`` from "cannot call Connection.fetchval(): connection has been
released back to the pool", a statement refused before anything was sent. Its source
was the lane's kept connection: asyncpg releases a pool connection on its own when the
server ends it, and the lane lent what it kept anyway. The lane now lends only a usable
connection, and ``never_executed`` reads the exception's type and cause and the
connection's state, not its words.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from asyncpg import exceptions as pgerr  # type: ignore[import-untyped]

from mqcontract.providers.pgmq import PgmqMessagingService
from mqcontract.providers.pgmq._errors import never_executed
from mqcontract.providers.pgmq._lane import usable
from mqcontract.providers.pgmq._runner import StatementRunner
from tests import pgmq_support
from tests.pgmq_support import sql

service = pgmq_support.service
queue = pgmq_support.queue

DELIVERY = 5.0  # seconds any condition may take to show up


class _Conn:
    """A connection as far as ``usable`` looks: open, closed, or a released proxy."""

    def __init__(self, state: str = "open") -> None:
        self.state = state

    def is_closed(self) -> bool:
        if self.state == "released":
            raise pgerr.InterfaceError(
                "cannot call Connection.is_closed(): connection has been released back to the pool"
            )
        return self.state == "closed"


def _ended_mid_statement() -> pgerr.ConnectionDoesNotExistError:
    """What asyncpg raises when the server's FATAL answered the statement and the
    connection then closed (the tester's other message)."""
    exc = pgerr.ConnectionDoesNotExistError(
        "connection was closed in the middle of operation: terminating connection due to"
        " administrator command"
    )
    exc.__cause__ = pgerr.AdminShutdownError("terminating connection due to administrator command")
    return exc


def test_a_statement_refused_on_a_released_or_closed_connection_never_ran() -> None:
    released = pgerr.InterfaceError(
        "cannot call Connection.fetchval(): connection has been released back to the pool"
    )
    assert never_executed(released, _Conn("released"))
    closed = pgerr.InterfaceError("cannot perform operation: connection is closed")
    assert never_executed(closed, _Conn("closed"))
    # The same type for a misused call on a working connection is no lost connection.
    misuse = pgerr.InterfaceError("the server expects 2 arguments for this query, 1 was passed")
    assert not never_executed(misuse, _Conn("open"))
    assert not never_executed(released, None)  # without the connection, nothing is certain


def test_a_session_the_server_ended_mid_statement_rolled_it_back() -> None:
    assert never_executed(_ended_mid_statement(), _Conn("closed"))
    assert never_executed(pgerr.AdminShutdownError("terminating connection"), None)
    # Closed without the server saying why: the statement may have committed.
    cut = pgerr.ConnectionDoesNotExistError("connection was closed in the middle of operation")
    assert not never_executed(cut, _Conn("closed"))
    cut.__cause__ = ConnectionResetError()
    assert not never_executed(cut, _Conn("closed"))


def test_usable_tells_a_released_proxy_from_a_working_connection() -> None:
    assert usable(_Conn("open"))
    assert not usable(_Conn("closed"))
    assert not usable(_Conn("released"))


class _Pool:
    """A pool whose acquires fail, then succeed; it counts what the runner asks of it."""

    def __init__(self, failures: list[BaseException]) -> None:
        self.failures = failures
        self.acquired = 0
        self.expired = 0

    async def acquire(self) -> _Conn:
        self.acquired += 1
        if self.failures:
            raise self.failures.pop(0)
        return _Conn()

    async def release(self, conn: Any) -> None:
        return None

    async def expire_connections(self) -> None:
        self.expired += 1


async def _run(pool: _Pool, work: Callable[[Any], Awaitable[int]]) -> int:
    runner = StatementRunner(pool, timeout=DELIVERY, is_closed=lambda: False)
    return await runner.run(work, idempotent=False, single=True)


async def test_a_send_that_got_no_connection_is_retried() -> None:
    ran: list[Any] = []

    async def work(conn: Any) -> int:
        ran.append(conn)
        return 7

    pool = _Pool([pgerr.ConnectionDoesNotExistError("connection was closed")])
    assert await _run(pool, work) == 7
    assert (pool.acquired, pool.expired, len(ran)) == (2, 1, 1)


async def test_a_send_cut_off_mid_statement_is_not_retried_unless_the_server_ended_it() -> None:
    async def cut(conn: Any) -> int:
        raise pgerr.ConnectionDoesNotExistError("connection was closed in the middle of operation")

    with pytest.raises(pgerr.ConnectionDoesNotExistError):
        await _run(_Pool([]), cut)

    attempts: list[int] = []

    async def ended_once(conn: Any) -> int:
        attempts.append(1)
        if len(attempts) == 1:
            raise _ended_mid_statement()
        return 8

    assert await _run(_Pool([]), ended_once) == 8
    assert len(attempts) == 2


async def test_a_send_after_the_kept_connection_was_terminated_idle_runs_once(
    service: PgmqMessagingService, queue: str, pgmq_db_url: str
) -> None:
    """Every backend of the provider terminated while idle; once the provider has seen
    its kept connection go, a send must not fail (nothing was sent on a dead one)."""
    await service.send_message(queue, b"0")
    lane = service._statements.lane
    for n in range(1, 4):
        kept = lane.kept
        assert kept is not None
        await sql(
            pgmq_db_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            service.application_name,
        )
        deadline = time.monotonic() + DELIVERY
        while usable(kept) and time.monotonic() < deadline:
            await sql(pgmq_db_url, "SELECT 1")  # a round trip lets the provider hear it
        assert not usable(kept)
        sent = await service.send_message(queue, b"%d" % n)
        rows = await sql(
            pgmq_db_url, f"SELECT msg_id FROM pgmq.q_{queue} WHERE message = $1", f"{n}"
        )
        assert [r[0] for r in rows] == [sent]


async def test_a_send_that_ran_is_reported_done_when_only_the_release_fails() -> None:
    """The statement committed and returned; giving its connection back then failed. An
    error here once told the caller the send failed, and its retry sent it twice."""

    class _Acquired:
        async def __aenter__(self) -> _Conn:
            return _Conn()

        async def __aexit__(self, *exc: object) -> None:
            raise pgerr.ConnectionDoesNotExistError("connection was closed")

    class _ReleaseFails(_Pool):
        def acquire(self) -> _Acquired:  # type: ignore[override]
            self.acquired += 1
            return _Acquired()

    ran: list[Any] = []

    async def work(conn: Any) -> int:
        ran.append(conn)
        return 9

    pool = _ReleaseFails([])
    runner = StatementRunner(pool, timeout=DELIVERY, is_closed=lambda: False)
    runner.lane.busy = True  # someone holds the kept connection: this one is the pool's
    assert await runner.run(work, idempotent=False, single=True) == 9
    assert (len(ran), pool.acquired) == (1, 1)

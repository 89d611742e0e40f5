"""PostgreSQL push (LISTEN/NOTIFY signals) and MariaDB's lack of it."""

from __future__ import annotations

import asyncio

import pytest
from mqcontract.errors import UnsupportedOperation
from mqcontract.messages import Available, MessageNotification
from mqcontract.service import Subscription

from mqcontract_sql_skip_locked import POSTGRES, PostgresQueueService, SqlQueueService
from mqcontract_sql_skip_locked.harness import SqlHarness
from support import eventually


def _postgres_only(service: SqlQueueService) -> PostgresQueueService:
    if not isinstance(service, PostgresQueueService):
        pytest.skip("PostgreSQL pushes; MariaDB has no LISTEN/NOTIFY")
    return service


async def _next(sub: Subscription, within: float = 5.0) -> MessageNotification:
    async with asyncio.timeout(within):
        return await anext(sub)


async def _nothing(sub: Subscription, during: float) -> None:
    try:
        async with asyncio.timeout(during):
            note = await anext(sub)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected notification {note!r}")


async def test_mariadb_refuses_to_subscribe(service: SqlQueueService, queue: str) -> None:
    if isinstance(service, PostgresQueueService):
        pytest.skip("MariaDB only")
    assert not service.supports_push
    with pytest.raises(UnsupportedOperation):
        await service.subscribe(queue)


async def test_sends_and_nacks_are_announced_by_id_delays_are_not(
    service: SqlQueueService, queue: str
) -> None:
    pg = _postgres_only(service)
    async with await pg.subscribe(queue) as sub:
        await pg.send_message_with_delay(queue, b"later", 60)  # not visible: not announced
        ids = await pg.send_batch(queue, [b"a", b"b"])
        assert [await _next(sub), await _next(sub)] == [Available(queue, i) for i in ids]
        got = await pg.receive_messages(queue, 1, 60)
        await _nothing(sub, 0.3)  # a claim announces nothing
        await pg.nack_claim(queue, got[0])
        assert await _next(sub) == Available(queue, ids[0])


async def test_a_killed_listener_reconnects_and_asks_to_catch_up(
    harness: SqlHarness, service: SqlQueueService, queue: str
) -> None:
    pg = _postgres_only(service)
    async with await pg.subscribe(queue) as sub:
        before = pg.listener.backend_pid
        await harness.kill_listener(pg)
        assert await _next(sub) == Available(queue, None)  # whatever was missed meanwhile
        assert pg.listener.backend_pid not in (None, before)
        sent = await pg.send_message(queue, b"after")
        assert await _next(sub) == Available(queue, sent)
        assert pg.listener.reconnects == 1


async def test_suppressed_announcements_leave_the_message_stored(
    harness: SqlHarness, service: SqlQueueService, queue: str
) -> None:
    pg = _postgres_only(service)
    async with await pg.subscribe(queue) as sub:
        restore = await harness.suppress_notifications(pg, queue)
        try:
            quiet = await pg.send_message(queue, b"quiet")
            await _nothing(sub, 0.3)
        finally:
            await restore()
        loud = await pg.send_message(queue, b"loud")
        assert await _next(sub) == Available(queue, loud)
        got = await pg.receive_messages(queue, 10, 60)
        assert [m.msg_id for m in got] == [quiet, loud]


async def test_closing_the_service_ends_its_subscriptions_and_the_listener(
    harness: SqlHarness, queue: str
) -> None:
    if harness.name != POSTGRES:
        pytest.skip("PostgreSQL only")
    pg = await harness.open()
    assert isinstance(pg, PostgresQueueService)
    sub = await pg.subscribe(queue)
    listening = pg.listener.backend_pid
    assert listening is not None
    await pg.close()
    assert pg.listener.backend_pid is None

    async def ended() -> bool:
        try:
            await _next(sub, 1)
        except StopAsyncIteration:
            return True
        return False

    await eventually(ended, 3, "subscription ended")

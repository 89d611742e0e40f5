"""The harness's hooks act on the real servers, and the providers recover from them."""

from __future__ import annotations

import contextlib

import pytest
from mqcontract.errors import ConnectionLost, MessagingError

from mqcontract_sql_skip_locked import POSTGRES, SqlQueueService
from mqcontract_sql_skip_locked import _mariadb as my
from mqcontract_sql_skip_locked import _postgres as pg
from mqcontract_sql_skip_locked.harness import SqlHarness
from support import RUN_ID, eventually, make_harness, queue_name


async def _sessions(harness: SqlHarness, service: SqlQueueService) -> set[int]:
    """The server's ids of the service's live sessions (seen from the server's side)."""
    if harness.name == POSTGRES:
        conn = await pg.admin_connection(harness.config.url, 5)
        try:
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                service.session_name,
            )
            return {int(r[0]) for r in rows}
        finally:
            await conn.close()
    assert isinstance(service.store, my.MariaDbStore)
    ids = sorted(service.store.thread_ids)
    async with my.admin_cursor(harness.config.url, timeout=5) as cur:
        marks = ", ".join(["%s"] * len(ids))
        await cur.execute(
            f"SELECT ID FROM information_schema.PROCESSLIST WHERE ID IN ({marks})", ids
        )
        return {int(r[0]) for r in await cur.fetchall()}


async def test_sever_connection_ends_every_session_and_the_provider_recovers(
    harness: SqlHarness, service: SqlQueueService, queue: str
) -> None:
    sent = await service.send_message(queue, b"survives")
    before = await _sessions(harness, service)
    assert before
    await harness.sever_connection(service)
    # asyncpg's pool may open a fresh session at once (it keeps min_size): a new id.
    assert not before & await _sessions(harness, service)
    with contextlib.suppress(ConnectionLost):  # the dead session, or a fresh one
        await service.queue_exists(queue)  # any other error fails the test

    async def works() -> bool:
        try:
            return await service.queue_exists(queue)
        except ConnectionLost:
            return False

    await eventually(works, 9, "provider usable after sever")
    (got,) = await service.receive_messages(queue, 1, 60)
    assert got.msg_id == sent


async def test_stored_ids_sees_visible_held_and_delayed_messages_without_claiming(
    harness: SqlHarness, service: SqlQueueService, queue: str
) -> None:
    visible, held = await service.send_batch(queue, [b"v", b"h"])
    delayed = await service.send_message_with_delay(queue, b"d", 60)
    (got,) = await service.receive_messages(queue, 1, 60)
    assert got.msg_id == visible
    assert await harness.stored_ids(service, queue) == [visible, held, delayed]
    assert await harness.stored_ids(service, queue_name("missing")) == []
    (nxt,) = await service.receive_messages(queue, 1, 60)
    assert (nxt.msg_id, nxt.receive_count) == (held, 1)  # the backdoor claimed nothing


async def test_a_crashed_holder_s_messages_come_back_after_their_timeout(
    harness: SqlHarness, service: SqlQueueService, queue: str
) -> None:
    ids = await service.send_batch(queue, [b"a", b"b"])
    held = await harness.crash_holder(service, queue, 2, 0.5)
    assert sorted(held) == ids

    async def back() -> list[int]:
        return [m.msg_id for m in await service.receive_messages(queue, 10, 60)]

    assert sorted(await eventually(back, 10, "held messages back")) == ids


@pytest.mark.parametrize("provider", ["sql-postgres", "sql-mariadb"])
async def test_each_run_has_its_own_database_and_teardown_drops_it(provider: str) -> None:
    harness = make_harness(provider, f"{RUN_ID}own")
    assert harness.database == f"mqc_sql_{RUN_ID}own"
    try:
        await harness.setup()
    except MessagingError as exc:
        pytest.skip(f"{provider} not reachable: {exc}")
    svc = await harness.open()
    try:
        q = queue_name()
        await svc.create_queue(q)
        assert await svc.list_queues() == [q]  # nothing of any other run
    finally:
        await svc.close()
    await harness.teardown()
    assert not await _database_exists(harness)


async def _database_exists(harness: SqlHarness) -> bool:
    if harness.name == POSTGRES:
        conn = await pg.admin_connection(harness.admin_url, 5)
        try:
            found = await conn.fetchval(
                "SELECT count(*) FROM pg_database WHERE datname = $1", harness.database
            )
            return bool(found)
        finally:
            await conn.close()
    async with my.admin_cursor(harness.admin_url, timeout=5) as cur:
        await cur.execute(
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
            (harness.database,),
        )
        (count,) = await cur.fetchone()
        return bool(count)

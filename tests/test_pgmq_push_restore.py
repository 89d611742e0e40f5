"""PGMQ push under hostile conditions: a notify trigger disabled or dropped from outside is
restored by ``subscribe`` (or refused loudly) and, under an open subscription, by the
listener's health check, which also keeps a subscription across its queue being dropped
and created again; and the listener's health is visible."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from mqcontract.config import PgmqConfig, load_config
from mqcontract.messages import Available, Message, MessageNotification
from mqcontract.providers.pgmq import (
    NotifyTriggerUnavailable,
    PgmqMessagingService,
    open_pgmq,
)
from mqcontract.providers.pgmq._sql import TRIGGER_NAME, trigger_args
from mqcontract.subscription import QueueSubscription
from tests import pgmq_support
from tests.pgmq_support import config, sql

# The shared fixtures, under the names these tests ask for.
service = pgmq_support.service
queue = pgmq_support.queue

ADMIN_URL = load_config(validate_backend=False).pgmq.database_url
DELIVERY = 5.0  # seconds any notification or condition may take to show up
_ARGS = trigger_args(PgmqConfig().push_threshold_bytes)


async def _trigger(url: str, queue: str) -> tuple[bytes, str] | None:
    """(tgargs, tgenabled) of our trigger on ``queue``, or None when there is none."""
    rows = await sql(
        url,
        "SELECT tgargs, tgenabled::text AS enabled FROM pg_trigger"
        " WHERE tgrelid = to_regclass('pgmq.q_' || $1::text) AND tgname = $2::text",
        queue,
        TRIGGER_NAME,
    )
    return None if not rows else (bytes(rows[0]["tgargs"]), str(rows[0]["enabled"]))


async def _next(sub: QueueSubscription, within: float = DELIVERY) -> MessageNotification:
    return await asyncio.wait_for(sub.__anext__(), within)


async def _eventually(probe: Callable[[], Any], within: float = DELIVERY) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = probe()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.01)


async def _pushed(service: PgmqMessagingService, sub: QueueSubscription, queue: str) -> None:
    msg_id = await service.send_message(queue, b'{"pushed": true}')
    note = await _next(sub)
    assert isinstance(note, Message), note
    assert note.message.msg_id == msg_id


async def test_subscribe_re_enables_a_notify_trigger_disabled_from_outside(
    service: PgmqMessagingService, queue: str, pgmq_db_url: str
) -> None:
    await sql(pgmq_db_url, f"ALTER TABLE pgmq.q_{queue} DISABLE TRIGGER {TRIGGER_NAME}")
    assert await _trigger(pgmq_db_url, queue) == (_ARGS, "D")
    sub = await service.subscribe(queue)
    try:
        await _pushed(service, sub, queue)  # within DELIVERY, not the fallback poller
        assert await _trigger(pgmq_db_url, queue) == (_ARGS, "O")
    finally:
        await sub.aclose()


async def test_subscribe_recreates_a_notify_trigger_dropped_from_outside(
    service: PgmqMessagingService, queue: str, pgmq_db_url: str
) -> None:
    await sql(pgmq_db_url, f"DROP TRIGGER {TRIGGER_NAME} ON pgmq.q_{queue}")
    assert await _trigger(pgmq_db_url, queue) is None
    sub = await service.subscribe_many([queue])
    try:
        assert await _trigger(pgmq_db_url, queue) == (_ARGS, "O")
        await _pushed(service, sub, queue)
    finally:
        await sub.aclose()


async def test_subscribe_refuses_loudly_when_the_trigger_cannot_be_restored(
    service: PgmqMessagingService, queue: str, pgmq_db_url: str
) -> None:
    role = f"mqc_r_{uuid.uuid4().hex[:12]}"
    database = urlsplit(pgmq_db_url).path.lstrip("/")
    await sql(pgmq_db_url, f"CREATE ROLE {role} LOGIN")
    try:
        await sql(pgmq_db_url, f"GRANT USAGE ON SCHEMA pgmq TO {role}")
        await sql(pgmq_db_url, f"GRANT SELECT ON pgmq.meta TO {role}")
        await sql(pgmq_db_url, f"ALTER TABLE pgmq.q_{queue} DISABLE TRIGGER {TRIGGER_NAME}")
        parts = urlsplit(pgmq_db_url)
        host = parts.netloc.rpartition("@")[2]
        role_url = urlunsplit(parts._replace(netloc=f"{role}@{host}", path=f"/{database}"))
        other = await open_pgmq(config(role_url))
        try:
            with pytest.raises(NotifyTriggerUnavailable) as raised:
                await other.subscribe(queue)
            assert raised.value.queue == queue
            assert repr(queue) in str(raised.value)
            assert "disabled" in str(raised.value)
            assert other.listener_health.listening == frozenset()
        finally:
            await other.close()
        assert await _trigger(pgmq_db_url, queue) == (_ARGS, "D")
    finally:
        await sql(pgmq_db_url, f"DROP OWNED BY {role}")
        await sql(pgmq_db_url, f"DROP ROLE {role}")


async def test_listener_health_shows_a_killed_connection_and_its_recovery(
    service: PgmqMessagingService, queue: str, pgmq_db_url: str
) -> None:
    before = service.listener_health
    assert not before.connected
    assert before.connected_at is None
    sub = await service.subscribe(queue)
    try:
        up = service.listener_health
        assert up.connected
        assert up.backend_pid is not None
        assert not up.reconnecting
        assert up.connected_at is not None
        assert up.disconnected_at is None
        assert (up.disconnects, up.reconnects, up.listening) == (0, 0, frozenset({queue}))

        # Hold the reconnect until the test has seen the outage.
        listener = service.listener
        gate = asyncio.Event()
        connect = listener._connect

        async def held() -> Any:
            await gate.wait()
            return await connect()

        listener._connect = held
        await sql(pgmq_db_url, "SELECT pg_terminate_backend($1::int)", up.backend_pid)
        down = await _eventually(lambda: service.listener_health.disconnects == 1)
        assert down
        down_view = service.listener_health
        assert not down_view.connected
        assert down_view.backend_pid is None
        assert down_view.reconnecting
        assert down_view.disconnected_at is not None
        assert down_view.reconnects == 0

        listener._connect = connect
        gate.set()
        assert await _next(sub) == Available(queue, None)  # after the reconnect
        back = service.listener_health
        assert back.connected
        assert not back.reconnecting
        assert back.backend_pid not in (None, up.backend_pid)
        assert (back.disconnects, back.reconnects) == (1, 1)
        assert back.connected_at is not None
        assert back.connected_at >= up.connected_at
        await _pushed(service, sub, queue)
    finally:
        await sub.aclose()


# -- a subscription outlives its queue ---------------------------------------------------

#: The listener's health check runs every fallback polling interval (at least 1 s):
#: a broken trigger is seen at the next one and restored then.
HEALTH_INTERVAL = 1.0
RECOVERY = 2 * HEALTH_INTERVAL + DELIVERY


@pytest.fixture
async def watched(pgmq_db_url: str) -> AsyncIterator[PgmqMessagingService]:
    svc = await open_pgmq(config(pgmq_db_url, fallback_polling_interval_seconds=HEALTH_INTERVAL))
    yield svc
    await svc.close()


async def _until(
    sub: QueueSubscription, wanted: Callable[[MessageNotification], bool], within: float
) -> MessageNotification:
    """The first notification ``wanted`` accepts (others are skipped) within ``within``."""
    deadline = time.monotonic() + within
    while True:
        note = await _next(sub, max(deadline - time.monotonic(), 0.001))
        if wanted(note):
            return note


def _pushed_id(msg_id: int) -> Callable[[MessageNotification], bool]:
    return lambda note: isinstance(note, Message) and note.message.msg_id == msg_id


async def _foreign_send(url: str, queue: str, body: str) -> int:
    return int((await sql(url, "SELECT pgmq.send($1::text, $2::jsonb)", queue, body))[0][0])


async def test_a_subscription_outlives_its_queue_dropped_and_created_again_from_outside(
    watched: PgmqMessagingService, pgmq_db_url: str
) -> None:
    """Another PGMQ client drops the queue and creates it again (``pgmq.create`` installs
    no notify trigger): the subscription stays open, its messages are announced within
    the recovery bound, and push works again. It once stayed silent for good."""
    queue = f"t_redo_{uuid.uuid4().hex[:10]}"
    await watched.create_queue(queue)
    sub = await watched.subscribe(queue)
    try:
        await sql(pgmq_db_url, "SELECT pgmq.drop_queue($1::text)", queue)
        await sql(pgmq_db_url, "SELECT pgmq.create($1::text)", queue)
        sent = await _foreign_send(pgmq_db_url, queue, '"while unannounced"')
        await _until(sub, lambda note: note == Available(queue, None), RECOVERY)
        assert not sub.closed
        assert await _trigger(pgmq_db_url, queue) == (_ARGS, "O")
        assert [m.msg_id for m in await watched.receive_messages(queue, 10, 30)] == [sent]
        again = await _foreign_send(pgmq_db_url, queue, '"pushed"')
        await _until(sub, _pushed_id(again), DELIVERY)
    finally:
        await sub.aclose()
        await watched.delete_queue(queue)


async def test_a_trigger_disabled_under_a_subscription_is_enabled_again(
    watched: PgmqMessagingService, queue: str, pgmq_db_url: str
) -> None:
    sub = await watched.subscribe(queue)
    try:
        await sql(pgmq_db_url, f"ALTER TABLE pgmq.q_{queue} DISABLE TRIGGER {TRIGGER_NAME}")
        sent = await _foreign_send(pgmq_db_url, queue, '"unannounced"')
        await _until(sub, lambda note: note == Available(queue, None), RECOVERY)
        assert await _trigger(pgmq_db_url, queue) == (_ARGS, "O")
        assert [m.msg_id for m in await watched.receive_messages(queue, 10, 30)] == [sent]
        again = await _foreign_send(pgmq_db_url, queue, '"pushed"')
        await _until(sub, _pushed_id(again), DELIVERY)
    finally:
        await sub.aclose()


async def test_a_trigger_that_cannot_be_restored_is_caught_up_at_every_health_check(
    watched: PgmqMessagingService, queue: str, pgmq_db_url: str
) -> None:
    watched.listener.repair_trigger = None  # as for a role that does not own the table
    sub = await watched.subscribe(queue)
    try:
        await sql(pgmq_db_url, f"DROP TRIGGER {TRIGGER_NAME} ON pgmq.q_{queue}")
        for _ in range(2):
            assert await _next(sub, RECOVERY) == Available(queue, None)
        assert await _trigger(pgmq_db_url, queue) is None
        assert not sub.closed
    finally:
        await sub.aclose()


async def test_a_queue_table_dropped_under_its_meta_row_ends_no_health_check(
    pgmq_db_url: str,
) -> None:
    """``DROP TABLE pgmq.q_x`` leaves x listed in ``pgmq.meta`` with no table: the health
    check once died on it for good (no more repairs, no dead-connection checks) and made
    ``close()`` raise, leaving the pool open."""
    svc = await open_pgmq(config(pgmq_db_url, fallback_polling_interval_seconds=HEALTH_INTERVAL))
    gone, kept = (f"t_gone_{uuid.uuid4().hex[:10]}", f"t_kept_{uuid.uuid4().hex[:10]}")
    for queue in (gone, kept):
        await svc.create_queue(queue)
    sub = await svc.subscribe_many([gone, kept])
    try:
        await sql(pgmq_db_url, f"DROP TABLE pgmq.q_{gone}")
        await sql(pgmq_db_url, "SELECT pgmq.drop_queue($1::text)", kept)
        await sql(pgmq_db_url, "SELECT pgmq.create($1::text)", kept)
        await _until(sub, lambda note: note == Available(kept, None), RECOVERY)
        assert await _trigger(pgmq_db_url, kept) == (_ARGS, "O")
        health = svc.listener._health_task
        assert health is not None
        assert not health.done()
    finally:
        await sub.aclose()
        await svc.close()  # raised the health check's TypeError once
        await sql(pgmq_db_url, "DELETE FROM pgmq.meta WHERE queue_name = $1::text", gone)

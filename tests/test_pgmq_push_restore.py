"""PGMQ push under hostile conditions: a notify trigger disabled or dropped from outside is
restored by ``subscribe`` (or refused loudly), and the listener's health is visible."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
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

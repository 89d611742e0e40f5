"""The PGMQ provider against a real PostgreSQL: a per-module database, dropped afterwards."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from mqcontract.config import PgmqConfig, load_config
from mqcontract.errors import (
    InvalidQueueName,
    MessageNotFound,
    ProviderClosed,
    QueueNotFound,
)
from mqcontract.messages import Available, Claim, Message, MessageNotification
from mqcontract.providers.pgmq import (
    ENVELOPE_KEY,
    PgmqMessagingService,
    embedded_pgmq_version,
    install_pgmq,
    open_pgmq,
)
from mqcontract.providers.pgmq._install import install_into
from mqcontract.subscription import QueueSubscription
from mqcontract_fixtures.pgmq import create_database, drop_database
from tests import pgmq_support
from tests.pgmq_support import config, sql

# The shared fixtures, under the names these tests ask for.
service = pgmq_support.service
queue = pgmq_support.queue

ADMIN_URL = load_config(validate_backend=False).pgmq.database_url
DELIVERY = 5.0  # seconds any notification or condition may take to show up


async def _next(sub: QueueSubscription, within: float = DELIVERY) -> MessageNotification:
    return await asyncio.wait_for(sub.__anext__(), within)


async def _eventually(probe: Callable[[], Awaitable[Any]], within: float = DELIVERY) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = await probe()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.02)


# -- install -------------------------------------------------------------------------------


async def test_two_concurrent_installs_install_exactly_once(pgmq_db_url: str) -> None:
    name = f"mqc_ti_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    url = await create_database(ADMIN_URL, name)
    try:
        first, second = await asyncio.gather(install_pgmq(url), install_pgmq(url))
        assert sorted([first.action, second.action]) == ["found", "installed"]
        assert first.version == second.version == embedded_pgmq_version() == "1.13.0"
        again = await install_pgmq(url)
        assert (again.action, again.method, again.version) == ("found", "sql", "1.13.0")
    finally:
        await drop_database(ADMIN_URL, name)


async def test_install_uses_an_existing_pgmq_extension_as_it_is(pgmq_db_url: str) -> None:
    # A stand-in: any row named pgmq in pg_extension is taken at its word, nothing is run.
    class FakeConn:
        def __init__(self) -> None:
            self.executed: list[str] = []

        def transaction(self) -> Any:
            return _NullTransaction()

        async def execute(self, sql: str, *args: object) -> None:
            self.executed.append(sql)

        async def fetchval(self, sql: str, *args: object) -> object:
            return "1.11.0" if "pg_extension" in sql else None

    conn = FakeConn()
    result = await install_into(conn, "db")
    assert (result.action, result.method, result.version) == ("found", "extension", "1.11.0")
    assert not any("CREATE TABLE" in sql for sql in conn.executed)


class _NullTransaction:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


async def test_open_without_pgmq_installed_says_how_to_install(pgmq_db_url: str) -> None:
    from mqcontract.errors import BackendUnavailable

    name = f"mqc_tn_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    url = await create_database(ADMIN_URL, name)
    try:
        with pytest.raises(BackendUnavailable, match="pgmq install"):
            await open_pgmq(config(url))
    finally:
        await drop_database(ADMIN_URL, name)


# -- push ----------------------------------------------------------------------------------


async def test_a_plain_sql_send_from_another_connection_reaches_the_subscriber(
    service: PgmqMessagingService, queue: str, pgmq_db_url: str
) -> None:
    sub = await service.subscribe(queue)
    rows = await sql(pgmq_db_url, "SELECT * FROM pgmq.send($1::text, '{\"a\":1}'::jsonb)", queue)
    msg_id = rows[0][0]
    note = await _next(sub)
    assert isinstance(note, Message)
    assert note.claimed is False
    assert note.message.msg_id == msg_id
    assert json.loads(note.message.payload) == {"a": 1}
    claimed = await service.fetch_message(queue, msg_id, 30)
    assert claimed is not None
    assert claimed.receive_count == 1
    assert claimed.payload == note.message.payload
    await service.ack_message(queue, msg_id)
    await sub.aclose()


async def test_a_small_json_payload_is_pushed_as_an_unclaimed_message_with_its_exact_value(
    service: PgmqMessagingService, queue: str
) -> None:
    sub = await service.subscribe(queue)
    value = {"z": [1, 2.5, None, True], "a": "caf\u00e9 \u961f\u5217", "n": {"x": '\n\t"'}}
    msg_id = await service.send_message(queue, json.dumps(value).encode())
    note = await _next(sub)
    assert isinstance(note, Message)
    assert note.claimed is False
    assert note.message.msg_id == msg_id
    assert note.message.receive_count == 1
    assert json.loads(note.message.payload) == value
    # Still visible to everyone: the copy was not claimed.
    (received,) = await service.receive_messages(queue, 10, 30)
    assert received.payload == note.message.payload
    await sub.aclose()


async def test_a_7000_multibyte_character_json_payload_is_sent_and_pushed_as_available(
    service: PgmqMessagingService, queue: str
) -> None:
    sub = await service.subscribe(queue)
    payload = json.dumps({"text": "\u00e9" * 7000}, ensure_ascii=False).encode()
    assert len(payload) > 14000  # characters are few, bytes are many
    msg_id = await service.send_message(queue, payload)
    assert await _next(sub) == Available(queue, msg_id)
    (received,) = await service.receive_messages(queue, 1, 30)
    assert json.loads(received.payload) == json.loads(payload)
    await sub.aclose()


async def test_the_push_threshold_counts_bytes_of_the_whole_notification(
    service: PgmqMessagingService, queue: str
) -> None:
    sub = await service.subscribe(queue)
    threshold = service.capabilities.push_payload_threshold_bytes
    assert threshold == 7000
    small = await service.send_message(queue, json.dumps("x" * 6800).encode())
    big = await service.send_message(queue, json.dumps("x" * 7000).encode())
    first, second = await _next(sub), await _next(sub)
    assert isinstance(first, Message)
    assert first.message.msg_id == small
    assert second == Available(queue, big)
    await sub.aclose()


async def test_one_subscription_serves_many_queues_and_every_subscriber_gets_a_copy(
    service: PgmqMessagingService, queue: str
) -> None:
    other = f"{queue}_b"
    await service.create_queue(other)
    try:
        both = await service.subscribe_many([queue, other])
        only = await service.subscribe(queue)
        a = await service.send_message(queue, b"1")
        b = await service.send_message(other, b"2")
        seen = {
            (n.queue_name, n.message.msg_id)
            for n in [await _next(both), await _next(both)]
            if isinstance(n, Message)
        }
        assert seen == {(queue, a), (other, b)}
        note = await _next(only)
        assert isinstance(note, Message)
        assert note.message.msg_id == a
        await both.aclose()
        await only.aclose()
        assert service.listener.listening == frozenset()
    finally:
        await service.delete_queue(other)


async def test_a_delayed_message_is_pushed_only_once_it_is_visible(
    service: PgmqMessagingService, queue: str
) -> None:
    sub = await service.subscribe(queue)
    started = time.monotonic()
    msg_id = await service.send_message_with_delay(queue, b'"later"', 0.4)
    note = await _next(sub)
    assert time.monotonic() - started >= 0.4
    assert isinstance(note, Message)
    assert note.message.msg_id == msg_id
    assert await service.fetch_message(queue, msg_id, 30) is not None
    await sub.aclose()


async def test_killing_the_listener_backend_sends_a_catch_up_signal_and_push_resumes(
    service: PgmqMessagingService, queue: str, pgmq_db_url: str
) -> None:
    sub = await service.subscribe(queue)
    pid = service.listener_backend_pid
    assert pid is not None
    await sql(pgmq_db_url, "SELECT pg_terminate_backend($1::int)", pid)
    assert await _next(sub) == Available(queue, None)
    assert service.listener_reconnects == 1
    assert service.listener_backend_pid not in (None, pid)
    msg_id = await service.send_message(queue, b'{"after": "reconnect"}')
    note = await _next(sub)
    assert isinstance(note, Message)
    assert note.message.msg_id == msg_id
    await sub.aclose()


async def test_subscribing_installs_the_trigger_on_a_queue_made_by_plain_pgmq(
    service: PgmqMessagingService, pgmq_db_url: str
) -> None:
    name = f"t_plain_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    await sql(pgmq_db_url, "SELECT pgmq.create($1::text)", name)
    try:
        sub = await service.subscribe(name)
        msg_id = await service.send_message(name, b"[1]")
        note = await _next(sub)
        assert isinstance(note, Message)
        assert note.message.msg_id == msg_id
        await sub.aclose()
    finally:
        await service.delete_queue(name)


async def test_subscribing_to_a_missing_queue_raises_queue_not_found(
    service: PgmqMessagingService, queue: str
) -> None:
    with pytest.raises(QueueNotFound):
        await service.subscribe_many([queue, "t_missing_queue_xyz"])
    assert service.listener.listening == frozenset()


# -- validation ----------------------------------------------------------------------------


class _NoPool:
    """A pool that fails the test if anything reaches it."""

    def acquire(self) -> Any:
        raise AssertionError("the backend was touched")

    async def close(self) -> None:
        return None

    def terminate(self) -> None:
        return None


BAD_NAMES = ["UPPER", "a" * 48, "q'; DROP TABLE pgmq.meta; --", 'quote"d', "semi;colon", ""]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_bad_queue_names_are_rejected_before_any_sql(name: str) -> None:
    svc = PgmqMessagingService(
        _NoPool(), config=PgmqConfig(), operation_timeout=5.0, application_name="unused"
    )
    claim = Claim(name, 1, 1, 1.0)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: svc.create_queue(name),
        lambda: svc.delete_queue(name),
        lambda: svc.queue_exists(name),
        lambda: svc.send_message(name, b"1"),
        lambda: svc.send_message_with_delay(name, b"1", 1),
        lambda: svc.send_batch(name, [b"1"]),
        lambda: svc.receive_messages(name, 1, 1),
        lambda: svc.ack_message(name, 1),
        lambda: svc.nack_message(name, 1),
        lambda: svc.ack_claim(name, claim),
        lambda: svc.nack_claim(name, claim),
        lambda: svc.ack_claims(name, [claim]),
        lambda: svc.fetch_message(name, 1, 1),
        lambda: svc.subscribe(name),
        lambda: svc.install_notify_trigger(name),
    ]
    for call in calls:
        with pytest.raises(InvalidQueueName):
            await call()
    await svc.close()


# -- payloads ------------------------------------------------------------------------------

NOT_JSON = [
    bytes(range(256)),
    b"",
    b"\xff\xfe",
    b"plain text",
    b"NaN",
    b"[Infinity]",
    b'"\\u0000"',
    b'{"k": "\\ud800"}',
    b"1e999",
    b"\xef\xbb\xbf{}",
    json.dumps({ENVELOPE_KEY: "aGk="}).encode(),
    json.dumps({ENVELOPE_KEY: 5}).encode(),
]


async def test_bytes_that_are_not_storable_json_round_trip_exactly_through_the_envelope(
    service: PgmqMessagingService, queue: str, pgmq_db_url: str
) -> None:
    ids = await service.send_batch(queue, NOT_JSON[:4])
    ids += [await service.send_message(queue, p) for p in NOT_JSON[4:]]
    received = await service.receive_messages(queue, 100, 30)
    assert [m.msg_id for m in received] == ids
    assert [m.payload for m in received] == NOT_JSON
    stored = await sql(pgmq_db_url, f"SELECT message FROM pgmq.q_{queue} ORDER BY msg_id")
    assert all(set(json.loads(r[0])) == {ENVELOPE_KEY} for r in stored)


async def test_json_payloads_are_stored_natively_for_other_pgmq_clients(
    service: PgmqMessagingService, queue: str, pgmq_db_url: str
) -> None:
    payloads = [b'{"b": 1, "a": [1, 2]}', b"  42 ", b'"text"', b"null", b'{"$other": 1}']
    ids = await service.send_batch(queue, payloads)
    stored = await sql(pgmq_db_url, f"SELECT msg_id, message FROM pgmq.q_{queue} ORDER BY msg_id")
    assert [r[0] for r in stored] == ids
    assert [json.loads(r[1]) for r in stored] == [json.loads(p) for p in payloads]
    received = await service.receive_messages(queue, 10, 30)
    assert [json.loads(m.payload) for m in received] == [json.loads(p) for p in payloads]


async def test_the_size_limit_counts_the_callers_bytes(pgmq_db_url: str) -> None:
    from mqcontract.errors import MessageTooLarge

    svc = await open_pgmq(config(pgmq_db_url, max_message_size_bytes=100))
    name = f"t_size_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    await svc.create_queue(name)
    try:
        await svc.send_message(name, bytes(100))  # enveloped: far more than 100 stored bytes
        with pytest.raises(MessageTooLarge):
            await svc.send_message(name, bytes(101))
    finally:
        await svc.delete_queue(name)
        await svc.close()


# -- receive, ack, nack --------------------------------------------------------------------


async def test_a_sub_second_visibility_timeout_is_honoured(
    service: PgmqMessagingService, queue: str
) -> None:
    msg_id = await service.send_message(queue, b"1")
    started = time.monotonic()
    (first,) = await service.receive_messages(queue, 1, 0.3)
    assert first.receive_count == 1
    assert await service.receive_messages(queue, 1, 0.3) == []

    async def again() -> list[Any]:
        return await service.receive_messages(queue, 1, 30)

    (second,) = await _eventually(again, within=3.0)
    elapsed = time.monotonic() - started
    assert second.msg_id == msg_id
    assert second.receive_count == 2
    assert 0.3 <= elapsed < 2.0


async def test_ack_and_nack_need_a_held_message(service: PgmqMessagingService, queue: str) -> None:
    a, b = await service.send_batch(queue, [b"a", b"b"])
    with pytest.raises(MessageNotFound):
        await service.ack_message(queue, a)  # never received
    with pytest.raises(MessageNotFound):
        await service.ack_message(queue, 999_999)
    got = await service.receive_messages(queue, 10, 30)
    assert [m.msg_id for m in got] == [a, b]
    await service.ack_message(queue, a)
    with pytest.raises(MessageNotFound):
        await service.ack_message(queue, a)
    await service.nack_message(queue, b)
    with pytest.raises(MessageNotFound):
        await service.nack_message(queue, b)
    with pytest.raises(MessageNotFound):
        await service.ack_message(queue, b)
    (again,) = await service.receive_messages(queue, 10, 30)
    assert (again.msg_id, again.receive_count) == (b, 2)
    await service.ack_message(queue, b)
    assert await service.receive_messages(queue, 10, 30) == []


async def test_archive_on_ack_moves_the_message_to_the_archive(pgmq_db_url: str) -> None:
    svc = await open_pgmq(config(pgmq_db_url, archive_on_ack=True))
    name = f"t_arch_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    await svc.create_queue(name)
    try:
        msg_id = await svc.send_message(name, b"[1]")
        await svc.receive_messages(name, 1, 30)
        await svc.ack_message(name, msg_id)
        rows = await sql(pgmq_db_url, f"SELECT msg_id FROM pgmq.a_{name}")
        assert [r[0] for r in rows] == [msg_id]
        with pytest.raises(MessageNotFound):
            await svc.ack_message(name, msg_id)
    finally:
        await svc.delete_queue(name)
        await svc.close()


async def test_operations_on_a_missing_queue_raise_queue_not_found_and_create_nothing(
    service: PgmqMessagingService,
) -> None:
    name = f"t_missing_{os.getpid()}"
    for call in [
        service.send_message(name, b"1"),
        service.send_message_with_delay(name, b"1", 0.5),
        service.send_batch(name, [b"1"]),
        service.send_batch(name, []),
        service.receive_messages(name, 1, 1),
        service.ack_message(name, 1),
        service.nack_message(name, 1),
        service.ack_claim(name, Claim(name, 1, 1, 1.0)),
        service.nack_claim(name, Claim(name, 1, 1, 1.0)),
        service.ack_claims(name, [Claim(name, 1, 1, 1.0)]),
        service.fetch_message(name, 1, 1),
        service.subscribe(name),
    ]:
        with pytest.raises(QueueNotFound):
            await call
    assert not await service.queue_exists(name)
    await service.delete_queue(name)  # idempotent


# -- connections ---------------------------------------------------------------------------


async def test_operations_recover_after_the_pool_connections_are_severed(
    service: PgmqMessagingService, queue: str, pgmq_db_url: str
) -> None:
    """Idle connections terminated by the server: the send right after does not raise
    ``ConnectionLost`` (once allowed: it got the kept connection asyncpg had released,
    or an answer of the server's FATAL; neither ran the statement) and is stored once."""
    await asyncio.gather(*(service.send_message(queue, b"1") for _ in range(5)))
    for n in range(2, 5):
        await sql(
            pgmq_db_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            service.application_name,
        )
        sent = await service.send_message(queue, b"%d" % n)
        rows = await sql(
            pgmq_db_url, f"SELECT msg_id FROM pgmq.q_{queue} WHERE message = $1", f"{n}"
        )
        assert [r[0] for r in rows] == [sent]
        assert await service.queue_exists(queue)


async def test_close_stops_everything_and_later_calls_raise_provider_closed(
    pgmq_db_url: str,
) -> None:
    svc = await open_pgmq(config(pgmq_db_url))
    name = f"t_close_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    await svc.create_queue(name)
    sub = await svc.subscribe(name)
    pid = svc.listener_backend_pid
    await svc.delete_queue(name)
    await svc.close()
    assert sub.closed
    with pytest.raises(ProviderClosed):
        await svc.list_queues()
    with pytest.raises(ProviderClosed):
        await svc.subscribe(name)

    async def listener_gone() -> bool:
        rows = await sql(pgmq_db_url, "SELECT 1 FROM pg_stat_activity WHERE pid = $1::int", pid)
        return not rows

    assert await _eventually(listener_gone)
    pending = [t for t in asyncio.all_tasks() if "mqcontract" in t.get_name()]
    assert pending == []

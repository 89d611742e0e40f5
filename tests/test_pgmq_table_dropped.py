"""A PGMQ queue whose table was dropped from outside (``DROP TABLE pgmq.q_<queue>``, not
``pgmq.drop_queue``), which leaves its row in ``pgmq.meta``: missing to every operation,
``queue_exists`` and ``list_queues`` too, and ``delete_queue`` removes what is left. Its
archive table dropped instead is not a missing queue: ``ArchiveMissing`` under
``archive_on_ack``."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from mqcontract.errors import QueueNotFound
from mqcontract.messages import Claim, Message
from mqcontract.providers.pgmq import ArchiveMissing, PgmqMessagingService, open_pgmq
from tests import pgmq_support
from tests.pgmq_support import config, sql

# The shared fixtures, under the names these tests ask for.
service = pgmq_support.service
queue = pgmq_support.queue

DELIVERY = 5.0  # seconds a notification may take to show up


async def _leftovers(url: str, queue: str) -> dict[str, bool]:
    """What of ``queue`` is in the database, seen from outside the provider."""
    rows = await sql(
        url,
        "SELECT EXISTS (SELECT 1 FROM pgmq.meta WHERE queue_name = $1::text) AS meta,"
        " to_regclass('pgmq.q_' || $1::text) IS NOT NULL AS q,"
        " to_regclass('pgmq.a_' || $1::text) IS NOT NULL AS a",
        queue,
    )
    return {key: bool(rows[0][key]) for key in ("meta", "q", "a")}


async def test_a_queue_whose_table_was_dropped_is_missing_to_every_operation(
    service: PgmqMessagingService, queue: str, pgmq_db_url: str
) -> None:
    """``queue_exists`` and ``list_queues`` read ``pgmq.meta`` alone and said the queue
    existed, while every operation on it raised ``QueueNotFound`` (``ack_message`` of a
    message never claimed here said ``MessageNotFound``: the queue "existed")."""
    await sql(pgmq_db_url, f"DROP TABLE pgmq.q_{queue}")
    assert await _leftovers(pgmq_db_url, queue) == {"meta": True, "q": False, "a": True}
    assert not await service.queue_exists(queue)
    assert queue not in await service.list_queues()
    for call in [
        service.send_message(queue, b"1"),
        service.send_message_with_delay(queue, b"1", 0.5),
        service.send_batch(queue, [b"1"]),
        service.receive_messages(queue, 1, 1),
        service.ack_message(queue, 1),
        service.nack_message(queue, 1),
        service.ack_claim(queue, Claim(queue, 1, 1, 1.0)),
        service.ack_claims(queue, [Claim(queue, 1, 1, 1.0)]),
        service.fetch_message(queue, 1, 1),
        service.subscribe(queue),
        service.install_notify_trigger(queue),
    ]:
        with pytest.raises(QueueNotFound):
            await call


async def test_list_queues_still_lists_a_foreign_queue_whose_name_is_no_identifier(
    service: PgmqMessagingService, queue: str, pgmq_db_url: str
) -> None:
    """The table is looked up by name: PGMQ takes names such as ``Odd.Name`` (its table is
    ``pgmq."q_odd.name"``), which ``to_regclass('pgmq.q_' || name)`` refuses to parse."""
    odd = f"Odd.{queue}"[:47]
    await sql(pgmq_db_url, "SELECT pgmq.create($1::text)", odd)
    try:
        assert {odd, queue} <= set(await service.list_queues())
    finally:
        await sql(pgmq_db_url, "SELECT pgmq.drop_queue($1::text)", odd)


async def test_delete_queue_removes_what_is_left_of_a_queue_whose_table_was_dropped(
    service: PgmqMessagingService, queue: str, pgmq_db_url: str
) -> None:
    """``pgmq.drop_queue`` returns false and removes nothing when the table is missing:
    ``delete_queue`` returned, yet the meta row and the archive stayed, for good."""
    await service.send_message(queue, b'{"old":1}')
    await sql(pgmq_db_url, f"DROP TABLE pgmq.q_{queue}")
    await service.delete_queue(queue)
    assert await _leftovers(pgmq_db_url, queue) == {"meta": False, "q": False, "a": False}
    assert not await service.queue_exists(queue)
    await service.delete_queue(queue)  # idempotent

    await service.create_queue(queue)
    assert await service.queue_exists(queue)
    assert queue in await service.list_queues()
    sub = await service.subscribe(queue)
    try:
        msg_id = await service.send_message(queue, b'{"new":1}')
        note = await asyncio.wait_for(sub.__anext__(), DELIVERY)
        assert isinstance(note, Message)
        assert note.message.msg_id == msg_id
        [got] = await service.receive_messages(queue, 10, 30)
        assert json.loads(got.payload) == {"new": 1}
        await service.ack_claim(queue, got)
    finally:
        await sub.aclose()


async def test_create_queue_repairs_a_queue_whose_table_was_dropped(
    service: PgmqMessagingService, queue: str, pgmq_db_url: str
) -> None:
    await sql(pgmq_db_url, f"DROP TABLE pgmq.q_{queue}")
    await service.create_queue(queue)
    assert await service.queue_exists(queue)
    msg_id = await service.send_message(queue, b'{"x":1}')
    [got] = await service.receive_messages(queue, 10, 30)
    assert got.msg_id == msg_id


async def test_delete_queue_removes_the_partman_configuration_of_such_a_queue(
    service: PgmqMessagingService, pgmq_db_url: str
) -> None:
    """A queue made by ``pgmq.create_partitioned`` is also registered with pg_partman:
    ``pgmq.drop_queue`` removes that too, once it is given the table back."""
    if not await sql(
        pgmq_db_url, "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_partman'"
    ):
        pytest.skip("pg_partman is not available to this PostgreSQL (postgresql-15-partman)")
    await sql(pgmq_db_url, "CREATE SCHEMA IF NOT EXISTS partman")
    await sql(pgmq_db_url, "CREATE EXTENSION IF NOT EXISTS pg_partman SCHEMA partman")
    queue = f"t_part_{uuid.uuid4().hex[:10]}"
    await sql(pgmq_db_url, "SELECT pgmq.create_partitioned($1::text, '100')", queue)
    configured = "SELECT count(*) FROM partman.part_config WHERE parent_table LIKE $1::text"
    try:
        assert (await sql(pgmq_db_url, configured, f"pgmq.%_{queue}"))[0][0] == 2
        await sql(pgmq_db_url, f"DROP TABLE pgmq.q_{queue}")
        assert not await service.queue_exists(queue)
        await service.delete_queue(queue)
        assert await _leftovers(pgmq_db_url, queue) == {"meta": False, "q": False, "a": False}
        assert (await sql(pgmq_db_url, configured, f"pgmq.%_{queue}"))[0][0] == 0
    finally:
        await service.delete_queue(queue)


async def test_an_ack_archiving_into_a_dropped_archive_table_names_the_archive(
    queue: str, pgmq_db_url: str
) -> None:
    """With ``archive_on_ack`` an ack said ``QueueNotFound`` for a queue that exists (and
    the event system counted every such ack as a lost queue): it is ``ArchiveMissing``,
    the message stays, and ``pgmq.create`` brings the archive back."""
    await sql(pgmq_db_url, f"DROP TABLE pgmq.a_{queue}")
    archiving = await open_pgmq(config(pgmq_db_url, archive_on_ack=True))
    try:
        await archiving.send_message(queue, b"1")
        (got,) = await archiving.receive_messages(queue, 30, 1)
        for call in [
            archiving.ack_claim(queue, got),
            archiving.ack_claims(queue, [got]),
            archiving.ack_message(queue, got.msg_id),
        ]:
            with pytest.raises(ArchiveMissing) as caught:
                await call
            assert not isinstance(caught.value, QueueNotFound)
            assert caught.value.queue == queue
            assert f"pgmq.a_{queue}" in str(caught.value)
        assert await archiving.queue_exists(queue)
        assert await _leftovers(pgmq_db_url, queue) == {"meta": True, "q": True, "a": False}
        await archiving.create_queue(queue)  # pgmq.create: the archive is made again
        await archiving.ack_claim(queue, got)
        assert (await sql(pgmq_db_url, f"SELECT count(*) FROM pgmq.a_{queue}"))[0][0] == 1
    finally:
        await archiving.close()

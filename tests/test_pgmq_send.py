"""PGMQ sends as the ``INSERT`` ``pgmq.send``/``pgmq.send_batch`` run, prepared per queue."""

from __future__ import annotations

import time

from mqcontract.providers.pgmq import PgmqMessagingService
from tests import pgmq_support
from tests.pgmq_support import sql

service = pgmq_support.service
queue = pgmq_support.queue


async def test_a_batch_gets_its_ids_in_order_and_one_visibility_time(
    service: PgmqMessagingService, queue: str, pgmq_db_url: str
) -> None:
    payloads = [b'{"n": %d}' % i for i in range(200)]
    ids = await service.send_batch(queue, payloads)
    rows = await sql(
        pgmq_db_url,
        f"SELECT msg_id, message::text, vt, headers FROM pgmq.q_{queue} ORDER BY msg_id",
    )
    assert [r[0] for r in rows] == ids
    assert [r[1] for r in rows] == [p.decode() for p in payloads]
    assert len({r[2] for r in rows}) == 1  # as pgmq.send_batch: one vt for the batch
    assert {r[3] for r in rows} == {None}


async def test_what_the_provider_sends_any_pgmq_client_reads(
    service: PgmqMessagingService, queue: str, pgmq_db_url: str
) -> None:
    first = await service.send_message(queue, b'{"a": 1}')
    rows = await sql(
        pgmq_db_url, "SELECT msg_id, read_ct, message::text FROM pgmq.read($1, 30, 5)", queue
    )
    assert [(r[0], r[1], r[2]) for r in rows] == [(first, 1, '{"a": 1}')]


async def test_a_delayed_send_sets_the_visibility_time_ahead(
    service: PgmqMessagingService, queue: str, pgmq_db_url: str
) -> None:
    before = time.time()
    sent = await service.send_message_with_delay(queue, b"[1]", 30.0)
    rows = await sql(
        pgmq_db_url,
        f"SELECT extract(epoch FROM vt)::float8, headers FROM pgmq.q_{queue} WHERE msg_id = $1",
        sent,
    )
    ((vt, headers),) = [(r[0], r[1]) for r in rows]
    assert before + 29 < vt < time.time() + 31
    assert headers is None
    assert await service.receive_messages(queue, 5, 30) == []

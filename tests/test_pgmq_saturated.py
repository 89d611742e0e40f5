"""A row whose ``read_ct`` is at the ``integer`` limit does not stop the queue.

Set there by a foreign ``UPDATE`` (nothing reads a message 2**31 - 1 times), such a row
made every receive of its queue fail with "integer out of range" (claiming it adds one),
the oldest rows being picked first: one bad row stopped the whole queue, as it does
``pgmq.read``. It cannot be claimed again, so receive and fetch pass it by and leave it
where it is.
"""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]

from mqcontract.providers.pgmq import PgmqMessagingService
from tests import pgmq_support

service = pgmq_support.service
queue = pgmq_support.queue

READ_CT_MAX = 2**31 - 1


async def test_a_row_at_the_read_count_limit_is_passed_by_and_left_in_place(
    service: PgmqMessagingService, queue: str, pgmq_db_url: str
) -> None:
    saturated, *rest = await service.send_batch(queue, [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}'])
    admin = await asyncpg.connect(pgmq_db_url, timeout=5)
    try:
        await admin.execute(
            f"UPDATE pgmq.q_{queue} SET read_ct = $1 WHERE msg_id = $2", READ_CT_MAX, saturated
        )
        got = await service.receive_messages(queue, 10, 30)
        assert [m.msg_id for m in got] == rest
        assert await service.fetch_message(queue, saturated, 30) is None
        for message in got:
            await service.ack_message(queue, message.msg_id)
        assert await service.receive_messages(queue, 10, 30) == []
        left = await admin.fetchval(
            f"SELECT read_ct FROM pgmq.q_{queue} WHERE msg_id = $1", saturated
        )
        assert left == READ_CT_MAX, "the row was changed or removed"
    finally:
        await admin.close()

"""Sending: batches beyond one statement's packet, ids in order, timestamps."""

from __future__ import annotations

from mqcontract_sql_skip_locked import SqlQueueService


async def test_a_batch_larger_than_one_packet_is_sent_whole_and_in_order(
    service: SqlQueueService, queue: str
) -> None:
    # 10 MiB of NUL bytes escape to 20 MiB of SQL: more than MariaDB's 16 MiB packet.
    payloads = [bytes([i]) + b"\0" * (1_048_576 - 1) for i in range(10)]
    ids = await service.send_batch(queue, payloads)
    assert ids == sorted(ids)
    assert len(set(ids)) == 10
    got = await service.receive_messages(queue, 10, 60)
    assert [m.msg_id for m in got] == ids
    assert [m.payload[0] for m in got] == list(range(10))
    assert await service.ack_claims(queue, got) == [True] * 10


async def test_a_batch_shares_one_send_time_with_microseconds(
    service: SqlQueueService, queue: str
) -> None:
    await service.send_batch(queue, [b"a", b"b", b"c"])
    later = await service.send_message(queue, b"d")
    got = await service.receive_messages(queue, 10, 60)
    times = [m.enqueued_at for m in got]
    assert times[0] == times[1] == times[2] < times[3]
    assert any(t != int(t) for t in times)  # not whole seconds (MariaDB's NOW())
    assert got[-1].msg_id == later

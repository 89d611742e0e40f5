"""Behaviour the conformance suite does not pin down, specific to the Redis design."""

from __future__ import annotations

import asyncio

import pytest
from mqcontract.errors import MessageNotFound, StaleClaim, StaleReason

from mqcontract_redis_streams import RedisStreamsMessagingService
from support import claims_visible, drop_run_keys, eventually, open_service, queue_name


async def test_an_expired_claim_behind_many_held_ones_is_found(
    service: RedisStreamsMessagingService, queue: str
) -> None:
    # The expired entry is found through the deadline index, not behind a scan of the
    # 40 entries still held, and is redelivered before the ones never delivered.
    ids = await service.send_batch(queue, [b"m%d" % i for i in range(45)])
    held = await service.receive_messages(queue, 40, 60)
    (short,) = await service.receive_messages(queue, 1, 0.2)
    assert [m.msg_id for m in held] == ids[:40]
    assert short.msg_id == ids[40]

    await claims_visible(service, queue, 1)
    back = await service.receive_messages(queue, 1, 60)
    # Original position: the expired entry comes before the four never delivered.
    assert [(m.msg_id, m.receive_count) for m in back] == [(ids[40], 2)]


async def test_a_lost_index_is_rebuilt_from_the_pending_entries(
    service: RedisStreamsMessagingService, queue: str
) -> None:
    ids = await service.send_batch(queue, [b"a", b"b", b"c"])
    await service.receive_messages(queue, 1, 60)  # ids[0]: held
    await service.receive_messages(queue, 1, 0.05)  # ids[1]: about to expire
    (third,) = await service.receive_messages(queue, 1, 60)
    await service.nack_message(queue, third.msg_id)  # ids[2]: ready
    base = service.stream_key(queue).removesuffix(":stream")
    await service.client.delete(f"{base}:held", f"{base}:ready")

    await claims_visible(service, queue, 2)
    back = await service.receive_messages(queue, 5, 60)
    assert [(m.msg_id, m.receive_count) for m in back] == [(ids[1], 2), (ids[2], 2)]
    await service.ack_message(queue, ids[0])  # still held: the rebuild kept its claim
    counts = [await service.client.zcard(f"{base}:{k}") for k in ("held", "ready")]
    assert counts == [2, 0]


async def test_ids_are_never_reused_after_delete_and_recreate(
    service: RedisStreamsMessagingService,
) -> None:
    q = queue_name()
    await service.create_queue(q)
    first = await service.send_batch(q, [b"a", b"b"])
    await service.delete_queue(q)
    await service.create_queue(q)
    (again,) = await service.send_batch(q, [b"c"])
    assert again > max(first)  # a stale id from before the delete names nothing now


async def test_delete_leaves_only_the_id_counter(
    service: RedisStreamsMessagingService,
) -> None:
    q = queue_name()
    await service.create_queue(q)
    await service.send_batch(q, [b"a", b"b"])
    await service.send_message_with_delay(q, b"later", 60)
    await service.receive_messages(q, 1, 60)
    await service.delete_queue(q)
    keys = [k.decode() async for k in service.client.scan_iter(match=f"mqc:q:{q}:*")]
    assert keys == [f"mqc:q:{q}:seq"]


async def test_a_claim_made_by_one_provider_can_be_settled_by_another(
    service: RedisStreamsMessagingService, queue: str
) -> None:
    # The token lives in Redis (the delivery count), so a claim handed to another process
    # settles there; settling by id stays with the service that made the claim.
    other = await open_service()
    try:
        sent = await service.send_message(queue, b"shared")
        (got,) = await service.receive_messages(queue, 1, 60)
        with pytest.raises(MessageNotFound):
            await other.ack_message(queue, sent)  # not a claim *other* made
        assert got.claim is not None
        await other.ack_claim(queue, got.claim)
        with pytest.raises(StaleClaim) as stale:
            await service.ack_message(queue, sent)
        assert stale.value.reason is StaleReason.SETTLED
        assert await other.stored_ids(queue) == []
    finally:
        await other.close()


async def test_a_delayed_message_keeps_its_send_time_and_id(
    service: RedisStreamsMessagingService, queue: str
) -> None:
    before = await service.client.time()
    delayed = await service.send_message_with_delay(queue, b"later", 0.3)
    now = await service.send_message(queue, b"now")
    assert delayed < now

    async def receive() -> list[int]:
        got = await service.receive_messages(queue, 10, 60)
        for m in got:
            assert m.enqueued_at >= before[0] - 1
            assert m.receive_count == 1
        return [m.msg_id for m in got]

    assert await receive() == [now]
    message = await eventually(receive, 5, "delayed message due")
    assert message == [delayed]


async def test_different_key_prefixes_are_separate_namespaces(
    service: RedisStreamsMessagingService,
) -> None:
    other = await open_service(key_prefix=f"mqc_{queue_name('ns')}")
    try:
        q = queue_name()
        await other.create_queue(q)
        await other.send_message(q, b"x")
        assert not await service.queue_exists(q)
        assert q not in await service.list_queues()
        await other.delete_queue(q)
        await other.client.delete(f"{other.settings.key_prefix}:q:{q}:seq")
    finally:
        await other.close()


async def test_cancelling_a_caller_is_never_lost(
    service: RedisStreamsMessagingService, queue: str
) -> None:
    # With a socket timeout redis-py sends through asyncio.wait_for, which on Python 3.11
    # can swallow the caller's cancellation: a consumer being stopped kept running.
    async def busy() -> str:
        for _ in range(10_000):
            await service.receive_messages(queue, 10, 60)
        return "ran to the end"

    for i in range(100):
        task = asyncio.create_task(busy())
        for _ in range(i % 5):
            await asyncio.sleep(0)
        await asyncio.sleep(0.001 * (i % 3))
        task.cancel()
        try:
            outcome = await task
        except asyncio.CancelledError:
            continue
        raise AssertionError(f"cancellation {i} was swallowed: {outcome}")


async def test_calls_beyond_the_connection_pool_wait_for_a_connection() -> None:
    """Twenty calls at once on a pool of two all complete: the ones beyond the pool wait
    for a connection. redis-py's default pool raised "Too many connections" instead, which
    the provider reported as the backend being unavailable."""
    service = await open_service(max_connections=2)
    try:
        name = queue_name()
        await service.create_queue(name)
        async with asyncio.timeout(10):
            ids = await asyncio.gather(*(service.send_message(name, b"%d" % i) for i in range(20)))
        assert len(set(ids)) == 20
        assert service.client.connection_pool.max_connections == 2
    finally:
        await drop_run_keys(service)
        await service.close()

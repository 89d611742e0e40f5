"""The harness's hooks act on the real server and the provider recovers from them."""

from __future__ import annotations

import pytest
from mqcontract.config import load_config
from mqcontract.errors import MessagingError
from mqcontract.messages import Message
from mqcontract_conformance.harness import HarnessSettings, HookUnavailable

from mqcontract_redis_streams import RedisStreamsMessagingService
from mqcontract_redis_streams.harness import RedisStreamsHarness, redis_streams_harness
from support import RUN_ID, eventually, open_service, queue_name


def _harness(run_id: str = RUN_ID) -> RedisStreamsHarness:
    harness = redis_streams_harness(HarnessSettings(config=load_config(environ={}), run_id=run_id))
    assert isinstance(harness, RedisStreamsHarness)
    return harness


async def test_stored_ids_sees_visible_held_and_delayed_messages_without_claiming(
    service: RedisStreamsMessagingService, queue: str
) -> None:
    visible, held = await service.send_batch(queue, [b"v", b"h"])
    delayed = await service.send_message_with_delay(queue, b"d", 60)
    (got,) = await service.receive_messages(queue, 1, 60)
    assert got.msg_id == visible
    assert await _harness().stored_ids(service, queue) == [visible, held, delayed]
    (nxt,) = await service.receive_messages(queue, 1, 60)
    assert (nxt.msg_id, nxt.receive_count) == (held, 1)  # the backdoor claimed nothing


async def test_sever_connection_breaks_the_pool_and_the_provider_recovers(
    service: RedisStreamsMessagingService, queue: str
) -> None:
    sent = await service.send_message(queue, b"survives")
    await _harness().sever_connection(service)

    async def works() -> bool:
        try:
            return await service.queue_exists(queue)
        except MessagingError:
            return False

    await eventually(works, 5, "provider usable after sever")
    (got,) = await service.receive_messages(queue, 1, 60)
    assert got.msg_id == sent


async def test_kill_listener_needs_a_subscription_and_push_resumes_after_it(
    service: RedisStreamsMessagingService, queue: str
) -> None:
    harness = _harness()
    with pytest.raises(HookUnavailable):
        await harness.kill_listener(service)
    async with await service.subscribe(queue) as sub:
        await harness.kill_listener(service)
        sent = await service.send_message(queue, b"after the kill")
        note = await anext(sub)
        assert isinstance(note, Message)
        assert note.message.msg_id == sent
        await service.ack_message(queue, sent)


async def test_teardown_removes_the_run_s_queues_and_keys_only() -> None:
    run_id = f"{RUN_ID}td"
    mine, foreign = f"rs_{run_id}_a", queue_name("kept")
    svc = await open_service()
    try:
        for q in (mine, foreign):
            await svc.create_queue(q)
            await svc.send_message(q, b"x")
        await _harness(run_id).teardown()
        assert not await svc.queue_exists(mine)
        assert [k async for k in svc.client.scan_iter(match=f"mqc:q:{mine}:*")] == []
        assert await svc.queue_exists(foreign)
    finally:
        await svc.delete_queue(foreign)
        await svc.close()

"""The harness's hooks act on the real server and the provider recovers from them."""

from __future__ import annotations

import pytest
from mqcontract.config import load_config
from mqcontract.errors import MessagingError
from mqcontract.messages import Message
from mqcontract.testing import HarnessSettings, HookUnavailable

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


async def test_each_run_has_its_own_namespace_and_teardown_empties_it() -> None:
    harness = _harness(f"{RUN_ID}td")
    assert harness.config.key_prefix == f"mqc_{RUN_ID}td"
    outside = await open_service()
    foreign = queue_name("kept")
    svc = await harness.open()
    assert isinstance(svc, RedisStreamsMessagingService)
    try:
        q = queue_name()
        await svc.create_queue(q)
        await svc.send_message(q, b"x")
        await outside.create_queue(foreign)
        assert q not in await outside.list_queues()  # the run's registry is its own
        assert foreign not in await svc.list_queues()
        await harness.teardown()
        prefix = harness.config.key_prefix
        assert [k async for k in outside.client.scan_iter(match=f"{prefix}:*")] == []
        assert await outside.queue_exists(foreign)
    finally:
        await svc.close()
        await outside.delete_queue(foreign)
        await outside.close()

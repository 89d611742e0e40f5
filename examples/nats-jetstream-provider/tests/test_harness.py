"""The harness's hooks act on the real server and the provider recovers from them."""

from __future__ import annotations

import asyncio

import pytest
from mqcontract.config import load_config
from mqcontract.errors import MessagingError
from mqcontract.messages import Message
from mqcontract.testing import HarnessSettings, HookUnavailable

from mqcontract_nats_jetstream import NatsJetStreamMessagingService
from mqcontract_nats_jetstream._errors import Severed
from mqcontract_nats_jetstream.harness import (
    NatsJetStreamHarness,
    nats_jetstream_harness,
    run_streams,
)
from support import RUN_ID, eventually, open_service, queue_name


def _harness(run_id: str = RUN_ID) -> NatsJetStreamHarness:
    settings = HarnessSettings(config=load_config(environ={}), run_id=run_id)
    harness = nats_jetstream_harness(settings)
    assert isinstance(harness, NatsJetStreamHarness)
    return harness


async def test_stored_ids_sees_visible_and_held_messages_without_claiming(
    service: NatsJetStreamMessagingService, queue: str
) -> None:
    first, second, third = await service.send_batch(queue, [b"a", b"b", b"c"])
    (got,) = await service.receive_messages(queue, 1, 60)
    assert got.msg_id == first
    await service.ack_claim(queue, got)  # a gap at the start
    (held,) = await service.receive_messages(queue, 1, 60)
    assert await _harness().stored_ids(service, queue) == [second, third]
    (nxt,) = await service.receive_messages(queue, 1, 60)
    assert (nxt.msg_id, nxt.receive_count) == (third, 1)  # the backdoor claimed nothing
    assert await _harness().stored_ids(service, "never_created") == []
    assert held.msg_id == second


async def test_sever_connection_kills_the_connection_and_the_provider_recovers(
    service: NatsJetStreamMessagingService, queue: str
) -> None:
    sent = await service.send_message(queue, b"survives")
    drops = service.link.drops
    port = service.link.local_port()
    await _harness().sever_connection(service)
    assert service.link.drops == drops + 1  # it returned once the client saw the drop

    async def works() -> bool:
        try:
            return await service.queue_exists(queue)
        except MessagingError:
            return False

    await eventually(works, 5, "provider usable after sever")
    assert service.link.local_port() != port  # a new connection
    (got,) = await service.receive_messages(queue, 1, 60)
    assert got.msg_id == sent


async def test_a_call_in_flight_when_the_connection_drops_is_connection_lost(
    service: NatsJetStreamMessagingService, queue: str
) -> None:
    # A waiting pull (the push loop's kind) is in flight when the connection dies.
    pull = asyncio.ensure_future(service.claim(service.link, queue, 1, 60, expires=5.0))
    await asyncio.sleep(0.1)
    await _harness().sever_connection(service)
    with pytest.raises(Severed):  # the service translates it to ConnectionLost
        async with asyncio.timeout(1.0):  # at once, not at the end of the pull
            await pull


async def test_kill_listener_needs_a_subscription_and_push_resumes_after_it(
    service: NatsJetStreamMessagingService, queue: str
) -> None:
    harness = _harness()
    with pytest.raises(HookUnavailable):
        await harness.kill_listener(service)
    async with await service.subscribe(queue) as sub:
        drops = service.link.drops
        await harness.kill_listener(service)
        assert service.link.drops == drops  # the operation connection was left alone
        sent = await service.send_message(queue, b"after the kill")
        async with asyncio.timeout(5):
            note = await anext(sub)
        assert isinstance(note, Message)
        assert note.message.msg_id == sent
        await service.ack_message(queue, sent)


async def test_crash_holder_holds_then_dies_and_the_messages_come_back(
    service: NatsJetStreamMessagingService, queue: str
) -> None:
    ids = await service.send_batch(queue, [b"a", b"b"])
    harness = _harness()
    harness.config = service.settings  # the holder opens this test's namespace
    held = await harness.crash_holder(service, queue, 2, 1.0)
    assert sorted(held) == ids
    assert await service.receive_messages(queue, 2, 60) == []

    async def back() -> list[int]:
        return [m.msg_id for m in await service.receive_messages(queue, 2, 60)]

    assert sorted(await eventually(back, 5, "held messages back after the crash")) == ids


async def test_each_run_has_its_own_namespace_and_teardown_empties_it() -> None:
    harness = _harness(f"{RUN_ID}td")
    assert harness.config.prefix == f"mqc_{RUN_ID}td"
    outside = await open_service()
    svc = await harness.open()
    assert isinstance(svc, NatsJetStreamMessagingService)
    foreign = queue_name("kept")
    try:
        q = queue_name()
        await svc.create_queue(q)
        await svc.send_message(q, b"x")
        await outside.create_queue(foreign)
        assert q not in await outside.list_queues()
        assert foreign not in await svc.list_queues()
        await harness.teardown()
        assert await run_streams(outside.link, harness.config.prefix) == []
        assert await outside.queue_exists(foreign)
    finally:
        await svc.close()
        await outside.delete_queue(foreign)
        await outside.close()

"""What MQTT QoS 1 does with the work-queue contract, checked against the broker itself.

Each test pins one fact the README's "Why this is not a work queue" relies on, so that a
broker (or a change here) that behaved otherwise would be noticed.
"""

from __future__ import annotations

import asyncio

from mqcontract_mqtt import MqttMessagingService
from support import open_service

#: Bound on the broker reading a closed subscriber's DISCONNECT, seconds.
DISCARD_BOUND = 5.0


async def test_a_message_sent_and_received_comes_back_exactly(
    service: MqttMessagingService, queue: str
) -> None:
    payload = bytes(range(256))
    sent = await service.send_message(queue, payload)
    [got] = await service.receive_messages(queue, 10, 30)
    assert (got.msg_id, got.payload, got.receive_count) == (sent, payload, 1)
    await service.ack_claim(queue, got)
    assert await service.receive_messages(queue, 10, 30) == []


async def test_a_nacked_message_is_not_delivered_again_while_connected(
    service: MqttMessagingService, queue: str
) -> None:
    await service.send_message(queue, b"work")
    [got] = await service.receive_messages(queue, 1, 0.1)
    await service.nack_claim(queue, got)
    assert await service.receive_messages(queue, 10, 30) == []


async def test_shared_subscribers_split_the_messages_and_keep_their_share(
    service: MqttMessagingService, queue: str
) -> None:
    other = await open_service()
    try:
        await other.receive_messages(queue, 1, 30)  # joins the shared subscription
        ids = [await service.send_message(queue, b"%d" % i) for i in range(6)]
        mine = [m.msg_id for m in await service.receive_messages(queue, 10, 30)]
        theirs = [m.msg_id for m in await other.receive_messages(queue, 10, 30)]
        assert sorted(mine + theirs) == ids
        assert mine, "round-robin: each member gets its turn"
        assert theirs, "round-robin: each member gets its turn"
        await other.close()  # leaves with its share unacknowledged...
        assert await service.receive_messages(queue, 10, 30) == []  # ...which is gone
    finally:
        await other.close()


async def test_a_message_sent_before_a_consumer_joins_is_not_receivable_by_it(
    service: MqttMessagingService, queue: str
) -> None:
    await service.send_message(queue, b"early")
    late = await open_service()
    try:
        assert await late.receive_messages(queue, 10, 30) == []
    finally:
        await late.close()


async def test_a_send_nobody_is_subscribed_to_is_counted_as_discarded(
    service: MqttMessagingService, queue: str
) -> None:
    await service.delete_queue(queue)  # leaves the shared subscription
    other = await open_service()
    try:
        await other.create_queue(queue)
        await other.close()  # the only subscriber leaves
        # MQTT's DISCONNECT has no answer: close returns once it is written, and the
        # broker drops the subscription when it reads it. A send until then still has a
        # subscriber; one after it is discarded, and counted.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DISCARD_BOUND
        before = service.discarded_sends
        while service.discarded_sends == before:
            assert loop.time() < deadline, f"no send discarded within {DISCARD_BOUND} s"
            await service.send_message(queue, b"into the void")
        assert service.discarded_sends == before + 1
    finally:
        await other.close()

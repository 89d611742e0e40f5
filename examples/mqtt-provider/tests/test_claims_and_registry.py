"""Claims settle once and say why not; the registry of retained markers is shared."""

from __future__ import annotations

import pytest
from mqcontract.errors import QueueNotFound, StaleClaim, StaleReason
from mqcontract.messages import Claim

from mqcontract_mqtt import MqttMessagingService
from support import open_service, queue_name


async def test_a_settled_claim_is_stale_for_the_reason_it_ended(
    service: MqttMessagingService, queue: str
) -> None:
    await service.send_batch(queue, [b"a", b"b"])
    acked, nacked = await service.receive_messages(queue, 2, 30)
    await service.ack_claim(queue, acked)
    await service.nack_claim(queue, nacked)
    with pytest.raises(StaleClaim) as settled:
        await service.ack_claim(queue, acked)
    with pytest.raises(StaleClaim) as released:
        await service.ack_claim(queue, nacked)
    assert (settled.value.reason, released.value.reason) == (
        StaleReason.SETTLED,
        StaleReason.LAPSED,
    )


async def test_a_forged_or_foreign_token_names_no_claim(
    service: MqttMessagingService, queue: str
) -> None:
    await service.send_message(queue, b"held")
    [got] = await service.receive_messages(queue, 1, 30)
    for token in (True, 1, "forged", f"{service.client_id}#999999"):
        with pytest.raises(StaleClaim) as stale:
            await service.ack_claim(queue, Claim(queue, got.msg_id, token, 30))
        assert stale.value.reason is StaleReason.NOT_HELD
    await service.ack_claim(queue, got)  # the real claim is untouched


async def test_another_service_sees_creation_and_deletion(service: MqttMessagingService) -> None:
    name = queue_name("reg")
    other = await open_service()
    try:
        await service.create_queue(name)
        assert await other.queue_exists(name)
        assert name in await other.list_queues()
        await service.delete_queue(name)
        assert not await other.queue_exists(name)
        with pytest.raises(QueueNotFound):
            await other.send_message(name, b"x")
    finally:
        await other.close()


async def test_ids_increase_for_one_producer(service: MqttMessagingService, queue: str) -> None:
    ids = [await service.send_message(queue, b"") for _ in range(20)]
    assert ids == sorted(set(ids))

"""The in-memory provider's prefetch is one room for all the queues of a subscription:
room given back on one queue (a settle, the queue deleted) serves the others at once,
not at the next unrelated event."""

from __future__ import annotations

import asyncio

from mqcontract.config import MemoryConfig
from mqcontract.messages import Message
from mqcontract.providers.memory import InMemoryMessagingService

WITHIN = 2.0  # seconds: the next push is due at once


async def _two_queues_one_room() -> tuple[InMemoryMessagingService, Message]:
    service = InMemoryMessagingService(MemoryConfig(prefetch_count=1))
    for name in ("a", "b"):
        await service.create_queue(name)
    sub = await service.subscribe_many(["a", "b"])
    for name in ("a", "b"):
        await service.send_message(name, b"{}")
    first = await asyncio.wait_for(anext(aiter(sub)), WITHIN)
    assert isinstance(first, Message)
    return service, first


async def _next_queue(service: InMemoryMessagingService) -> str:
    (sub,) = service._subscribers
    note = await asyncio.wait_for(anext(aiter(sub)), WITHIN)
    return note.queue_name


async def test_a_settle_on_one_queue_makes_room_for_the_others() -> None:
    service, first = await _two_queues_one_room()
    async with service:
        await service.ack_message(first.queue_name, first.message.msg_id)
        assert await _next_queue(service) == ({"a", "b"} - {first.queue_name}).pop()


async def test_a_deleted_queue_makes_room_for_the_others() -> None:
    service, first = await _two_queues_one_room()
    async with service:
        await service.delete_queue(first.queue_name)
        assert await _next_queue(service) == ({"a", "b"} - {first.queue_name}).pop()

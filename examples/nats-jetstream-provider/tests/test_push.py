"""Push details the suite leaves open: capacity, re-push after nack or expiry, hand-back."""

from __future__ import annotations

import asyncio

from mqcontract.messages import Message, MessageNotification
from mqcontract.service import Subscription

from mqcontract_nats_jetstream import NatsJetStreamMessagingService
from support import eventually, open_service, queue_name


async def _next(sub: Subscription, within: float = 5.0) -> Message:
    async with asyncio.timeout(within):
        note: MessageNotification = await anext(sub)
    assert isinstance(note, Message)
    assert note.claimed
    return note


async def _nothing(sub: Subscription, during: float) -> None:
    try:
        async with asyncio.timeout(during):
            note = await anext(sub)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected notification {note!r}")


async def test_a_subscription_holds_at_most_prefetch_count(
    service: NatsJetStreamMessagingService,
) -> None:
    svc = await open_service(prefetch_count=2)
    q = queue_name()
    try:
        await svc.create_queue(q)
        ids = await svc.send_batch(q, [b"a", b"b", b"c"])
        async with await svc.subscribe(q) as sub:
            first, second = await _next(sub), await _next(sub)
            assert [first.message.msg_id, second.message.msg_id] == ids[:2]
            await _nothing(sub, 0.3)
            await svc.ack_message(q, ids[0])  # frees one slot: the third arrives
            third = await _next(sub)
            assert third.message.msg_id == ids[2]
    finally:
        await svc.close()


async def test_a_new_message_is_pushed_at_once(
    service: NatsJetStreamMessagingService, queue: str
) -> None:
    async with await service.subscribe(queue) as sub:
        await asyncio.sleep(0.1)  # the loop's pull is waiting
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = await service.send_message(queue, b"now")
        note = await _next(sub)
        assert note.message.msg_id == sent
        assert loop.time() - start < 0.3  # not at the end of the waiting pull
        await service.ack_message(queue, sent)


async def test_a_nacked_pushed_message_is_pushed_again_counted(
    service: NatsJetStreamMessagingService, queue: str
) -> None:
    sent = await service.send_message(queue, b"retry me")
    async with await service.subscribe(queue) as sub:
        first = await _next(sub)
        await service.nack_message(queue, sent)
        again = await _next(sub, within=2.0)
        assert (again.message.msg_id, again.message.receive_count) == (sent, 2)
        assert first.message.receive_count == 1
        await service.ack_message(queue, sent)


async def test_an_expired_pushed_message_is_pushed_again() -> None:
    svc = await open_service(push_visibility_timeout_seconds=0.3)
    q = queue_name()
    try:
        await svc.create_queue(q)
        sent = await svc.send_message(q, b"slow consumer")
        async with await svc.subscribe(q) as sub:
            first = await _next(sub)
            again = await _next(sub, within=3.0)
            assert (first.message.receive_count, again.message.receive_count) == (1, 2)
            assert again.message.msg_id == sent
            await svc.ack_message(q, sent)
    finally:
        await svc.close()


async def test_messages_never_handed_out_are_handed_back_on_close(
    service: NatsJetStreamMessagingService, queue: str
) -> None:
    ids = await service.send_batch(queue, [b"a", b"b", b"c"])
    sub = await service.subscribe(queue)
    taken = await _next(sub)
    assert taken.message.msg_id == ids[0]

    async def claimed_all() -> bool:  # the loop claims the other two without a consumer
        return await service.receive_messages(queue, 10, 60) == []

    await eventually(claimed_all, 5, "subscription claimed the rest")
    await sub.aclose()
    back = await service.receive_messages(queue, 10, 60)
    assert [m.msg_id for m in back] == ids[1:]
    await service.ack_message(queue, ids[0])  # the one handed out stayed held

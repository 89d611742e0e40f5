"""Push details the suite leaves open: capacity, re-push after nack or expiry, hand-back,
and a subscription closing while the loop's pull is under way."""

from __future__ import annotations

import asyncio
from typing import Any

from mqcontract.messages import Message, MessageNotification, QueuedMessage
from mqcontract.service import Subscription
from mqcontract.subscription import QueueSubscription
from nats.aio.msg import Msg

from mqcontract_nats_jetstream import NatsJetStreamMessagingService
from mqcontract_nats_jetstream._link import Link
from support import consumer_state, eventually, open_service, queue_name

#: Well before the consumer's ack wait (``fetch_grace_seconds``, 10 s) and the push
#: timeout (60 s): a message handed back at once is receivable within this.
PROMPTLY = 2.0


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


class _Gate:
    """Holds the deliveries a link's inbox receives until :meth:`open`: a pull's
    delivery can be made to arrive exactly when the test wants it to."""

    def __init__(self, link: Link) -> None:
        subs: list[Any] = [s for s in link.client._subs.values() if s._cb == link._route]
        (self._sub,) = subs
        self._inner = self._sub._cb
        self._opened = asyncio.Event()
        #: Set once a delivery waits at the gate.
        self.holding = asyncio.Event()
        self._sub._cb = self._hold

    async def _hold(self, msg: Msg) -> None:
        if not (msg.headers and "Status" in msg.headers):  # a delivery, not a status
            self.holding.set()
            await self._opened.wait()
        await self._inner(msg)

    def open(self) -> None:
        self._opened.set()


async def _pull_waiting(service: NatsJetStreamMessagingService, queue: str) -> bool:
    state = await consumer_state(service, queue)
    return int(state.get("num_waiting", 0)) >= 1


async def _back(
    service: NatsJetStreamMessagingService, queue: str, sent: int
) -> list[QueuedMessage]:
    async def received() -> list[QueuedMessage]:
        return await service.receive_messages(queue, 10, 60)

    got = await eventually(received, PROMPTLY, f"message {sent} receivable again")
    assert [m.msg_id for m in got] == [sent]
    return got


async def test_a_delivery_arriving_as_the_subscription_closes_comes_back_at_once(
    service: NatsJetStreamMessagingService, queue: str
) -> None:
    """The loop's waiting pull has its delivery in hand (queued for the loop, not yet
    taken) in the very step the subscription is closed: it must be handed back, not
    left invisible until the ack wait."""
    sub = await service.subscribe(queue)
    (link,) = service.push_links
    gate = _Gate(link)
    await eventually(lambda: _pull_waiting(service, queue), 5, "the loop's waiting pull")
    sent = await service.send_message(queue, b"in flight")
    async with asyncio.timeout(5):
        await gate.holding.wait()
    gate.open()  # the delivery reaches the loop's pull in the same step as the close
    await asyncio.create_task(sub.aclose())
    (back,) = await _back(service, queue, sent)
    assert back.receive_count == 2  # delivered once to the closed loop, handed back
    await service.ack_message(queue, sent)


async def test_a_delivery_arriving_after_the_close_began_comes_back_at_once(
    service: NatsJetStreamMessagingService, queue: str
) -> None:
    """The request the loop left open delivers only once closing has begun: closing
    waits for it and hands it back before the connection goes."""
    sub = await service.subscribe(queue)
    (link,) = service.push_links
    gate = _Gate(link)
    await eventually(lambda: _pull_waiting(service, queue), 5, "the loop's waiting pull")
    sent = await service.send_message(queue, b"late")
    async with asyncio.timeout(5):
        await gate.holding.wait()
    closing = asyncio.create_task(sub.aclose())
    await eventually(lambda: _closed(sub), 5, "the close under way")
    assert not closing.done()  # closing waits for the request the loop left open
    gate.open()
    await closing
    (back,) = await _back(service, queue, sent)
    assert back.receive_count == 2
    await service.ack_message(queue, sent)


async def _closed(sub: QueueSubscription) -> bool:
    return sub.closed


async def test_a_pull_the_server_leaves_unanswered_is_asked_again_within_the_delivery_bound(
    service: NatsJetStreamMessagingService, queue: str, monkeypatch: Any
) -> None:
    """nats-server 2.9.10 now and then leaves a live consumer's waiting pull unanswered
    (after another connection's pull on it was abandoned): the push loop gives it up and
    pulls again soon enough that a message sent meanwhile is pushed within 3 s."""
    pull = Link.pull
    lost: list[str] = []

    async def first_unanswered(self: Link, stream: str, *args: Any, **kwargs: Any) -> list[Msg]:
        if kwargs.get("expires") is not None and not lost:
            lost.append(stream)
            await asyncio.Event().wait()  # the server never answers this one
        return await pull(self, stream, *args, **kwargs)

    monkeypatch.setattr(Link, "pull", first_unanswered)
    async with await service.subscribe(queue) as sub:

        async def pull_lost() -> bool:
            return bool(lost)

        await eventually(pull_lost, 5.0, "the lost pull")
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = await service.send_message(queue, b"late")
        note = await _next(sub, within=3.0)
        assert note.message.msg_id == sent
        assert loop.time() - start < 3.0
        await service.ack_message(queue, sent)

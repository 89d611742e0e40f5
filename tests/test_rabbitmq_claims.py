"""Settlement by claim on a real broker: messages sharing an id, lapsed claims, batches.

RabbitMQ ids are chosen by producers, so a foreign publisher (``publish_foreign``) can put
two messages with one id on a queue. Keyed by claim, they are two independent holds;
keyed by id (as before), ``receive_messages`` returned them repeated, only one ack
succeeded, and under ``subscribe`` each new hold nacked the other (thousands of
notifications a second, forever).

Needs RabbitMQ (through the kit's provisioning: skipped when it is unreachable, failed
when backends are required).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import aiormq
import aiormq.abc
import pytest

from mqcontract.errors import MessageNotFound, QueueNotFound, StaleClaim, StaleReason
from mqcontract.messages import Message, QueuedMessage
from mqcontract.providers.rabbitmq import RabbitMqMessagingService, _settlement
from mqcontract.service import MessagingService
from mqcontract.subscription import QueueSubscription
from mqcontract_fixtures.rabbitmq import RabbitMqHarness
from tests import rabbitmq_support

T = TypeVar("T")

#: Seconds any single expected event may take on a loaded machine.
WITHIN = 5.0
#: How long a subscription holding two unacked messages is watched for re-pushes.
QUIET_WINDOW = 1.0
FOREIGN_ID = 4242


# The shared fixtures, under the names these tests ask for.
harness = rabbitmq_support.harness
service = rabbitmq_support.service


@pytest.fixture
async def queue(service: RabbitMqMessagingService) -> AsyncIterator[str]:
    name = f"t_rmq_claims_{uuid.uuid4().hex[:10]}"
    await service.create_queue(name)
    yield name
    with contextlib.suppress(Exception):
        await service.delete_queue(name)


async def _eventually(probe: Callable[[], Awaitable[T | None]], what: str) -> T:
    deadline = time.monotonic() + WITHIN
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"{what}: not observed within {WITHIN} s")
        await asyncio.sleep(0.02)


async def _receive(
    service: MessagingService, queue: str, count: int, vt: float = 60.0
) -> list[QueuedMessage]:
    got: list[QueuedMessage] = []

    async def enough() -> bool:
        got.extend(await service.receive_messages(queue, count - len(got), vt))
        return len(got) >= count

    await _eventually(enough, f"{count} messages on {queue}")
    return got


async def _notes(sub: QueueSubscription, count: int) -> list[Message]:
    got: list[Message] = []
    async with asyncio.timeout(WITHIN):
        async for note in sub:
            assert isinstance(note, Message)
            assert note.claimed
            got.append(note)
            if len(got) == count:
                break
    return got


async def _two_foreign(harness: RabbitMqHarness, service: RabbitMqMessagingService, q: str) -> None:
    await harness.publish_foreign(service, q, FOREIGN_ID, b"first")
    await harness.publish_foreign(service, q, FOREIGN_ID, b"second")


# -- two messages, one id --------------------------------------------------------------


async def test_two_foreign_messages_with_one_id_are_two_independent_claims(
    harness: RabbitMqHarness, service: RabbitMqMessagingService, queue: str
) -> None:
    assert service.capabilities.producer_assigned_ids
    await _two_foreign(harness, service, queue)
    first, second = await _receive(service, queue, 2)
    assert [first.payload, second.payload] == [b"first", b"second"]  # both, once each
    assert first.msg_id == second.msg_id == FOREIGN_ID
    assert first.receive_count == second.receive_count == 1
    assert abs(first.enqueued_at - time.time()) < 60  # the foreign publisher's timestamp
    assert first.claim is not None
    assert second.claim is not None
    assert first.claim != second.claim
    await service.ack_claim(queue, first)
    # The other is still held: not visible, and its claim still settles.
    assert await service.receive_messages(queue, 10, 60) == []
    with pytest.raises(StaleClaim) as info:
        await service.ack_claim(queue, first)
    assert info.value.reason is StaleReason.SETTLED
    await service.ack_claim(queue, second)
    assert await service.receive_messages(queue, 10, 60) == []


async def test_ack_message_by_a_shared_id_settles_each_held_message_once(
    harness: RabbitMqHarness, service: RabbitMqMessagingService, queue: str
) -> None:
    await _two_foreign(harness, service, queue)
    await _receive(service, queue, 2)
    await service.ack_message(queue, FOREIGN_ID)
    await service.ack_message(queue, FOREIGN_ID)
    with pytest.raises(MessageNotFound):
        await service.ack_message(queue, FOREIGN_ID)
    assert await service.receive_messages(queue, 10, 60) == []


async def test_a_subscription_holding_two_messages_with_one_id_stays_quiet(
    harness: RabbitMqHarness, service: RabbitMqMessagingService, queue: str
) -> None:
    sub = await service.subscribe(queue)
    try:
        await _two_foreign(harness, service, queue)
        first, second = await _notes(sub, 2)
        assert sorted([first.message.payload, second.message.payload]) == [b"first", b"second"]
        assert first.message.claim != second.message.claim
        # Both unacked: nothing may push either again within the window (by id, each new
        # hold used to nack the other: ~5,000 notifications in 2 s, never stopping).
        extra: list[object] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(QUIET_WINDOW):
                async for note in sub:
                    extra.append(note)
        assert extra == []
        await service.ack_claim(queue, second.message)
        await service.ack_claim(queue, first.message)
    finally:
        await sub.aclose()
    assert await service.receive_messages(queue, 10, 60) == []


# -- stale claims ----------------------------------------------------------------------


async def test_a_lapsed_claim_is_stale_and_the_message_comes_back_counted(
    service: RabbitMqMessagingService, queue: str
) -> None:
    sent = await service.send_message(queue, b"slow")
    (first,) = await _receive(service, queue, 1, vt=0.2)
    (again,) = await _receive(service, queue, 1)  # back once the 0.2 s timer released it
    assert again.msg_id == sent
    assert again.receive_count == first.receive_count + 1
    with pytest.raises(StaleClaim) as info:
        await service.ack_claim(queue, first)
    assert info.value.reason is StaleReason.LAPSED
    with pytest.raises(StaleClaim):
        await service.nack_claim(queue, first)
    await service.ack_claim(queue, again)  # the stale settlements changed nothing
    assert await service.receive_messages(queue, 10, 60) == []


async def test_another_services_claim_is_not_held_here(
    harness: RabbitMqHarness, service: RabbitMqMessagingService, queue: str
) -> None:
    other = await harness.open()
    try:
        await service.send_message(queue, b"x")
        (theirs,) = await _receive(other, queue, 1)
        with pytest.raises(StaleClaim) as info:
            await service.ack_claim(queue, theirs)
        assert info.value.reason is StaleReason.NOT_HELD
        await other.ack_claim(queue, theirs)
    finally:
        await other.close()


# -- many acks, one read-back ----------------------------------------------------------


def _acks_in(payload: bytes) -> int:
    """How many ``basic.ack`` frames a write carries (frames: type, channel, size,
    payload, end; an ack is a method frame of class 60, method 80)."""
    if payload.startswith(b"AMQP"):  # the protocol header opening a connection
        return 0
    acks, at = 0, 0
    while at + 7 <= len(payload):
        kind, size = payload[at], int.from_bytes(payload[at + 3 : at + 7], "big")
        acks += kind == 1 and payload[at + 7 : at + 11] == b"\x00\x3c\x00\x50"
        at += 8 + size
    return acks


@pytest.fixture
def frames(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts ack frames written and read-backs (:func:`_settlement._read_back`: a
    passive declare of ``amq.direct`` on a push channel, of its queue on a ``basic.get``
    one)."""
    counts = {"ack": 0, "read_back": 0}
    init, read_back = aiormq.abc.ChannelFrame.__init__, _settlement._read_back

    def counted_init(
        self: aiormq.abc.ChannelFrame, payload: bytes, *args: Any, **kwargs: Any
    ) -> None:
        counts["ack"] += _acks_in(payload)
        init(self, payload, *args, **kwargs)

    async def counted_read_back(*args: Any) -> None:
        counts["read_back"] += 1
        await read_back(*args)

    monkeypatch.setattr(aiormq.abc.ChannelFrame, "__init__", counted_init)
    monkeypatch.setattr(_settlement, "_read_back", counted_read_back)
    return counts


async def test_ack_claims_confirms_many_acks_with_one_read_back(
    service: RabbitMqMessagingService, queue: str, frames: dict[str, int]
) -> None:
    await service.send_batch(queue, [b"%d" % i for i in range(20)])
    got = await _receive(service, queue, 20)
    stale = got[0]
    await service.ack_claim(queue, stale)
    assert frames == {"ack": 1, "read_back": 1}
    assert await service.ack_claims(queue, got) == [False] + [True] * 19
    assert frames == {"ack": 20, "read_back": 2}  # 19 frames, one read-back for them all
    assert await service.receive_messages(queue, 10, 60) == []


async def test_ack_claims_settles_received_and_pushed_claims_together(
    harness: RabbitMqHarness, service: RabbitMqMessagingService, queue: str
) -> None:
    sub = await service.subscribe(queue)
    try:
        await _two_foreign(harness, service, queue)
        pushed = [n.message for n in await _notes(sub, 2)]
    finally:
        await sub.aclose()
    await service.send_message(queue, b"received")
    received = await _receive(service, queue, 1)
    assert await service.ack_claims(queue, [*pushed, *received]) == [True, True, True]
    assert await service.receive_messages(queue, 10, 60) == []


# -- subscribing -----------------------------------------------------------------------


async def test_a_subscription_naming_a_missing_queue_fails_before_consuming_anything(
    service: RabbitMqMessagingService, queue: str
) -> None:
    await service.send_message(queue, b"waiting")
    missing = f"t_rmq_missing_{uuid.uuid4().hex[:10]}"
    with pytest.raises(QueueNotFound):
        await service.subscribe(missing)
    with pytest.raises(QueueNotFound):
        await service.subscribe_many([queue, missing])
    (got,) = await _receive(service, queue, 1)
    assert got.receive_count == 1  # never delivered to the failed subscription
    assert not await service.queue_exists(missing)

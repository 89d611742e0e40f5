"""Foreign clients sharing the provider's queues on a real broker: what they may do to it.

Another application publishes whatever AMQP allows, deletes queues, declares them
exclusive. Each test here is a defect an outside tester found, reproduced the way they
did (a raw aiormq client), and what the provider does now:

* a property value pamqp cannot decode (a timestamp past the year 9999, a string that
  is not UTF-8) ended the connection on every receive of that message, and cost the
  claims held for other queues on it (D2);
* a subscription whose queue was deleted went silent for good, even once the queue was
  back (D3);
* an ack or nack on a queue another client deleted returned as if it had worked (D4);
* a queue exclusive to another connection was reported as a lost connection (D6);
* a foreign ``message_id`` was parsed leniently (``" 12 "`` was 12), a message without
  one got a new id on every delivery, and the send-time header was trusted whatever
  it held (D5);
* a delayed send whose wait queue another client had declared with other arguments was
  a lost connection (the broker's PRECONDITION_FAILED), which callers retry in vain;
* a batch the broker took only part of (a queue another client bounded with
  ``x-overflow=reject-publish``) said only "refused": which messages were enqueued,
  and so which to send again, was not told;
* a queue another client declared as a stream was "kept" by ``create_queue``, and every
  receive of it closed the whole connection (540 NOT_IMPLEMENTED), reported as an
  outage to retry, voiding the claims held on other queues each time;
* a queue the user's permissions do not cover (ACCESS_REFUSED) was a lost connection.

Needs RabbitMQ (through the kit's provisioning: skipped when it is unreachable, failed
when backends are required). Nothing sleeps to synchronize: every wait polls a condition
against a deadline from the timing profile.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import itertools
import struct
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

import aiormq
import aiormq.abc
import pytest
from pamqp import commands as spec
from pamqp.common import FieldValue

from mqcontract.errors import BackendUnavailable, QueueError, QueueNotFound
from mqcontract.messages import Message, QueuedMessage
from mqcontract.providers.rabbitmq import (
    AccessRefused,
    BatchRefused,
    RabbitMqMessagingService,
    UnsupportedQueueType,
    WaitQueueConflict,
    connect_rabbitmq,
)
from mqcontract.providers.rabbitmq import _consumers as consumers_module
from mqcontract.providers.rabbitmq._channels import exists as channels_exists
from mqcontract.providers.rabbitmq._delay import delay_ms, wait_queue_name
from mqcontract.providers.rabbitmq._management import ManagementClient
from mqcontract.subscription import QueueSubscription
from mqcontract_conformance.timing import TimingProfile
from mqcontract_fixtures.rabbitmq import RabbitMqHarness
from tests import rabbitmq_support

T = TypeVar("T")

TIMING = TimingProfile.from_scale()
#: The largest message id (ids are signed 64-bit integers, 1 and up).
MAX_ID = (1 << 63) - 1
#: mqcontract's send-time header (integer microseconds since the epoch).
STAMP_HEADER = "mqcontract-enqueued-at-us"


# The shared fixtures, under the names these tests ask for.
harness = rabbitmq_support.harness
service = rabbitmq_support.service


def _name(tag: str) -> str:
    return f"t_rmq_foreign_{tag}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def queues(service: RabbitMqMessagingService) -> AsyncIterator[Callable[[], str]]:
    """Makes uniquely named queues through the service; deletes them afterwards."""
    made: list[str] = []

    def make() -> str:
        made.append(_name("q"))
        return made[-1]

    yield make
    for name in made:
        with contextlib.suppress(Exception):
            await service.delete_queue(name)


@pytest.fixture
async def foreign(harness: RabbitMqHarness) -> AsyncIterator[aiormq.abc.AbstractChannel]:
    """A channel (publisher confirms) of a client that knows nothing of mqcontract."""
    connection = await aiormq.connect(harness.url)
    try:
        yield await connection.channel(publisher_confirms=True)
    finally:
        await connection.close()


async def _eventually(
    probe: Callable[[], Awaitable[T | None]], what: str, within: float = TIMING.slack
) -> T:
    deadline = time.monotonic() + within
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"{what}: not observed within {within:g} s")
        await asyncio.sleep(TIMING.step)


async def _receive(
    service: RabbitMqMessagingService, queue: str, count: int = 1, vt: float = TIMING.long
) -> list[QueuedMessage]:
    got: list[QueuedMessage] = []

    async def enough() -> bool:
        got.extend(await service.receive_messages(queue, count - len(got), vt))
        return len(got) >= count

    await _eventually(enough, f"{count} message(s) on {queue}")
    return got


async def _pushed(sub: QueueSubscription, within: float = TIMING.slack) -> QueuedMessage:
    try:
        async with asyncio.timeout(within):
            note = await sub.__anext__()
    except TimeoutError:
        pytest.fail(f"nothing pushed within {within:g} s")
    assert isinstance(note, Message)
    return note.message


# -- a publisher writing raw properties ------------------------------------------------


def _short(raw: bytes) -> bytes:
    return bytes([len(raw)]) + raw


def _table(*entries: tuple[bytes, bytes]) -> bytes:
    """A field table of (key, tagged value) entries, keys as raw bytes."""
    data = b"".join(_short(key) + value for key, value in entries)
    return struct.pack(">I", len(data)) + data


def _u64(value: int) -> bytes:
    return struct.pack(">Q", value)


def _properties(**fields: bytes) -> bytes:
    """Basic properties on the wire: the flags, then each field's bytes as given."""
    flags, parts = 0, []
    for name in spec.Basic.Properties.__slots__:
        if name in fields:
            flags |= spec.Basic.Properties.flags[name]
            parts.append(fields.pop(name))
    assert not fields, f"not a property: {fields}"
    return struct.pack(">H", flags) + b"".join(parts)


class _RawProperties:
    """Stands in for ``Basic.Properties`` in aiormq's ``basic_publish``: its bytes go on
    the wire as they are (any value AMQP allows, even ones pamqp cannot decode)."""

    #: What aiormq reads before publishing (it would otherwise set a random one); never
    #: sent: the wire carries only :attr:`wire`.
    message_id = "raw"

    def __init__(self, wire: bytes) -> None:
        self.wire = wire

    def marshal(self) -> bytes:
        return self.wire


async def _publish_raw(
    channel: aiormq.abc.AbstractChannel, queue: str, body: bytes, wire: bytes
) -> None:
    properties = cast(spec.Basic.Properties, _RawProperties(wire))
    confirm = await channel.basic_publish(
        body, routing_key=queue, properties=properties, mandatory=True
    )
    assert isinstance(confirm, spec.Basic.Ack)


# -- D2: values pamqp cannot decode ----------------------------------------------------

POISONS = {
    # The tester's case: pamqp reads it as milliseconds and finds no such year.
    "timestamp 2**63": (_properties(timestamp=_u64(2**63)), None),
    "timestamp header 2**64-1": (
        _properties(headers=_table((b"sent", b"T" + _u64(2**64 - 1)))),
        None,
    ),
    "message_id not UTF-8": (_properties(message_id=_short(b"\xff\xfe12")), None),
    "content_type not UTF-8": (
        _properties(content_type=_short(b"\xc3"), message_id=_short(b"4242")),
        4242,
    ),
    # Decoded property by property: the id after the undecodable table survives.
    "header key not UTF-8": (
        _properties(
            headers=_table((b"k\xff", b"I" + struct.pack(">i", 5))),
            message_id=_short(b"4243"),
        ),
        4243,
    ),
}


@pytest.mark.parametrize("poison", sorted(POISONS))
async def test_a_foreign_value_pamqp_cannot_decode_is_delivered_and_ends_no_connection(
    service: RabbitMqMessagingService,
    queues: Callable[[], str],
    foreign: aiormq.abc.AbstractChannel,
    poison: str,
) -> None:
    wire, msg_id = POISONS[poison]
    target, other = queues(), queues()
    await service.create_queue(target)
    await service.create_queue(other)
    await service.send_message(other, b"work on another queue")
    (held,) = await _receive(service, other)
    start = time.time()
    await _publish_raw(foreign, target, b"poison", wire)

    (got,) = await _receive(service, target)  # before: ConnectionLost, every time
    assert got.payload == b"poison"
    if msg_id is not None:
        assert got.msg_id == msg_id
    else:  # no usable id, no usable time: a content id, first seen now
        assert 1 <= got.msg_id <= MAX_ID
        assert start - 1 <= got.enqueued_at <= time.time() + 1
    # The claim held for another queue on the same connection was not lost with it.
    await service.ack_claim(other, held)
    await service.nack_claim(target, got)

    sub = await service.subscribe(target)
    try:
        pushed = await _pushed(sub)
        assert (pushed.payload, pushed.msg_id) == (b"poison", got.msg_id)
        await service.ack_claim(target, pushed)
    finally:
        await sub.aclose()
    assert await service.receive_messages(target, 10, TIMING.long) == []


# -- D3: a subscription outlives its queue ---------------------------------------------


def _consumer_of(service: RabbitMqMessagingService, sub: QueueSubscription) -> Any:
    return service._consumers._consumers[sub]


def _queue_arguments(service: RabbitMqMessagingService) -> dict[str, Any]:
    kind = "quorum" if service.provider_name == "rabbitmq-quorum" else "classic"
    return {"x-queue-type": kind}


async def test_a_subscription_outlives_its_queue_deleted_and_recreated_by_another_client(
    service: RabbitMqMessagingService,
    queues: Callable[[], str],
    foreign: aiormq.abc.AbstractChannel,
) -> None:
    queue = queues()
    await service.create_queue(queue)
    sub = await service.subscribe(queue)
    try:
        await service.send_message(queue, b"held when deleted")
        await _pushed(sub)
        await foreign.queue_delete(queue)
        assert not await service.queue_exists(queue)
        consumer = _consumer_of(service, sub)

        async def cancel_seen() -> bool:
            return queue not in consumer.tags

        # RabbitMQ 3.10 cancels the consumer of a deleted quorum queue ~30 ms later, and
        # never if the queue is declared again meanwhile (a limitation the provider
        # documents): the other client re-creates it once the cancel has come.
        await _eventually(cancel_seen, "the broker's cancel of the consumer")
        # Re-created by the other client, not through the kit: pushed again, within
        # the recovery bound (the provider looks for it at most a second apart).
        await foreign.queue_declare(queue, durable=True, arguments=_queue_arguments(service))
        sent = await service.send_message(queue, b"after the re-create")
        again = await _pushed(sub)
        assert (again.msg_id, again.payload) == (sent, b"after the re-create")
        await service.ack_claim(queue, again)
        assert not sub.closed
    finally:
        await sub.aclose()


async def test_a_subscription_goes_on_with_its_queues_while_one_is_exclusive_to_another(
    service: RabbitMqMessagingService,
    queues: Callable[[], str],
    foreign: aiormq.abc.AbstractChannel,
) -> None:
    """Both queues deleted; one re-created, the other declared exclusive by another
    connection: the re-created one is consumed again (the locked one used to stop the
    subscription from looking for any of them)."""
    kept, locked = queues(), queues()
    for queue in (kept, locked):
        await service.create_queue(queue)
    sub = await service.subscribe_many([kept, locked])
    try:
        consumer = _consumer_of(service, sub)
        for queue in (kept, locked):
            await foreign.queue_delete(queue)

        async def cancels_seen() -> bool:
            return not consumer.tags

        await _eventually(cancels_seen, "the broker's cancels of both consumers")
        await foreign.queue_declare(locked, exclusive=True)  # gone with that connection
        await foreign.queue_declare(kept, durable=True, arguments=_queue_arguments(service))
        sent = await service.send_message(kept, b"after the re-create")
        again = await _pushed(sub)
        assert (again.msg_id, again.payload) == (sent, b"after the re-create")
        await service.ack_claim(kept, again)
    finally:
        await sub.aclose()


@pytest.mark.parametrize("by", ["this service", "another service"])
async def test_a_subscription_outlives_its_queue_deleted_and_at_once_recreated(
    by: str, harness: RabbitMqHarness, service: RabbitMqMessagingService, queues: Callable[[], str]
) -> None:
    """Back to back, no time for the broker's cancel, which a quorum queue re-declared
    within ~30 ms of its deletion never sends: this service's own delete cancels its
    consumer at once; another service's waits until the broker has cancelled it (a queue
    declared again before that keeps the old consumer attached, deaf)."""
    queue = queues()
    await service.create_queue(queue)
    sub = await service.subscribe(queue)
    other = await harness.open() if by == "another service" else None
    deleter = other or service
    try:
        for round_ in range(3):
            await deleter.delete_queue(queue)
            await deleter.create_queue(queue)
            sent = await deleter.send_message(queue, b"round %d" % round_)
            again = await _pushed(sub)
            assert (again.msg_id, again.payload) == (sent, b"round %d" % round_)
            await service.ack_claim(queue, again)
    finally:
        await sub.aclose()
        if other is not None:
            await other.close()


async def test_settling_a_pushed_claim_on_a_queue_another_client_deleted_is_queue_not_found(
    service: RabbitMqMessagingService,
    queues: Callable[[], str],
    foreign: aiormq.abc.AbstractChannel,
) -> None:
    queue = queues()
    await service.create_queue(queue)
    sub = await service.subscribe(queue)
    try:
        await service.send_batch(queue, [b"a", b"b"])
        a, b = await _pushed(sub), await _pushed(sub)
        await foreign.queue_delete(queue)
        consumer = _consumer_of(service, sub)

        async def cancel_seen() -> bool:
            return queue not in consumer.tags

        # The broker's cancel says the queue is gone (the claims' read-back cannot: a
        # push channel may consume other queues, and a 404 would close it).
        await _eventually(cancel_seen, "the broker's cancel of the consumer")
        with pytest.raises(QueueNotFound):
            await service.ack_claim(queue, a)
        with pytest.raises(QueueNotFound):
            await service.nack_claim(queue, b)
        assert not await service.queue_exists(queue)
    finally:
        await sub.aclose()


def _channels_open(service: RabbitMqMessagingService) -> int:
    total = 0
    for robust in service.robust_connections:
        transport = robust.transport
        if transport is not None:
            channels = transport.connection.channels.values()
            total += sum(c is not None and not c.is_closed for c in channels)
    return total


async def test_subscribe_many_keeps_its_other_queues_while_one_is_deleted_and_leaks_nothing(
    service: RabbitMqMessagingService,
    queues: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gone, kept = queues(), queues()
    await service.create_queue(gone)
    await service.create_queue(kept)
    looks: list[str] = []

    async def counted(channel: Any, name: str) -> bool:
        looks.append(name)
        return await channels_exists(channel, name)

    monkeypatch.setattr(consumers_module, "exists", counted)
    sub = await service.subscribe_many([gone, kept])
    consumer = _consumer_of(service, sub)
    try:
        await service.send_message(kept, b"before")
        await service.ack_claim(kept, await _pushed(sub))
        baseline = _channels_open(service)
        await service.delete_queue(gone)  # the kit's own delete: the broker cancels too
        # The other queue is pushed throughout.
        sent = await service.send_message(kept, b"while the other is missing")
        pushed = await _pushed(sub)
        assert (pushed.msg_id, pushed.queue_name) == (sent, kept)
        await service.ack_claim(kept, pushed)

        async def looked_three_times() -> bool:
            return looks.count(gone) >= 3

        # Looking for the missing queue again and again leaves no channel open.
        await _eventually(looked_three_times, "three looks for the deleted queue")

        async def back_to_baseline() -> bool:
            return _channels_open(service) == baseline

        await _eventually(back_to_baseline, f"{baseline} channels open")

        await service.create_queue(gone)
        sent = await service.send_message(gone, b"after the re-create")
        again = await _pushed(sub)
        assert (again.msg_id, again.queue_name) == (sent, gone)
        await service.ack_claim(gone, again)
    finally:
        await sub.aclose()
    # Closed cleanly: the supervisor has stopped and its channel goes.
    assert consumer.task is not None
    assert consumer.task.done()
    name = f"mqcontract-{service.provider_name}-consumer"
    assert not [t for t in asyncio.all_tasks() if t.get_name() == name and not t.done()]

    async def channel_closed() -> bool:
        return _channels_open(service) < baseline

    await _eventually(channel_closed, "the subscription's channel closed")


# -- D4: settling on a queue another client deleted ------------------------------------


async def test_settling_received_claims_on_a_queue_another_client_deleted_is_queue_not_found(
    service: RabbitMqMessagingService,
    queues: Callable[[], str],
    foreign: aiormq.abc.AbstractChannel,
) -> None:
    queue = queues()
    await service.create_queue(queue)
    await service.send_batch(queue, [b"a", b"b", b"c", b"d"])
    a, b, c, d = await _receive(service, queue, 4)
    await foreign.queue_delete(queue)
    with pytest.raises(QueueNotFound):
        await service.ack_claim(queue, a)
    with pytest.raises(QueueNotFound):
        await service.nack_claim(queue, b)
    with pytest.raises(QueueNotFound):
        await service.ack_claims(queue, [c, d])
    assert not await service.queue_exists(queue)  # and nothing re-created it


async def test_an_ack_costs_one_round_trip_that_also_checks_the_queue(
    service: RabbitMqMessagingService,
    queues: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hot path stays one round trip per ack (the read-back the ack needs anyway)."""
    queue = queues()
    await service.create_queue(queue)
    await service.send_batch(queue, [b"a", b"b", b"c"])
    got = await _receive(service, queue, 3)
    calls: list[str] = []
    rpc = aiormq.Channel.rpc

    async def counted(self: aiormq.Channel, frame: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(type(frame).__name__)
        return await rpc(self, frame, *args, **kwargs)

    monkeypatch.setattr(aiormq.Channel, "rpc", counted)
    await service.ack_claim(queue, got[0])
    assert len(calls) == 1, calls
    assert await service.ack_claims(queue, got[1:]) == [True, True]
    assert len(calls) == 2, calls


# -- D6: a queue exclusive to another connection ---------------------------------------


async def test_a_queue_exclusive_to_another_connection_is_a_queue_error_naming_it(
    service: RabbitMqMessagingService, foreign: aiormq.abc.AbstractChannel
) -> None:
    queue = _name("excl")
    await foreign.queue_declare(queue, exclusive=True)  # gone with that connection
    assert await service.queue_exists(queue)  # it exists, only not for this connection
    other = _name("beside")
    await service.create_queue(other)
    operations: dict[str, Callable[[], Awaitable[object]]] = {
        "receive_messages": lambda: service.receive_messages(queue, 1, 5),
        "subscribe": lambda: service.subscribe(queue),
        "subscribe_many": lambda: service.subscribe_many([other, queue]),
        "create_queue": lambda: service.create_queue(queue),
        "delete_queue": lambda: service.delete_queue(queue),
    }
    for operation, call in operations.items():
        with pytest.raises(QueueError) as info:
            await call()
        error = info.value
        assert type(error).__name__ == "QueueLocked", (operation, error)
        assert not isinstance(error, BackendUnavailable | QueueNotFound), operation
        assert error.queue == queue, operation
        assert "exclusive" in str(error), operation
    # Sending to it is allowed, however it is sent; and the service goes on working.
    await service.send_message(queue, b"allowed")
    await service.send_message_with_delay(queue, b"allowed later", 0.5)
    assert await service.send_batch(queue, []) == []
    try:
        sent = await service.send_message(other, b"still working")
        (got,) = await _receive(service, other)
        assert got.msg_id == sent
    finally:
        await service.delete_queue(other)


# -- D5: ids and send times of foreign messages ----------------------------------------

#: message_id → what lenient parsing (``int()``) made of it: none of these is an id.
NOT_IDS = {
    " 12 ": 12,
    "1_000": 1000,
    "\u0661\u0662\u0663": 123,  # Arabic-Indic digits
    "-5": -5,
    "0": 0,
    str(2**70): 2**70,
    str(MAX_ID + 1): MAX_ID + 1,
    "007": 7,
    "+8": 8,
    "9\n": 9,
}


async def test_a_foreign_message_id_is_an_id_only_in_its_canonical_form(
    service: RabbitMqMessagingService,
    queues: Callable[[], str],
    foreign: aiormq.abc.AbstractChannel,
) -> None:
    queue = queues()
    await service.create_queue(queue)
    ids: dict[str, int | None] = {**dict.fromkeys(NOT_IDS), "4242": 4242, str(MAX_ID): MAX_ID}
    for index, text in enumerate(ids):
        properties = spec.Basic.Properties(message_id=text, headers={"n": index})
        await foreign.basic_publish(b"%d" % index, routing_key=queue, properties=properties)
    got = await _receive(service, queue, len(ids))
    for (text, expected), message in zip(ids.items(), got, strict=True):
        assert message.payload == b"%d" % list(ids).index(text)
        if expected is not None:
            assert message.msg_id == expected, text
        else:  # treated like a message without an id: a content id, in range
            assert message.msg_id != NOT_IDS[text], text
            assert 1 <= message.msg_id <= MAX_ID, text
    assert await service.ack_claims(queue, got) == [True] * len(got)


@pytest.mark.parametrize(
    "wire",
    [
        _properties(delivery_mode=b"\x02"),  # no message_id at all
        _properties(message_id=_short(b"order-17"), delivery_mode=b"\x02"),
    ],
    ids=["no message_id", "message_id not a number"],
)
async def test_a_foreign_message_without_an_id_keeps_one_on_every_redelivery(
    harness: RabbitMqHarness,
    service: RabbitMqMessagingService,
    queues: Callable[[], str],
    foreign: aiormq.abc.AbstractChannel,
    wire: bytes,
) -> None:
    """Its id is a hash of its content, so it is the same on every delivery, in every
    process; its enqueued_at (the message holds no time) is when this process first saw
    it: the same on every redelivery here, but another process sees it later (the
    documented limitation, pinned by the last check)."""
    queue = queues()
    await service.create_queue(queue)
    await _publish_raw(foreign, queue, b"no id of ours", wire)
    (first,) = await _receive(service, queue)
    await service.nack_claim(queue, first)
    (nacked,) = await _receive(service, queue, vt=TIMING.unit)  # let this one lapse
    (lapsed,) = await _receive(service, queue)
    await service.nack_claim(queue, lapsed)
    sub = await service.subscribe(queue)
    try:
        pushed = await _pushed(sub)
        await service.nack_claim(queue, pushed)
    finally:
        await sub.aclose()
    deliveries = [first, nacked, lapsed, pushed]
    assert {m.msg_id for m in deliveries} == {first.msg_id}
    assert {m.enqueued_at for m in deliveries} == {first.enqueued_at}
    assert {m.payload for m in deliveries} == {b"no id of ours"}
    counts = [m.receive_count for m in deliveries]
    assert counts[0] == 1
    assert all(b > a for a, b in itertools.pairwise(counts)), counts

    other = await harness.open()
    try:
        assert isinstance(other, RabbitMqMessagingService)
        (elsewhere,) = await _receive(other, queue)
        assert elsewhere.msg_id == first.msg_id  # the same id in another process
        assert elsewhere.enqueued_at >= first.enqueued_at  # its own first sight
        await other.ack_claim(queue, elsewhere)
    finally:
        await other.close()


async def test_two_alike_foreign_messages_without_ids_share_one_and_settle_apart(
    service: RabbitMqMessagingService,
    queues: Callable[[], str],
    foreign: aiormq.abc.AbstractChannel,
) -> None:
    queue = queues()
    await service.create_queue(queue)
    for _ in range(2):
        await _publish_raw(foreign, queue, b"twin", _properties(delivery_mode=b"\x02"))
    a, b = await _receive(service, queue, 2)
    assert a.msg_id == b.msg_id
    assert a.claim != b.claim
    await service.ack_claim(queue, a)
    await service.nack_claim(queue, b)
    (again,) = await _receive(service, queue)
    assert again.msg_id == a.msg_id
    await service.ack_claim(queue, again)
    assert await service.receive_messages(queue, 10, TIMING.long) == []


#: Values of mqcontract's send-time header that are no time.
NOT_STAMPS: list[FieldValue] = [True, False, -1, 0, 2**62, "yesterday", 1.5]


async def test_a_send_time_header_that_is_no_time_is_ignored(
    service: RabbitMqMessagingService,
    queues: Callable[[], str],
    foreign: aiormq.abc.AbstractChannel,
) -> None:
    queue = queues()
    await service.create_queue(queue)
    sent_at = datetime.datetime(2001, 1, 1, tzinfo=datetime.UTC)
    for stamp in NOT_STAMPS:
        properties = spec.Basic.Properties(
            message_id="4242", timestamp=sent_at, headers={STAMP_HEADER: stamp}
        )
        await foreign.basic_publish(b"%r" % (stamp,), routing_key=queue, properties=properties)
    good = 1_700_000_000_123_456
    properties = spec.Basic.Properties(
        message_id="4242", timestamp=sent_at, headers={STAMP_HEADER: good}
    )
    await foreign.basic_publish(b"good", routing_key=queue, properties=properties)
    got = await _receive(service, queue, len(NOT_STAMPS) + 1)
    # Each falls back to the AMQP timestamp, as a message without the header does.
    assert [m.enqueued_at for m in got[:-1]] == [sent_at.timestamp()] * len(NOT_STAMPS)
    assert got[-1].enqueued_at == good / 1e6
    assert await service.ack_claims(queue, got) == [True] * len(got)


async def test_a_delivery_count_header_a_publisher_set_is_no_count(
    service: RabbitMqMessagingService,
    queues: Callable[[], str],
    foreign: aiormq.abc.AbstractChannel,
) -> None:
    """A publisher may put ``x-delivery-count`` in its headers. A quorum queue replaces
    it with its own on every delivery (0 on the first: RabbitMQ 3.10.8), which is what
    the count is made of; a classic queue's count never reads it. A first delivery's
    count is 1 whatever the publisher wrote, a redelivery's one more."""
    queue = queues()
    await service.create_queue(queue)
    for forged in (5, -1, 0):
        properties = spec.Basic.Properties(
            message_id=str(4300 + forged + 1), headers={"x-delivery-count": forged}
        )
        await foreign.basic_publish(b"counted", routing_key=queue, properties=properties)
    first = await _receive(service, queue, 3)
    assert [m.receive_count for m in first] == [1, 1, 1]
    for message in first:
        await service.nack_claim(queue, message)
    again = await _receive(service, queue, 3)
    assert [m.receive_count for m in again] == [2, 2, 2]
    assert await service.ack_claims(queue, again) == [True] * 3


# -- a wait queue declared by another client -------------------------------------------


async def test_a_wait_queue_declared_with_other_arguments_is_a_queue_error_naming_it(
    service: RabbitMqMessagingService,
    queues: Callable[[], str],
    foreign: aiormq.abc.AbstractChannel,
) -> None:
    """Another client (or another version, with another expiry) declared the wait queue a
    delayed send needs: RabbitMQ refuses the re-declare for as long as that queue lives
    (PRECONDITION_FAILED), which was reported as a lost connection, for callers to retry."""
    queue = queues()
    await service.create_queue(queue)
    wait = wait_queue_name(queue, delay_ms(0.5))
    await foreign.queue_declare(wait, durable=True, arguments={"x-message-ttl": 500})
    try:
        for _ in range(2):  # the same answer again: the conflict lasts
            with pytest.raises(QueueError) as info:
                await service.send_message_with_delay(queue, b"later", 0.5)
            error = info.value
            assert not isinstance(error, BackendUnavailable), error
            assert isinstance(error, WaitQueueConflict), error
            assert (error.queue, error.wait_queue) == (queue, wait)
            assert repr(wait) in str(error), error
            assert "x-expires" in str(error), error  # the broker's words name the argument
        # Only the declare's throwaway channel closed: the service goes on working.
        sent = [await service.send_message(queue, b"now")]
        sent += await service.send_batch(queue, [b"and", b"more"])
        sent.append(await service.send_message_with_delay(queue, b"other delay", 0.25))
        got = await _receive(service, queue, 4)
        assert sorted(m.msg_id for m in got) == sorted(sent)
        assert await service.ack_claims(queue, got) == [True] * 4
    finally:
        await foreign.queue_delete(wait)


# -- a queue of a type the provider cannot serve ---------------------------------------


async def test_a_stream_declared_by_another_client_is_refused_by_name(
    service: RabbitMqMessagingService,
    queues: Callable[[], str],
    foreign: aiormq.abc.AbstractChannel,
) -> None:
    """``create_queue`` names the type; a receive of it (never created here) costs the
    connection once, not on every poll: later receives and subscribes are refused
    without asking the broker, and the service goes on working on its other queues."""
    stream, other = queues(), queues()
    await foreign.queue_declare(stream, durable=True, arguments={"x-queue-type": "stream"})
    try:
        with pytest.raises(UnsupportedQueueType) as info:
            await service.create_queue(stream)
        assert (info.value.queue, info.value.queue_type) == (stream, "stream")
        assert not isinstance(info.value, BackendUnavailable)
        await service.create_queue(other)
        await service.send_message(other, b"work")
        for _ in range(3):
            with pytest.raises(UnsupportedQueueType) as info:
                await service.receive_messages(stream, 1, TIMING.long)
            assert info.value.queue == stream
        with pytest.raises(UnsupportedQueueType):
            await service.subscribe(stream)
        (held,) = await _receive(service, other)  # the connection came back once
        await service.ack_claim(other, held)  # and no later receive voided this claim
        assert await service.receive_messages(other, 1, TIMING.long) == []
    finally:
        await foreign.queue_delete(stream)


# -- a batch the broker takes only part of ---------------------------------------------

#: A foreign classic queue's bounds past which RabbitMQ refuses publishes (``Basic.Nack``)
#: rather than drop old messages: a batch then gets some messages in and others not.
#: (Classic: RabbitMQ 3.10's quorum queues enforce the bound late, not per message.)
BOUNDED = {"x-queue-type": "classic", "x-overflow": "reject-publish"}


async def _drain(service: RabbitMqMessagingService, queue: str) -> list[tuple[int, bytes]]:
    """Every message on ``queue`` (acked), as (id, payload) in queue order."""
    got = await service.receive_messages(queue, 100, TIMING.long)
    assert await service.ack_claims(queue, got) == [True] * len(got)
    return [(m.msg_id, m.payload) for m in got]


async def test_a_batch_the_broker_takes_only_part_of_says_which_ids_were_enqueued(
    service: RabbitMqMessagingService,
    queues: Callable[[], str],
    foreign: aiormq.abc.AbstractChannel,
) -> None:
    """A queue another client declared with ``x-max-length=2``: the broker takes two of a
    batch of four and refuses the rest. The error said only "refused": the caller could
    not tell that two were enqueued, nor which, so a retry duplicated them."""
    queue = queues()
    arguments: dict[str, FieldValue] = {**BOUNDED, "x-max-length": 2}
    await foreign.queue_declare(queue, durable=True, arguments=arguments)
    await service.create_queue(queue)  # keeps it as it is
    batch = [b"b0", b"b1", b"b2", b"b3"]
    with pytest.raises(QueueError) as info:
        await service.send_batch(queue, batch)
    error = info.value
    assert isinstance(error, BatchRefused), error
    assert (error.queue, error.size) == (queue, 4)
    assert "2 of the 4" in str(error), error
    assert "2 were enqueued" in str(error), error
    assert len(error.sent_ids) == 2
    assert await _drain(service, queue) == list(zip(error.sent_ids, batch[:2], strict=True))
    # The others, sent again, are all there is: nothing duplicated.
    again = await service.send_batch(queue, batch[2:])
    assert await _drain(service, queue) == list(zip(again, batch[2:], strict=True))


async def test_a_partly_refused_batch_names_exactly_the_messages_taken_not_a_prefix(
    service: RabbitMqMessagingService,
    queues: Callable[[], str],
    foreign: aiormq.abc.AbstractChannel,
) -> None:
    """``x-max-length-bytes=10``: the broker takes 8 bytes, refuses 12 (they would not
    fit), takes 2 more and refuses the last byte. What was taken is told message by
    message, in batch order: the second and fourth were refused, the third enqueued."""
    queue = queues()
    arguments: dict[str, FieldValue] = {**BOUNDED, "x-max-length-bytes": 10}
    await foreign.queue_declare(queue, durable=True, arguments=arguments)
    batch = [b"8 bytes.", b"twelve bytes", b"2b", b"1"]
    with pytest.raises(BatchRefused) as info:
        await service.send_batch(queue, batch)
    error = info.value
    assert "2 of the 4" in str(error), error
    taken = [batch[0], batch[2]]
    assert await _drain(service, queue) == list(zip(error.sent_ids, taken, strict=True))


# -- a queue the broker's user may not use ---------------------------------------------


async def test_a_queue_the_user_may_not_use_is_access_refused_naming_it(
    harness: RabbitMqHarness, service: RabbitMqMessagingService, queues: Callable[[], str]
) -> None:
    """A user whose permissions in the virtual host do not cover the queue (configure and
    read refused, write allowed): ACCESS_REFUSED was a lost connection, which callers
    and the event system retry for ever. It is a ``QueueError`` naming the queue and
    quoting the broker, and what the user may do (send) still works."""
    management = harness.config.rabbitmq.management_url
    if management is None:
        pytest.skip("making a user needs the management API")
    admin = ManagementClient(management, provider=harness.name, timeout=TIMING.long)
    user, password = _name("user"), uuid.uuid4().hex
    parts = urllib.parse.urlsplit(harness.url)
    vhost = parts.path[1:]  # quoted already, as the API's paths want it
    limited_url = parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}")
    await admin.call("PUT", f"/users/{user}", {"password": password, "tags": ""})
    try:
        no_queues = {"configure": "^$", "write": ".*", "read": "^$"}
        await admin.call("PUT", f"/permissions/{vhost}/{user}", no_queues)
        queue = queues()
        await service.create_queue(queue)
        rabbit = dataclasses.replace(harness.config.rabbitmq, url=limited_url.geturl())
        config = dataclasses.replace(harness.config, rabbitmq=rabbit)
        limited = await connect_rabbitmq(config, quorum=harness.name == "rabbitmq-quorum")
        try:
            operations: dict[str, Callable[[], Awaitable[object]]] = {
                "create_queue": lambda: limited.create_queue(queue),
                "receive_messages": lambda: limited.receive_messages(queue, 1, 5),
                "subscribe": lambda: limited.subscribe(queue),
                "delete_queue": lambda: limited.delete_queue(queue),
            }
            for operation, call in operations.items():
                with pytest.raises(AccessRefused) as info:
                    await call()
                assert info.value.queue == queue, operation
                assert "ACCESS_REFUSED" in info.value.reply, operation
                assert not isinstance(info.value, BackendUnavailable), operation
            sent = await limited.send_message(queue, b"allowed")
            (got,) = await _receive(service, queue)
            assert got.msg_id == sent
            await service.ack_claim(queue, got)
        finally:
            await limited.close()
    finally:
        await admin.call("DELETE", f"/users/{user}")

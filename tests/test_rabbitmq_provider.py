"""The RabbitMQ provider on a real broker: the behaviours the issue asks for, measured.

Needs RabbitMQ at ``RABBITMQ_URL`` (default ``amqp://guest:guest@127.0.0.1:5672/%2F``);
skipped when it is unreachable unless ``MQCONTRACT_REQUIRE_BACKENDS`` is set. Tests that
need the management API (listing, server-side connection close) skip without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest

from mqcontract.capabilities import RequeuePosition
from mqcontract.clock import VirtualClock
from mqcontract.config import MessagingConfig, load_config
from mqcontract.errors import (
    BackendUnavailable,
    MessageNotFound,
    ProviderClosed,
    QueueNotFound,
    UnsupportedOperation,
)
from mqcontract.messages import Claim, Message, QueuedMessage
from mqcontract.providers.rabbitmq import (
    RabbitMqMessagingService,
    open_rabbitmq,
    open_rabbitmq_quorum,
)
from mqcontract.providers.rabbitmq._delay import wait_queue_prefix
from mqcontract.providers.rabbitmq._management import ManagementClient, find_management, vhost_of
from mqcontract.providers.rabbitmq.service import open_connection
from mqcontract.service import MessagingService
from mqcontract.subscription import QueueSubscription
from mqcontract.testing import HarnessSettings
from mqcontract_conformance.context import ContractViolation
from mqcontract_conformance.rules import get_rule
from mqcontract_conformance.runner import run_case
from mqcontract_conformance.timing import TimingProfile
from mqcontract_fixtures.rabbitmq import (
    PausedSocket,
    RabbitMqHarness,
    abort_sockets,
    push_reading_paused,
)

T = TypeVar("T")

REQUIRE = os.environ.get("MQCONTRACT_REQUIRE_BACKENDS", "").lower() in {"1", "true", "yes"}


def _base_config() -> MessagingConfig:
    return load_config(validate_backend=False)


async def _management_url(config: MessagingConfig) -> str | None:
    """The management URL the provider would use, if it answers (a configured one must)."""
    client = await find_management(config.rabbitmq, provider="rabbitmq", timeout=3)
    if client is None:
        return None
    await client.overview()
    endpoint = config.rabbitmq.management_endpoint()
    return endpoint.url if endpoint else None


@pytest.fixture
async def config() -> MessagingConfig:
    """Configuration pointing at the broker, with the management API when it answers."""
    base = _base_config()
    try:
        probe = await open_rabbitmq(
            dataclasses.replace(
                base,
                rabbitmq=dataclasses.replace(base.rabbitmq, connection_timeout_seconds=3),
            )
        )
    except BackendUnavailable as exc:
        if REQUIRE:
            pytest.fail(f"RabbitMQ required: {exc}")
        pytest.skip(f"RabbitMQ unavailable: {exc}")
    await probe.close()
    management = await _management_url(base)
    rabbit = dataclasses.replace(
        base.rabbitmq, management_url=management, use_management_api=management is not None
    )
    return dataclasses.replace(base, rabbitmq=rabbit)


@pytest.fixture(params=["rabbitmq", "rabbitmq-quorum"])
async def service(
    request: pytest.FixtureRequest, config: MessagingConfig
) -> AsyncIterator[RabbitMqMessagingService]:
    opener = open_rabbitmq_quorum if request.param == "rabbitmq-quorum" else open_rabbitmq
    svc = await opener(config)
    yield svc
    await svc.close()


@pytest.fixture
async def queue(service: RabbitMqMessagingService) -> AsyncIterator[str]:
    name = f"t_rmq_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    await service.create_queue(name)
    yield name
    if not service._closed:
        await service.delete_queue(name)
    else:  # the test closed it: clean up through a fresh one
        async with await open_rabbitmq(_base_config()) as cleaner:
            await cleaner.delete_queue(name)


async def _eventually(
    probe: Callable[[], Awaitable[T | None]], within: float, what: str, step: float = 0.02
) -> T:
    deadline = time.monotonic() + within
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"{what}: not observed within {within} s")
        await asyncio.sleep(step)


async def _receive_one(
    service: RabbitMqMessagingService, queue: str, within: float, vt: float = 60.0
) -> QueuedMessage:
    async def probe() -> QueuedMessage | None:
        got = await service.receive_messages(queue, 1, vt)
        return got[0] if got else None

    return await _eventually(probe, within, f"a message on {queue}")


async def _received_ids(
    service: RabbitMqMessagingService, queue: str, count: int, what: str
) -> list[int]:
    """The ids of the first ``count`` messages received from ``queue``, sorted (each
    claimed for a minute, so none comes back meanwhile)."""
    got: list[int] = []

    async def enough() -> bool:
        got.extend(m.msg_id for m in await service.receive_messages(queue, 10, 60))
        return len(got) >= count

    await _eventually(enough, 3.0, what)
    return sorted(got)


async def _notifications(sub: QueueSubscription, count: int, within: float) -> list[Message]:
    got: list[Message] = []
    async with asyncio.timeout(within):
        async for note in sub:
            assert isinstance(note, Message)
            assert note.claimed
            got.append(note)
            if len(got) == count:
                break
    return got


# -- visibility ------------------------------------------------------------------------


async def test_unacked_message_comes_back_after_its_one_second_visibility_timeout(
    service: RabbitMqMessagingService, queue: str
) -> None:
    sent = await service.send_message(queue, b"work")
    (first,) = await service.receive_messages(queue, 1, 1.0)
    start = time.monotonic()
    bound = 1.0 + TimingProfile.from_scale().slack  # room for a loaded machine
    again = await _receive_one(service, queue, within=bound)
    took = time.monotonic() - start
    assert again.msg_id == first.msg_id == sent
    assert 0.9 <= took <= bound, f"redelivered after {took:.3f} s"
    assert again.receive_count == 2


async def test_sub_second_visibility_timeout_is_honoured(
    service: RabbitMqMessagingService, queue: str
) -> None:
    await service.send_message(queue, b"work")
    await service.receive_messages(queue, 1, 0.2)
    start = time.monotonic()
    await _receive_one(service, queue, within=2.0)
    took = time.monotonic() - start
    assert 0.15 <= took <= 0.8, f"redelivered after {took:.3f} s"


async def test_late_ack_after_expiry_raises_message_not_found(
    service: RabbitMqMessagingService, queue: str
) -> None:
    sent = await service.send_message(queue, b"work")
    await service.receive_messages(queue, 1, 0.2)
    again = await _receive_one(service, queue, within=2.0, vt=0.2)
    assert again.msg_id == sent
    # The first claim expired and so did the second by now; neither tag may be sent.
    await asyncio.sleep(0.3)
    with pytest.raises(MessageNotFound):
        await service.ack_message(queue, sent)
    assert (await _receive_one(service, queue, within=2.0)).msg_id == sent


# -- delays ----------------------------------------------------------------------------


async def test_half_second_delay_is_not_stuck_behind_a_thirty_second_one(
    service: RabbitMqMessagingService, queue: str
) -> None:
    slow = await service.send_message_with_delay(queue, b"slow", 30.0)
    start = time.monotonic()
    fast = await service.send_message_with_delay(queue, b"fast", 0.5)
    while time.monotonic() - start < 0.3:
        assert await service.receive_messages(queue, 10, 60) == [], "visible before 0.3 s"
        await asyncio.sleep(0.02)
    # Stuck behind the other it would take 30 s: the profile's slack (scaled for a loaded
    # machine) is room enough for a TTL queue's tick and a busy CI, and far below that.
    bound = 0.5 + TimingProfile.from_scale().slack
    got = await _receive_one(service, queue, within=bound)
    took = time.monotonic() - start
    assert got.msg_id == fast != slow
    assert got.receive_count == 1
    assert 0.45 <= took <= bound, f"0.5 s delay took {took:.3f} s"


async def test_delete_queue_also_deletes_its_wait_queues(
    service: RabbitMqMessagingService, config: MessagingConfig
) -> None:
    name = f"t_rmq_wait_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    await service.create_queue(name)
    await service.send_message_with_delay(name, b"later", 30.0)
    await service.send_message_with_delay(name, b"sooner", 20.0)
    await service.delete_queue(name)
    assert not await service.queue_exists(name)
    if config.rabbitmq.management_url:
        client = ManagementClient(config.rabbitmq.management_url, provider="rabbitmq")
        listed = [q["name"] for q in await client.queues(vhost_of(config.rabbitmq.url))]
        assert not [q for q in listed if q.startswith(wait_queue_prefix(name))]


# -- ack and nack ----------------------------------------------------------------------


async def test_unknown_repeated_and_stale_acks_raise_and_the_channel_survives(
    service: RabbitMqMessagingService, queue: str
) -> None:
    a, b = await service.send_batch(queue, [b"a", b"b"])
    got = await service.receive_messages(queue, 2, 60)
    assert [m.msg_id for m in got] == [a, b]
    with pytest.raises(MessageNotFound):
        await service.ack_message(queue, 123_456_789)  # unknown
    await service.ack_message(queue, a)
    with pytest.raises(MessageNotFound):
        await service.ack_message(queue, a)  # repeated
    with pytest.raises(MessageNotFound):
        await service.nack_message(queue, a)
    # The message held all along can still be acked: no bad tag reached the broker.
    await service.ack_message(queue, b)
    await asyncio.sleep(0.1)
    assert await service.receive_messages(queue, 10, 60) == []
    c = await service.send_message(queue, b"c")
    (m,) = await service.receive_messages(queue, 1, 60)
    assert m.msg_id == c
    await service.ack_message(queue, c)


async def test_ack_after_nack_raises_and_the_message_stays(
    service: RabbitMqMessagingService, queue: str
) -> None:
    sent = await service.send_message(queue, b"x")
    await service.receive_messages(queue, 1, 60)
    await service.nack_message(queue, sent)
    with pytest.raises(MessageNotFound):
        await service.ack_message(queue, sent)
    (again,) = await service.receive_messages(queue, 1, 60)
    assert again.msg_id == sent
    assert again.receive_count >= 2


async def test_quorum_nack_goes_to_the_back_and_counts_exactly(
    config: MessagingConfig,
) -> None:
    async with await open_rabbitmq_quorum(config) as svc:
        assert svc.capabilities.requeue_position is RequeuePosition.BACK
        assert svc.capabilities.exact_receive_count
        q = f"t_rmq_qq_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        await svc.create_queue(q)
        try:
            ids = await svc.send_batch(q, [b"1", b"2", b"3"])
            (first,) = await svc.receive_messages(q, 1, 60)
            await svc.nack_message(q, first.msg_id)
            order = await svc.receive_messages(q, 3, 60)
            assert [m.msg_id for m in order] == [ids[1], ids[2], ids[0]]
            assert [m.receive_count for m in order] == [1, 1, 2]
            for _ in range(3):
                await svc.nack_message(q, ids[0])
                (m,) = await _wait_for_id(svc, q, ids[0])
            assert m.receive_count == 5
        finally:
            await svc.delete_queue(q)


async def _wait_for_id(
    svc: RabbitMqMessagingService, queue: str, msg_id: int
) -> list[QueuedMessage]:
    async def probe() -> list[QueuedMessage] | None:
        got = await svc.receive_messages(queue, 1, 60)
        return got or None

    got = await _eventually(probe, 3.0, f"message {msg_id}")
    assert got[0].msg_id == msg_id
    return got


async def test_classic_nack_returns_to_the_original_position(config: MessagingConfig) -> None:
    async with await open_rabbitmq(config) as svc:
        assert svc.capabilities.requeue_position is RequeuePosition.ORIGINAL
        assert not svc.capabilities.exact_receive_count
        q = f"t_rmq_cq_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        await svc.create_queue(q)
        try:
            ids = await svc.send_batch(q, [b"1", b"2", b"3"])
            (first,) = await svc.receive_messages(q, 1, 60)
            await svc.nack_message(q, first.msg_id)
            order = await svc.receive_messages(q, 3, 60)
            assert [m.msg_id for m in order] == ids
            assert [m.receive_count for m in order] == [2, 1, 1]
        finally:
            await svc.delete_queue(q)


# -- missing queues --------------------------------------------------------------------


async def test_send_to_a_missing_queue_raises_and_creates_nothing(
    service: RabbitMqMessagingService, queue: str
) -> None:
    missing = f"t_rmq_missing_{uuid.uuid4().hex[:8]}"
    with pytest.raises(QueueNotFound) as info:
        await service.send_message(missing, b"lost?")
    assert info.value.queue == missing
    with pytest.raises(QueueNotFound):
        await service.send_batch(missing, [b"1", b"2"])
    with pytest.raises(QueueNotFound):
        await service.send_message_with_delay(missing, b"later", 0.5)
    with pytest.raises(QueueNotFound):
        await service.receive_messages(missing, 1, 1)
    assert not await service.queue_exists(missing)
    # A held message on another queue survives all of that.
    sent = await service.send_message(queue, b"kept")
    (m,) = await service.receive_messages(queue, 1, 60)
    with pytest.raises(QueueNotFound):
        await service.receive_messages(missing, 1, 1)
    await service.ack_message(queue, m.msg_id)
    assert m.msg_id == sent


# -- push ------------------------------------------------------------------------------


async def test_pushed_messages_are_held_until_acked_and_expire_like_received_ones(
    config: MessagingConfig,
) -> None:
    cfg = dataclasses.replace(
        config,
        rabbitmq=dataclasses.replace(config.rabbitmq, push_visibility_timeout_seconds=0.5),
    )
    async with await open_rabbitmq(cfg) as svc:
        q = f"t_rmq_push_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        await svc.create_queue(q)
        try:
            sub = await svc.subscribe(q)
            a, b = await svc.send_batch(q, [b"a", b"b"])
            first = await _notifications(sub, 2, 3.0)
            assert [n.message.msg_id for n in first] == [a, b]
            assert [n.message.receive_count for n in first] == [1, 1]
            await svc.ack_message(q, a)
            (again,) = await _notifications(sub, 1, 3.0)  # b expired after 0.5 s
            assert again.message.msg_id == b
            assert again.message.receive_count >= 2
            await svc.ack_message(q, b)
            await sub.aclose()
            assert await svc.receive_messages(q, 10, 60) == []
        finally:
            await svc.delete_queue(q)


async def test_messages_waiting_before_subscribe_are_pushed_once_in_order(
    service: RabbitMqMessagingService, queue: str
) -> None:
    other = f"{queue}_b"
    await service.create_queue(other)
    try:
        ids = await service.send_batch(queue, [b"%d" % i for i in range(20)])
        other_ids = await service.send_batch(other, [b"x", b"y"])
        sub = await service.subscribe_many([queue, other])
        notes = await _notifications(sub, 22, 5.0)
        mine = [n.message.msg_id for n in notes if n.queue_name == queue]
        assert mine == ids
        assert sorted(n.message.msg_id for n in notes if n.queue_name == other) == other_ids
        assert {n.message.receive_count for n in notes} == {1}
        for n in notes:
            await service.ack_message(n.queue_name, n.message.msg_id)
        await sub.aclose()
    finally:
        await service.delete_queue(other)


async def test_closing_a_subscription_requeues_what_it_never_handed_out(
    service: RabbitMqMessagingService, queue: str
) -> None:
    sub = await service.subscribe(queue)
    ids = await service.send_batch(queue, [b"1", b"2", b"3"])
    (handed,) = await _notifications(sub, 1, 3.0)
    await sub.aclose()

    assert await _received_ids(service, queue, 2, "unhanded messages back") == ids[1:]
    await service.ack_message(queue, handed.message.msg_id)  # still held after close


async def test_deliveries_in_flight_when_a_subscription_closes_go_back_at_once(
    service: RabbitMqMessagingService, queue: str
) -> None:
    """The broker may push after this client sent its cancel (it had not taken it yet):
    those deliveries must be requeued, not left checked out to a channel that stays open
    while a handed-out claim is held (until that claim's push timeout)."""
    sub = await service.subscribe(queue)
    await service.send_message(queue, b"held")
    (handed,) = await _notifications(sub, 1, 3.0)
    with push_reading_paused(service):  # what the broker pushes now waits in the socket
        late = await service.send_batch(queue, [b"1", b"2", b"3"])
        await _eventually(
            lambda: _ready_is_zero(service, queue), 3.0, "the batch pushed to the subscription"
        )
        await sub.aclose()  # its cancel is sent before the batch's deliveries are read
    what = "the deliveries in flight back in the queue"
    assert await _received_ids(service, queue, len(late), what) == late
    await service.ack_message(queue, handed.message.msg_id)


async def test_deliveries_read_after_the_broker_closed_their_channel_cost_nothing(
    service: RabbitMqMessagingService, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delivery read after this client began closing its channel must not be nacked on
    it: once the broker has answered the close it has freed the channel, calls a frame on
    it a connection error (``CHANNEL_ERROR - expected 'channel.open'``) and closes the
    push connection with every subscription on it.

    The deliveries wait in the socket until the broker has answered the close; then they
    are read one frame at a time, each handled before the next is read (as when they
    trickle in), so they are all handled before the close-ok behind them."""
    sub = await service.subscribe(queue)
    assert service.push_connection is not None
    underlay = service.push_connection.transport
    assert underlay is not None
    connection = underlay.connection  # the AMQP connection (its robust one reconnects)
    channel = service._consumers._consumers[sub].channel
    assert channel is not None
    with push_reading_paused(service) as socket:
        late = await service.send_batch(queue, [b"1", b"2", b"3"])
        await _eventually(
            lambda: _ready_is_zero(service, queue), 3.0, "the batch pushed to the subscription"
        )
        before = await _settled_unread(socket)  # every delivery's bytes arrived
        await sub.aclose()  # nothing held: its channel closes at once

        async def answered() -> bool:
            return socket.unread() >= before + CLOSE_OK_BYTES

        await _eventually(answered, 3.0, "the broker's close-ok in the socket")
        _handle_each_frame_before_the_next(channel, monkeypatch)
    what = "the deliveries back in the queue"
    assert await _received_ids(service, queue, len(late), what) == late
    # One round trip on the push connection: a connection error the late frames caused
    # has been read by then (the broker had requeued them at its close already).
    with contextlib.suppress(Exception):
        await (await connection.channel()).close()
    assert not connection.is_closed, f"the push connection was lost: {connection.closing}"
    await (await service.subscribe(queue)).aclose()  # and it serves a new subscription


#: A method frame without arguments: header (7), class and method (4), frame end (1).
CLOSE_OK_BYTES = 12


async def _settled_unread(socket: PausedSocket, looks: int = 3) -> int:
    """The bytes waiting in ``socket`` once ``looks`` looks in a row saw the same count."""
    seen: list[int] = []

    async def settled() -> int | None:
        seen.append(socket.unread())
        recent = seen[-looks:]
        return recent[0] if len(recent) == looks and len(set(recent)) == 1 else None

    return await _eventually(settled, 3.0, "the socket's unread bytes settled")


def _handle_each_frame_before_the_next(channel: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """aiormq's connection hands each frame to its channel's queue; from now on it waits
    until the channel took it and what that started (a consumer callback) ran."""
    frames = channel.frames
    put = frames.put

    async def put_and_handle(item: Any) -> None:
        await put(item)
        await frames.join()  # the channel's reader took it (it marks each frame done)
        for _ in range(3):  # the callback task the frame started, and its first write
            await asyncio.sleep(0)

    monkeypatch.setattr(frames, "put", put_and_handle)


async def _ready_is_zero(service: RabbitMqMessagingService, queue: str) -> bool:
    """Nothing in ``queue`` is ready (all checked out), by a passive declare."""
    async with service._channels.scratch() as channel:
        ok = await channel.queue_declare(queue, passive=True)
    return not ok.message_count


# -- connection loss -------------------------------------------------------------------


@pytest.mark.parametrize("how", ["management", "socket"])
async def test_severing_the_connection_under_a_consumer_loses_nothing(
    service: RabbitMqMessagingService, queue: str, config: MessagingConfig, how: str
) -> None:
    if how == "management" and not config.rabbitmq.management_url:
        pytest.skip("management API unavailable")
    sub = await service.subscribe(queue)
    ids = await service.send_batch(queue, [b"1", b"2", b"3"])
    before = await _notifications(sub, 3, 3.0)
    assert [n.message.msg_id for n in before] == ids
    fourth = await service.send_message(queue, b"4")

    (extra,) = await _notifications(sub, 1, 3.0)
    assert extra.message.msg_id == fourth
    if how == "management":
        harness = RabbitMqHarness(
            service.provider_name,
            HarnessSettings(config=config, run_id="t"),
            quorum=service.provider_name.endswith("quorum"),
        )
        await harness.sever_connection(service)
    else:
        await abort_sockets(service)

    after = await _notifications(sub, 4, 15.0)
    assert sorted(n.message.msg_id for n in after) == [*ids, fourth]
    assert all(n.message.receive_count >= 2 for n in after)
    # Tags from the dead channel are void; the new deliveries can be acked.
    for note in after:
        await service.ack_message(queue, note.message.msg_id)
    await sub.aclose()
    assert await service.receive_messages(queue, 10, 60) == []


async def test_killing_the_push_connection_leaves_operations_working_and_push_resumes(
    service: RabbitMqMessagingService, queue: str, config: MessagingConfig
) -> None:
    sub = await service.subscribe(queue)
    first = await service.send_message(queue, b"1")
    assert len(service.connection_names) == 3  # operations, publish, push
    (note,) = await _notifications(sub, 1, 3.0)
    assert note.message.msg_id == first
    harness = RabbitMqHarness(
        service.provider_name, HarnessSettings(config=config, run_id="t"), quorum=False
    )
    await harness.kill_listener(service)
    # Sends and receives never notice: they use the other connection.
    second = await service.send_message(queue, b"2")
    after = await _notifications(sub, 2, 15.0)
    assert sorted(n.message.msg_id for n in after) == [first, second]
    for n in after:
        await service.ack_message(queue, n.message.msg_id)
    await sub.aclose()


async def test_messages_held_by_receive_come_back_after_a_sever_and_old_ids_are_stale(
    service: RabbitMqMessagingService, queue: str
) -> None:
    ids = await service.send_batch(queue, [b"1", b"2"])
    held = await service.receive_messages(queue, 2, 60)
    assert [m.msg_id for m in held] == ids
    await abort_sockets(service)

    async def back() -> list[QueuedMessage] | None:
        try:
            return await service.receive_messages(queue, 10, 60) or None
        except BackendUnavailable:
            return None

    again = await _eventually(back, 15.0, "held messages redelivered", step=0.1)
    assert sorted(m.msg_id for m in again) == ids
    # The same ids are held again, on the new channel: acks work.
    for m in again:
        await service.ack_message(queue, m.msg_id)


async def test_settling_a_claim_lost_with_the_connection_raises_and_the_messages_come_back(
    service: RabbitMqMessagingService, queue: str
) -> None:
    done, retry = await service.send_batch(queue, [b"done", b"retry"])
    await service.receive_messages(queue, 2, 60)
    await abort_sockets(service)
    # The broker requeues both when the connection dies: neither claim survives, so no
    # settlement may report success (another consumer may hold them by now). Sent while
    # the provider has not noticed yet, the outcome is unknown to it: ConnectionLost.
    with pytest.raises((MessageNotFound, BackendUnavailable)):
        await service.ack_message(queue, done)

    async def usable() -> bool:
        try:
            return await service.queue_exists(queue)
        except BackendUnavailable:
            return False

    await _eventually(usable, 15.0, "the provider reconnected", step=0.1)
    with pytest.raises(MessageNotFound):  # once it has: the claim is simply gone
        await service.nack_message(queue, retry)

    seen: list[QueuedMessage] = []

    async def both_back() -> bool:
        try:
            seen.extend(await service.receive_messages(queue, 10, 60))
        except BackendUnavailable:
            return False
        return len(seen) >= 2

    await _eventually(both_back, 15.0, "both messages redelivered", step=0.1)
    assert sorted(m.msg_id for m in seen) == sorted([done, retry])
    assert all(m.receive_count >= 2 for m in seen)
    for m in seen:  # held again, on the new channel: these acks settle them
        await service.ack_message(queue, m.msg_id)
    assert await service.receive_messages(queue, 10, 60) == []


class _LostClaimAckReportedDone(RabbitMqMessagingService):
    """Broken on purpose: an ack of a claim lost with the connection "succeeds"."""

    async def ack_message(self, queue: str, msg_id: int) -> None:
        with contextlib.suppress(MessageNotFound):
            await super().ack_message(queue, msg_id)


class _QueuedRedeliverySettledByOldAck(RabbitMqMessagingService):
    """Broken on purpose: settles by id, not by claim, so a redelivery still queued in a
    subscription counts as held and any claim on its id settles it."""

    async def _settle(self, queue: str, claim: Claim, *, ack: bool) -> None:
        for held in list(self._holds._held.values()):
            if (held.queue, held.msg_id) == (queue, claim.msg_id):
                held.waiting = None
                claim = dataclasses.replace(claim, token=held.token)
        await super()._settle(queue, claim, ack=ack)


#: Runs of a rule against a broken provider, of which one must fail it.
CATCH_ATTEMPTS = 3


class _BrokenHarness(RabbitMqHarness):
    """Opens ``broken`` instead of the real provider."""

    broken: type[RabbitMqMessagingService] = RabbitMqMessagingService

    async def open(self, clock: VirtualClock | None = None) -> MessagingService:
        name = f"mqcontract-rabbitmq-broken-{uuid.uuid4().hex[:8]}"
        connection = await open_connection(self.config.rabbitmq, "rabbitmq", name)
        return self.broken(
            self.config.rabbitmq,
            connection,
            quorum=False,
            operation_timeout=self.config.operation_timeout_seconds,
            connection_name=name,
        )


@pytest.mark.parametrize(
    ("broken", "rule_id"),
    [(_LostClaimAckReportedDone, "ERR-6"), (_QueuedRedeliverySettledByOldAck, "ERR-7")],
)
async def test_a_provider_that_settles_a_dead_claim_is_failed_by_its_rule(
    config: MessagingConfig, broken: type[RabbitMqMessagingService], rule_id: str
) -> None:
    run_id = f"b{uuid.uuid4().hex[:6]}"
    harness = _BrokenHarness(
        "rabbitmq", HarnessSettings(config=config, run_id=run_id), quorum=False
    )
    harness.broken = broken
    await harness.setup()
    caught: list[str] = []
    try:
        # ERR-7 can only see the fault when the redelivery reached the subscription before
        # the old claim's ack, which is usual but not certain (about 1 run in 5 misses
        # it, before claims as after): a few runs, and one must catch it.
        for _ in range(CATCH_ATTEMPTS):
            try:
                await run_case(harness, get_rule(rule_id), TimingProfile.from_scale(), run_id)
            except ContractViolation as exc:
                caught.append(str(exc))
                break
    finally:
        await harness.teardown()
    assert caught, f"{rule_id} passed {broken.__name__} {CATCH_ATTEMPTS} times"
    assert re.match(rf"^\[{rule_id}\] .*redelivered after its ack", caught[0]), caught[0]


# -- lifecycle and capabilities --------------------------------------------------------


async def test_list_queues_shows_created_queues_but_never_wait_queues(
    service: RabbitMqMessagingService, queue: str
) -> None:
    if not service.capabilities.list_queues:
        pytest.skip("management API unavailable")
    await service.send_message_with_delay(queue, b"x", 5.0)
    listed = await service.list_queues()
    assert queue in listed
    assert not [q for q in listed if "." in q]
    assert listed == sorted(listed)


async def test_without_management_list_queues_is_not_claimed(config: MessagingConfig) -> None:
    cfg = dataclasses.replace(
        config, rabbitmq=dataclasses.replace(config.rabbitmq, use_management_api=False)
    )
    async with await open_rabbitmq(cfg) as svc:
        assert svc.capabilities.list_queues is False
        with pytest.raises(UnsupportedOperation):
            await svc.list_queues()


async def test_unreachable_broker_raises_backend_unavailable_without_the_password() -> None:
    base = _base_config()
    cfg = dataclasses.replace(
        base,
        rabbitmq=dataclasses.replace(
            base.rabbitmq,
            url="amqp://someone:s3cret@127.0.0.1:1/%2F",
            connection_timeout_seconds=2,
        ),
    )
    start = time.monotonic()
    with pytest.raises(BackendUnavailable) as info:
        await open_rabbitmq(cfg)
    assert time.monotonic() - start < 3
    assert "s3cret" not in str(info.value)
    assert "127.0.0.1:1" in str(info.value)


async def test_a_channel_close_its_caller_cancels_finishes_and_the_connection_lives(
    service: RabbitMqMessagingService, queue: str
) -> None:
    """A cancelled caller must not cut a channel's close short: aiormq answers that by
    sending a second ``channel.close``, which the broker (having freed the channel on
    the first) calls a connection error, ending every channel and claim on it."""
    await service.send_message(queue, b"held")
    held = await _receive_one(service, queue, 5)
    assert held.claim is not None
    channels = service._channels
    for passes in range(24):  # cancelled at points from before the write to after
        channel = await channels.open(confirms=False)
        closing = asyncio.ensure_future(channels.close_channel(channel))
        for _ in range(passes):
            await asyncio.sleep(0)
        if passes >= 12:  # and while the reply is on its way
            await asyncio.sleep(0.00005 * (passes - 11))
        closing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await closing
        assert await service.queue_exists(queue)  # a new channel, often the same number
    await service.ack_claim(queue, held.claim)  # the connection, and the claim, lived


async def test_close_requeues_held_messages_and_later_calls_raise(
    service: RabbitMqMessagingService, queue: str, config: MessagingConfig
) -> None:
    sent = await service.send_message(queue, b"held")
    await service.receive_messages(queue, 1, 60)
    await service.close()
    with pytest.raises(ProviderClosed):
        await service.send_message(queue, b"x")
    with pytest.raises(ProviderClosed):
        await service.ack_message(queue, sent)
    async with await open_rabbitmq(config) as other:
        (m,) = await _wait_for_id(other, queue, sent)
        assert m.receive_count >= 2
        await other.ack_message(queue, sent)

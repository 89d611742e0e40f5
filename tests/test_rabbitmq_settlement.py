"""Holding and settling RabbitMQ deliveries, against a fake channel (no broker).

``_holds`` and ``_settlement`` reach AMQP only through ``SettlingChannel``; the fake
records the frames they send, so each promise of the module docstrings is checked here
frame by frame: claims (a token per delivery held), the reasons a stale one gives, and
``ack_many`` sending every frame before one read-back.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pamqp.frame
import pytest
from aiormq.abc import DeliveredMessage
from aiormq.exceptions import ChannelInvalidStateError, ChannelNotFoundEntity
from pamqp import commands as spec
from pamqp.header import ContentHeader

from mqcontract.errors import ConnectionLost, StaleClaim, StaleReason
from mqcontract.messages import Claim, Message, QueuedMessage
from mqcontract.providers.rabbitmq._errors import ERRORS
from mqcontract.providers.rabbitmq._holds import ENQUEUED_AT_HEADER, Holds
from mqcontract.providers.rabbitmq._settlement import ChannelGone, SettlingChannel, ack_frames
from mqcontract.providers.rabbitmq._tasks import Background
from mqcontract.translation import Failure

WITHIN = 2.0  # seconds any background frame may take to be sent


class _Writes(asyncio.Queue[Any]):
    """A fake channel's write queue: what is written is decoded into its frames."""

    def __init__(self, channel: FakeChannel) -> None:
        super().__init__()
        self._channel = channel

    def full(self) -> bool:
        gate = self._channel.write_gate  # a full write buffer (flow control) until fired
        return gate is not None and not gate.is_set()

    def put_nowait(self, item: Any) -> None:
        assert not self.full()
        if self._channel.fail_frames is not None:
            raise self._channel.fail_frames
        self._channel.writes += 1
        data: bytes = item.payload
        while data:
            used, number, frame = pamqp.frame.unmarshal(data)
            assert number == self._channel.number
            assert isinstance(frame, spec.Basic.Ack | spec.Basic.Nack)
            assert not frame.multiple
            if isinstance(frame, spec.Basic.Nack):
                assert frame.requeue
                self._channel.frames.append(("nack", frame.delivery_tag))
                self._channel.nacked.set()
            else:
                self._channel.frames.append(("ack", frame.delivery_tag))
            data = data[used:]


class FakeChannel:
    """Records settlement frames; fails them on request."""

    number = 1

    def __init__(self) -> None:
        self.is_closed = False
        self.frames: list[tuple[str, int]] = []
        self.writes = 0
        self.read_backs = 0
        self.read_backs_started = 0
        self.read_back_started = asyncio.Event()
        #: While set and not yet fired, a read-back waits for it (one in flight).
        self.read_back_gate: asyncio.Event | None = None
        #: While set and not yet fired, a write waits for it.
        self.write_gate: asyncio.Event | None = None
        self.fail_frames: BaseException | None = None
        self.fail_read_back: BaseException | None = None
        #: What each read-back declared: ``amq.direct``, or the queue it names.
        self.declared: list[str] = []
        #: Queues another client deleted: a passive declare of one is a 404.
        self.missing_queues: set[str] = set()
        self.nacked = asyncio.Event()
        self.closed = asyncio.Event()
        self.write_queue: asyncio.Queue[Any] = _Writes(self)

    async def exchange_declare(self, exchange: str = "", *, passive: bool = False) -> Any:
        assert (exchange, passive) == ("amq.direct", True)
        if self.is_closed:
            raise ChannelInvalidStateError("closed")
        self.declared.append(exchange)
        await self._read_back()

    async def queue_declare(self, queue: str = "", *, passive: bool = False) -> Any:
        assert passive
        if self.is_closed:  # as aiormq: a call on a closed channel sends nothing
            raise ChannelInvalidStateError("closed")
        self.declared.append(queue)
        if queue in self.missing_queues:  # the broker's 404 closes the channel
            await self.close()
            raise ChannelNotFoundEntity(f"NOT_FOUND - no queue {queue!r}")
        await self._read_back()

    async def _read_back(self) -> None:
        self.read_backs_started += 1
        self.read_back_started.set()
        if self.read_back_gate is not None:
            await self.read_back_gate.wait()
        if self.fail_read_back is not None:
            raise self.fail_read_back
        self.read_backs += 1

    async def close(self) -> None:
        self.is_closed = True
        self.closed.set()


def _delivery(
    msg_id: int,
    tag: int,
    *,
    redelivered: bool = False,
    headers: dict[str, Any] | None = None,
    body: bytes = b"body",
) -> DeliveredMessage:
    frame = spec.Basic.GetOk(delivery_tag=tag, redelivered=redelivered, routing_key="q")
    properties = spec.Basic.Properties(message_id=str(msg_id), headers=headers)
    header = ContentHeader(properties=properties)
    return DeliveredMessage(delivery=frame, header=header, body=body, channel=None)  # type: ignore[arg-type]


def _claim(message: QueuedMessage) -> Claim:
    assert message.claim is not None
    return message.claim


async def _stale(holds: Holds, claim: Claim, *, ack: bool = True) -> StaleReason:
    with pytest.raises(StaleClaim) as info:
        await holds.settle("q", claim, ack=ack)
    return info.value.reason


@pytest.fixture
async def holds() -> AsyncIterator[Holds]:
    tasks = Background()
    yield Holds(quorum=False, tasks=tasks, timeout=5.0)
    await tasks.cancel_all()


def test_an_aiormq_channel_is_a_settling_channel() -> None:
    from aiormq import Channel

    def settling(channel: Channel) -> SettlingChannel:
        return channel  # mypy checks the seam: aiormq's channel satisfies the protocol

    assert settling is not None


async def test_an_ack_sends_one_frame_and_waits_until_the_broker_has_read_it(
    holds: Holds,
) -> None:
    channel = FakeChannel()
    held = holds.hold("q", channel, _delivery(7, tag=1), 60)
    assert (held.msg_id, held.receive_count, held.payload) == (7, 1, b"body")
    assert held.claim is not None
    assert (held.claim.queue_name, held.claim.msg_id, held.claim.visibility_timeout) == (
        "q",
        7,
        60,
    )
    await holds.settle("q", held.claim, ack=True)
    assert channel.frames == [("ack", 1)]
    assert channel.read_backs == 1
    assert await _stale(holds, held.claim) is StaleReason.SETTLED  # no second frame
    assert channel.frames == [("ack", 1)]


async def test_a_nack_waits_for_a_read_back_like_an_ack(holds: Holds) -> None:
    """A nack that returned is requeued (visible to every channel), and a received one's
    read-back also checks its queue exists (what LIFE-6 asks of a deleted one)."""
    rx, push = FakeChannel(), FakeChannel()
    received = holds.hold("q", rx, _delivery(1, tag=1), 60)
    pushed = holds.hold("q", push, _delivery(2, tag=2), 60, owner="consumer")
    await holds.settle("q", _claim(received), ack=False)
    await holds.settle("q", _claim(pushed), ack=False)
    assert (rx.frames, push.frames) == ([("nack", 1)], [("nack", 2)])
    assert (rx.read_backs, push.read_backs) == (1, 1)
    assert (rx.declared, push.declared) == (["q"], ["amq.direct"])
    assert await _stale(holds, _claim(received)) is StaleReason.LAPSED  # released


async def test_acks_sent_during_a_read_back_share_the_next_one(holds: Holds) -> None:
    channel = FakeChannel()
    channel.read_back_gate = asyncio.Event()
    got = [holds.hold("q", channel, _delivery(n, tag=n), 60) for n in range(1, 5)]
    first = asyncio.ensure_future(holds.settle("q", _claim(got[0]), ack=True))
    await asyncio.wait_for(channel.read_back_started.wait(), WITHIN)
    rest = asyncio.gather(*(holds.settle("q", _claim(m), ack=True) for m in got[1:]))
    for _ in range(10):
        await asyncio.sleep(0)
    assert not first.done()  # none returns before its read-back
    assert not rest.done()
    assert channel.read_backs_started == 1  # one in flight at a time per channel
    channel.read_back_gate.set()
    await asyncio.wait_for(asyncio.gather(first, rest), WITHIN)
    assert sorted(channel.frames) == [("ack", n) for n in range(1, 5)]
    assert channel.read_backs == 2  # the three acks sent meanwhile shared the second


async def test_acks_waiting_on_a_read_back_that_found_the_queue_gone_are_told_so(
    holds: Holds,
) -> None:
    """The read-back's 404 closes the channel: the acks that waited for the next round on
    it are on the same (deleted) queue, not on a lost connection."""
    channel = FakeChannel()
    channel.read_back_gate = asyncio.Event()
    got = [holds.hold("q", channel, _delivery(n, tag=n), 60) for n in range(1, 4)]
    first = asyncio.ensure_future(holds.settle("q", _claim(got[0]), ack=True))
    await asyncio.wait_for(channel.read_back_started.wait(), WITHIN)
    rest = [asyncio.ensure_future(holds.settle("q", _claim(m), ack=True)) for m in got[1:]]
    for _ in range(10):
        await asyncio.sleep(0)
    assert not any(task.done() for task in rest)  # they wait for the next round
    channel.fail_read_back = ChannelNotFoundEntity("NOT_FOUND - no queue 'q'")
    channel.is_closed = True  # the broker's 404 closes the channel
    channel.read_back_gate.set()
    outcomes = await asyncio.wait_for(asyncio.gather(first, *rest, return_exceptions=True), WITHIN)
    assert [type(outcome) for outcome in outcomes] == [ChannelNotFoundEntity] * 3, outcomes


async def test_a_404_on_a_push_channel_is_not_passed_on_to_the_acks_behind_it(
    holds: Holds,
) -> None:
    """A push channel serves several queues: a 404 there may be about another queue (a
    consume of one deleted meanwhile), so neither the ack whose read-back met it nor the
    acks that waited behind it are told their queue is gone: only that the channel is."""
    channel = FakeChannel()
    channel.read_back_gate = asyncio.Event()
    got = [holds.hold("q", channel, _delivery(n, tag=n), 60, owner="c") for n in range(1, 3)]
    first = asyncio.ensure_future(holds.settle("q", _claim(got[0]), ack=True))
    await asyncio.wait_for(channel.read_back_started.wait(), WITHIN)
    behind = asyncio.ensure_future(holds.settle("q", _claim(got[1]), ack=True))
    for _ in range(10):
        await asyncio.sleep(0)
    channel.fail_read_back = ChannelNotFoundEntity("NOT_FOUND - no queue 'other'")
    channel.is_closed = True
    channel.read_back_gate.set()
    outcomes = await asyncio.wait_for(asyncio.gather(first, behind, return_exceptions=True), WITHIN)
    assert [type(outcome) for outcome in outcomes] == [ChannelGone, ChannelInvalidStateError]
    assert isinstance(outcomes[0], ChannelGone)
    translated = ERRORS.translate(outcomes[0], Failure("rabbitmq", "amqp://h", "ack_message", "q"))
    assert isinstance(translated, ConnectionLost), translated


async def test_a_channel_closed_before_the_frame_is_a_stale_claim(holds: Holds) -> None:
    channel = FakeChannel()
    held = holds.hold("q", channel, _delivery(1, tag=1), 60)
    channel.fail_frames = ChannelInvalidStateError("closed")
    assert await _stale(holds, _claim(held)) is StaleReason.NOT_HELD
    assert channel.read_backs == 0


async def test_a_claim_on_a_closed_channel_is_void_and_sends_nothing(holds: Holds) -> None:
    channel = FakeChannel()
    held = holds.hold("q", channel, _delivery(1, tag=1), 60)
    channel.is_closed = True
    assert await _stale(holds, _claim(held)) is StaleReason.NOT_HELD
    assert channel.frames == []


async def test_a_settlement_cut_off_propagates_and_closes_the_channel(holds: Holds) -> None:
    channel = FakeChannel()
    held = holds.hold("q", channel, _delivery(1, tag=1), 60)
    channel.fail_read_back = ConnectionResetError("gone")
    with pytest.raises(ConnectionResetError):  # its outcome is unknown: never a success
        await holds.settle("q", _claim(held), ack=True)
    await asyncio.wait_for(channel.closed.wait(), WITHIN)  # the broker requeues it
    assert holds.get(held.claim) is None


async def test_the_visibility_timer_requeues_an_unsettled_message_and_its_claim_lapses(
    holds: Holds,
) -> None:
    channel = FakeChannel()
    held = holds.hold("q", channel, _delivery(1, tag=9), 0.01)
    await asyncio.wait_for(channel.nacked.wait(), WITHIN)
    assert channel.frames == [("nack", 9)]
    assert await _stale(holds, _claim(held)) is StaleReason.LAPSED
    assert channel.frames == [("nack", 9)]


async def test_a_pushed_copy_waiting_in_its_subscription_cannot_be_settled_until_taken(
    holds: Holds,
) -> None:
    channel = FakeChannel()
    message = holds.hold("q", channel, _delivery(1, tag=1), 60, owner="consumer")
    held = holds.get(message.claim)
    assert held is not None
    note = Message(message, claimed=True)
    held.waiting = note
    assert await _stale(holds, _claim(message)) is StaleReason.NOT_HELD  # nobody has it
    assert channel.frames == []
    holds.taken(note)
    await holds.settle("q", _claim(message), ack=True)
    assert channel.frames == [("ack", 1)]


async def test_forgetting_a_channel_voids_its_claims_only(holds: Holds) -> None:
    dead, alive = FakeChannel(), FakeChannel()
    lost = holds.hold("q", dead, _delivery(1, tag=1), 60)
    kept = holds.hold("q", alive, _delivery(2, tag=1), 60)
    holds.forget_channel(dead)
    assert holds.channels() == {alive}
    assert await _stale(holds, _claim(lost)) is StaleReason.NOT_HELD
    await holds.settle("q", _claim(kept), ack=True)
    assert alive.frames == [("ack", 1)]


async def test_release_reports_the_owner_so_a_closed_subscription_can_retire(
    holds: Holds,
) -> None:
    released: list[object | None] = []
    holds.on_released = released.append
    channel = FakeChannel()
    held = holds.hold("q", channel, _delivery(1, tag=1), 60, owner="consumer")
    assert holds.held_by("consumer")
    await holds.settle("q", _claim(held), ack=True)
    assert released == ["consumer"]
    assert not holds.held_by("consumer")


# -- claims ----------------------------------------------------------------------------


async def test_two_deliveries_with_one_id_are_two_independent_holds(holds: Holds) -> None:
    channel = FakeChannel()
    first = holds.hold("q", channel, _delivery(5, tag=1, body=b"one"), 60)
    second = holds.hold("q", channel, _delivery(5, tag=2, body=b"two"), 60)
    assert _claim(first) != _claim(second)
    assert first.msg_id == second.msg_id == 5
    assert channel.frames == []  # holding the second released nothing
    await holds.settle("q", _claim(second), ack=True)
    assert holds.get(first.claim) is not None  # still held
    await holds.settle("q", _claim(first), ack=True)
    assert channel.frames == [("ack", 2), ("ack", 1)]


async def test_tokens_are_unique_per_service_and_foreign_claims_are_not_held() -> None:
    tasks = Background()
    mine = Holds(quorum=False, tasks=tasks, timeout=5.0)
    other = Holds(quorum=False, tasks=tasks, timeout=5.0)
    channel = FakeChannel()
    try:
        a = _claim(mine.hold("q", channel, _delivery(1, tag=1), 60))
        b = _claim(other.hold("q", channel, _delivery(1, tag=1), 60))
        assert a.token != b.token
        assert await _stale(mine, b) is StaleReason.NOT_HELD  # the other service's claim
        for forged in (
            dataclasses.replace(a, msg_id=2),
            dataclasses.replace(a, queue_name="other"),
            dataclasses.replace(a, token=1),
            dataclasses.replace(a, msg_id=True),  # never message 1 by accident
        ):
            with pytest.raises(StaleClaim) as info:
                await mine.settle("q", forged, ack=True)
            assert info.value.reason is StaleReason.NOT_HELD
        assert channel.frames == []  # nothing reached the broker, and a is still held
        await mine.settle("q", a, ack=True)
        assert channel.frames == [("ack", 1)]
    finally:
        mine.clear()
        other.clear()
        await tasks.cancel_all()


async def test_ack_many_sends_every_frame_then_one_read_back(holds: Holds) -> None:
    channel = FakeChannel()
    got = [holds.hold("q", channel, _delivery(n, tag=n), 60) for n in range(1, 6)]
    settled_before = _claim(got[0])
    await holds.settle("q", settled_before, ack=True)
    assert channel.read_backs == 1
    claims = [_claim(m) for m in got]
    results = await holds.ack_many("q", [*claims, claims[1]])  # a claim twice: once
    assert results == [False, True, True, True, True, False]
    assert channel.frames == [("ack", n) for n in range(1, 6)]
    assert channel.writes == 2  # the four acks went out in one write
    assert channel.read_backs == 2  # one for the single ack, one for all four


async def test_ack_many_confirms_each_channel_once_and_reports_a_closed_one(
    holds: Holds,
) -> None:
    rx, push, dead = FakeChannel(), FakeChannel(), FakeChannel()
    a = _claim(holds.hold("q", rx, _delivery(1, tag=1), 60))
    b = _claim(holds.hold("q", push, _delivery(2, tag=1), 60, owner="consumer"))
    c = _claim(holds.hold("q", rx, _delivery(3, tag=2), 60))
    d = _claim(holds.hold("q", dead, _delivery(4, tag=1), 60))
    dead.fail_frames = ChannelInvalidStateError("closed")
    assert await holds.ack_many("q", [a, b, c, d]) == [True, True, True, False]
    assert (rx.frames, push.frames, dead.frames) == ([("ack", 1), ("ack", 2)], [("ack", 1)], [])
    assert (rx.read_backs, push.read_backs, dead.read_backs) == (1, 1, 0)
    assert await _stale(holds, d) is StaleReason.NOT_HELD


async def test_ack_many_cut_off_raises_and_closes_the_channel(holds: Holds) -> None:
    channel = FakeChannel()
    claims = [_claim(holds.hold("q", channel, _delivery(n, tag=n), 60)) for n in (1, 2)]
    channel.fail_read_back = ConnectionResetError("gone")
    with pytest.raises(ConnectionResetError):  # outcome unknown: never reported settled
        await holds.ack_many("q", claims)
    await asyncio.wait_for(channel.closed.wait(), WITHIN)
    assert all(holds.get(c) is None for c in claims)


async def test_ack_many_with_one_channel_cut_off_voids_only_that_channel(
    holds: Holds,
) -> None:
    rx, push = FakeChannel(), FakeChannel()
    a = _claim(holds.hold("q", rx, _delivery(1, tag=1), 60))
    b = _claim(holds.hold("q", push, _delivery(2, tag=1), 60, owner="consumer"))
    unrelated = _claim(holds.hold("q", push, _delivery(3, tag=2), 60, owner="consumer"))
    rx.fail_read_back = ConnectionResetError("gone")
    with pytest.raises(ConnectionResetError):  # one outcome is unknown: the call says so
        await holds.ack_many("q", [a, b])
    await asyncio.wait_for(rx.closed.wait(), WITHIN)
    assert await _stale(holds, a) is StaleReason.NOT_HELD  # may come back
    assert await _stale(holds, b) is StaleReason.SETTLED  # confirmed: it stands
    # The push channel confirmed its ack: it stays open with the deliveries it carries.
    assert not push.is_closed
    await holds.settle("q", unrelated, ack=True)
    assert push.frames == [("ack", 1), ("ack", 2)]


async def test_ack_many_with_one_channel_late_voids_only_that_channel() -> None:
    """One channel's read-back is not back within the bound: its acks are unknown and
    the call raises, but the acks the other channel confirmed in time stand. A bound
    on the whole call voided both channels and closed the one that had answered."""
    tasks = Background()
    holds = Holds(quorum=False, tasks=tasks, timeout=0.2)
    try:
        rx, push = FakeChannel(), FakeChannel()
        a = _claim(holds.hold("q", rx, _delivery(1, tag=1), 60))
        b = _claim(holds.hold("q", push, _delivery(2, tag=1), 60, owner="consumer"))
        unrelated = _claim(holds.hold("q", push, _delivery(3, tag=2), 60, owner="consumer"))
        rx.read_back_gate = asyncio.Event()  # never set: the broker does not answer
        with pytest.raises(TimeoutError):
            await holds.ack_many("q", [a, b])
        await asyncio.wait_for(rx.closed.wait(), WITHIN)
        assert await _stale(holds, a) is StaleReason.NOT_HELD  # may come back
        assert await _stale(holds, b) is StaleReason.SETTLED  # confirmed in time: it stands
        assert not push.is_closed
        await holds.settle("q", unrelated, ack=True)
        assert push.frames == [("ack", 1), ("ack", 2)]
    finally:
        holds.clear()
        await tasks.cancel_all()


async def test_ack_many_whose_write_waits_on_a_full_buffer_is_bounded() -> None:
    tasks = Background()
    holds = Holds(quorum=False, tasks=tasks, timeout=0.2)
    try:
        channel = FakeChannel()
        a = _claim(holds.hold("q", channel, _delivery(1, tag=1), 60))
        channel.write_gate = asyncio.Event()  # never set: flow control never lifts
        call = asyncio.ensure_future(holds.ack_many("q", [a]))
        await asyncio.wait([call], timeout=WITHIN)
        assert call.done()  # ended by its own bound, not waiting for ever
        assert isinstance(call.exception(), TimeoutError)
        await asyncio.wait_for(channel.closed.wait(), WITHIN)
        assert await _stale(holds, a) is StaleReason.NOT_HELD  # which frames went is unknown
    finally:
        holds.clear()
        await tasks.cancel_all()


async def test_ack_many_cancelled_stops_every_read_back_and_voids_its_claims(
    holds: Holds,
) -> None:
    rx, push = FakeChannel(), FakeChannel()
    a = _claim(holds.hold("q", rx, _delivery(1, tag=1), 60))
    b = _claim(holds.hold("q", push, _delivery(2, tag=1), 60))
    rx.read_back_gate, push.read_back_gate = asyncio.Event(), asyncio.Event()
    call = asyncio.ensure_future(holds.ack_many("q", [a, b]))
    await asyncio.wait_for(push.read_back_started.wait(), WITHIN)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.wait_for(asyncio.gather(rx.closed.wait(), push.closed.wait()), WITHIN)
    assert await _stale(holds, a) is StaleReason.NOT_HELD
    assert await _stale(holds, b) is StaleReason.NOT_HELD


# -- receive counts --------------------------------------------------------------------


async def test_receive_counts_classic_lower_bound_and_quorum_delivery_count() -> None:
    tasks = Background()
    classic = Holds(quorum=False, tasks=tasks, timeout=5.0)
    quorum = Holds(quorum=True, tasks=tasks, timeout=5.0)
    channel = FakeChannel()
    try:
        counts = [
            classic.hold("q", channel, _delivery(1, tag=n, redelivered=n > 1), 60).receive_count
            for n in (1, 2, 3)
        ]
        assert counts == [1, 2, 3]
        got = quorum.hold("q", channel, _delivery(5, tag=4, headers={"x-delivery-count": 4}), 60)
        assert got.receive_count == 5
        stamped = classic.hold(
            "q", channel, _delivery(6, tag=5, headers={ENQUEUED_AT_HEADER: 1}), 60
        )
        assert stamped.enqueued_at == 1e-6
    finally:
        classic.clear()
        quorum.clear()
        await tasks.cancel_all()


async def test_classic_counts_of_messages_sharing_an_id_stay_apart(holds: Holds) -> None:
    channel = FakeChannel()

    def count(body: bytes, tag: int, redelivered: bool, stamp: int | None = None) -> int:
        headers = {ENQUEUED_AT_HEADER: stamp} if stamp is not None else None
        delivery = _delivery(9, tag, redelivered=redelivered, headers=headers, body=body)
        return holds.hold("q", channel, delivery, 60).receive_count

    # Two producers' messages with one id: their send stamps tell them apart.
    assert [count(b"x", 1, False, 100), count(b"x", 2, False, 200)] == [1, 1]
    assert [count(b"x", 3, True, 100), count(b"x", 4, True, 100)] == [2, 3]
    assert count(b"x", 5, True, 200) == 2
    # Foreign ones (no stamp): their bodies do.
    assert [count(b"a", 6, False), count(b"b", 7, False)] == [1, 1]
    assert [count(b"a", 8, True), count(b"b", 9, True), count(b"a", 10, True)] == [2, 2, 3]
    # Alike in everything: a redelivery reports 2, the bound that holds for each.
    assert [count(b"same", 11, False), count(b"same", 12, False)] == [1, 1]
    assert [count(b"same", 13, True), count(b"same", 14, True)] == [2, 2]


def test_ack_frames_are_the_bytes_pamqp_makes() -> None:
    tags = [1, 2, 255, 65_536, 2**32 + 7, 2**63 - 1]
    expected = b"".join(pamqp.frame.marshal(spec.Basic.Ack(delivery_tag=t), 7) for t in tags)
    assert ack_frames(7, tags) == expected

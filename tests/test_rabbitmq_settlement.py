"""Holding and settling RabbitMQ deliveries, against a fake channel (no broker).

``_holds`` and ``_settlement`` reach AMQP only through ``SettlingChannel``; the fake
records the frames they send, so each promise of the module docstrings is checked here
frame by frame.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiormq.abc import DeliveredMessage
from aiormq.exceptions import ChannelInvalidStateError
from pamqp import commands as spec
from pamqp.header import ContentHeader

from mqcontract.errors import MessageNotFound
from mqcontract.messages import Message
from mqcontract.providers.rabbitmq._holds import ENQUEUED_AT_HEADER, Holds
from mqcontract.providers.rabbitmq._ids import MessageIdGenerator
from mqcontract.providers.rabbitmq._settlement import SettlingChannel
from mqcontract.providers.rabbitmq._tasks import Background

WITHIN = 2.0  # seconds any background frame may take to be sent


class FakeChannel:
    """Records settlement frames; fails them on request."""

    def __init__(self) -> None:
        self.is_closed = False
        self.frames: list[tuple[str, int]] = []
        self.read_backs = 0
        self.fail_frames: BaseException | None = None
        self.fail_read_back: BaseException | None = None
        self.nacked = asyncio.Event()
        self.closed = asyncio.Event()

    async def basic_ack(self, delivery_tag: int) -> None:
        if self.fail_frames is not None:
            raise self.fail_frames
        self.frames.append(("ack", delivery_tag))

    async def basic_nack(
        self, delivery_tag: int, multiple: bool = False, requeue: bool = True
    ) -> None:
        if self.fail_frames is not None:
            raise self.fail_frames
        assert requeue
        self.frames.append(("nack", delivery_tag))
        self.nacked.set()

    async def exchange_declare(self, exchange: str = "", *, passive: bool = False) -> Any:
        assert (exchange, passive) == ("amq.direct", True)
        if self.fail_read_back is not None:
            raise self.fail_read_back
        self.read_backs += 1

    async def close(self) -> None:
        self.is_closed = True
        self.closed.set()


def _delivery(
    msg_id: int, tag: int, *, redelivered: bool = False, headers: dict[str, Any] | None = None
) -> DeliveredMessage:
    frame = spec.Basic.GetOk(delivery_tag=tag, redelivered=redelivered, routing_key="q")
    properties = spec.Basic.Properties(message_id=str(msg_id), headers=headers)
    header = ContentHeader(properties=properties)
    return DeliveredMessage(delivery=frame, header=header, body=b"body", channel=None)  # type: ignore[arg-type]


@pytest.fixture
async def holds() -> AsyncIterator[Holds]:
    tasks = Background()
    yield Holds(quorum=False, ids=MessageIdGenerator(node=1), tasks=tasks, timeout=5.0)
    await tasks.cancel_all()


def test_an_aiormq_channel_is_a_settling_channel() -> None:
    from aiormq.abc import AbstractChannel

    def settling(channel: AbstractChannel) -> SettlingChannel:
        return channel  # mypy checks the seam: aiormq's channel satisfies the protocol

    assert settling is not None


async def test_an_ack_sends_one_frame_and_waits_until_the_broker_has_read_it(
    holds: Holds,
) -> None:
    channel = FakeChannel()
    held = holds.hold("q", channel, _delivery(7, tag=1), 60)
    assert (held.msg_id, held.receive_count, held.payload) == (7, 1, b"body")
    assert await holds.settle("q", 7, ack=True) is True
    assert channel.frames == [("ack", 1)]
    assert channel.read_backs == 1
    assert await holds.settle("q", 7, ack=True) is False  # no longer held


async def test_a_nack_of_a_received_message_needs_no_read_back_but_a_pushed_one_does(
    holds: Holds,
) -> None:
    channel = FakeChannel()
    holds.hold("q", channel, _delivery(1, tag=1), 60)
    holds.hold("q", channel, _delivery(2, tag=2), 60, owner="consumer")
    assert await holds.settle("q", 1, ack=False)
    assert channel.read_backs == 0
    assert await holds.settle("q", 2, ack=False)
    assert channel.frames == [("nack", 1), ("nack", 2)]
    assert channel.read_backs == 1


async def test_acks_sent_together_share_one_read_back(holds: Holds) -> None:
    channel = FakeChannel()
    for n in range(1, 4):
        holds.hold("q", channel, _delivery(n, tag=n), 60)
    results = await asyncio.gather(*(holds.settle("q", n, ack=True) for n in range(1, 4)))
    assert results == [True, True, True]
    assert sorted(channel.frames) == [("ack", 1), ("ack", 2), ("ack", 3)]
    assert channel.read_backs == 1


async def test_a_channel_closed_before_the_frame_is_message_not_found(holds: Holds) -> None:
    channel = FakeChannel()
    holds.hold("q", channel, _delivery(1, tag=1), 60)
    channel.fail_frames = ChannelInvalidStateError("closed")
    with pytest.raises(MessageNotFound):
        await holds.settle("q", 1, ack=True)
    assert channel.read_backs == 0


async def test_a_claim_on_a_closed_channel_is_void_and_sends_nothing(holds: Holds) -> None:
    channel = FakeChannel()
    holds.hold("q", channel, _delivery(1, tag=1), 60)
    channel.is_closed = True
    with pytest.raises(MessageNotFound):
        await holds.settle("q", 1, ack=True)
    assert channel.frames == []


async def test_a_settlement_cut_off_propagates_and_closes_the_channel(holds: Holds) -> None:
    channel = FakeChannel()
    holds.hold("q", channel, _delivery(1, tag=1), 60)
    channel.fail_read_back = ConnectionResetError("gone")
    with pytest.raises(ConnectionResetError):  # its outcome is unknown: never a success
        await holds.settle("q", 1, ack=True)
    await asyncio.wait_for(channel.closed.wait(), WITHIN)  # the broker requeues it
    assert holds.get("q", 1) is None


async def test_the_visibility_timer_requeues_an_unsettled_message(holds: Holds) -> None:
    channel = FakeChannel()
    holds.hold("q", channel, _delivery(1, tag=9), 0.01)
    await asyncio.wait_for(channel.nacked.wait(), WITHIN)
    assert channel.frames == [("nack", 9)]
    assert await holds.settle("q", 1, ack=True) is False


async def test_a_pushed_copy_waiting_in_its_subscription_cannot_be_settled_until_taken(
    holds: Holds,
) -> None:
    channel = FakeChannel()
    message = holds.hold("q", channel, _delivery(1, tag=1), 60, owner="consumer")
    held = holds.get("q", 1)
    assert held is not None
    note = Message(message, claimed=True)
    held.waiting = note
    with pytest.raises(MessageNotFound):  # an ack from the claim before this copy
        await holds.settle("q", 1, ack=True)
    assert channel.frames == []
    holds.taken(note)
    assert await holds.settle("q", 1, ack=True)


async def test_forgetting_a_channel_voids_its_claims_only(holds: Holds) -> None:
    dead, alive = FakeChannel(), FakeChannel()
    holds.hold("q", dead, _delivery(1, tag=1), 60)
    holds.hold("q", alive, _delivery(2, tag=1), 60)
    holds.forget_channel(dead)
    assert holds.channels() == {alive}
    assert await holds.settle("q", 1, ack=True) is False
    assert await holds.settle("q", 2, ack=True) is True


async def test_release_reports_the_owner_so_a_closed_subscription_can_retire(
    holds: Holds,
) -> None:
    released: list[object | None] = []
    holds.on_released = released.append
    channel = FakeChannel()
    holds.hold("q", channel, _delivery(1, tag=1), 60, owner="consumer")
    assert holds.held_by("consumer")
    assert await holds.settle("q", 1, ack=True)
    assert released == ["consumer"]
    assert not holds.held_by("consumer")


async def test_receive_counts_classic_lower_bound_and_quorum_delivery_count() -> None:
    tasks = Background()
    classic = Holds(quorum=False, ids=MessageIdGenerator(node=1), tasks=tasks, timeout=5.0)
    quorum = Holds(quorum=True, ids=MessageIdGenerator(node=1), tasks=tasks, timeout=5.0)
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

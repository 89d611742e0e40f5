"""Message ids for RabbitMQ: strictly increasing per producer, whatever the clock does,
with node bits leased from the broker so live producers never share them.

The lease tests need RabbitMQ (through the kit's provisioning: skipped when it is
unreachable, failed when backends are required).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiormq
import aiormq.abc
import pytest

from mqcontract.providers.rabbitmq import RabbitMqMessagingService
from mqcontract.providers.rabbitmq._delay import (
    delay_ms,
    is_wait_queue,
    wait_queue_arguments,
    wait_queue_name,
)
from mqcontract.providers.rabbitmq._ids import NODE_BITS, NODES, MessageIdGenerator, id_time
from mqcontract.providers.rabbitmq._lease import NodeLease, lease_queue
from mqcontract.testing import Harness
from mqcontract_fixtures.rabbitmq import RabbitMqHarness


def test_ids_strictly_increase_and_fit_a_signed_64_bit_integer() -> None:
    gen = MessageIdGenerator(node=7)
    ids = [gen.next_id() for _ in range(10_000)]
    assert ids == sorted(set(ids))
    assert all(0 < i < 2**63 for i in ids)
    assert all(i % NODES == 7 for i in ids)


def test_ids_keep_increasing_when_the_wall_clock_steps_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gen = MessageIdGenerator(node=1)
    now = time.time_ns()
    monkeypatch.setattr(time, "time_ns", lambda: now)
    first = [gen.next_id() for _ in range(3000)]  # overflows the 256-per-ms sequence
    monkeypatch.setattr(time, "time_ns", lambda: now - 10_000_000_000)
    later = [gen.next_id() for _ in range(10)]
    ids = first + later
    assert ids == sorted(set(ids))


def test_ids_embed_their_send_time() -> None:
    gen = MessageIdGenerator()
    before = time.time()
    msg_id = gen.next_id()
    assert abs(id_time(msg_id) - before) < 1.0


def test_different_nodes_never_collide_in_the_same_millisecond() -> None:
    a, b = MessageIdGenerator(node=1), MessageIdGenerator(node=2)
    assert not {a.next_id() for _ in range(500)} & {b.next_id() for _ in range(500)}


def test_a_new_node_keeps_the_ids_of_one_producer_increasing() -> None:
    gen = MessageIdGenerator(node=NODES - 1)
    before = [gen.next_id() for _ in range(300)]
    gen.node = 0  # a lease taken after a reconnect
    after = [gen.next_id() for _ in range(300)]
    assert before + after == sorted(set(before + after))
    assert {i % NODES for i in after} == {0}


def test_the_documented_bound_for_random_nodes() -> None:
    """Without a lease: the chance that some pair among ``n`` producers shares a node."""

    def shared(n: int, nodes: int) -> float:
        none = 1.0
        for k in range(n):
            none *= (nodes - k) / nodes
        return 1 - none

    assert NODE_BITS == 14
    assert 0.25 < shared(50, 1 << 12) < 0.27  # the old layout: 12 random node bits
    assert 0.07 < shared(50, NODES) < 0.08  # the fallback now; leased nodes never share


def test_delays_round_up_to_whole_milliseconds() -> None:
    assert delay_ms(0.5) == 500
    assert delay_ms(0.0001) == 1
    assert delay_ms(1.2345) == 1235
    assert delay_ms(0.3) == 300  # no float noise pushing 300 to 301


def test_wait_queues_are_per_target_and_delay_and_expire_after_their_ttl() -> None:
    name = wait_queue_name("orders", 500)
    assert is_wait_queue(name)
    assert name != wait_queue_name("orders", 30_000)
    assert name != wait_queue_name("orders_2", 500)
    args = wait_queue_arguments("orders", 500)
    assert args["x-message-ttl"] == 500
    assert args["x-dead-letter-exchange"] == ""
    assert args["x-dead-letter-routing-key"] == "orders"
    expires = args["x-expires"]
    assert isinstance(expires, int)
    assert expires > 500


# -- leases on the broker --------------------------------------------------------------


@pytest.fixture
def harness(provisioned: Callable[[str], Harness]) -> RabbitMqHarness:
    harness = provisioned("rabbitmq")
    assert isinstance(harness, RabbitMqHarness)
    return harness


Connect = Callable[[], Awaitable[aiormq.abc.AbstractConnection]]


@pytest.fixture
async def connect(harness: RabbitMqHarness) -> AsyncIterator[Connect]:
    """Opens plain AMQP connections to the broker (closed after the test)."""
    opened: list[aiormq.abc.AbstractConnection] = []

    async def new() -> aiormq.abc.AbstractConnection:
        connection = await aiormq.connect(harness.url)
        opened.append(connection)
        return connection

    yield new
    for connection in opened:
        with contextlib.suppress(Exception):
            await connection.close()


async def test_live_producers_never_hold_the_same_node(connect: Connect) -> None:
    first, second = await connect(), await connect()
    a, b = MessageIdGenerator(node=123), MessageIdGenerator(node=123)
    lease_a, lease_b = NodeLease(a, timeout=5.0), NodeLease(b, timeout=5.0)
    await lease_a.ensure(first)
    await lease_b.ensure(second)
    assert lease_a.held
    assert lease_b.held
    assert a.node == 123  # its first choice was free
    assert b.node != 123  # taken by the live first producer: it drew another
    await lease_b.ensure(second)  # already held on this connection: nothing to do
    assert b.node != 123
    # The broker frees a node with its connection: a third producer may then take it.
    await first.close()
    c = MessageIdGenerator(node=123)
    lease_c = NodeLease(c, timeout=5.0)
    await lease_c.ensure(await connect())
    assert (lease_c.held, c.node) == (True, 123)


async def test_a_lease_is_taken_again_after_a_reconnect(connect: Connect) -> None:
    ids = MessageIdGenerator(node=4321)
    lease = NodeLease(ids, timeout=5.0)
    old = await connect()
    await lease.ensure(old)
    await old.close()  # the lease queue went with it
    new = await connect()
    await lease.ensure(new)
    assert (lease.held, ids.node) == (True, 4321)  # the node held before, if still free
    channel = await new.channel()
    ok = await channel.queue_declare(lease_queue(4321), passive=True)
    assert ok.consumer_count == 0  # it exists, held by `new`
    await channel.close()


async def test_services_send_with_leased_distinct_nodes(harness: RabbitMqHarness) -> None:
    one, two = await harness.open(), await harness.open()
    assert isinstance(one, RabbitMqMessagingService)
    assert isinstance(two, RabbitMqMessagingService)
    queue = f"t_rmq_ids_{time.time_ns()}"
    try:
        await one.create_queue(queue)
        a = await one.send_message(queue, b"a")
        b = await two.send_message(queue, b"b")
        assert a % NODES != b % NODES
        got = await one.receive_messages(queue, 2, 60)
        assert sorted(m.msg_id for m in got) == sorted([a, b])
        await one.ack_claims(queue, got)
    finally:
        with contextlib.suppress(Exception):
            await one.delete_queue(queue)
        await one.close()
        await two.close()

"""Message ids for RabbitMQ: strictly increasing per producer, whatever the clock does."""

from __future__ import annotations

import time

import pytest

from mqcontract.providers.rabbitmq._delay import (
    delay_ms,
    is_wait_queue,
    wait_queue_arguments,
    wait_queue_name,
)
from mqcontract.providers.rabbitmq._ids import MessageIdGenerator, id_time


def test_ids_strictly_increase_and_fit_a_signed_64_bit_integer() -> None:
    gen = MessageIdGenerator(node=7)
    ids = [gen.next_id() for _ in range(10_000)]
    assert ids == sorted(set(ids))
    assert all(0 < i < 2**63 for i in ids)
    assert all(i & 0xFFF == 7 for i in ids)


def test_ids_keep_increasing_when_the_wall_clock_steps_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gen = MessageIdGenerator(node=1)
    now = time.time_ns()
    monkeypatch.setattr(time, "time_ns", lambda: now)
    first = [gen.next_id() for _ in range(3000)]  # overflows the 1024-per-ms sequence
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

"""A NOTIFY on a queue's channel is untrusted input: any role that may connect can send one.

A forged ``"delay": NaN`` once reached ``loop.call_later`` and froze the whole process's
event loop (ten of them did); ``Infinity`` or ``1e300`` held a timer for ever. The
listener now refuses any field out of its type or range (counted in ``malformed``),
holds a delayed notification no longer than a send may ask for, at most ``MAX_HELD`` at
once, only for queues a subscription wants, and lets them go with the last subscription.
"""

from __future__ import annotations

import asyncio
import math
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mqcontract.messages import Available, Message
from mqcontract.providers.pgmq import PgmqMessagingService, open_pgmq
from mqcontract.providers.pgmq import _listener as listener_module
from mqcontract.providers.pgmq._listener import MAX_DELAY, PgmqListener
from mqcontract.subscription import QueueSubscription
from tests.pgmq_support import config, sql

DELIVERY = 5.0  # seconds any notification may take to show up

#: Forged payloads whose fields are out of type or range, for queue ``q``.
FORGED = [
    '{"queue":"q","msg_id":1,"delay":NaN}',
    '{"queue":"q","msg_id":1,"delay":Infinity}',
    '{"queue":"q","msg_id":1,"delay":1e400}',
    '{"queue":"q","msg_id":1,"delay":-5}',
    '{"delay":NaN,"msg_id":1,"queue":"q"}',
    '{"queue":"q","msg_id":true}',
    '{"queue":"q","msg_id":1.5}',
    '{"queue":"q","msg_id":"1"}',
    '{"queue":"q","msg_id":' + str(2**63) + "}",
    '{"queue":"q","msg_id":1,"read_ct":0,"enqueued_at":NaN,"message":1}',
    "[" * 5000,
]


def _listener() -> PgmqListener:
    async def never() -> Any:
        raise AssertionError("no connection in these tests")

    return PgmqListener(never, health_interval=60.0, health_timeout=1.0)


def _subscribed(listener: PgmqListener, queue: str = "q") -> QueueSubscription:
    subscription = QueueSubscription((queue,))
    listener._subs.setdefault(queue, set()).add(subscription)
    return subscription


def _timers_finite() -> bool:
    loop = asyncio.get_running_loop()
    return all(math.isfinite(h.when()) for h in loop._scheduled)  # type: ignore[attr-defined]


async def test_forged_fields_are_counted_and_never_reach_a_timer() -> None:
    listener = _listener()
    subscription = _subscribed(listener)
    for payload in FORGED:
        listener._on_notify(None, 1, "mqcontract_q", payload)
    assert listener.malformed == len(FORGED)
    assert listener.held == 0
    assert _timers_finite()
    assert subscription.pending() == []
    await listener.close()


async def test_a_notification_on_another_queues_channel_is_malformed() -> None:
    listener = _listener()
    subscription = _subscribed(listener)
    listener._on_notify(None, 1, "mqcontract_q", '{"queue":"other","msg_id":1}')
    assert listener.malformed == 1
    listener._on_notify(None, 1, "mqcontract_q", '{"queue":"q","msg_id":2}')
    assert subscription.pending() == [Available("q", 2)]
    await listener.close()


async def test_a_delay_is_held_no_longer_than_a_send_may_ask_for() -> None:
    listener = _listener()
    _subscribed(listener)
    loop = asyncio.get_running_loop()
    listener._on_notify(None, 1, "mqcontract_q", '{"queue":"q","msg_id":1,"delay":1e300}')
    assert listener.held == 1
    (handle,) = listener._held["q"]
    assert handle.when() <= loop.time() + MAX_DELAY + 1.0
    await listener.close()
    assert listener.held == 0
    assert handle.cancelled()


async def test_held_notifications_are_bounded_and_go_with_the_last_subscription(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(listener_module, "MAX_HELD", 3)
    listener = _listener()
    first = _subscribed(listener, "q")
    _subscribed(listener, "r")
    for msg_id in range(1, 6):
        delayed = f'{{"queue":"q","msg_id":{msg_id},"delay":600}}'
        listener._on_notify(None, 1, "mqcontract_q", delayed)
    assert (listener.held, listener.dropped) == (3, 2)
    handles = set(listener._held["q"])
    # Nobody subscribed to this queue: nothing is held for it.
    listener._on_notify(None, 1, "mqcontract_s", '{"queue":"s","msg_id":1,"delay":600}')
    assert (listener.held, listener.dropped, listener.malformed) == (3, 2, 0)
    await listener.remove(first)
    assert listener.held == 0
    assert all(h.cancelled() for h in handles)
    await listener.close()


async def test_a_held_notification_is_handed_out_when_due() -> None:
    listener = _listener()
    subscription = _subscribed(listener)
    listener._on_notify(None, 1, "mqcontract_q", '{"queue":"q","msg_id":9,"delay":0.01}')
    assert listener.held == 1
    note = await asyncio.wait_for(subscription.__anext__(), DELIVERY)
    assert note == Available("q", 9)
    assert listener.held == 0
    await listener.close()


# -- through the wire ------------------------------------------------------------------


@pytest.fixture
async def service(pgmq_db_url: str) -> AsyncIterator[PgmqMessagingService]:
    svc = await open_pgmq(config(pgmq_db_url))
    yield svc
    await svc.close()


async def test_forged_notifies_from_another_session_leave_the_loop_working(
    service: PgmqMessagingService, pgmq_db_url: str
) -> None:
    """The outside tester's reproduction: ``pg_notify`` from another session, NaN ten
    times (which froze the loop), the infinities, and huge delays, before a real send."""
    queue = f"t_forged_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    await service.create_queue(queue)
    sub = await service.subscribe(queue)
    try:
        forged = [p.replace('"q"', f'"{queue}"') for p in FORGED]
        # (distinct: PostgreSQL sends a payload repeated in one transaction once)
        forged += [f'{{"queue":"{queue}","msg_id":{100 + i},"delay":NaN}}' for i in range(10)]
        huge = [f'{{"queue":"{queue}","msg_id":{200 + i},"delay":1e300}}' for i in range(3)]
        await sql(
            pgmq_db_url,
            "SELECT pg_notify($1::text, p) FROM unnest($2::text[]) AS p",
            f"mqcontract_{queue}",
            forged + huge,
        )
        # Notifications arrive in commit order: the forged ones are in when this is.
        sent = (await sql(pgmq_db_url, "SELECT pgmq.send($1::text, '7'::jsonb)", queue))[0][0]
        note = await asyncio.wait_for(sub.__anext__(), DELIVERY)
        assert isinstance(note, Message)
        assert note.message.msg_id == sent
        listener = service.listener
        assert listener.malformed == len(forged)
        assert listener.held == len(huge)
        assert _timers_finite()
        await asyncio.wait_for(asyncio.sleep(0.01), DELIVERY)  # timers still fire
        await sub.aclose()
        assert listener.held == 0  # the last subscription took them with it
    finally:
        await sub.aclose()
        await service.delete_queue(queue)


async def test_a_foreign_send_with_an_infinite_visibility_time_is_taken(
    service: PgmqMessagingService, pgmq_db_url: str
) -> None:
    """Plain PGMQ takes ``pgmq.send(q, msg, 'infinity')`` and ``'-infinity'``: the notify
    trigger once refused both (``cannot subtract infinite timestamps``). ``-infinity`` is
    visible at once and pushed whole; ``infinity`` is never visible, so never announced."""
    queue = f"t_infinite_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    await service.create_queue(queue)
    sub = await service.subscribe(queue)
    try:
        never = "SELECT pgmq.send($1::text, '1'::jsonb, 'infinity'::timestamptz)"
        now = "SELECT pgmq.send($1::text, '2'::jsonb, '-infinity'::timestamptz)"
        hidden = (await sql(pgmq_db_url, never, queue))[0][0]
        visible = (await sql(pgmq_db_url, now, queue))[0][0]
        note = await asyncio.wait_for(sub.__anext__(), DELIVERY)
        assert isinstance(note, Message)
        assert note.message.msg_id == visible
        assert service.listener.malformed == 0
        got = await service.receive_messages(queue, 30, 10)
        assert [m.msg_id for m in got] == [visible]
        assert hidden < visible
    finally:
        await sub.aclose()
        await service.delete_queue(queue)


async def test_a_foreign_row_enqueued_at_infinity_is_announced_as_a_signal(
    service: PgmqMessagingService, pgmq_db_url: str
) -> None:
    """JSON has no infinity: such a row is announced without its fields, not as a
    malformed notification the listener would drop."""
    queue = f"t_inf_enq_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    await service.create_queue(queue)
    sub = await service.subscribe(queue)
    try:
        insert = (
            f"INSERT INTO pgmq.q_{queue} (vt, message, enqueued_at)"
            " VALUES (now(), '3', 'infinity') RETURNING msg_id"
        )
        sent = (await sql(pgmq_db_url, insert))[0][0]
        note = await asyncio.wait_for(sub.__anext__(), DELIVERY)
        assert isinstance(note, Available)
        assert note.msg_id == sent
        assert service.listener.malformed == 0
    finally:
        await sub.aclose()
        await service.delete_queue(queue)

"""What JetStream does underneath, as this provider relies on it (and declares it)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from mqcontract.errors import QueueNotFound

from mqcontract_nats_jetstream import NatsJetStreamMessagingService
from mqcontract_nats_jetstream.harness import run_streams
from support import PREFIX, ack_unheard, consumer_state, eventually, open_service, queue_name


async def _wait_for(service: NatsJetStreamMessagingService, queue: str, vt: float) -> float:
    """Seconds until a message is visible again (polling receive, bounded)."""
    start = time.monotonic()

    async def visible() -> bool:
        return bool(await service.receive_messages(queue, 1, vt))

    await eventually(visible, 10, f"a message visible again on {queue}")
    return time.monotonic() - start


async def test_each_receive_has_its_own_timeout_on_one_consumer(
    service: NatsJetStreamMessagingService, queue: str
) -> None:
    # JetStream's ack wait is one per consumer; the nak with a delay sets each claim's.
    short, long = await service.send_batch(queue, [b"short", b"long"])
    (s,) = await service.receive_messages(queue, 1, 0.3)
    (lo,) = await service.receive_messages(queue, 1, 2.0)
    assert (s.msg_id, lo.msg_id) == (short, long)
    back = await _wait_for(service, queue, 60)
    assert 0.25 <= back < 1.0, back  # the short one, not at the consumer's ack wait (10 s)
    assert await service.receive_messages(queue, 1, 60) == []  # the long one still held
    await asyncio.sleep(1.9)
    (again,) = await service.receive_messages(queue, 1, 60)
    assert (again.msg_id, again.receive_count) == (long, 2)


async def test_a_timeout_longer_than_the_consumer_ack_wait_holds(
    service: NatsJetStreamMessagingService,
) -> None:
    svc = await open_service(fetch_grace_seconds=1.0)
    q = queue_name()
    try:
        await svc.create_queue(q)
        await svc.send_message(q, b"x")
        await svc.receive_messages(q, 1, 2.5)
        await asyncio.sleep(1.5)  # past the consumer's ack wait
        assert await svc.receive_messages(q, 1, 60) == []
        back = await _wait_for(svc, q, 60)
        assert back < 2.0
    finally:
        await svc.close()


async def test_receive_count_is_jetstreams_delivery_count(
    service: NatsJetStreamMessagingService, queue: str
) -> None:
    await service.send_message(queue, b"x")
    for expected in (1, 2, 3):
        (got,) = await service.receive_messages(queue, 1, 60)
        assert got.receive_count == expected
        await service.nack_claim(queue, got)
    state = await consumer_state(service, queue)
    assert state["num_redelivered"] == 1  # one message, redelivered


async def test_redelivered_messages_come_before_newer_ones(
    service: NatsJetStreamMessagingService, queue: str
) -> None:
    a, b, c = await service.send_batch(queue, [b"a", b"b", b"c"])
    (first,) = await service.receive_messages(queue, 1, 60)
    await service.nack_claim(queue, first)
    got = await service.receive_messages(queue, 3, 60)
    assert [(m.msg_id, m.receive_count) for m in got] == [(a, 2), (b, 1), (c, 1)]


async def test_delete_removes_the_stream_and_its_ledger(
    service: NatsJetStreamMessagingService,
) -> None:
    q = queue_name()
    await service.create_queue(q)
    await service.send_batch(q, [b"a", b"b"])
    await service.receive_messages(q, 1, 60)
    names = service.names(q)
    assert {names.stream, names.ledger} <= set(await run_streams(service.link, PREFIX))
    await service.delete_queue(q)
    left = set(await run_streams(service.link, PREFIX))
    assert names.stream not in left
    assert names.ledger not in left
    assert q not in await service.list_queues()


async def _ledger_size(service: NatsJetStreamMessagingService, queue: str) -> int:
    info = await service.link.api(f"STREAM.INFO.{service.names(queue).ledger}")
    return int(info["state"]["messages"])


async def test_an_acked_messages_ledger_records_stay_for_the_retention_then_go(
    service: NatsJetStreamMessagingService, queue: str
) -> None:
    """Kept ``ledger_retention_seconds`` after the ack (a redelivery of an ack that did
    not land is finished meanwhile), then purged once the stream no longer holds it."""
    assert service.settings.ledger_retention_seconds == 30.0
    await service.send_batch(queue, [b"a", b"b"])
    for message in await service.receive_messages(queue, 2, 60):
        await service.ack_claim(queue, message)
    assert await _ledger_size(service, queue) == 2 * 2  # a claim and its ack, each
    assert len(service.forgetting) == 2

    service.forgetting.delay = 0.0  # the retention over: what waits is looked at now
    await service.send_message(queue, b"c")
    (last,) = await service.receive_messages(queue, 1, 60)
    await service.ack_claim(queue, last)

    async def purged() -> bool:  # c's records (a's and b's wait their 30 s)
        return await _ledger_size(service, queue) == 2 * 2

    await eventually(purged, 10, "the records of c purged")
    assert service.forgetting.purged == 1


async def test_an_acked_message_the_stream_still_holds_keeps_its_records(
    service: NatsJetStreamMessagingService, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A confirmed ack the stream did not carry out: the records are not purged (they
    make the redelivery be finished), however often the stream is asked."""
    service.forgetting.delay = 0.0
    await service.send_message(queue, b"a")
    (got,) = await service.receive_messages(queue, 1, 60)
    await ack_unheard(service, queue, got, monkeypatch)

    async def given_up() -> bool:
        return service.forgetting.kept == 1

    await eventually(given_up, 10, "the stream asked three times")
    assert service.forgetting.purged == 0
    assert await _ledger_size(service, queue) == 2


def _replicated(leader: str, *, current: bool = True, active: int = 10**8) -> dict[str, Any]:
    """A STREAM.INFO answer for 3 replicas as a clustered server gives it."""
    peers = [n for n in ("n0", "n1", "n2") if n != leader]
    replicas = [{"name": n, "current": current, "active": active} for n in peers]
    return {"config": {"num_replicas": 3}, "cluster": {"leader": leader, "replicas": replicas}}


@pytest.mark.parametrize(
    ("infos", "believed"),
    [
        ([_replicated("n0"), _replicated("n0")], True),
        ([_replicated("n0", current=False), _replicated("n0")], False),
        ([_replicated("n0", active=5 * 10**9), _replicated("n0")], False),
        ([_replicated("n0"), _replicated("n1")], False),  # led by another since the look
        ([_replicated("n0"), {"config": {"num_replicas": 3}}], False),  # no leader now
    ],
    ids=["whole", "a-replica-behind", "a-replica-unheard", "leader-changed", "leaderless"],
)
async def test_gone_is_believed_only_from_a_leader_with_every_replica(
    service: NatsJetStreamMessagingService,
    queue: str,
    monkeypatch: pytest.MonkeyPatch,
    infos: list[dict[str, Any]],
    believed: bool,
) -> None:
    """A leader cut off from its majority may have dropped an acked message its
    successor still holds: its "not found" must not purge the records."""
    await service.send_message(queue, b"a")
    (got,) = await service.receive_messages(queue, 1, 60)
    await service.ack_claim(queue, got)
    real_api = service.link.api
    answers = iter(infos)

    async def api(name: str, body: dict[str, Any] | None = None) -> Any:
        if name.startswith("STREAM.INFO."):
            return next(answers)
        return await real_api(name, body)

    monkeypatch.setattr(service.link, "api", api)
    names = service.names(queue)
    assert await service._gone(names, got.msg_id) is believed


async def test_different_prefixes_are_separate_namespaces(
    service: NatsJetStreamMessagingService,
) -> None:
    other = await open_service(prefix=f"{PREFIX}_ns")
    try:
        q = queue_name()
        await other.create_queue(q)
        assert not await service.queue_exists(q)
        assert q not in await service.list_queues()
        assert q in await other.list_queues()
        await other.delete_queue(q)
    finally:
        await other.close()


async def test_cancelling_a_caller_is_never_lost(
    service: NatsJetStreamMessagingService, queue: str
) -> None:
    async def busy() -> str:
        for _ in range(10_000):
            await service.receive_messages(queue, 10, 60)
        return "ran to the end"

    for i in range(30):
        task = asyncio.create_task(busy())
        for _ in range(i % 5):
            await asyncio.sleep(0)
        await asyncio.sleep(0.001 * (i % 3))
        task.cancel()
        try:
            outcome = await task
        except asyncio.CancelledError:
            continue
        raise AssertionError(f"cancellation {i} was swallowed: {outcome}")


async def test_a_pipelined_batch_keeps_payload_order_and_a_missing_queue_stays_missing(
    service: NatsJetStreamMessagingService, queue: str
) -> None:
    payloads = [b"%d" % i for i in range(200)]
    ids = await service.send_batch(queue, payloads)
    assert ids == list(range(1, 201))  # stream sequences, in payload order
    got = await service.receive_messages(queue, 200, 60)
    assert [m.payload for m in got] == payloads
    with pytest.raises(QueueNotFound):
        await service.send_batch(queue_name("missing"), [])

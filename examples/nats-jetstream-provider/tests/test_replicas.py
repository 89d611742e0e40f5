"""The ``replicas`` setting: on the machine's NATS (one server, no cluster) one replica
works and more are refused by ``create_queue``, clearly and without leftovers; on a
private 3-node cluster 3 replicate every stream and 4 are refused the same way."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest
from mqcontract.errors import QueueError, StaleClaim, StaleReason
from mqcontract.messages import Claim, QueuedMessage
from mqcontract_fixtures.private.nats import PrivateNatsCluster, nats_available

from mqcontract_nats_jetstream import NatsJetStreamConfig, NatsJetStreamMessagingService
from mqcontract_nats_jetstream._errors import JsError
from mqcontract_nats_jetstream._names import CONSUMER
from mqcontract_nats_jetstream.harness import run_streams
from mqcontract_nats_jetstream.service import connect_nats_jetstream
from support import PREFIX, open_service, queue_name


@pytest.fixture
async def three(
    service: NatsJetStreamMessagingService,
) -> AsyncIterator[NatsJetStreamMessagingService]:
    """A provider asking for 3 replicas (``service`` drops the run's streams after)."""
    svc = await open_service(replicas=3)
    try:
        yield svc
    finally:
        await svc.close()


async def _streams_of(service: NatsJetStreamMessagingService, queue: str) -> list[str]:
    names = service.names(queue)
    return [s for s in await run_streams(service.link, PREFIX) if s in (names.stream, names.ledger)]


async def test_one_replica_makes_every_stream_of_the_queue_with_one(
    service: NatsJetStreamMessagingService,
) -> None:
    assert service.settings.replicas == 1
    name = queue_name()
    await service.create_queue(name)
    names = service.names(name)
    for stream in (names.stream, names.ledger):
        info = await service.link.api(f"STREAM.INFO.{stream}")
        assert info["config"]["num_replicas"] == 1
    msg_id = await service.send_message(name, b"x")
    [got] = await service.receive_messages(name, 1, 5.0)
    assert got.msg_id == msg_id


async def test_three_replicas_on_a_server_without_a_cluster_fail_create_queue_clearly(
    service: NatsJetStreamMessagingService, three: NatsJetStreamMessagingService
) -> None:
    name = queue_name()
    with pytest.raises(QueueError) as info:
        await three.create_queue(name)
    assert info.value.queue == name
    text = str(info.value)
    assert repr(name) in text
    assert "providers.nats-jetstream.replicas = 3" in text
    assert "1 is the limit" in text
    assert await _streams_of(service, name) == []
    assert not await three.queue_exists(name)
    assert name not in await three.list_queues()


async def test_a_refused_create_queue_keeps_a_queue_that_existed(
    service: NatsJetStreamMessagingService, three: NatsJetStreamMessagingService
) -> None:
    name = queue_name()
    await service.create_queue(name)
    msg_id = await service.send_message(name, b"kept")
    with pytest.raises(QueueError, match="replicas"):
        await three.create_queue(name)
    assert len(await _streams_of(service, name)) == 2
    assert await service.stored_ids(name) == [msg_id]


async def _placeable(svc: NatsJetStreamMessagingService, replicas: int) -> None:
    """Wait (bounded) until JetStream places a stream on ``replicas`` nodes: just after a
    cluster starts, its meta group may not know every peer yet and refuses placement
    ("no suitable peers", seen in CI), which is not what the test is about."""
    probe = f"{PREFIX}_probe_{queue_name()}"
    async with asyncio.timeout(30):
        while True:
            try:
                body = {"name": probe, "subjects": [probe], "num_replicas": replicas}
                await svc.link.api(f"STREAM.CREATE.{probe}", body)
            except JsError:
                await asyncio.sleep(0.1)  # a poll interval while the cluster forms
                continue
            await svc.link.api(f"STREAM.DELETE.{probe}")
            return


@pytest.mark.skipif(not nats_available(), reason="nats-server not installed")
async def test_on_a_cluster_every_stream_gets_the_replicas_and_more_than_its_nodes_fail() -> None:
    async with PrivateNatsCluster(3) as cluster:
        settings = NatsJetStreamConfig(url=cluster.url, prefix=PREFIX, replicas=3)
        svc = await connect_nats_jetstream(settings, operation_timeout=10.0)
        try:
            await _placeable(svc, 3)
            name = queue_name()
            await svc.create_queue(name)
            names = svc.names(name)
            for stream in (names.stream, names.ledger):
                info = await svc.link.api(f"STREAM.INFO.{stream}")
                assert info["config"]["num_replicas"] == 3
            consumer = await svc.link.api(f"CONSUMER.INFO.{names.stream}.{CONSUMER}")
            assert len(consumer["cluster"]["replicas"]) == 2  # inherited: a leader + 2

            four = dataclasses.replace(settings, replicas=4)
            wide = await connect_nats_jetstream(four, operation_timeout=10.0)
            try:
                other = queue_name()
                with pytest.raises(QueueError, match="running nodes in the cluster") as info_:
                    await wide.create_queue(other)
                assert info_.value.queue == other
                assert await _streams_of(wide, other) == []
            finally:
                await wide.close()
        finally:
            await svc.close()


async def test_a_store_that_races_a_deletion_is_tried_again(
    service: NatsJetStreamMessagingService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nats-server 2.9.10 can refuse a stream with "error creating store" while it
    removes the account's streams directory; create_queue tries that once more."""
    from mqcontract_nats_jetstream._errors import STORE_NOT_CREATED, JsError

    api = service.link.api
    refused: list[str] = []

    async def racing(what: str, body: dict[str, object] | None = None) -> dict[str, object]:
        if what.startswith("STREAM.CREATE.") and not refused:
            refused.append(what)
            raise JsError(500, STORE_NOT_CREATED, "error creating store for stream")
        return await api(what, body)

    monkeypatch.setattr(service.link, "api", racing)
    name = queue_name()
    await service.create_queue(name)
    assert len(refused) == 1
    assert await service.queue_exists(name)


async def _received(
    svc: NatsJetStreamMessagingService, name: str, count: int
) -> list[QueuedMessage]:
    """``count`` messages, waiting (bounded): on a cluster a message just sent or released
    reaches the consumer's leader a moment later."""
    got: list[QueuedMessage] = []
    async with asyncio.timeout(10):
        while len(got) < count:
            got += await svc.receive_messages(name, count - len(got), 30.0)
            if len(got) < count:
                await asyncio.sleep(0.02)
    return got


@pytest.mark.skipif(not nats_available(), reason="nats-server not installed")
async def test_on_a_cluster_concurrent_settles_of_one_claim_are_decided_once() -> None:
    """The ledger decides each change of state once, on every replica: of many acks and
    nacks of one claim sent at once through several connections, exactly one takes
    effect and the others are told the claim was settled or lapsed. (On a clustered
    nats-server 2.9, a compare-and-set on an expected sequence above 0 is checked by the
    leader alone, before the write is replicated: concurrent writers that read the same
    revision all won, and one message could be acked twice.)"""
    async with PrivateNatsCluster(3) as cluster:
        settings = NatsJetStreamConfig(url=cluster.url, prefix=PREFIX, replicas=3)
        services = [
            await connect_nats_jetstream(settings, operation_timeout=10.0) for _ in range(4)
        ]
        try:
            await _placeable(services[0], 3)
            name = queue_name()
            await services[0].create_queue(name)
            won: list[int] = []
            reasons: list[StaleReason] = []
            for round_ in range(8):
                await services[0].send_message(name, b"%d" % round_)
                (got,) = await _received(services[0], name, 1)
                assert got.claim is not None
                claim = got.claim

                async def settle(i: int, claim: Claim = claim) -> bool:
                    svc = services[i % len(services)]
                    settling = svc.ack_claim if i % 3 else svc.nack_claim
                    try:
                        await settling(name, claim)
                    except StaleClaim as exc:
                        reasons.append(exc.reason)
                        return False
                    return True

                results = await asyncio.gather(*(settle(i) for i in range(12)))
                won.append(sum(results))
                if results.count(True) == 1 and results.index(True) % 3 == 0:
                    # The nack won: the message is back; ack it so the next round starts
                    # empty.
                    (left,) = await _received(services[0], name, 1)
                    await services[0].ack_claim(name, left)
            assert won == [1] * len(won)
            assert set(reasons) <= {StaleReason.SETTLED, StaleReason.LAPSED}
        finally:
            for svc in services:
                await svc.close()

"""Private RabbitMQ and NATS servers, 3-node clusters and network namespaces, for real.

Each test starts its own servers on ports of its own (never the shared ones), is bounded
by :data:`BOUND`, and removes everything through the context managers even when it fails.
They skip where the binaries (or root, for namespaces) are missing. Select them with
``-k private_cluster or -k private_server`` (this module: ``tests/test_private_clusters.py``).
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import aio_pika
import nats
import pytest
from nats.js.api import StreamConfig

from mqcontract_fixtures.private.nats import PrivateNatsCluster, PrivateNatsServer, nats_available
from mqcontract_fixtures.private.netns import NetnsLab, netns_available
from mqcontract_fixtures.private.rabbitmq import (
    PrivateRabbitCluster,
    PrivateRabbitNode,
    rabbitmq_available,
)

pytestmark = pytest.mark.cluster

#: Bound on each test, seconds (a RabbitMQ node takes about 5 s to start, alone).
BOUND = 240.0

needs_rabbitmq = pytest.mark.skipif(not rabbitmq_available(), reason="RabbitMQ not installed")
needs_nats = pytest.mark.skipif(not nats_available(), reason="nats-server not installed")
needs_netns = pytest.mark.skipif(not netns_available(), reason="needs root, ip and nft")


async def _publish_confirmed(url: str, queue: str, body: bytes) -> None:
    connection = await aio_pika.connect(url, timeout=10)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue, durable=True)
        message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await channel.default_exchange.publish(message, routing_key=queue, timeout=10)
    finally:
        await connection.close()


async def _get(url: str, queue: str) -> bytes | str:
    """The body of the first message on ``queue``, or what was there instead (passive
    declare: a lost queue is not mistaken for a lost message)."""
    connection = await aio_pika.connect(url, timeout=10)
    try:
        channel = await connection.channel()
        try:
            declared = await channel.declare_queue(queue, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return f"no queue {queue}"
        message = await declared.get(fail=False, timeout=10)
        if message is None:
            return f"queue {queue} is there, without its message"
        await message.ack()
        return bytes(message.body)
    finally:
        await connection.close()


def _logs(root: Path) -> str:
    """The tail of each log of a private node (read before its directory is removed)."""
    tails = []
    for log in sorted((root / "log").glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()[-40:]
        tails.append(f"--- {log.name}\n" + "\n".join(lines))
    return "\n".join(tails)


async def _add_stream(urls: list[str], config: StreamConfig) -> None:
    """Create a stream; early JetStream API calls on a new cluster may go unanswered."""
    nc = await nats.connect(servers=urls, connect_timeout=2)
    try:
        js = nc.jetstream(timeout=1.0)
        for _ in range(60):
            try:
                await js.add_stream(config)
                return
            except nats.errors.Error:
                await asyncio.sleep(0.2)
        raise AssertionError(f"stream {config.name} was never created")
    finally:
        await nc.close()


async def _stream_messages(urls: list[str], stream: str) -> int:
    nc = await nats.connect(servers=urls, connect_timeout=2)
    try:
        info: Any = await nc.jetstream(timeout=5.0).stream_info(stream)
        return int(info.state.messages)
    finally:
        await nc.close()


@needs_rabbitmq
async def test_a_private_rabbitmq_node_keeps_a_confirmed_message_through_a_stop_and_a_crash() -> (
    None
):
    # A classic durable queue: on RabbitMQ 3.10.8 a single node's quorum queue answered no
    # basic.get for over 60 s after a SIGKILL and restart (its declare did). The queue
    # goes through a clean stop before the crash, as each DUR rule's does: one declared a
    # moment before a SIGKILL can be lost with what it confirmed (4 crashes of 233 on a
    # loaded machine; CI once failed here so).
    async with asyncio.timeout(BOUND):
        async with PrivateRabbitNode() as node:
            assert node.amqp_port != 5672
            assert node.management_port != 15672
            await _publish_confirmed(node.amqp_url, "kept", b"hello")
            await node.restart(crash=False)
            await _publish_confirmed(node.amqp_url, "kept", b"again")
            first_pid = node.pid
            await node.restart(crash=True)
            assert node.pid != first_pid
            got = [await _get(node.amqp_url, "kept") for _ in range(2)]
            assert got == [b"hello", b"again"], f"{got!r} after {node.timings}\n{_logs(node.root)}"
            assert set(node.timings) == {"start", "kill", "stop"}
            root = node.root
        assert not root.exists()


@needs_nats
async def test_a_private_nats_server_keeps_its_stream_through_a_crash_and_a_stop() -> None:
    async with asyncio.timeout(BOUND):
        async with PrivateNatsServer() as server:
            assert server.port != 4222
            await _add_stream([server.url], StreamConfig(name="KEPT", subjects=["kept.>"]))
            nc = await nats.connect(server.url)
            try:
                await nc.jetstream(timeout=5.0).publish("kept.one", b"hello")
            finally:
                await nc.close()
            await server.restart(crash=True)
            await server.restart(crash=False)
            assert await _stream_messages([server.url], "KEPT") == 1
            root = server.root
        assert not root.exists()


@needs_rabbitmq
async def test_a_private_rabbitmq_cluster_elects_a_new_quorum_leader_and_takes_its_node_back() -> (
    None
):
    async with asyncio.timeout(BOUND):
        async with PrivateRabbitCluster(3) as cluster:
            assert await cluster.members() == sorted(n.node for n in cluster.nodes)
            await cluster.declare_quorum_queue("qq")
            await cluster.wait_leader("qq")
            assert await cluster.online_members_of("qq") == [0, 1, 2]
            leader = await cluster.leader_of("qq")
            await cluster.kill_node(leader)
            await cluster.wait_leader("qq", not_on=leader, timeout=30)
            await cluster.start_node(leader)
            await cluster.wait_members(3)
            assert len(await cluster.members()) == 3


@needs_nats
async def test_a_private_nats_cluster_elects_a_new_stream_leader_and_takes_its_node_back() -> None:
    async with asyncio.timeout(BOUND):
        async with PrivateNatsCluster(3) as cluster:
            assert await cluster.meta_leader() in (0, 1, 2)
            config = StreamConfig(name="R3", subjects=["r3.>"], num_replicas=3)
            await _add_stream(cluster.urls, config)
            await cluster.wait_stream_leader("R3")
            leader = await cluster.stream_leader("R3")
            await cluster.kill_node(leader)
            await cluster.wait_stream_leader("R3", not_on=leader, timeout=30)
            await cluster.start_node(leader)
            await _wait_current(cluster, "R3")


async def _wait_current(cluster: PrivateNatsCluster, stream: str) -> None:
    while True:
        replicas = await cluster.stream_replicas(stream)
        if len(replicas) == cluster.size - 1 and all(replicas.values()):
            return
        await asyncio.sleep(0.1)


def _namespaces() -> str:
    return subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True
    ).stdout


@needs_nats
@needs_netns
async def test_a_partitioned_nats_leader_is_replaced_and_the_namespaces_go_on_close() -> None:
    async with asyncio.timeout(BOUND):
        async with NetnsLab(3) as lab:
            cluster = PrivateNatsCluster(
                3,
                hosts=[lab.address(i) for i in range(3)],
                prefixes=[lab.prefix(i) for i in range(3)],
            )
            async with cluster:
                assert all(name in _namespaces() for name in lab.namespaces)
                config = StreamConfig(name="CUT", subjects=["cut.>"], num_replicas=3)
                await _add_stream(cluster.urls, config)
                await cluster.wait_stream_leader("CUT")
                leader = await cluster.stream_leader("CUT")
                await lab.partition(leader)
                await cluster.wait_stream_leader("CUT", not_on=leader, timeout=60)
                await lab.heal()
                await _wait_current(cluster, "CUT")
    assert not any(name in _namespaces() for name in lab.namespaces)


@needs_rabbitmq
@needs_netns
async def test_rabbitmq_nodes_in_namespaces_form_one_cluster() -> None:
    async with asyncio.timeout(BOUND):
        async with NetnsLab(3) as lab:
            for i in range(3):
                await lab.start_epmd(i)
            placement = [(lab.address(i), lab.prefix(i)) for i in range(3)]
            async with PrivateRabbitCluster(3, placement=placement) as cluster:
                members = await cluster.members()
                assert members == sorted(
                    f"{n.name}@{lab.address(i)}" for i, n in enumerate(cluster.nodes)
                )
    assert not any(name in _namespaces() for name in lab.namespaces)

"""``mqcontract stress --cluster 3`` with the leader-kill and partition faults.

The first tests drive the cluster fault injector against a fake cluster (no servers);
the others run a short stress (a few hundred messages) on a private 3-node RabbitMQ or
NATS cluster per fault and hold the account to the promise stated for that fault. They
skip where the binaries (or root, for namespaces) are missing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from typing import Any

import pytest

from mqcontract.config import MessagingConfig
from mqcontract.errors import BackendUnavailable, ConfigurationError
from mqcontract_conformance.stress import StressSettings, run_stress
from mqcontract_conformance.stress._cluster_faults import ClusterFaultInjector
from mqcontract_conformance.stress._promises import promise_for
from mqcontract_conformance.stress.clusters import ClusterBackend, load_cluster_opener
from mqcontract_fixtures.private.nats import nats_available
from mqcontract_fixtures.private.netns import netns_available
from mqcontract_fixtures.private.rabbitmq import rabbitmq_available

OPENER = "mqcontract_fixtures.private.stress_clusters:open_cluster"
#: Bound on each live run, seconds (a RabbitMQ cluster takes ~15 s to start).
BOUND = 300.0


class FakeCluster(ClusterBackend):
    """Three nodes in a dict: who leads, who is down."""

    def __init__(self, leader: int, clients: str = "node0") -> None:
        self.provider = "fake"
        self.size = 3
        self.clients = clients
        self.node_names = ["a", "b", "c"]
        self.addresses = ["-", "-", "-"]
        self.timings = {}
        self.current = leader
        self.down: set[int] = set()
        self.moves = 0

    def configure(self, config: MessagingConfig) -> MessagingConfig:
        return config

    async def leader(self, queue: str) -> int:
        return self.current

    async def move_leader(self, queue: str, away_from: int) -> None:
        self.moves += 1
        up = [n for n in range(self.size) if n != away_from and n not in self.down]
        self.current = up[0] if up else (away_from + 1) % self.size

    async def kill(self, i: int) -> None:
        self.down.add(i)
        self.current = next(n for n in range(self.size) if n not in self.down)

    async def start_node(self, i: int) -> float:
        self.down.discard(i)
        return 0.0

    async def whole(self, queue: str) -> bool:
        return not self.down

    async def close(self) -> None:
        pass


def _injector(cluster: FakeCluster, duration: float = 0.01) -> ClusterFaultInjector:
    return ClusterFaultInjector(
        "leader-kill", cluster=cluster, queue="q", interval=0.01, duration=duration, epoch=lambda: 0
    )


async def test_the_leader_is_moved_off_the_clients_node_before_it_is_killed() -> None:
    cluster = FakeCluster(leader=0)
    event = await _injector(cluster).inject_once()
    assert cluster.moves == 1
    assert event["node"] == 1
    assert event["leader_before"] == 0
    assert event["moved_leader_off_clients_node"]
    assert event["new_leader"] != 1
    assert not cluster.down
    assert "whole_seconds" in event


async def test_with_clients_on_every_node_the_leader_on_node_0_is_killed_where_it_is() -> None:
    cluster = FakeCluster(leader=0, clients="all")
    event = await _injector(cluster).inject_once()
    assert cluster.moves == 0
    assert event["node"] == 0
    assert "moved_leader_off_clients_node" not in event
    assert event["new_leader"] != 0
    assert not cluster.down
    assert cluster.describe()["clients_connect_to"] == "all"
    assert FakeCluster(leader=0).describe()["clients_connect_to"] == 0


async def test_a_cancelled_injector_brings_the_node_it_killed_back() -> None:
    cluster = FakeCluster(leader=2)
    injector = _injector(cluster, duration=60)
    task = asyncio.create_task(injector.run())
    async with asyncio.timeout(5):
        while not injector.active:  # noqa: ASYNC110 (the fake has no event to wait on)
            await asyncio.sleep(0.01)
    assert cluster.down == {2}
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not cluster.down
    summary = injector.summary()
    assert summary["completed"] == 1
    assert summary["timeline"][0]["node"] == 2


class FlakyRestartCluster(FakeCluster):
    """Its first two restarts fail: the killed node stays down until a later try."""

    def __init__(self, leader: int) -> None:
        super().__init__(leader)
        self.most_down = 0
        self.failures_left = 2

    async def kill(self, i: int) -> None:
        await super().kill(i)
        self.most_down = max(self.most_down, len(self.down))

    async def start_node(self, i: int) -> float:
        if self.failures_left:
            self.failures_left -= 1
            raise RuntimeError("the node did not come back")
        return await super().start_node(i)


async def test_no_fault_is_injected_while_the_last_one_is_not_over() -> None:
    cluster = FlakyRestartCluster(leader=1)
    injector = _injector(cluster)
    task = asyncio.create_task(injector.run())
    async with asyncio.timeout(5):
        while injector.completed < 3:  # noqa: ASYNC110 (the fake has no event to wait on)
            await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert cluster.most_down == 1
    assert not cluster.down


class LateListingCluster(FakeCluster):
    """Its leader lookup fails at first (a queue the management API does not list yet),
    and so would ``whole``, for longer than the run."""

    def __init__(self, leader: int) -> None:
        super().__init__(leader)
        self.lookups = 0

    async def leader(self, queue: str) -> int:
        self.lookups += 1
        if self.lookups == 1:
            raise BackendUnavailable("fake", queue, "HTTP 404 Not Found")
        return await super().leader(queue)

    async def whole(self, queue: str) -> bool:
        if self.lookups <= 1:
            raise BackendUnavailable("fake", queue, "HTTP 404 Not Found")
        return await super().whole(queue)


async def test_a_fault_that_failed_before_touching_a_node_does_not_hold_up_the_next() -> None:
    cluster = LateListingCluster(leader=1)
    injector = _injector(cluster)
    task = asyncio.create_task(injector.run())
    try:
        async with asyncio.timeout(5):  # far below the wait for a cluster to be whole
            while injector.injected < 1:  # noqa: ASYNC110 (the fake has no event to wait on)
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    first = injector.timeline[0]
    assert "404" in first["error"]
    assert "started_at" not in first
    assert injector.timeline[1]["node"] == 1


def test_a_promise_names_the_counts_it_bounds_and_whether_each_held() -> None:
    promise = promise_for("rabbitmq-quorum", "leader-kill")
    assert "majority" in promise.text
    assert "node 0 only, which is never faulted" in promise.text
    everywhere = promise_for("nats-jetstream", "partition", "all").text
    assert "every node" in everywhere
    assert "fail over" in everywhere
    assert "never faulted" not in everywhere
    clean = dict.fromkeys(promise.bounds, 0) | {"finished_within_bound": True}
    assert promise.check(clean)["held"] is True
    broken = promise.check(clean | {"lost": 2})
    assert broken["held"] is False
    assert broken["checks"]["lost"]["actual"] == 2


def test_the_markdown_account_says_where_the_clients_connect() -> None:
    from mqcontract_conformance.stress._cluster_markdown import render_cluster_account

    def where(connect_to: object) -> str:
        return render_cluster_account({"cluster": {"clients_connect_to": connect_to}})

    assert "Clients connect to node 0 only." in where(0)
    assert "Clients are given every node's URL and fail over" in where("all")
    assert "node all" not in where("all")


@pytest.mark.parametrize(
    "change",
    [
        {"fault": "leader-kill"},  # without a cluster
        {"fault": "partition", "provider": "memory", "cluster": 3},
        {"cluster": 2, "provider": "nats-jetstream"},
        {"cluster": 3, "provider": "rabbitmq-quorum", "fault": "restart"},
        {"clients": "all"},  # without a cluster
        {"clients": "some", "provider": "nats-jetstream", "cluster": 3},
    ],
)
async def test_cluster_settings_that_cannot_work_are_configuration_errors(
    change: dict[str, Any],
) -> None:
    settings = dataclasses.replace(StressSettings(provider="memory"), **change)
    with pytest.raises(ConfigurationError):
        await run_stress(settings, out=None)


def test_an_unknown_cluster_opener_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="cluster"):
        load_cluster_opener("no-such-provider")
    assert callable(load_cluster_opener("rabbitmq-quorum", OPENER))


def test_clients_without_a_cluster_are_refused_on_the_command_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mqcontract_conformance.cli import main

    assert main(["stress", "--provider", "memory", "--clients", "node0"]) == 2
    assert "stress.clients" in capsys.readouterr().err


@pytest.mark.parametrize("clients", ["node0", "all"])
def test_the_providers_are_given_every_node_only_with_clients_all(clients: str) -> None:
    from mqcontract_fixtures.private.stress_clusters import NatsCluster, RabbitCluster

    config = MessagingConfig()
    rabbit = RabbitCluster(3, netns=False, vhost="v", clients=clients)
    nats = NatsCluster(3, netns=False, clients=clients)
    try:
        amqp = [n.amqp_url for n in rabbit.cluster.nodes]
        servers = [str(s.url) for s in nats.cluster.servers]
        wanted = 3 if clients == "all" else 1
        assert rabbit.configure(config).rabbitmq.urls == tuple(amqp[:wanted])
        assert rabbit.environment()["RABBITMQ_URL"] == ",".join(amqp[:wanted])
        management = rabbit.cluster.nodes[0].management_url
        assert rabbit.configure(config).rabbitmq.management_url == management
        assert rabbit.environment()["RABBITMQ_MANAGEMENT_URL"] == management
        nats_table = nats.configure(config).providers["nats-jetstream"]
        assert nats_table["url"] == nats.environment()["NATS_URL"] == ",".join(servers[:wanted])
    finally:
        asyncio.run(nats.cluster.close())  # never started: removes its directory


class OneUrlHarness:
    """Keeps one broker URL, like the RabbitMQ harness: it puts its virtual host in it."""

    def __init__(self, config: MessagingConfig) -> None:
        self.config = config
        self.seen: list[str] = []

    async def setup(self) -> None:
        url = os.environ["RABBITMQ_URL"]
        self.seen = [url, self.config.rabbitmq.url]
        rabbit = dataclasses.replace(self.config.rabbitmq, url=url.rstrip("/") + "/run_v")
        self.config = dataclasses.replace(self.config, rabbitmq=rabbit)


async def test_the_rabbitmq_harness_is_set_up_on_node_0_then_given_every_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mqcontract_fixtures.private.stress_clusters import RabbitCluster

    rabbit = RabbitCluster(3, netns=False, vhost="v", clients="all")
    harness = OneUrlHarness(rabbit.configure(MessagingConfig()))
    first = rabbit.cluster.nodes[0].amqp_url
    every = rabbit.environment()["RABBITMQ_URL"]
    monkeypatch.setenv("RABBITMQ_URL", every)
    await rabbit.set_up(harness)  # type: ignore[arg-type]
    assert os.environ["RABBITMQ_URL"] == every
    assert harness.seen == [first, first]
    urls = harness.config.rabbitmq.urls
    assert urls == tuple(n.amqp_url + "run_v" for n in rabbit.cluster.nodes)
    assert rabbit.vhost == "run_v"  # the one the harness chose, not the one expected


async def test_queues_are_declared_in_the_vhost_a_node0_harness_chose() -> None:
    """A harness may share the URL's vhost instead of creating the expected one."""
    from mqcontract_fixtures.private.stress_clusters import RabbitCluster

    rabbit = RabbitCluster(3, netns=False, vhost="expected", clients="node0")
    harness = OneUrlHarness(rabbit.configure(MessagingConfig()))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RABBITMQ_URL", rabbit.environment()["RABBITMQ_URL"])
        await rabbit.set_up(harness)  # type: ignore[arg-type]
    assert rabbit.vhost == "run_v"


def _short(provider: str, fault: str, duration: float, clients: str) -> StressSettings:
    return StressSettings(
        provider=provider,
        messages=300,
        producers=2,
        consumers=2,
        workers=3,
        cluster=3,
        fault=fault,
        fault_interval=1.0,
        fault_duration=duration,
        max_seconds=240,
        seed=11,
        cluster_factory=OPENER,
        clients=clients,
    )


def _namespaces() -> str:
    return subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True
    ).stdout


LIVE = [
    pytest.param(
        "rabbitmq-quorum",
        "leader-kill",
        3.0,
        "node0",
        marks=pytest.mark.skipif(not rabbitmq_available(), reason="RabbitMQ not installed"),
    ),
    pytest.param(
        "rabbitmq-quorum",
        "leader-kill",
        3.0,
        "all",
        marks=pytest.mark.skipif(not rabbitmq_available(), reason="RabbitMQ not installed"),
        id="rabbitmq-quorum-leader-kill-clients-all",
    ),
    pytest.param(
        "rabbitmq-quorum",
        "partition",
        15.0,
        "node0",
        marks=pytest.mark.skipif(
            not (rabbitmq_available() and netns_available()), reason="RabbitMQ, root, nft"
        ),
    ),
    pytest.param(
        "nats-jetstream",
        "leader-kill",
        3.0,
        "node0",
        marks=pytest.mark.skipif(not nats_available(), reason="nats-server not installed"),
    ),
    pytest.param(
        "nats-jetstream",
        "partition",
        8.0,
        "node0",
        marks=pytest.mark.skipif(
            not (nats_available() and netns_available()), reason="nats-server, root, nft"
        ),
    ),
]


@pytest.mark.cluster
@pytest.mark.parametrize(("provider", "fault", "duration", "clients"), LIVE)
async def test_a_short_stress_on_a_private_cluster_keeps_the_promise_under_the_fault(
    provider: str, fault: str, duration: float, clients: str
) -> None:
    async with asyncio.timeout(BOUND):
        account = await run_stress(_short(provider, fault, duration, clients), out=None)
    data = account.to_dict()
    # Nothing confirmed may be lost under either fault. Whether every accepted ack survives
    # the fault is what the run measures (reports/stress/cluster-*.md: RabbitMQ's AMQP acks
    # are unconfirmed and have been seen lost with a killed leader), so it is not asserted.
    assert account.lost == account.unfinished == account.unexpected == 0, data
    assert account.sent == account.processed == 300
    checks = data["promise"]["checks"]
    assert set(checks) >= {"lost", "duplicated", "redelivered_after_ack"}
    assert data["promise"]["held"] == all(c["held"] for c in checks.values())
    # The first fault that touched a node (an attempt before it may have failed to find
    # the leader: RabbitMQ's management API lists a new queue only after its first
    # statistics, and the injector then tries again after the interval).
    event = next(e for e in data["faults"]["timeline"] if "started_at" in e)
    assert event["fault"] == fault
    # Clients on every node: the provider declared the queue through node 0, which leads
    # it and is killed first; the clients on it fail over.
    assert event["node"] == 0 if clients == "all" else event["node"] != 0
    assert event["ended_at"] >= event["started_at"]
    assert "whole_seconds" in event, event  # the whole event: restore_error, whole_error
    assert data["cluster"]["size"] == 3
    assert data["cluster"]["clients_connect_to"] == (0 if clients == "node0" else "all")
    left = _namespaces()
    assert not [ns for ns in data["cluster"]["network_namespaces"] if ns in left]


def test_a_rejoined_quorum_member_counts_only_once_its_log_caught_up() -> None:
    from mqcontract_fixtures.private.stress_clusters import caught_up, committed

    def row(state: str, log: int, commit: int) -> dict[str, object]:
        return {"Raft State": state, "Log Index": log, "Commit Index": commit}

    rejoining = [row("leader", 120, 118), row("follower", 119, 118), row("follower", 40, 40)]
    target = committed(rejoining)
    assert target == 118
    assert not caught_up(rejoining, target, 3)
    later = [row("leader", 130, 129), row("follower", 129, 128), row("follower", 118, 117)]
    assert caught_up(later, target, 3)
    assert not caught_up([*later[:2], row("recovering", 130, 0)], target, 3)
    assert committed([row("follower", 5, 5)]) == 0  # no leader: nothing to catch up to


@pytest.mark.skipif(not nats_available(), reason="nats-server not installed")
def test_an_account_names_the_server_release_it_holds_for() -> None:
    """The binary in use (``MQCONTRACT_NATS_SERVER`` picks another) says its version,
    and the cluster's account carries it."""
    import mqcontract_fixtures.private.nats as nats_module
    from mqcontract_fixtures.private.stress_clusters import NatsCluster

    version = asyncio.run(nats_module.nats_server_version())
    assert version.startswith("nats-server: v"), version
    cluster = NatsCluster(3, netns=False)
    try:
        cluster.server = version
        assert cluster.describe()["server"] == version
    finally:
        asyncio.run(cluster.cluster.close())  # never started: removes its directory
    script = "import mqcontract_fixtures.private.nats as n; print(n.NATS_SERVER)"
    env = {**os.environ, "MQCONTRACT_NATS_SERVER": "/opt/other/nats-server"}
    chosen = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert chosen.stdout.strip() == "/opt/other/nats-server"

"""The private clusters a stress run can fault: what the run needs of one, and where it
finds one.

A :class:`ClusterBackend` is a started cluster of ``size`` nodes running one provider's
backend; the run points its providers at the clients' nodes and the cluster fault
injector (:mod:`._cluster_faults`) kills, restarts, partitions and heals the others. The
implementations live beside the other private servers, in ``mqcontract_fixtures``; the run
finds the opener for a provider in the ``mqcontract.clusters`` entry point group, or as a
``module:attribute`` spec (``--cluster-factory``, ``MQCONTRACT_CLUSTER_FACTORY``), the way
harnesses are found.

**The clients' nodes** (``--clients``). With ``node0`` (the default) every provider the
run opens connects to node 0 only, and no fault ever hits node 0: the faults test the
cluster's failover, not the client's. When the queue's leader is on node 0, the injector
asks the cluster to move the leadership off it first and says so in the timeline. With
``all`` every provider is given every node's URL (node 0 first) and the injector faults
whichever node leads the queue, node 0 included: the clients on a faulted node have to
fail over to another one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator, Mapping
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from mqcontract.config import MessagingConfig
from mqcontract.errors import BackendUnavailable, ConfigurationError
from mqcontract.registry import load_object
from mqcontract.service import MessagingService

if TYPE_CHECKING:
    from mqcontract.testing import Harness

__all__ = [
    "CLIENTS",
    "CLIENT_NODE",
    "CLUSTER_GROUP",
    "CLUSTER_PROVIDERS",
    "ClusterBackend",
    "ClusterOpener",
    "cluster_environment",
    "load_cluster_opener",
]

#: The node every client connects to with ``--clients node0``; then never faulted (see
#: the module docstring).
CLIENT_NODE = 0
#: What ``--clients`` takes: node 0 only, or every node.
CLIENTS = ("node0", "all")
#: Providers a stress run can put on a private cluster.
CLUSTER_PROVIDERS = ("rabbitmq-quorum", "nats-jetstream")
#: Entry point group: provider name -> :data:`ClusterOpener`.
CLUSTER_GROUP = "mqcontract.clusters"
#: Bound on the cluster becoming whole again after a fault (node rejoined, replicas
#: current).
RECOVERY_TIMEOUT = 120.0


class ClusterBackend(ABC):
    """A started private cluster, and what the fault injector does to it."""

    provider: str
    size: int
    #: Node names in index order, and where they listen.
    node_names: list[str]
    addresses: list[str]
    netns: Any = None  #: the NetnsLab when nodes live in namespaces
    #: ``node0``: clients connect to node 0 only, never faulted; ``all``: to every node.
    clients: str = "node0"
    #: Measured seconds: cluster start, per node restart, ...
    timings: dict[str, list[float]]
    #: The server software and its version (an account holds for that release only).
    server: str = ""

    def describe(self) -> dict[str, Any]:
        """What the account says about the cluster."""
        return {
            "provider": self.provider,
            "server": self.server,
            "size": self.size,
            "nodes": [
                {"index": i, "name": n, "address": a}
                for i, (n, a) in enumerate(zip(self.node_names, self.addresses, strict=True))
            ],
            "clients_connect_to": CLIENT_NODE if self.spared is not None else "all",
            "network_namespaces": (
                [*self.netns.namespaces, self.netns.switch] if self.netns is not None else []
            ),
            "timings": self.timings,
        }

    @property
    def client_nodes(self) -> list[int]:
        """The nodes whose URLs the providers are given, in the order to try them."""
        return list(range(self.size)) if self.clients == "all" else [CLIENT_NODE]

    @property
    def spared(self) -> int | None:
        """The node no fault may hit: the clients' only node (None: they have every node)."""
        return None if self.clients == "all" else CLIENT_NODE

    def note(self, what: str, seconds: float) -> None:
        """Keep a measured figure."""
        self.timings.setdefault(what, []).append(round(seconds, 3))

    @abstractmethod
    def configure(self, config: MessagingConfig) -> MessagingConfig:
        """``config`` pointing the provider at the clients' nodes (:attr:`client_nodes`)."""

    def environment(self) -> dict[str, str]:
        """Environment variables the run sets (a provider reading its URL from the
        environment first would otherwise miss :meth:`configure`)."""
        return {}

    async def set_up(self, harness: Harness) -> None:
        """Set ``harness`` up for the run (a harness that keeps one broker URL is given
        the clients' other nodes afterwards)."""
        await harness.setup()

    async def before_create(self, queue: str) -> None:
        """Before the provider creates ``queue`` (RabbitMQ: declare it from another node,
        so its leader does not start on the spared node)."""

    async def prepare(self, service: MessagingService, queue: str) -> None:
        """After the queue is created (NATS: scale its streams to every node)."""

    @abstractmethod
    async def leader(self, queue: str) -> int:
        """The node leading ``queue`` (``BackendUnavailable`` while none does)."""

    async def leaders(self, queue: str) -> dict[str, int]:
        """Every Raft group behind ``queue`` and the node leading it (for the timeline)."""
        return {"queue": await self.leader(queue)}

    @abstractmethod
    async def move_leader(self, queue: str, away_from: int) -> None:
        """Ask for ``queue``'s leadership to move off node ``away_from``."""

    @abstractmethod
    async def kill(self, i: int) -> None:
        """SIGKILL node ``i``."""

    @abstractmethod
    async def start_node(self, i: int) -> float:
        """Start node ``i`` again on its data; seconds until it answers."""

    @abstractmethod
    async def whole(self, queue: str) -> bool:
        """Every node is a running member and every replica of ``queue`` is in sync."""

    async def partition(self, i: int) -> None:
        """Cut node ``i`` off from its peers and every client."""
        if self.netns is None:
            raise ConfigurationError("stress.fault", "partition", "needs network namespaces")
        await self.netns.partition(i)

    async def heal(self, i: int) -> None:
        """Undo :meth:`partition`."""
        if self.netns is not None:
            await self.netns.heal(i)

    async def wait_leader(self, queue: str, *, not_on: int, timeout: float) -> tuple[int, float]:
        """Wait until a node other than ``not_on`` leads ``queue``: (leader, seconds)."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            with contextlib.suppress(BackendUnavailable, TimeoutError):
                async with asyncio.timeout(5.0):
                    leader = await self.leader(queue)
                if leader != not_on:
                    return leader, time.monotonic() - started
            if time.monotonic() >= deadline:
                raise BackendUnavailable(self.provider, queue, f"no new leader in {timeout} s")
            await asyncio.sleep(0.05)

    async def wait_whole(self, queue: str, timeout: float = RECOVERY_TIMEOUT) -> float:
        """Wait until :meth:`whole`; the seconds it took."""
        started = time.monotonic()
        while True:
            with contextlib.suppress(BackendUnavailable, TimeoutError):
                async with asyncio.timeout(5.0):
                    if await self.whole(queue):
                        return time.monotonic() - started
            if time.monotonic() - started >= timeout:
                raise BackendUnavailable(self.provider, queue, f"not whole after {timeout} s")
            await asyncio.sleep(0.1)

    @abstractmethod
    async def close(self) -> None:
        """Stop every node, remove every directory and namespace."""


#: ``opener(provider, size, netns=..., vhost=..., clients=...)``: a started cluster
#: (removed again by the opener itself when starting fails). ``vhost`` is the RabbitMQ
#: virtual host the run will use; ``netns`` asks for every node in a network namespace of
#: its own; ``clients`` is one of :data:`CLIENTS`.
ClusterOpener = Callable[..., Awaitable[ClusterBackend]]


def load_cluster_opener(provider: str, spec: str | None = None) -> ClusterOpener:
    """The opener for ``provider``: ``spec`` (or ``MQCONTRACT_CLUSTER_FACTORY``) as
    ``module:attribute``, else the ``mqcontract.clusters`` entry point of that name."""
    spec = spec or os.environ.get("MQCONTRACT_CLUSTER_FACTORY") or None
    target: object = None
    if spec:
        target = load_object(spec)
    else:
        for ep in entry_points(group=CLUSTER_GROUP):
            if ep.name == provider:
                try:
                    target = ep.load()
                except ImportError as exc:
                    raise ConfigurationError(
                        "stress.cluster", provider, f"its cluster cannot be imported ({exc})"
                    ) from exc
                break
    if target is None:
        raise ConfigurationError(
            "stress.cluster",
            provider,
            f"no {CLUSTER_GROUP} entry point; name one with --cluster-factory module:attribute",
        )
    if not callable(target):
        raise ConfigurationError("stress.cluster", spec or provider, "is not callable")
    opener: ClusterOpener = target
    return opener


@contextlib.contextmanager
def cluster_environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set a cluster's environment variables (:meth:`ClusterBackend.environment`) for a
    run, restored afterwards: a provider reads its URL from the environment before its
    configuration file, and xdist workers started meanwhile inherit them."""
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

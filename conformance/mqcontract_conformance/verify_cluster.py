"""``mqcontract verify --cluster N``: the suite against a private N-node cluster.

The cluster is the one ``mqcontract stress --cluster`` starts (the ``mqcontract.clusters``
entry point, or ``--cluster-factory``), with no fault: what is checked is the provider on
a replicated backend, where a leader and its followers can disagree for a moment. A
compare-and-set that one server enforces may be checked by a cluster's leader alone
(CLAIM-9 catches that); a stream or queue may refuse to be placed until every node is
known. Every provider service the run opens reaches the cluster through the environment
the cluster names (``RABBITMQ_URL``, ``NATS_URL``, the replicas), so xdist workers, which
start after it is set, see it too. The cluster is stopped and its directories removed
when the run ends, however it ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from mqcontract.errors import ConfigurationError

if TYPE_CHECKING:
    from mqcontract_conformance.stress.clusters import ClusterBackend

__all__ = ["on_cluster"]


def on_cluster(providers: list[str], size: int, factory: str | None, run: Callable[[], int]) -> int:
    """Start a private ``size``-node cluster for the one provider named, call ``run`` with
    the environment pointing at it, stop the cluster; ``run``'s exit status."""
    from mqcontract_conformance.stress import clusters

    if len(providers) != 1 or providers[0] not in clusters.CLUSTER_PROVIDERS:
        raise ConfigurationError(
            "verify.cluster",
            ",".join(providers) or "memory",
            f"--cluster runs one provider of {', '.join(clusters.CLUSTER_PROVIDERS)}",
        )
    if size < 1:
        raise ConfigurationError("verify.cluster", size, "at least 1 node")
    provider = providers[0]
    opener = clusters.load_cluster_opener(provider, factory)

    # Separate event loops: the cases run their own, and the nodes are plain children.
    async def start() -> ClusterBackend:
        return await opener(provider, size, netns=False)

    # One loop for the cluster's whole life (its nodes are asyncio subprocesses, which
    # belong to the loop that started them), idle while the cases run their own.
    loop = asyncio.new_event_loop()
    try:
        backend = loop.run_until_complete(start())
        try:
            addresses = ", ".join(backend.addresses)
            print(f"[verify {provider}] private cluster of {size} up: {addresses}")
            with clusters.cluster_environment(backend.environment()):
                return run()
        finally:
            loop.run_until_complete(backend.close())
    finally:
        loop.close()

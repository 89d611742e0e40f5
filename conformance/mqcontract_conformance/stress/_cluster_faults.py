"""Cluster faults during a stress run, and the timeline of what was done when.

=================  ====================================================================
``leader-kill``    SIGKILL the node leading the run's queue, start it again after
                   ``fault_duration`` seconds on its data, wait until the cluster is
                   whole (the node rejoined, every replica in sync)
``partition``      cut the leader's network namespace off (nftables drops everything
                   through its interface: peers and clients), heal after
                   ``fault_duration`` seconds, wait until the cluster is whole
=================  ====================================================================

One fault at a time, ``fault_interval`` seconds after the cluster was whole again. With
``--clients node0`` the clients' node is never faulted (:mod:`.clusters`): a leader found
there is moved off it first, and the timeline says so. With ``--clients all`` the leader
is faulted wherever it is, node 0 included, and the clients on it fail over. Each event
records its times in seconds since the run began, the node, whether it led the queue,
the leader elected meanwhile and how long the election and the recovery took. A
cancelled injector still restores the node it faulted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from mqcontract_conformance.stress.clusters import ClusterBackend

__all__ = ["CLUSTER_FAULTS", "ClusterFaultInjector"]

log = logging.getLogger(__name__)

CLUSTER_FAULTS = ("leader-kill", "partition")
#: Bound on electing a new leader while the old one is down or cut off (NATS: a Raft
#: election timeout is 4-9 s; RabbitMQ partitions: up to 1.25 x net_ticktime).
ELECTION_TIMEOUT = 60.0
#: Bound on restoring the faulted node (restart, or heal) itself.
RESTORE_TIMEOUT = 120.0
#: Bound on a leadership move taking effect.
MOVE_TIMEOUT = 15.0


def _short(exc: BaseException, limit: int = 300) -> str:
    """An error for the timeline (a broker's crash report can run to pages)."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ClusterFaultInjector:
    """Runs ``kind`` against ``cluster`` until cancelled; keeps the timeline."""

    def __init__(
        self,
        kind: str,
        *,
        cluster: ClusterBackend,
        queue: str,
        interval: float,
        duration: float,
        epoch: Callable[[], float],
    ) -> None:
        if kind not in CLUSTER_FAULTS:
            raise ValueError(f"unknown cluster fault {kind!r}")
        self.kind = kind
        self.cluster = cluster
        self.queue = queue
        self.interval = interval
        self.duration = duration
        self.epoch = epoch
        self.injected = 0
        self.completed = 0
        self.errors: list[str] = []
        self.timeline: list[dict[str, Any]] = []
        self._faulted: int | None = None

    @property
    def active(self) -> bool:
        """A node is faulted or not yet back in sync."""
        return self._faulted is not None

    def _at(self) -> float:
        return round(time.monotonic() - self.epoch(), 3)

    async def _target(self, event: dict[str, Any]) -> int:
        """The queue's leader, moved off the spared node first if it is there."""
        leader = await self.cluster.leader(self.queue)
        event["leader_before"] = leader
        spared = self.cluster.spared
        if spared is None:  # the clients have every node: any leader may be faulted
            return leader
        for _ in range(5):
            if leader != spared:
                return leader
            event.setdefault("moved_leader_off_clients_node", []).append(self._at())
            try:
                await self.cluster.move_leader(self.queue, spared)
            except Exception as exc:  # the broker refused or failed: look again, retry
                event.setdefault("move_errors", []).append(_short(exc))
            with contextlib.suppress(Exception):
                leader, _ = await self.cluster.wait_leader(
                    self.queue, not_on=spared, timeout=MOVE_TIMEOUT
                )
        if leader == spared:
            raise RuntimeError("the queue's leader stayed on the clients' node")
        return leader

    async def inject_once(self) -> dict[str, Any]:
        """One whole fault: target, fault, election, restore, recovery."""
        event: dict[str, Any] = {"fault": self.kind, "planned_at": self._at()}
        self.timeline.append(event)
        node = await self._target(event)
        with contextlib.suppress(Exception):  # informative only
            event["leaders"] = await self.cluster.leaders(self.queue)
        event.update(node=node, node_name=self.cluster.node_names[node], was_leader=True)
        self._faulted = node
        event["started_at"] = self._at()
        if self.kind == "leader-kill":
            await self.cluster.kill(node)
        else:
            await self.cluster.partition(node)
        self.injected += 1
        fault_ends = time.monotonic() + self.duration
        try:
            leader, took = await self.cluster.wait_leader(
                self.queue, not_on=node, timeout=ELECTION_TIMEOUT
            )
            event.update(new_leader=leader, failover_seconds=round(took, 3))
            with contextlib.suppress(Exception):
                event["leaders_after"] = await self.cluster.leaders(self.queue)
        except Exception as exc:  # measured, not fatal: the account shows it
            event["failover_error"] = _short(exc)
        await asyncio.sleep(max(0.0, fault_ends - time.monotonic()))
        await self._restore(event)
        return event

    async def _restore(self, event: dict[str, Any]) -> None:
        node = self._faulted
        if node is None:
            return
        event["ended_at"] = self._at()
        try:
            async with asyncio.timeout(RESTORE_TIMEOUT):
                if self.kind == "leader-kill":
                    event["restart_seconds"] = round(await self.cluster.start_node(node), 3)
                else:
                    await self.cluster.heal(node)
        except Exception as exc:  # the timeline says why the node is not back
            event["restore_error"] = _short(exc)
            raise
        # The node is back; a cluster that does not get in sync again is reported, and the
        # run goes on (the promise's check on the timeline shows it).
        self._faulted = None
        self.completed += 1
        await self._record_whole(event)

    async def _back_to_whole(self) -> bool:
        """Finish the last fault first: restore its node, wait until the cluster is whole."""
        last = self.timeline[-1] if self.timeline else None
        with contextlib.suppress(Exception):  # recorded in the event; tried again next tick
            if self._faulted is not None and last is not None:
                await self._restore(last)
            elif last is not None and _touched(last) and "whole_seconds" not in last:
                # Not whole within the bound (``whole_error`` stays in the timeline).
                await self._record_whole(last)
        # A fault that failed before touching any node (say, the leader lookup: RabbitMQ's
        # management API may not list a queue for seconds after it was created) left
        # nothing to wait for: the next one is tried after the interval.
        return self._faulted is None and (
            last is None or "whole_seconds" in last or not _touched(last)
        )

    async def _record_whole(self, event: dict[str, Any]) -> None:
        """Wait (bounded) until the cluster is whole again and put it in the timeline."""
        try:
            event["whole_seconds"] = round(await self.cluster.wait_whole(self.queue), 3)
            event["whole_at"] = self._at()
        except Exception as exc:
            event["whole_error"] = _short(exc)

    async def run(self) -> None:
        """Inject until cancelled; a failed fault is recorded, the node still restored."""
        try:
            while True:
                await asyncio.sleep(self.interval)
                if not await self._back_to_whole():
                    continue  # one fault at a time: never another while one is not over
                try:
                    await self.inject_once()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a failed step is counted; the run goes on
                    self.errors.append(_short(exc))
                    log.warning("cluster fault %s failed: %s", self.kind, exc)
                    if self.timeline:
                        self.timeline[-1]["error"] = self.errors[-1]
                    with contextlib.suppress(Exception):
                        await self._restore(self.timeline[-1] if self.timeline else {})
        finally:
            last = self.timeline[-1] if self.timeline else None
            if self._faulted is not None:  # cancelled mid-fault: leave the cluster whole
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._restore(self.timeline[-1]))
            elif last is not None and "ended_at" in last and not _recovered(last):
                # The load finished while the cluster was getting back in sync: the
                # account still says whether (and when) it did.
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._record_whole(last))

    def summary(self) -> dict[str, Any]:
        """The ``faults`` section of the account."""
        failovers = [e["failover_seconds"] for e in self.timeline if "failover_seconds" in e]
        return {
            "kind": self.kind,
            "injected": self.injected,
            "completed": self.completed,
            "errors": self.errors[:5],
            "duration_seconds": self.duration,
            "interval_seconds": self.interval,
            "timeline": self.timeline,
            "failover_seconds": failovers,
        }


def _touched(event: dict[str, Any]) -> bool:
    """Whether ``event`` did anything to the cluster: faulted a node, or moved a leader."""
    return "started_at" in event or "moved_leader_off_clients_node" in event


def _recovered(event: dict[str, Any]) -> bool:
    """Whether the timeline says how the cluster came back after ``event``."""
    return "whole_seconds" in event or "whole_error" in event

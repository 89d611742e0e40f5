"""What a provider promises under a cluster fault, written down before the run, and
whether the account kept it.

A promise is prose plus the counts it pins: each check names an account field and the
largest value the promise allows. The prose says why (what the broker guarantees and
what the provider adds); the checks are what the account is held to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Promise", "promise_for"]

#: What the promise says of the clients' nodes, per ``--clients``.
_CLIENTS = {
    "node0": "Clients connect to node 0 only, which is never faulted: the run does not "
    "exercise client failover between nodes. ",
    "all": "Clients are given every node's URL and the faulted node is "
    "whichever leads the queue, node 0 included: clients connected to it fail over to "
    "another node, and what was confirmed before still counts. ",
}


@dataclass(frozen=True)
class Promise:
    """The text, and the account fields it bounds."""

    text: str
    #: account field -> the largest value the promise allows
    bounds: dict[str, int] = field(default_factory=dict)
    #: what the promise does not cover (allowed, reported)
    allowed: tuple[str, ...] = ()

    def check(self, data: dict[str, Any]) -> dict[str, Any]:
        """Each bound with the value the account shows, and whether all held."""
        checks = {
            name: {"allowed": bound, "actual": data.get(name), "held": data.get(name) == bound}
            if bound == 0
            else {
                "allowed": bound,
                "actual": data.get(name),
                "held": (data.get(name) or 0) <= bound,
            }
            for name, bound in self.bounds.items()
        }
        within = bool(data.get("finished_within_bound"))
        checks["finished_within_bound"] = {"allowed": True, "actual": within, "held": within}
        events = (data.get("faults") or {}).get("timeline") or []
        unsynced = sum(1 for e in events if "started_at" in e and "whole_seconds" not in e)
        checks["faults_not_recovered"] = {
            "allowed": 0,
            "actual": unsynced,
            "held": unsynced == 0,
        }
        return {
            "text": self.text,
            "allowed": list(self.allowed),
            "checks": checks,
            "held": all(c["held"] for c in checks.values()),
        }


_STRICT = {
    "lost": 0,
    "unfinished": 0,
    "duplicated": 0,
    "acked_twice": 0,
    "redelivered_after_ack": 0,
    "unexpected": 0,
}
_AT_LEAST_ONCE = (
    "reprocessed: a claim that died with the failover is redelivered and its ack fails, "
    "which the consumer is told (at-least-once)",
    "indeterminate: sends whose outcome is unknown (a connection error, a timeout, or a "
    "batch the broker refused) during the election",
)

_PROMISES = {
    ("rabbitmq-quorum", "leader-kill"): (
        "Quorum queue replicated on 3 nodes; the node leading it is SIGKILLed and started "
        "again on its data after the fault duration. A publisher confirm is sent once a "
        "majority (2 of 3) has the message, and an ack is applied through the Raft log, so "
        "with one node down: nothing confirmed is lost, no message whose ack was confirmed "
        "is delivered again, a new leader is elected within seconds, and the killed node "
        "rejoins and catches up. An AMQP 0-9-1 ack is never confirmed by the broker: the "
        "provider counts it accepted once its channel took it, so an ack lost with the "
        "leader would show here as a message acked twice. "
    ),
    ("rabbitmq-quorum", "partition"): (
        "Quorum queue replicated on 3 nodes; the leader's network namespace is cut off "
        "(peers and clients) for the fault duration. With cluster_partition_handling = "
        "pause_minority and net_ticktime = 10 s, the cut-off node pauses within about "
        "10 s and the majority elects a new leader; on heal the node resumes and rejoins. "
        "Nothing confirmed is lost, no accepted ack is undone (the provider counts an ack "
        "accepted once its channel took it: AMQP 0-9-1 has no ack confirmation). "
    ),
    ("nats-jetstream", "leader-kill"): (
        "The queue's work-queue stream and its ledger stream are scaled to 3 replicas; the "
        "node leading the queue stream is SIGKILLed and restarted after the fault "
        "duration. A publish is acknowledged once a majority stored it and the consumer's "
        "acks are replicated, so nothing acknowledged is lost and nothing acked is "
        "delivered again; a new stream leader is elected after a Raft election timeout "
        "(4-9 s on 2.9). "
    ),
    ("nats-jetstream", "partition"): (
        "The queue's streams are scaled to 3 replicas; the stream leader's namespace is "
        "cut off for the fault duration. The majority elects a new leader after an "
        "election timeout; the cut-off node can no longer commit anything (no quorum) and "
        "catches up on heal. Nothing acknowledged is lost, nothing acked delivered again "
        "(the provider's ack is a change of state on its replicated claims ledger that "
        "every replica checks, then a confirmed JetStream ack). "
    ),
}


def promise_for(provider: str, fault: str, clients: str = "node0") -> Promise:
    """The promise for ``provider`` under ``fault`` (one node faulted at a time), with the
    clients on node 0 only or on every node (``clients``)."""
    text = _PROMISES.get((provider, fault), "One node faulted at a time. ")
    return Promise(text + _CLIENTS[clients], dict(_STRICT), _AT_LEAST_ONCE)

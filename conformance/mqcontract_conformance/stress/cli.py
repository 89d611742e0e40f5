"""``mqcontract stress``: load with loss accounting, optionally under faults."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from mqcontract._arguments import (
    output_problem,
    positive_int,
    positive_number,
    share,
    usage_error,
)
from mqcontract.events import DeploymentMode
from mqcontract_conformance.stress._faults import FAULTS
from mqcontract_conformance.stress.clusters import CLIENTS

__all__ = ["register"]

_SHOWN = (
    "sent",
    "acked",
    "processed",
    "lost",
    "acked_unprocessed",
    "unfinished",
    "duplicated",
    "acked_twice",
    "reprocessed",
    "failed_acks",
    "unexpected",
    "indeterminate",
    "recovered",
    "max_redelivery",
    "deliveries",
    "injected_failures",
    "slow_handlers",
    "overran_claims",
    "load_seconds",
    "acked_per_second",
)


@contextlib.contextmanager
def _quiet_logs(verbose: bool) -> Iterator[None]:
    """Faults make drivers log every dropped connection; the account counts them instead.

    The levels are restored afterwards (the command may run inside a larger process).
    The root logger is quieted too: a provider from another package (the examples') logs
    under its own name.
    """
    names = ("", "aiormq", "aio_pika", "asyncpg", "mqcontract.providers", "mqcontract.events")
    previous = {name: logging.getLogger(name).level for name in names}
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    else:
        for name in names:
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for name, level in previous.items():
            logging.getLogger(name).setLevel(level)


def _run(options: argparse.Namespace) -> int:
    from mqcontract.errors import ConfigurationError
    from mqcontract_conformance.stress._load import StressSettings, run_stress

    if options.clients is not None and not options.cluster:
        raise ConfigurationError("stress.clients", options.clients, "needs --cluster 3")
    for flag, path in (("--json", options.json), ("--markdown", options.markdown)):
        problem = output_problem(flag, path)
        if problem:  # found now, not after the whole load has run
            return usage_error(problem)
    settings = StressSettings(
        provider=options.provider,
        messages=options.messages,
        producers=options.producers,
        consumers=options.consumers,
        workers=options.workers,
        fail_rate=options.fail_rate,
        slow_rate=options.slow_rate,
        vt=options.vt,
        batch=options.batch,
        fault=options.fault,
        fault_interval=options.fault_interval,
        max_seconds=options.max_seconds,
        poll_interval=options.poll_interval,
        mode=options.mode,
        seed=options.seed,
        nack_on_failure=options.nack_on_failure,
        cluster=options.cluster,
        fault_duration=options.fault_duration,
        cluster_factory=options.cluster_factory,
        clients=options.clients or "node0",
    )
    with _quiet_logs(options.verbose):
        account = asyncio.run(run_stress(settings, out=None if options.quiet else sys.stderr))
    data = account.to_dict()
    width = max(len(k) for k in _SHOWN)
    print(f"stress account for {settings.provider} (fault: {settings.fault})")
    for key in _SHOWN:
        print(f"  {key:<{width}}  {data[key]}")
    print(f"  {'faults injected':<{width}}  {data['faults']['injected']}")
    _print_cluster(data, width)
    print("OK: nothing lost, nothing processed twice" if account.ok else "FAILED: see the account")
    if options.json:
        path = Path(options.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        print(f"account written to {path}")
    if options.markdown and "promise" not in data:
        print("--markdown is for runs on a private cluster (--cluster); nothing written")
    elif options.markdown:
        from mqcontract_conformance.stress._cluster_markdown import render_cluster_account

        md = Path(options.markdown)
        md.parent.mkdir(parents=True, exist_ok=True)
        md.write_text(render_cluster_account(data), encoding="utf-8")
        print(f"account written to {md}")
    held = data.get("promise", {}).get("held", True)
    return 0 if account.ok and data["finished_within_bound"] and held else 1


def _print_cluster(data: dict[str, object], width: int) -> None:
    """The fault timeline and the promise, when the run was on a private cluster."""
    promise = data.get("promise")
    faults = data.get("faults")
    if not isinstance(promise, dict) or not isinstance(faults, dict):
        return
    cluster = data.get("cluster")
    connect_to = cluster.get("clients_connect_to") if isinstance(cluster, dict) else None
    where = "every node" if connect_to == "all" else f"node {connect_to} only"
    print(f"  {'clients on':<{width}}  {where}")
    for event in faults.get("timeline", []):
        when = f"{event.get('started_at', '?')}-{event.get('ended_at', '?')} s"
        get = event.get
        line = (
            f"  {get('fault')} node {get('node')} ({get('node_name')}) {when}: "
            f"new leader {get('new_leader', '?')} after {get('failover_seconds', '?')} s, "
            f"whole again after {get('whole_seconds', '?')} s"
        )
        print(line + (f"; error {event['error']}" if "error" in event else ""))
    print(f"  promise: {promise['text']}")
    for name, check in promise["checks"].items():
        mark = "held" if check["held"] else "BROKEN"
        print(f"    {name:<{width + 4}}  {check['actual']} (allowed {check['allowed']}) {mark}")
    print("  promise held" if promise["held"] else "  PROMISE BROKEN")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``mqcontract stress``."""
    p = subparsers.add_parser(
        "stress",
        help="producers and consumers under load (and faults), with a loss account",
        description="N producers and M event-system consumers over one queue, random handler "
        "failures and visibility expiries, optional faults; prints the account (sent, acked, "
        "lost, duplicated, unexpected, max redelivery) and exits non-zero unless it is clean.",
    )
    p.add_argument("--provider", required=True, help="memory, pgmq, rabbitmq, rabbitmq-quorum…")
    p.add_argument("--messages", type=positive_int, default=10_000)
    p.add_argument("--producers", type=positive_int, default=4)
    p.add_argument("--consumers", type=positive_int, default=4)
    p.add_argument("--workers", type=positive_int, default=4, help="handler workers per consumer")
    p.add_argument("--fail-rate", type=share, default=0.05, help="share of handlers that fail")
    p.add_argument(
        "--slow-rate", type=share, default=0.005, help="share of handlers that overrun --vt"
    )
    p.add_argument("--vt", type=positive_number, default=2.0, help="visibility timeout, seconds")
    p.add_argument("--batch", type=positive_int, default=10, help="send and receive batch size")
    p.add_argument(
        "--fault",
        choices=FAULTS,
        default="none",
        help="listener, pool, connection: the provider's connections are killed; restart: "
        "the whole run is on the provider's private server (the harness's private_backend, "
        "never a shared one), SIGKILLed and restarted on the same storage and port; "
        "leader-kill, partition: need --cluster",
    )
    p.add_argument(
        "--fault-interval", type=positive_number, default=3.0, help="seconds between faults"
    )
    p.add_argument(
        "--max-seconds", type=positive_number, default=600.0, help="bound on the load phase"
    )
    p.add_argument(
        "--poll-interval", type=positive_number, default=None, help="fallback poll interval"
    )
    p.add_argument(
        "--mode",
        choices=[m.value for m in DeploymentMode],
        default=DeploymentMode.HYBRID.value,
        help="the consumers' deployment mode (Hybrid: push and the fallback poller's "
        "receives; EventDrivenOnly: push alone; the provider's effective mode is used)",
    )
    p.add_argument("--seed", type=int, default=None, help="seed of the handler's dice")
    p.add_argument(
        "--nack-on-failure",
        action="store_true",
        help="nack failed messages at once (default: they wait out their visibility timeout)",
    )
    p.add_argument(
        "--cluster",
        type=int,
        default=0,
        metavar="N",
        help="run on a private N-node cluster (rabbitmq-quorum, nats-jetstream); "
        "needed by the leader-kill and partition faults",
    )
    p.add_argument(
        "--fault-duration",
        type=positive_number,
        default=5.0,
        help="seconds a cluster fault lasts (node down or cut off)",
    )
    p.add_argument(
        "--cluster-factory",
        metavar="MODULE:ATTR",
        default=None,
        help="the cluster opener (default: the mqcontract.clusters entry point)",
    )
    p.add_argument(
        "--clients",
        choices=CLIENTS,
        default=None,
        help="with --cluster: the nodes the providers are given; node0 (default): node 0 "
        "only, never faulted; all: every node (node 0 first), the leader is faulted wherever "
        "it is and the clients on it fail over",
    )
    p.add_argument("--json", metavar="PATH", help="write the account as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write a cluster run's account as Markdown")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--verbose", action="store_true", help="log what drivers and providers log")
    p.set_defaults(func=_run)

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

from mqcontract_conformance.stress._faults import FAULTS

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
    """
    names = ("aiormq", "aio_pika", "asyncpg", "mqcontract.providers", "mqcontract.events")
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
    from mqcontract_conformance.stress._load import StressSettings, run_stress

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
        seed=options.seed,
        nack_on_failure=options.nack_on_failure,
    )
    with _quiet_logs(options.verbose):
        account = asyncio.run(run_stress(settings, out=None if options.quiet else sys.stderr))
    data = account.to_dict()
    width = max(len(k) for k in _SHOWN)
    print(f"stress account for {settings.provider} (fault: {settings.fault})")
    for key in _SHOWN:
        print(f"  {key:<{width}}  {data[key]}")
    print(f"  {'faults injected':<{width}}  {data['faults']['injected']}")
    print("OK: nothing lost, nothing processed twice" if account.ok else "FAILED: see the account")
    if options.json:
        path = Path(options.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        print(f"account written to {path}")
    return 0 if account.ok and data["finished_within_bound"] else 1


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
    p.add_argument("--messages", type=int, default=10_000)
    p.add_argument("--producers", type=int, default=4)
    p.add_argument("--consumers", type=int, default=4)
    p.add_argument("--workers", type=int, default=4, help="handler workers per consumer")
    p.add_argument("--fail-rate", type=float, default=0.05, help="share of handlers that fail")
    p.add_argument(
        "--slow-rate", type=float, default=0.005, help="share of handlers that overrun --vt"
    )
    p.add_argument("--vt", type=float, default=2.0, help="visibility timeout, seconds")
    p.add_argument("--batch", type=int, default=10, help="send and receive batch size")
    p.add_argument("--fault", choices=FAULTS, default="none")
    p.add_argument("--fault-interval", type=float, default=3.0, help="seconds between faults")
    p.add_argument("--max-seconds", type=float, default=600.0, help="bound on the load phase")
    p.add_argument("--poll-interval", type=float, default=None, help="fallback poll interval")
    p.add_argument("--seed", type=int, default=None, help="seed of the handler's dice")
    p.add_argument(
        "--nack-on-failure",
        action="store_true",
        help="nack failed messages at once (default: they wait out their visibility timeout)",
    )
    p.add_argument("--json", metavar="PATH", help="write the account as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--verbose", action="store_true", help="log what drivers and providers log")
    p.set_defaults(func=_run)

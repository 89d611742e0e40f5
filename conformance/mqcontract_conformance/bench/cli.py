"""``mqcontract bench``: the options, the run, the table, the JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shlex
import sys
from pathlib import Path

from mqcontract._arguments import (
    count,
    output_problem,
    positive_int,
    positive_number,
    usage_error,
)

from ._progress import Progress
from ._report import render_markdown, render_text
from ._runner import BenchSettings, run_bench
from ._scaling_cli import register_scaling

__all__ = ["register"]


def _settings(options: argparse.Namespace) -> BenchSettings:
    return BenchSettings(
        providers=tuple(options.provider or ["memory"]),
        messages=options.messages,
        payload_bytes=options.payload_bytes,
        batch=options.batch,
        rounds=options.rounds,
        slices=options.slices,
        workers=options.workers,
        latency_samples=options.latency_samples,
        recovery_samples=options.recovery_samples,
        recovery_poll_interval=options.recovery_poll_interval,
        only=tuple(k.strip() for k in options.only.split(",") if k.strip()),
        skip_recovery=options.no_recovery,
    )


def _command(settings: BenchSettings, options: argparse.Namespace) -> str:
    """The command line that repeats this run (every setting spelled out)."""
    args = [arg for name in settings.providers for arg in ("--provider", name)]
    args += ["--messages", str(settings.messages), "--payload-bytes", str(settings.payload_bytes)]
    args += ["--batch", str(settings.batch), "--rounds", str(settings.rounds)]
    args += ["--slices", str(settings.slices)]
    args += ["--workers", str(settings.workers)]
    args += ["--latency-samples", str(settings.latency_samples)]
    if settings.skip_recovery:
        args.append("--no-recovery")
    else:
        args += ["--recovery-samples", str(settings.recovery_samples)]
        args += ["--recovery-poll-interval", f"{settings.recovery_poll_interval:g}"]
    if settings.only:
        args += ["--only", ",".join(settings.only)]
    for flag, value in (("--json", options.json), ("--markdown", options.markdown)):
        if value:
            args += [flag, value]
    return "mqcontract bench " + " ".join(shlex.quote(a) for a in args)


def _run(options: argparse.Namespace) -> int:
    for flag, path in (("--json", options.json), ("--markdown", options.markdown)):
        problem = output_problem(flag, path)
        if problem:  # found now, not after every measurement has run
            return usage_error(problem)
    settings = _settings(options)
    progress = Progress(0, quiet=options.quiet)
    # Faults are injected on purpose; the providers' warnings about them would only
    # interleave with the progress lines.
    for name in ("mqcontract", "aiormq", "aio_pika"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    report = asyncio.run(run_bench(settings, progress))
    command = _command(settings, options)
    report["command"] = command
    sys.stdout.write(render_text(report))
    if options.json:
        Path(options.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if options.markdown:
        Path(options.markdown).write_text(render_markdown(report, command=command), "utf-8")
    failed = any(
        side.get("errors")
        for result in report["providers"].values()
        for entry in result["throughput"]
        for side in entry["sides"].values()
    )
    return 1 if failed else 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``mqcontract bench``."""
    bench = subparsers.add_parser(
        "bench",
        help="throughput and latency of providers against their raw drivers",
        description=(
            "Measure each provider's send, batch send, receive+ack, event-system "
            "throughput, push latency and fallback recovery, and the same work done "
            "with the raw driver (and the pgmq client) in the same run and process."
        ),
    )
    bench.add_argument(
        "--provider",
        action="append",
        default=[],
        help="memory, pgmq, rabbitmq, rabbitmq-quorum or any harness name (repeatable)",
    )
    bench.add_argument("--messages", type=positive_int, default=2000, help="messages per timed run")
    bench.add_argument("--payload-bytes", type=positive_int, default=256, help="payload size")
    bench.add_argument("--batch", type=positive_int, default=100, help="batch size (send, receive)")
    bench.add_argument("--rounds", type=positive_int, default=3, help="rounds (median reported)")
    bench.add_argument(
        "--slices", type=positive_int, default=10, help="send/receive: alternate sides per slice"
    )
    bench.add_argument("--workers", type=positive_int, default=4, help="consumer workers")
    bench.add_argument("--latency-samples", type=count, default=200, help="0: no latency runs")
    bench.add_argument("--recovery-samples", type=positive_int, default=3)
    bench.add_argument(
        "--recovery-poll-interval",
        type=positive_number,
        default=1.0,
        help="fallback poll interval (s) while measuring recovery",
    )
    bench.add_argument("--no-recovery", action="store_true", help="skip recovery measurements")
    bench.add_argument(
        "--only", default="", metavar="KEYS", help="workload keys to run (comma-separated prefixes)"
    )
    bench.add_argument("--json", metavar="PATH", help="write the results as JSON")
    bench.add_argument("--markdown", metavar="PATH", help="write the results as Markdown")
    bench.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    bench.set_defaults(func=_run)
    nested = bench.add_subparsers(
        title="more measurements", dest="bench_command", metavar="{scaling}"
    )
    register_scaling(nested)

"""``mqcontract bench scaling``: the options, the run, the files it writes."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from mqcontract._arguments import (
    output_problem,
    positive_int,
    positive_number,
    usage_error,
)

from ._progress import Progress
from ._scaling import ScalingSettings, quick_settings, run_scaling
from ._scaling_report import render_scaling_markdown, render_scaling_text

__all__ = ["register_scaling", "write_outputs"]

#: File names written into ``--out``.
JSON_NAME = "scaling.json"
MARKDOWN_NAME = "scaling.md"


def _settings(options: argparse.Namespace) -> ScalingSettings:
    providers = tuple(options.provider or ["memory"])
    base = quick_settings(providers) if options.quick else ScalingSettings(providers=providers)
    given = {
        "messages": options.messages,
        "rounds": options.rounds,
        "batch_messages": options.batch_messages,
        "latency_seconds": options.latency_seconds,
        "payload_bytes": options.payload_bytes,
        "senders": options.senders,
    }
    return dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})


def _command(settings: ScalingSettings, options: argparse.Namespace) -> str:
    """The command line that repeats this run (every size spelled out)."""
    args = [arg for name in settings.providers for arg in ("--provider", name)]
    if options.quick:
        args.append("--quick")
    args += ["--messages", str(settings.messages), "--rounds", str(settings.rounds)]
    args += ["--batch-messages", str(settings.batch_messages)]
    args += ["--latency-seconds", f"{settings.latency_seconds:g}"]
    if options.out:
        args += ["--out", options.out]
    return "mqcontract bench scaling " + " ".join(shlex.quote(a) for a in args)


def write_outputs(report: dict[str, Any], directory: Path, *, plots: bool = True) -> list[Path]:
    """``scaling.json``, the SVG plots and ``scaling.md`` (linking them) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = [directory / JSON_NAME]
    written[0].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    figures: dict[str, str] = {}
    note = None
    if plots:
        from ._plots import PlotsUnavailable, write_plots

        try:
            figures = write_plots(report, directory)
        except PlotsUnavailable as exc:
            note = f"No plots: {exc}."
        written += [directory / name for name in figures.values()]
    markdown = render_scaling_markdown(report, plots=figures, plot_note=note)
    (directory / MARKDOWN_NAME).write_text(markdown, encoding="utf-8")
    written.append(directory / MARKDOWN_NAME)
    return written


def _run(options: argparse.Namespace) -> int:
    problem = output_problem("--out", options.out, directory=True)
    if problem:  # found now, not after every measurement has run
        return usage_error(problem)
    settings = _settings(options)
    progress = Progress(0, quiet=options.quiet)
    for name in ("mqcontract", "aiormq", "aio_pika"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    report = asyncio.run(run_scaling(settings, progress))
    report["command"] = _command(settings, options)
    sys.stdout.write(render_scaling_text(report))
    if options.out:
        for path in write_outputs(report, Path(options.out), plots=not options.no_plots):
            progress.message(f"wrote {path}")
    failed = any(result["errors"] for result in report["providers"].values())
    return 1 if failed else 0


def register_scaling(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``mqcontract bench scaling``."""
    defaults = ScalingSettings()
    parser = subparsers.add_parser(
        "scaling",
        help="how throughput, latency and cost per message grow, per provider",
        description=(
            "Per provider, in one run: event-system throughput draining a backlog with 1, 4, "
            "16 workers (a handler that does nothing, and one that awaits 1 ms) and with 1, "
            "2, 4 consumer processes; push latency p50/p99 at 10, 50 and 90 percent of the "
            "measured capacity (sends paced on a fixed schedule); client CPU and wall time "
            "per message of send_batch, receive + ack each and receive + ack_claims with "
            "batches of 1, 10, 100. Prints the tables; with --out also writes scaling.json, "
            "scaling.md and SVG plots (matplotlib: the 'plots' extra). A default run of the "
            "four built-in providers takes about 5 minutes on 2 cores."
        ),
    )
    parser.add_argument(
        "--provider",
        action="append",
        default=[],
        help="memory, pgmq, rabbitmq, rabbitmq-quorum or any harness name (repeatable)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes: every measurement in seconds"
    )
    parser.add_argument(
        "--messages",
        type=positive_int,
        help=f"messages per throughput and capacity run (default {defaults.messages})",
    )
    parser.add_argument(
        "--rounds", type=positive_int, help=f"rounds, median reported (default {defaults.rounds})"
    )
    parser.add_argument(
        "--batch-messages",
        type=positive_int,
        help=f"messages per batch-cost run (default {defaults.batch_messages})",
    )
    parser.add_argument(
        "--latency-seconds",
        type=positive_number,
        help=f"paced sending per load level (default {defaults.latency_seconds:g})",
    )
    parser.add_argument(
        "--payload-bytes",
        type=positive_int,
        help=f"payload size (default {defaults.payload_bytes})",
    )
    parser.add_argument(
        "--senders",
        type=positive_int,
        help=f"concurrent senders of push runs (default {defaults.senders})",
    )
    parser.add_argument(
        "--out", metavar="DIR", help="write scaling.json, scaling.md and scaling_*.svg here"
    )
    parser.add_argument("--no-plots", action="store_true", help="no SVG plots")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(func=_run)

"""``mqcontract report``: build the compatibility report from result JSONs.

Registered through ``SUBCOMMAND_MODULES``. It lives outside the suite's package and
imports it only when it runs: importing the suite before pytest starts would stop pytest
from rewriting the plugin's assertions in ``mqcontract verify``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mqcontract._arguments import output_problem, usage_error

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``mqcontract report``."""
    parser = subparsers.add_parser(
        "report",
        help="build the compatibility report (Markdown, HTML, JSON, badges, Allure)",
        description="Merge result JSONs (from `mqcontract verify --json`) into a report.",
    )
    parser.add_argument(
        "results", nargs="+", type=Path, metavar="RESULTS", help="result JSON files or directories"
    )
    parser.add_argument("--out", type=Path, default=Path("reports"), help="output directory")
    parser.add_argument(
        "--expect",
        action="append",
        default=[],
        metavar="NAME[,NAME…]",
        help="providers that must appear; one without a result is shown as missing",
    )
    parser.add_argument(
        "--stale-days",
        type=float,
        default=30.0,
        help="results older than this (before --as-of) are marked stale (default 30)",
    )
    parser.add_argument(
        "--as-of",
        default=None,
        metavar="YYYY-MM-DDTHH:MM:SSZ",
        help="the report's 'now' (default: the newest result's time, so output is reproducible)",
    )
    parser.add_argument(
        "--rules-url",
        default="",
        help="link rules to this RULES.md (relative to the output directory, or absolute) "
        "instead of the rule text the report carries",
    )
    parser.add_argument(
        "--stress",
        action="append",
        type=Path,
        default=None,
        metavar="PATH",
        help="stress accounts (files or directories) to show (default: OUT/stress)",
    )
    parser.add_argument(
        "--bench",
        action="append",
        type=Path,
        default=None,
        metavar="PATH",
        help="`mqcontract bench --json` results for the throughput column (a directory gives "
        "its results.json; repeatable; default: bench/results.json and bench/examples.json "
        "beside the results directory)",
    )
    parser.add_argument(
        "--allure-results",
        type=Path,
        default=None,
        help="Allure results directory (default: OUT/allure-results)",
    )
    parser.add_argument("--allure-bin", default=None, help="the allure executable")
    parser.add_argument("--no-allure", action="store_true", help="skip the Allure report")
    parser.set_defaults(func=run)


def _path_problem(options: argparse.Namespace) -> str | None:
    """The first path named that does not exist, or an ``--out`` that cannot be written.

    A typo in a path is a mistake, never an empty column; only the defaults (OUT/stress,
    the bench results beside the results) may be absent.
    """
    named: list[tuple[str, Path]] = [("RESULTS", path) for path in options.results]
    named += [("--stress", path) for path in options.stress or ()]
    named += [("--bench", path) for path in options.bench or ()]
    if options.allure_results is not None:
        named.append(("--allure-results", options.allure_results))
    for flag, path in named:
        if not path.exists():
            return f"{flag} {path}: no such file or directory"
    return output_problem("--out", options.out, directory=True)


def run(options: argparse.Namespace) -> int:
    """Build the report; exit 2 on a path named that does not exist or an ``--out`` that
    cannot be written (before any work), 1 when an input cannot be read."""
    from mqcontract_conformance.outcomes import Outcome
    from mqcontract_conformance.report import ReportError, ReportOptions, build_report
    from mqcontract_conformance.report.model import STATUSES

    problem = _path_problem(options)
    if problem:
        return usage_error(problem)
    expect = [name.strip() for item in options.expect for name in item.split(",") if name.strip()]
    report = ReportOptions(
        results=list(options.results),
        out=options.out,
        expect=expect,
        stale_days=options.stale_days,
        as_of=options.as_of,
        rules_url=options.rules_url,
        stress=options.stress,
        bench=options.bench,
        allure_results=options.allure_results,
        allure=not options.no_allure,
        allure_bin=options.allure_bin,
    )
    try:
        matrix, lines = build_report(report)
    except ReportError as exc:
        print(f"mqcontract report: {exc}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    print(matrix.teeth.headline())
    for provider in matrix.providers:
        counts = provider.counts()
        print(
            f"{provider.name}: {STATUSES[provider.status]} ({counts[Outcome.PASSED]} passed, "
            f"{counts[Outcome.FAILED]} failed, {counts[Outcome.KNOWN_BROKEN]} known broken, "
            f"{provider.unverified_count()} not verified)"
        )
    _warn_missing(expect, [p.name for p in matrix.providers if p.status != "missing"])
    for old in matrix.superseded:
        plural = "" if old.failed == 1 else "s"
        failed = f"; it has {old.failed} failed rule{plural}" if old.failed else ""
        print(
            f"WARNING: {old.provider}: {old.source} is not shown: the newer {old.by} is (the"
            f" report shows the newest result per provider{failed})",
            file=sys.stderr,
        )
    return 0


def _warn_missing(expect: list[str], found: list[str]) -> None:
    """Say which ``--expect`` names no result carries, and which names the results do
    carry: a result is named by the ``--provider`` verify was given (a ``module:factory``
    spec is not its entry-point name), and a mismatch reads as a missing provider."""
    missing = [name for name in expect if name not in found]
    if not missing:
        return
    have = ", ".join(found) if found else "none"
    print(
        f"WARNING: --expect {', '.join(missing)}: no result names it (results are named by"
        f" the --provider given to verify; the results here name: {have})",
        file=sys.stderr,
    )

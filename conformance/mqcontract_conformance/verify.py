"""``mqcontract verify``: run the contract for providers and gate on the result.

It is a thin layer over pytest with the plugin: the same cases, options and JSON as
``pytest --pyargs mqcontract_conformance.contract --mq-provider NAME``. This module lives
outside the plugin's package on purpose: importing the plugin before pytest starts
would stop pytest from rewriting its assertions.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

__all__ = ["add_arguments", "pytest_args", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``mqcontract verify``."""
    parser.add_argument(
        "--provider",
        action="append",
        default=[],
        metavar="NAME|module:factory",
        help="provider to verify (repeatable; default: memory)",
    )
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument(
        "--rules", default="", metavar="IDS", help="rule ids or groups, comma-separated"
    )
    parser.add_argument("--timing-scale", type=float, default=None, help="scale every timing bound")
    parser.add_argument("--real-time", action="store_true", help="no virtual clock")
    parser.add_argument(
        "--require-backends",
        action="store_true",
        help="fail each rule (not skip it) when a backend is unreachable",
    )
    parser.add_argument(
        "--allow-unavailable",
        action="store_true",
        help="a provider whose backend is unreachable is skipped instead of failing the run",
    )
    parser.add_argument("-n", "--workers", default=None, help="pytest-xdist workers (e.g. 2, auto)")
    parser.add_argument("--alluredir", default=None, help="also write Allure results here")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per rule")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")


def pytest_args(options: argparse.Namespace) -> list[str]:
    """The pytest command line equivalent to ``options``."""
    spec = importlib.util.find_spec("mqcontract_conformance")  # locates without importing
    if spec is None or spec.submodule_search_locations is None:
        raise RuntimeError("mqcontract_conformance is not installed")
    ini = str(Path(next(iter(spec.submodule_search_locations))) / "verify.ini")
    args = [
        "-c",
        ini,
        "-p",
        "no:cacheprovider",
        "-p",
        "no:asyncio",
        "--pyargs",
        "mqcontract_conformance.contract",
        "--mq-flag-names",
        "verify",
    ]
    for provider in options.provider or ["memory"]:
        args += ["--mq-provider", provider]
    if options.json:
        args += ["--mq-json", options.json]
    if options.rules:
        args += ["--mq-rules", options.rules]
    if options.timing_scale is not None:
        args += ["--mq-timing-scale", str(options.timing_scale)]
    if options.real_time:
        args.append("--mq-real-time")
    if options.require_backends:
        args.append("--mq-require-backends")
    if options.allow_unavailable:
        args.append("--mq-allow-unavailable")
    if options.workers:
        args += ["-n", str(options.workers)]
    if options.alluredir:
        args += ["--alluredir", options.alluredir]
    args.append("-v" if options.verbose else "-q")
    return args + list(options.pytest_args)


def run(options: argparse.Namespace) -> int:
    """Run the suite; the exit status is pytest's (non-zero on any failure).

    Every provider named must run rules: one whose backend is unreachable fails the run
    unless ``--allow-unavailable`` is given, and one for which no rule ran always fails.
    """
    import pytest

    return int(pytest.main(pytest_args(options)))

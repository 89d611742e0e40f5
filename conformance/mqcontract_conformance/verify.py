"""``mqcontract verify``: run the contract for providers and gate on the result.

It is a thin layer over pytest with the plugin: the same cases, options and JSON as
``pytest --pyargs mqcontract_conformance.contract --mq-provider NAME``; both read their
options from :mod:`.options`. This module imports neither the plugin nor the rules:
importing them before pytest starts would stop pytest from rewriting their assertions.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from mqcontract_conformance.options import OPTIONS, Spelling

__all__ = ["add_arguments", "pytest_args", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``mqcontract verify``: the run's (from the table) and verify's own."""
    for row in OPTIONS:
        parser.add_argument(row.flag(Spelling.VERIFY), dest=row.name, **row.keywords())
    parser.add_argument("-n", "--workers", default=None, help="pytest-xdist workers (e.g. 2, auto)")
    parser.add_argument("--alluredir", default=None, help="also write Allure results here")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="name each case as it finishes (pytest -v) instead of a dot; the summary"
        " after the run has one line per rule either way",
    )
    parser.add_argument(
        "--cluster",
        type=int,
        default=None,
        metavar="N",
        help="run against a private N-node cluster started for the run (rabbitmq-quorum, "
        "nats-jetstream; one provider)",
    )
    parser.add_argument(
        "--cluster-factory",
        default=None,
        metavar="MODULE:ATTR",
        help="with --cluster: the cluster opener (default: the mqcontract.clusters entry point)",
    )
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
        Spelling.VERIFY.value,
    ]
    # verify always names a provider: pytest's plugin stays idle when none is given.
    values = vars(options) | {"provider": options.provider or ["memory"]}
    for row in OPTIONS:
        args += row.pytest_args(values[row.name])
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
    With ``--cluster N`` the one provider named runs against a private cluster
    (:mod:`.verify_cluster`).
    """
    import pytest

    from mqcontract.errors import ConfigurationError

    if options.alluredir and importlib.util.find_spec("allure_pytest") is None:
        raise ConfigurationError(
            "--alluredir",
            options.alluredir,
            "needs the allure-pytest package, which is not installed"
            " (pip install 'mqcontract[reports]')",
        )
    if options.cluster is None:
        if options.cluster_factory is not None:
            raise ConfigurationError(
                "verify.cluster_factory", options.cluster_factory, "needs --cluster N"
            )
        return int(pytest.main(pytest_args(options)))
    from mqcontract_conformance.verify_cluster import on_cluster

    providers = list(options.provider or ["memory"])
    return on_cluster(
        providers,
        options.cluster,
        options.cluster_factory,
        lambda: int(pytest.main(pytest_args(options))),
    )

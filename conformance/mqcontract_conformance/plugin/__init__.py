"""The pytest plugin (entry point ``pytest11``): runs the contract against any provider.

``pytest --pyargs mqcontract_conformance.contract --mq-provider NAME`` (or
``mqcontract verify``) parametrizes the one contract test over providers x rules. Rules a
provider does not claim are skipped with a reason naming the rule; rules its harness
declares known-broken run as strict xfail. Every provider named must have run rules:
one whose backend is unreachable fails the run (``--mq-allow-unavailable`` makes it a loud
skip instead), and so does one for which nothing ran. Bad options, configuration or an
unwritable ``--mq-json`` path stop the run before any rule, as one line. Results go to
``--mq-json`` and, with allure-pytest, to Allure.

One module per job: :mod:`.command_line` (the ``--mq-*`` options), :mod:`.state` (the
run's state in ``config.stash``, provisioning), :mod:`.collection` (an item per provider
and rule, and running it), :mod:`.recording` (outcomes into the results JSON, the gate)
and :mod:`.summary` (the terminal summary). This module only hands their hooks to pytest.
"""

from __future__ import annotations

import pytest

from mqcontract_conformance.plugin.collection import (
    CaseRunner,
    mq_case,
    mq_state,
    pytest_collection_modifyitems,
    pytest_generate_tests,
    pytest_runtest_makereport,
)
from mqcontract_conformance.plugin.command_line import pytest_addoption
from mqcontract_conformance.plugin.recording import ResultRecorder
from mqcontract_conformance.plugin.state import check, pytest_report_header, start
from mqcontract_conformance.plugin.summary import pytest_terminal_summary


def pytest_configure(config: pytest.Config) -> None:
    state = start(config)
    if not hasattr(config, "workerinput"):  # the controller records every contract item
        config.pluginmanager.register(ResultRecorder(state), "mqcontract-results")
    check(config)


__all__ = [
    "CaseRunner",
    "mq_case",
    "mq_state",
    "pytest_addoption",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_generate_tests",
    "pytest_report_header",
    "pytest_runtest_makereport",
    "pytest_terminal_summary",
]

"""Collection and running: one contract item per provider and rule, and what it does.

Known-broken rules are marked strict xfail; each item records what it ran against and,
when its rule did not run, the typed :class:`~..outcomes.Outcome` saying why.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Generator, Iterator
from typing import Any, NoReturn

import pytest

from mqcontract_conformance.loop import run_bounded
from mqcontract_conformance.outcomes import Outcome
from mqcontract_conformance.plugin.command_line import selected_rules
from mqcontract_conformance.plugin.recording import Property
from mqcontract_conformance.plugin.state import RunState, state_of
from mqcontract_conformance.provisioning import Readiness, Verdict, unavailable
from mqcontract_conformance.registry import GROUPS, Rule
from mqcontract_conformance.runner import CaseOutcome, run_case

__all__ = [
    "CaseRunner",
    "mq_case",
    "mq_state",
    "pytest_collection_modifyitems",
    "pytest_generate_tests",
    "pytest_runtest_makereport",
]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "mq_case" not in metafunc.fixturenames:
        return
    state = state_of(metafunc.config)
    params = []
    for provider in state.providers:
        known_broken = state.harness(provider).known_broken
        for rule in selected_rules(metafunc.config):
            marks: list[Any] = [pytest.mark.mq_rule(rule.id)]
            if rule.id in known_broken:
                marks.append(
                    pytest.mark.xfail(
                        reason=f"known broken: {known_broken[rule.id]}",
                        strict=True,
                        raises=AssertionError,
                    )
                )
            params.append(pytest.param((provider, rule), id=f"{provider}::{rule.id}", marks=marks))
    metafunc.parametrize("mq_case", params, indirect=True)


def _case_of(item: pytest.Item) -> tuple[str, Rule] | None:
    """The (provider, rule) a contract item runs; None for any other item."""
    callspec = getattr(item, "callspec", None)
    if callspec is None or "mq_case" not in callspec.params:
        return None
    case: tuple[str, Rule] = callspec.params["mq_case"]
    return case


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        case = _case_of(item)
        if case is None:
            continue
        provider, rule = case
        item.user_properties += [
            (Property.PROVIDER.value, provider),
            (Property.RULE.value, rule.id),
        ]
        known_broken = state_of(config).harness(provider).known_broken
        if rule.id in known_broken:
            item.user_properties.append((Property.KNOWN_BROKEN.value, known_broken[rule.id]))


def _check_location(rule: Rule) -> tuple[str, int] | None:
    """The file and first line of the rule's check, or None where it has no code object."""
    code = getattr(inspect.unwrap(rule.check), "__code__", None)
    return (code.co_filename, code.co_firstlineno) if code is not None else None


#: Skips that say something of the rule: their summary line points at its check. The
#: others (a backend unavailable) say the same of every rule, and stay on the one line
#: pytest folds them into.
_RULE_SKIPS = frozenset({Outcome.NOT_CLAIMED.value, Outcome.NEEDS_HOOK.value})


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A skipped rule's report points at the rule's check, not at the line that skipped.

    pytest's ``-rs`` summary names where ``skip()`` was called, which for every rule is
    the same line of this plugin: the check's own file and line tell the reader which
    case did not run. Only for skips about the rule (:data:`_RULE_SKIPS`).
    """
    report = yield
    case = _case_of(item)
    if case is None or not report.skipped or not isinstance(report.longrepr, tuple):
        return report
    outcome = dict(item.user_properties).get(Property.OUTCOME.value)
    if outcome in _RULE_SKIPS:
        where = _check_location(case[1])
        if where is not None:
            report.longrepr = (*where, report.longrepr[2])
    return report


def _not_run(item: pytest.Item, outcome: Outcome, verdict: Verdict | None, reason: str) -> NoReturn:
    """Record why the rule did not run, then skip (or fail, as ``verdict`` says)."""
    item.user_properties.append((Property.OUTCOME.value, outcome.value))
    if verdict is not None:
        verdict.enforce()
    pytest.skip(reason)


class CaseRunner:
    """What the contract test receives: call :meth:`run`."""

    def __init__(self, state: RunState, provider: str, rule: Rule, item: pytest.Item) -> None:
        self._state, self.provider, self.rule, self._item = state, provider, rule, item

    def run(self) -> None:
        """Run the rule; skips, failures and xfails surface as pytest outcomes."""
        __tracebackhide__ = True  # pytest shows the rule's frames, not the kit's
        _label_for_allure(self.provider, self.rule)
        harness = self._state.harness(self.provider)
        props = self._item.user_properties
        case = CaseOutcome()
        try:
            run_bounded(
                run_case(harness, self.rule, self._state.timing, self._state.run_id, into=case)
            )
        finally:  # what a failing check measured is recorded too
            if case.metrics:
                props.append((Property.METRICS.value, json.dumps(case.metrics)))
            if case.measured:
                measured = [m.to_dict() for m in case.measured]
                props.append((Property.MEASURED.value, json.dumps(measured)))
        props.append((Property.CAPABILITIES.value, case.capabilities))
        props.append((Property.DESCRIBE.value, json.dumps(harness.describe())))
        if case.outcome is Outcome.BACKEND_UNAVAILABLE:
            verdict = unavailable(case.reason, required=self._state.require)
            _not_run(self._item, case.outcome, verdict, case.reason)
        if case.outcome.skip:
            _not_run(self._item, case.outcome, None, case.reason)


@pytest.fixture(scope="session")
def mq_state(request: pytest.FixtureRequest) -> Iterator[RunState]:
    """The run's state; its harnesses are torn down when the session ends."""
    state = state_of(request.config)
    yield state
    state.teardown()


@pytest.fixture
def mq_case(request: pytest.FixtureRequest, mq_state: RunState) -> CaseRunner:
    """One (provider, rule) case; backends are provisioned once per worker on first use."""
    provider, rule = request.param
    verdict = mq_state.provisioner(provider).provision()
    if verdict.readiness is Readiness.UNAVAILABLE:
        _not_run(request.node, Outcome.BACKEND_UNAVAILABLE, verdict, verdict.message)
    verdict.enforce()
    return CaseRunner(mq_state, provider, rule, request.node)


def _label_for_allure(provider: str, rule: Rule) -> None:
    try:
        import allure
    except ImportError:
        return
    dynamic: Any = allure.dynamic
    dynamic.parent_suite(provider)
    dynamic.suite(GROUPS[rule.group])
    dynamic.feature(GROUPS[rule.group])
    dynamic.story(rule.id)
    dynamic.title(f"{provider} {rule.id}: {rule.title}")
    dynamic.description(f"{rule.title}\n\nWhy: {rule.why}")
    dynamic.tag(provider)
    dynamic.label("rule", rule.id)

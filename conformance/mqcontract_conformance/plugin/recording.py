"""Recording outcomes on the controller: per provider and rule, then the gate and the JSON.

Each item carries what the run decided as user properties (:class:`Property`), so the
outcome is typed from the start: pytest says passed, failed or xfailed (known broken), and
a skip carries its kind. A skip without one is someone else's ``pytest.skip``: ``skipped``.
"""

from __future__ import annotations

import enum
import json
from typing import TYPE_CHECKING

import pytest

from mqcontract_conformance.measurement import Measurement
from mqcontract_conformance.outcomes import Outcome
from mqcontract_conformance.results import ProviderResult, RuleResult, write_results

if TYPE_CHECKING:
    from mqcontract_conformance.plugin.state import RunState

__all__ = ["Property", "ResultRecorder"]


class Property(enum.StrEnum):
    """The user properties a contract item carries (they travel from xdist workers)."""

    PROVIDER = "mq_provider"
    RULE = "mq_rule"
    #: The :class:`Outcome` value of a rule that did not run.
    OUTCOME = "mq_outcome"
    #: The harness's reason for listing the rule in ``known_broken``.
    KNOWN_BROKEN = "mq_known_broken"
    CAPABILITIES = "mq_capabilities"
    DESCRIBE = "mq_describe"
    METRICS = "mq_metrics"
    #: Capabilities a rule measured (a JSON list of :class:`~..measurement.Measurement`).
    MEASURED = "mq_measured"


def _reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):
        return str(longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message)[:2000]
    return str(longrepr or "")[:2000]


def _outcome(report: pytest.TestReport, props: dict[str, object]) -> tuple[Outcome, str]:
    """What a failed or skipped report means, and its reason for people."""
    if report.failed:
        return Outcome.FAILED, _reason(report)
    wasxfail = getattr(report, "wasxfail", None)
    if wasxfail is not None:
        return Outcome.KNOWN_BROKEN, str(props.get(Property.KNOWN_BROKEN, wasxfail))
    recorded = props.get(Property.OUTCOME)
    return (Outcome(str(recorded)) if recorded else Outcome.SKIPPED), _reason(report)


class ResultRecorder:
    """Registered on the controller: fills ``state.results``, gates and writes the JSON."""

    def __init__(self, state: RunState) -> None:
        self.state = state

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = {str(k): v for k, v in report.user_properties}
        if Property.RULE not in props:
            return
        provider = str(props[Property.PROVIDER])
        result_set = self.state.results.setdefault(provider, ProviderResult(provider))
        if Property.CAPABILITIES in props:
            result_set.capabilities = json.loads(str(props[Property.CAPABILITIES]))
            result_set.describe = json.loads(str(props.get(Property.DESCRIBE, "{}")))
        rule_id = str(props[Property.RULE])
        current = result_set.results.setdefault(rule_id, RuleResult(rule_id, Outcome.PASSED))
        current.duration += report.duration
        if Property.METRICS in props:
            current.metrics = json.loads(str(props[Property.METRICS]))
        if Property.MEASURED in props:
            for data in json.loads(str(props[Property.MEASURED])):
                found = Measurement.from_dict(data)
                result_set.measured[found.capability] = found
        if report.failed or (report.skipped and current.outcome is not Outcome.FAILED):
            current.outcome, current.reason = _outcome(report, props)
            # A known-broken rule is a strict xfail: a call that failed without an
            # exception (pytest's text in place of a traceback) is one that passed.
            if (
                report.failed
                and report.when == "call"
                and Property.KNOWN_BROKEN in props
                and isinstance(report.longrepr, str)
            ):
                current.known_broken_passed = True

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        state = self.state
        if not state.results:
            return
        # Every provider named must have run rules. One whose backend was unreachable fails
        # the run unless the user allowed it (then it is a loud skip); one that was reachable
        # but ran nothing fails; and a run in which no rule ran at all always fails.
        anything_ran = any(r.ran() for r in state.results.values())
        state.unavailable_providers, state.empty_providers = [], []
        for name, result in state.results.items():
            if result.ran():
                continue
            unavailable = all(
                r.outcome is Outcome.BACKEND_UNAVAILABLE for r in result.results.values()
            )
            if unavailable:
                state.unavailable_providers.append(name)
            if not (unavailable and state.options.allow_unavailable and anything_ran):
                state.empty_providers.append(name)
        if state.empty_providers and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        # A narrowed run is never a full verification: the rules it left out are recorded
        # as not selected. Not for a run cut short (-x, an interrupt): its missing rules
        # were selected and never reported, and show as missing.
        cut_short = bool(session.shouldstop or session.shouldfail) or session.exitstatus in (
            pytest.ExitCode.INTERRUPTED,
            pytest.ExitCode.INTERNAL_ERROR,
        )
        for result in state.results.values():
            if result.ran() and not cut_short:
                result.mark_unselected()
        if state.options.json:
            write_results(
                state.options.json,
                list(state.results.values()),
                extra={
                    "timing_scale": state.timing.scale,
                    "required_backends": state.require,
                    "allowed_unavailable": state.options.allow_unavailable,
                },
            )

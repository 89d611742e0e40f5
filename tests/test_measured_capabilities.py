"""CAP rules: capabilities are measured whatever is declared, and under-declaring fails.

Each specimen of ``selftest.broken_declared`` declares less than it does and is caught by
its rule at timing scales 1 and 3; the correct in-memory provider passes; a provider that
really lacks push measures as "none" (not a failure); an over-declaration is recorded but
left to the rules the capability enables. The measurements reach the results JSON (from a
failing rule too), the terminal summary and the report.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Sequence

import pytest

from mqcontract.capabilities import Capabilities, PushKind
from mqcontract.errors import UnsupportedOperation
from mqcontract.messages import QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService
from mqcontract.subscription import QueueSubscription
from mqcontract_conformance.context import ContractViolation
from mqcontract_conformance.measurement import Measurement, Verdict
from mqcontract_conformance.report.html import render_html
from mqcontract_conformance.report.markdown import render_markdown
from mqcontract_conformance.report.model import build_matrix
from mqcontract_conformance.rules import get_rule
from mqcontract_conformance.runner import CaseOutcome, run_case
from mqcontract_conformance.selftest.broken_declared import SPECIMENS, PushHiddenBehindNone
from mqcontract_conformance.selftest.catalogue import Specimen
from mqcontract_conformance.selftest.harness import SpecimenHarness
from mqcontract_conformance.timing import TimingProfile
from tests.conftest import ClassHarness

SCALES = (1.0, 3.0)


def _run(cls: type[InMemoryMessagingService], rule_id: str, scale: float = 1.0) -> CaseOutcome:
    outcome = CaseOutcome()
    harness = SpecimenHarness(cls)
    asyncio.run(
        run_case(harness, get_rule(rule_id), TimingProfile.from_scale(scale), "t", into=outcome)
    )
    return outcome


def _by_capability(outcome: CaseOutcome) -> dict[str, Measurement]:
    return {m.capability: m for m in outcome.measured}


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("specimen", SPECIMENS, ids=lambda s: s.name)
def test_each_under_declaration_is_caught(specimen: Specimen, scale: float) -> None:
    with pytest.raises(ContractViolation) as caught:
        _run(specimen.cls, specimen.rule, scale)
    assert str(caught.value).startswith(f"[{specimen.rule}] under-declared: declares ")
    assert _run(specimen.reference, specimen.rule, scale).outcome.ran


@pytest.mark.parametrize("scale", SCALES)
def test_the_correct_provider_measures_as_declared(scale: float) -> None:
    found = {
        **_by_capability(_run(InMemoryMessagingService, "CAP-1", scale)),
        **_by_capability(_run(InMemoryMessagingService, "CAP-2", scale)),
    }
    assert set(found) == {
        "push",
        "pushed_messages_claimed",
        "exact_receive_count",
        "requeue_position",
        "shared_backend",
        "visibility_precision_seconds",
    }
    assert {m.capability: m.verdict for m in found.values()} == dict.fromkeys(found, Verdict.AGREES)
    assert found["push"].measured == "full"


def test_the_failure_message_names_the_skipped_rules() -> None:
    with pytest.raises(ContractViolation) as caught:
        _run(PushHiddenBehindNone, "CAP-1")
    message = str(caught.value)
    assert "declares push=none, measured push=full (rules " in message
    assert "PUSH-1" in message
    assert " skipped)" in message


class NoPush(InMemoryMessagingService):
    """Really without push: subscribe raises UnsupportedOperation, as declared."""

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(super().capabilities, push=PushKind.NONE)

    async def subscribe_many(self, queues: Sequence[str]) -> QueueSubscription:
        raise UnsupportedOperation(self.provider_name, "subscribe")


def test_an_absent_operation_measures_as_absent_not_as_a_failure() -> None:
    outcome = _run(NoPush, "CAP-1")
    push = _by_capability(outcome)["push"]
    assert (push.measured, push.verdict) == ("none", Verdict.AGREES)
    assert "UnsupportedOperation" in push.note
    assert _by_capability(outcome)["pushed_messages_claimed"].verdict is Verdict.NOT_MEASURED


class CountsCapped(InMemoryMessagingService):
    """Declares exact receive counts but never reports more than 2 (over-declared)."""

    def _claim(self, queue: object, entry: object, visibility_timeout: float) -> QueuedMessage:
        got = super()._claim(queue, entry, visibility_timeout)  # type: ignore[arg-type]
        return dataclasses.replace(got, receive_count=min(got.receive_count, 2))


def test_an_over_declaration_is_recorded_and_left_to_the_rules_it_enables() -> None:
    outcome = _run(CountsCapped, "CAP-1")
    counts = _by_capability(outcome)["exact_receive_count"]
    assert (counts.declared, counts.measured, counts.verdict) == (
        True,
        False,
        Verdict.OVER_DECLARED,
    )
    with pytest.raises(ContractViolation, match=r"^\[VT-5\]"):
        _run(CountsCapped, "VT-5")


def test_without_a_second_service_counts_are_measured_in_one() -> None:
    outcome = CaseOutcome()
    harness = ClassHarness(InMemoryMessagingService)  # every open is a separate backend
    asyncio.run(run_case(harness, get_rule("CAP-1"), TimingProfile(), "t", into=outcome))
    counts = _by_capability(outcome)["exact_receive_count"]
    assert counts.verdict is Verdict.AGREES
    assert "one service" in counts.note


def test_a_measurement_survives_the_json_round_trip() -> None:
    m = Measurement("push", "none", "full", Verdict.UNDER_DECLARED, ("PUSH-1",), "probe")
    assert Measurement.from_dict(json.loads(json.dumps(m.to_dict()))) == m


HARNESS = """
from mqcontract_conformance.selftest.broken_declared import PushHiddenBehindNone
from mqcontract_conformance.selftest.harness import SpecimenHarness


def make(settings):
    return SpecimenHarness(PushHiddenBehindNone)
"""
ARGS = ("-p", "no:asyncio", "-p", "no:cacheprovider", "--pyargs", "mqcontract_conformance.contract")


def test_measurements_reach_the_terminal_the_json_and_the_report(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(hiddenpush=HARNESS)
    pytester.syspathinsert()
    out = pytester.path / "out.json"
    spec = ("--mq-provider", "hiddenpush:make", "--mq-rules", "CAP")
    result = pytester.runpytest(*ARGS, *spec, "--mq-json", str(out))
    result.assert_outcomes(passed=3, failed=1)  # CAP-2, CAP-3, CAP-4 pass
    result.stdout.fnmatch_lines(["*under-declared: push: declared none, measured full; rules *"])
    doc = json.loads(out.read_text())
    (provider,) = doc["providers"]
    measured = {m["capability"]: m for m in provider["measured"]}
    assert measured["push"]["verdict"] == "under-declared"  # recorded from the failing rule
    assert measured["visibility_precision_seconds"]["verdict"] == "agrees"
    matrix = build_matrix([("out.json", doc)])
    markdown = render_markdown(matrix)
    assert "## Declared and measured" in markdown
    assert "| `push` | none | full | ❌ under-declared | CLAIM-6, PUSH-1," in markdown
    assert "Declared and measured" in render_html(matrix)
    assert matrix.to_dict()["providers"][0]["measured"][0]["capability"] == "push"

"""The suite has teeth: every deliberately broken provider is failed by its rule."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from mqcontract.providers.memory import InMemoryMessagingService
from mqcontract_conformance.context import ContractViolation
from mqcontract_conformance.rules import all_rules, get_rule
from mqcontract_conformance.runner import CaseOutcome, run_case
from mqcontract_conformance.timing import TimingProfile
from tests.broken_providers import (
    CAUGHT_BY,
    CrashingClassHarness,
    ForeignIdsMemory,
    SignalMemory,
    Unlisted,
)

RunRule = Callable[[type[InMemoryMessagingService], str], CaseOutcome]


@pytest.fixture
def run_rule() -> RunRule:
    """As the shared one, with ``crash_holder`` played in-process (so ERR-8 runs)."""

    def run(cls: type[InMemoryMessagingService], rule_id: str) -> CaseOutcome:
        harness = CrashingClassHarness(cls)
        return asyncio.run(run_case(harness, get_rule(rule_id), TimingProfile(), "t"))

    return run


@pytest.mark.parametrize(
    ("broken", "rule_id"), list(CAUGHT_BY.items()), ids=[c.__name__ for c in CAUGHT_BY]
)
def test_broken_provider_is_caught_by_its_rule(
    run_rule: RunRule, broken: type[InMemoryMessagingService], rule_id: str
) -> None:
    with pytest.raises(ContractViolation, match=rf"^\[{rule_id}\]"):
        run_rule(broken, rule_id)


@pytest.mark.parametrize("rule_id", sorted(set(CAUGHT_BY.values())))
def test_the_correct_provider_passes_each_catching_rule(run_rule: RunRule, rule_id: str) -> None:
    references: dict[str, type[InMemoryMessagingService]] = {
        "PUSH-3": SignalMemory,
        "CLAIM-7": ForeignIdsMemory,
        "LIFE-11": Unlisted,
    }
    reference = references.get(rule_id, InMemoryMessagingService)
    outcome = run_rule(reference, rule_id)
    assert outcome.skip_reason is None


def test_at_least_ten_defects_are_covered() -> None:
    assert len(CAUGHT_BY) >= 10
    assert len(set(CAUGHT_BY.values())) >= 10


@pytest.mark.parametrize("rule", all_rules(), ids=lambda r: r.id)
def test_a_correct_signal_provider_passes_or_skips_every_rule(
    run_rule: RunRule, rule: object
) -> None:
    from mqcontract_conformance.rules import Rule

    assert isinstance(rule, Rule)
    run_rule(SignalMemory, rule.id)

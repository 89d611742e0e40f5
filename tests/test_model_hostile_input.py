"""The HOST rules have teeth: each catches a provider with one hostile-input defect
(the specimens of :mod:`mqcontract_conformance.selftest.broken_hostile`)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mqcontract.providers.memory import InMemoryMessagingService
from mqcontract_conformance.context import ContractViolation
from mqcontract_conformance.rules import all_rules
from mqcontract_conformance.runner import CaseOutcome
from mqcontract_conformance.selftest.broken_hostile import SPECIMENS, MixedPushMemory
from mqcontract_conformance.selftest.catalogue import Specimen
from mqcontract_conformance.selftest.references import SignalMemory

RunRule = Callable[[type[InMemoryMessagingService], str], CaseOutcome]

HOST_RULES = sorted(r.id for r in all_rules() if r.group == "HOST")


def test_every_host_rule_has_a_specimen() -> None:
    assert sorted({s.rule for s in SPECIMENS}) == HOST_RULES


@pytest.mark.parametrize("specimen", SPECIMENS, ids=lambda s: s.name)
def test_each_host_rule_catches_its_defect(run_rule: RunRule, specimen: Specimen) -> None:
    with pytest.raises(ContractViolation, match=rf"^\[{specimen.rule}\]"):
        run_rule(specimen.cls, specimen.rule)
    assert run_rule(specimen.reference, specimen.rule).skip_reason is None


@pytest.mark.parametrize("rule_id", HOST_RULES)
def test_correct_providers_pass_every_host_rule(run_rule: RunRule, rule_id: str) -> None:
    for provider in (InMemoryMessagingService, SignalMemory, MixedPushMemory):
        outcome = run_rule(provider, rule_id)
        applies = rule_id != "HOST-6" or provider is MixedPushMemory
        assert (outcome.skip_reason is None) == applies, outcome.skip_reason

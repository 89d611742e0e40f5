"""The suite has teeth: every broken provider is failed by the rule written for it.

Parametrized over the whole catalogue, so a specimen added to any ``broken_*`` module is
checked here without touching this file: its intended rule fails it with a violation
naming that rule at timing scales 1 and 3, and passes the correct provider it derives from.
"""

from __future__ import annotations

import asyncio

import pytest

from mqcontract_conformance.context import ContractViolation
from mqcontract_conformance.outcomes import Outcome
from mqcontract_conformance.registry import GROUPS
from mqcontract_conformance.rules import Rule, all_rules, get_rule
from mqcontract_conformance.runner import CaseOutcome, run_case
from mqcontract_conformance.selftest.catalogue import Specimen, all_specimens
from mqcontract_conformance.selftest.harness import SpecimenHarness
from mqcontract_conformance.selftest.matrix import DEFAULT_SCALES
from mqcontract_conformance.selftest.references import SignalMemory
from mqcontract_conformance.timing import TimingProfile

SPECIMENS = all_specimens()
#: The catalogue's target size: enough broken providers to prove every class of rule.
MINIMUM_SPECIMENS = 60


def _run(specimen: Specimen, cls: type, rule_id: str, scale: float) -> CaseOutcome:
    build = specimen.harness or SpecimenHarness
    harness = build(cls)
    return asyncio.run(run_case(harness, get_rule(rule_id), TimingProfile.from_scale(scale), "t"))


@pytest.mark.parametrize("scale", DEFAULT_SCALES, ids=lambda s: f"scale{s:g}")
@pytest.mark.parametrize("specimen", SPECIMENS, ids=lambda s: s.name)
def test_each_broken_provider_is_caught_by_its_intended_rule(
    specimen: Specimen, scale: float
) -> None:
    with pytest.raises(ContractViolation, match=rf"^\[{specimen.rule}\]"):
        _run(specimen, specimen.cls, specimen.rule, scale)


@pytest.mark.parametrize("scale", DEFAULT_SCALES, ids=lambda s: f"scale{s:g}")
@pytest.mark.parametrize("specimen", SPECIMENS, ids=lambda s: s.name)
def test_the_intended_rule_passes_the_correct_provider(specimen: Specimen, scale: float) -> None:
    outcome = _run(specimen, specimen.reference, specimen.rule, scale)
    assert outcome.outcome is Outcome.PASSED, outcome.reason


@pytest.mark.parametrize("specimen", SPECIMENS, ids=lambda s: s.name)
def test_each_broken_provider_names_its_defect_and_derives_from_its_reference(
    specimen: Specimen,
) -> None:
    assert specimen.cls.__doc__, f"{specimen.name} has no docstring naming its defect"
    assert specimen.defect != specimen.name
    assert issubclass(specimen.cls, specimen.reference)
    assert specimen.cls is not specimen.reference
    assert specimen.rule in {r.id for r in all_rules()}


def test_every_rule_group_has_a_broken_provider() -> None:
    with_rules = {r.group for r in all_rules()}
    covered = {get_rule(s.rule).group for s in SPECIMENS}
    assert with_rules <= set(GROUPS)
    assert sorted(with_rules - covered) == []


def test_the_catalogue_is_large_enough() -> None:
    assert len(SPECIMENS) >= MINIMUM_SPECIMENS


@pytest.mark.parametrize("rule", all_rules(), ids=lambda r: r.id)
def test_a_correct_signal_provider_passes_or_skips_every_rule(rule: Rule) -> None:
    asyncio.run(run_case(SpecimenHarness(SignalMemory), rule, TimingProfile(), "t"))

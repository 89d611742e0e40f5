"""A rule's "Applies when" text and its decision are one value, and they agree.

Three checks, from the structure outwards: each leaf names the field it reads; on a grid
of capabilities, every field a decision reads is named in its text; and the text itself,
read back by an evaluator written here from the words alone, decides exactly as the rule.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from typing import Any

import pytest

from mqcontract.capabilities import Capabilities, PushKind
from mqcontract_conformance.applicability import Applies
from mqcontract_conformance.registry import Rule
from mqcontract_conformance.rules import all_rules
from mqcontract_conformance.runner import CaseOutcome
from mqcontract_conformance.selftest.references import SignalMemory

RULES = all_rules()
#: Every field some rule's condition reads: the grid varies these.
READ = sorted({f for r in RULES for f in r.applies_when.fields()})
FIELDS = {f.name: str(f.type) for f in dataclasses.fields(Capabilities)}


def _values(name: str) -> list[Any]:
    if name == "push":
        return list(PushKind)
    return [None, 4000] if "None" in FIELDS[name] else [False, True]


GRID = [
    Capabilities(**dict(zip(READ, combo, strict=True)))
    for combo in itertools.product(*(_values(n) for n in READ))
]


class _Reads:
    """Capabilities that remember which fields were read."""

    def __init__(self, caps: Capabilities) -> None:
        self._caps, self.read = caps, set[str]()

    def __getattr__(self, name: str) -> Any:
        self.read.add(name)
        return getattr(self._caps, name)


def _holds(text: str, caps: Capabilities) -> bool:
    """The condition ``text`` states, decided from the words (the grammar RULES.md uses)."""
    if text == "always":
        return True
    return all(_clause(clause, caps) for clause in text.split(" and "))


def _clause(clause: str, caps: Capabilities) -> bool:
    if m := re.fullmatch(r"push (==|!=) (\w+)", clause):
        return (caps.push.value == m[2]) == (m[1] == "==")
    if m := re.fullmatch(r"push (in|not in) \(([\w, ]+)\)", clause):
        return (caps.push.value in m[2].split(", ")) == (m[1] == "in")
    if m := re.fullmatch(r"(\w+) is (not )?set", clause):
        return (getattr(caps, m[1]) is not None) != bool(m[2])
    if m := re.fullmatch(r"(not )?(\w+)", clause):
        return bool(getattr(caps, m[2])) != bool(m[1])
    raise AssertionError(f"a clause no reader could decide: {clause!r}")


def test_the_grid_covers_every_field_a_condition_reads() -> None:
    assert {"push", "pushed_messages_claimed", "fetch_by_id", "delay"} <= set(READ)
    assert len(GRID) == len(PushKind) * 2 ** (len(READ) - 1)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_the_text_names_every_field_the_decision_reads(rule: Rule) -> None:
    text = rule.applies_when.text()
    for caps in GRID:
        reads = _Reads(caps)
        rule.applies_when.applies(reads)  # type: ignore[arg-type]
        unnamed = {f for f in reads.read if not re.search(rf"\b{f}\b", text)}
        assert not unnamed, f"{rule.id}: decides on {unnamed}, says {text!r}"
    assert rule.applies_when.fields() == {f for f in FIELDS if re.search(rf"\b{f}\b", text)}, (
        f"{rule.id}: {text!r}"
    )


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_the_text_read_back_decides_as_the_rule(rule: Rule) -> None:
    text = str(rule.applies_when)
    for caps in GRID:
        assert _holds(text, caps) == rule.applies_when.applies(caps), f"{rule.id}: {text!r}"


def test_conditions_compose_and_render_what_they_check() -> None:
    claimed = Applies.push(PushKind.MIXED, PushKind.FULL) & Applies.flag("pushed_messages_claimed")
    assert str(claimed) == "push in (full, mixed) and pushed_messages_claimed"
    assert str(~Applies.push(PushKind.NONE)) == "push != none"
    assert str(~Applies.flag("delay")) == "not delay"
    assert str(~claimed) == "not (push in (full, mixed) and pushed_messages_claimed)"
    assert ~~claimed == claimed
    assert Applies.always() & Applies.flag("fifo") == Applies.flag("fifo")
    assert str(Applies.always()) == "always"
    assert str(Applies.is_set("push_payload_threshold_bytes")).endswith("is set")


@pytest.mark.parametrize(
    "make",
    [
        lambda: Applies.flag("requeue_position"),  # not a boolean
        lambda: Applies.flag("no_such_field"),
        lambda: Applies.is_set("fifo"),  # never None
        lambda: Applies.push(),
    ],
)
def test_a_condition_on_a_field_that_cannot_decide_it_is_refused(make: Any) -> None:
    with pytest.raises(ValueError, match="Applies"):
        make()


def test_a_skip_states_the_whole_condition(run_rule: Any) -> None:
    """PUSH-7, PUSH-12 and ERR-7 need push first: their reason says so."""
    for rule_id in ("PUSH-7", "PUSH-12", "ERR-7"):
        outcome: CaseOutcome = run_rule(SignalMemory, rule_id)
        assert outcome.skip_reason == (
            f"{rule_id} not claimed: applies when push in (full, mixed) and pushed_messages_claimed"
        )


def test_rules_documents_the_function_that_checks_each_rule() -> None:
    for r in RULES:
        module, _, name = r.checked_by.partition(":")
        assert module.startswith("mqcontract_conformance.cases."), r.checked_by
        assert r.check.__name__ == name


#: Group -> the case module that holds its rules.
HOMES = {
    "LIFE": "lifecycle",
    "SEND": "send",
    "RECV": "receive",
    "ORD": "ordering",
    "VT": "visibility",
    "ACK": "ack",
    "CLAIM": "claims",
    "DLY": "delay",
    "PUSH": "push",
    "FETCH": "fetch",
    "ERR": "errors",
    "HOLD": "holders",
    "DUR": "durability",
    "EVT": "events",
    "HOST": "hostile",
    "MODEL": "model",
    "CAP": "capabilities",
}


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_each_rule_lives_in_the_module_named_for_its_group(rule: Rule) -> None:
    """A group's rules live in its module, or in one named for it and a part of it
    (``push_scope``, ``capabilities_maxima``)."""
    package, _, module = rule.check.__module__.rpartition(".")
    home = HOMES[rule.group]
    assert package == "mqcontract_conformance.cases"
    assert module == home or module.startswith(f"{home}_"), module

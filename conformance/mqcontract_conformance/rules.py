"""The rule registry: the single source of truth for the contract.

A rule is an id, a group, one sentence that must hold, why, the capability it depends on,
and an async check. pytest items, Allure labels, the JSON results, the compatibility
matrix and ``RULES.md`` are all generated from this registry, so they cannot drift.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mqcontract.capabilities import Capabilities

if TYPE_CHECKING:
    from mqcontract_conformance.context import CaseContext

__all__ = ["GROUPS", "SUITE_VERSION", "Rule", "all_rules", "get_rule", "rule"]

#: Bumped when rules are added or changed; new rules start ``provisional``.
SUITE_VERSION = "1.1.0"

#: Group id -> heading, in document order.
GROUPS: dict[str, str] = {
    "LIFE": "Queue lifecycle",
    "SEND": "Send",
    "RECV": "Receive",
    "ORD": "Ordering",
    "VT": "Visibility timeout",
    "ACK": "Ack and nack",
    "DLY": "Delay",
    "PUSH": "Push delivery",
    "FETCH": "Fetch by id",
    "ERR": "Errors and bounds",
    "EVT": "Event system and fallback recovery",
    "HOST": "Hostile input",
    "MODEL": "Model-based checks",
}

Check = Callable[["CaseContext"], Awaitable[None]]
Requirement = Callable[[Capabilities], bool]


@dataclass(frozen=True, slots=True)
class Rule:
    """One numbered, checkable statement of the contract."""

    id: str
    title: str
    why: str
    check: Check
    capability: str = ""
    requires: Requirement | None = None
    provisional: bool = False
    hooks: tuple[str, ...] = ()

    @property
    def group(self) -> str:
        return self.id.split("-", 1)[0]

    def unmet(self, caps: Capabilities) -> str | None:
        """Why this rule does not apply to ``caps``, or None when it does."""
        if self.requires is None or self.requires(caps):
            return None
        return f"{self.id} not claimed: applies when {self.capability}"


_REGISTRY: dict[str, Rule] = {}


def rule(
    rule_id: str,
    title: str,
    *,
    why: str,
    capability: str = "",
    requires: Requirement | None = None,
    provisional: bool = False,
    hooks: tuple[str, ...] = (),
) -> Callable[[Check], Check]:
    """Register the decorated async check as rule ``rule_id``."""
    group = rule_id.split("-", 1)[0]
    if group not in GROUPS:
        raise ValueError(f"rule {rule_id}: unknown group {group}")

    def register(check: Check) -> Check:
        existing = _REGISTRY.get(rule_id)
        if existing is not None and existing.check.__qualname__ != check.__qualname__:
            raise ValueError(f"duplicate rule id {rule_id}")  # a re-import replaces itself
        _REGISTRY[rule_id] = Rule(
            rule_id, title, why, check, capability, requires, provisional, hooks
        )
        return check

    return register


def _sort_key(r: Rule) -> tuple[int, int]:
    group, _, number = r.id.partition("-")
    return (list(GROUPS).index(group), int(number))


def all_rules() -> list[Rule]:
    """Every registered rule in document order (importing the cases registers them)."""
    import mqcontract_conformance.cases  # noqa: F401  (registers on import)

    return sorted(_REGISTRY.values(), key=_sort_key)


def get_rule(rule_id: str) -> Rule:
    """The rule with this id."""
    for r in all_rules():
        if r.id == rule_id:
            return r
    raise KeyError(rule_id)

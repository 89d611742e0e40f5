"""The rule registry: what the case modules register their rules in.

A rule is an id, a group, one sentence that must hold, why, when it applies, the harness
hooks it needs and the async check that verifies it. pytest items, Allure labels, the
JSON results, the compatibility matrix and ``RULES.md`` are all generated from these
entries, so they cannot drift. The cases import this module; :mod:`.rules` imports the
cases and lists what they registered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mqcontract_conformance.applicability import Applies

if TYPE_CHECKING:
    from mqcontract_conformance.context import CaseContext

__all__ = ["GROUPS", "SUITE_VERSION", "Check", "Rule", "registered", "rule"]

#: Bumped when rules are added or changed; new rules start ``provisional``.
SUITE_VERSION = "2.15.0"

#: Group id -> heading, in document order.
GROUPS: dict[str, str] = {
    "LIFE": "Queue lifecycle",
    "SEND": "Send",
    "RECV": "Receive",
    "ORD": "Ordering",
    "VT": "Visibility timeout",
    "ACK": "Ack and nack",
    "CLAIM": "Claims: settling exactly the claim given",
    "DLY": "Delay",
    "PUSH": "Push delivery",
    "FETCH": "Fetch by id",
    "ERR": "Errors and bounds",
    "HOLD": "Holders that stop running",
    "DUR": "Durability across a server restart",
    "EVT": "Event system and fallback recovery",
    "HOST": "Hostile input",
    "MODEL": "Model-based checks",
    "CAP": "Declared capabilities, measured",
}

Check = Callable[["CaseContext"], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Rule:
    """One numbered, checkable statement of the contract."""

    id: str
    title: str
    why: str
    check: Check
    applies_when: Applies = field(default_factory=Applies.always)
    provisional: bool = False
    hooks: tuple[str, ...] = ()

    @property
    def group(self) -> str:
        return self.id.split("-", 1)[0]

    @property
    def checked_by(self) -> str:
        """``module:function`` of the check, for readers of ``RULES.md``."""
        return f"{self.check.__module__}:{self.check.__qualname__}"


_REGISTRY: dict[str, Rule] = {}


def rule(
    rule_id: str,
    title: str,
    *,
    why: str,
    applies_when: Applies | None = None,
    provisional: bool = False,
    hooks: tuple[str, ...] = (),
) -> Callable[[Check], Check]:
    """Register the decorated async check as rule ``rule_id`` (always applies by default)."""
    group = rule_id.split("-", 1)[0]
    if group not in GROUPS:
        raise ValueError(f"rule {rule_id}: unknown group {group}")

    def register(check: Check) -> Check:
        existing = _REGISTRY.get(rule_id)
        if existing is not None and existing.check.__qualname__ != check.__qualname__:
            raise ValueError(f"duplicate rule id {rule_id}")  # a re-import replaces itself
        _REGISTRY[rule_id] = Rule(
            rule_id,
            title,
            why,
            check,
            applies_when or Applies.always(),
            provisional,
            hooks,
        )
        return check

    return register


def _sort_key(r: Rule) -> tuple[int, int]:
    group, _, number = r.id.partition("-")
    return (list(GROUPS).index(group), int(number))


def registered() -> list[Rule]:
    """The rules registered so far, in document order."""
    return sorted(_REGISTRY.values(), key=_sort_key)

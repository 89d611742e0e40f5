"""The suite's rules: every case module, imported, and what they registered.

This is the catalog readers of the suite use (``all_rules``, ``get_rule``); the case
modules register into :mod:`.registry`, which knows none of them.
"""

from __future__ import annotations

from mqcontract_conformance.cases import (  # noqa: F401  (each registers its rules)
    ack,
    capabilities,
    capabilities_maxima,
    claims,
    delay,
    durability,
    errors,
    events,
    fetch,
    holders,
    hostile,
    lifecycle,
    model,
    ordering,
    push,
    push_scope,
    receive,
    send,
    visibility,
)
from mqcontract_conformance.registry import GROUPS, SUITE_VERSION, Rule, registered

__all__ = ["GROUPS", "SUITE_VERSION", "Rule", "all_rules", "get_rule"]


def all_rules() -> list[Rule]:
    """Every rule of the suite in document order."""
    return registered()


def get_rule(rule_id: str) -> Rule:
    """The rule with this id."""
    for r in all_rules():
        if r.id == rule_id:
            return r
    raise KeyError(rule_id)

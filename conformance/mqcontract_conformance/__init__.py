"""mqcontract's conformance suite: numbered rules any messaging provider can run.

Public surface: :class:`Harness` (what a provider author supplies), the rule registry
and the pytest plugin (``--mq-provider``), plus ``mqcontract verify`` on the command line.
"""

from __future__ import annotations

from mqcontract_conformance.harness import Harness, HarnessFactory, HarnessSettings, HookUnavailable
from mqcontract_conformance.rules import GROUPS, SUITE_VERSION, Rule, all_rules, get_rule
from mqcontract_conformance.timing import TimingProfile

__all__ = [
    "GROUPS",
    "SUITE_VERSION",
    "Harness",
    "HarnessFactory",
    "HarnessSettings",
    "HookUnavailable",
    "Rule",
    "TimingProfile",
    "all_rules",
    "get_rule",
]

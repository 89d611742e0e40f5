"""mqcontract's conformance kit: numbered rules any messaging provider can run.

Public surface for provider authors: :class:`Harness` (with :class:`HarnessSettings` and
:class:`HookUnavailable`, defined in :mod:`mqcontract.testing` and re-exported here), the
rule registry and the pytest plugin (``--mq-provider``), plus the ``mqcontract`` command
(``verify``, ``rules``, ``report``, ``bench``, ``stress``).

Names are resolved on first use, so ``mqcontract verify`` can import its own module
before pytest starts without importing the rules (pytest then rewrites their assertions).
The kit needs pytest and hypothesis: ``pip install 'mqcontract[kit]'``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mqcontract.testing import Harness, HarnessFactory, HarnessSettings, HookUnavailable
    from mqcontract_conformance.applicability import Applies
    from mqcontract_conformance.outcomes import Outcome
    from mqcontract_conformance.registry import GROUPS, SUITE_VERSION, Rule
    from mqcontract_conformance.rules import all_rules, get_rule
    from mqcontract_conformance.timing import TimingProfile

__all__ = [
    "GROUPS",
    "SUITE_VERSION",
    "Applies",
    "Harness",
    "HarnessFactory",
    "HarnessSettings",
    "HookUnavailable",
    "Outcome",
    "Rule",
    "TimingProfile",
    "all_rules",
    "get_rule",
]

_HOMES = {
    "Harness": "mqcontract.testing",
    "HarnessFactory": "mqcontract.testing",
    "HarnessSettings": "mqcontract.testing",
    "HookUnavailable": "mqcontract.testing",
    "Applies": "mqcontract_conformance.applicability",
    "Outcome": "mqcontract_conformance.outcomes",
    "GROUPS": "mqcontract_conformance.registry",
    "SUITE_VERSION": "mqcontract_conformance.registry",
    "Rule": "mqcontract_conformance.registry",
    "all_rules": "mqcontract_conformance.rules",
    "get_rule": "mqcontract_conformance.rules",
    "TimingProfile": "mqcontract_conformance.timing",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

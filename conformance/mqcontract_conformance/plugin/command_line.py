"""The plugin's command line: the ``--mq-*`` options (rows of :mod:`..options`), read once.

Mistakes in them are usage errors naming the option as the user typed it (pytest's
``--mq-rules`` or ``mqcontract verify``'s ``--rules``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from mqcontract_conformance.options import OPTIONS, Spelling, option
from mqcontract_conformance.provisioning import backends_required
from mqcontract_conformance.registry import GROUPS, Rule
from mqcontract_conformance.rules import all_rules

__all__ = ["RunOptions", "flag", "pytest_addoption", "selected_rules"]

#: Set (``1``, ``true``, ``yes``) to allow unreachable backends, like the option.
ALLOW_ENV = "MQCONTRACT_ALLOW_UNAVAILABLE"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mqcontract", "mqcontract conformance suite")
    for row in OPTIONS:
        group.addoption(row.flag(Spelling.PYTEST), dest=row.dest, **row.keywords())
    # Set by `mqcontract verify` so messages name the options its user typed.
    group.addoption(
        "--mq-flag-names",
        default=Spelling.PYTEST.value,
        choices=[s.value for s in Spelling],
        help="",
    )


def flag(config: pytest.Config, name: str) -> str:
    """The option ``name`` as the user spells it (pytest's or ``mqcontract verify``'s)."""
    return option(name).flag(Spelling(str(config.getoption("mq_flag_names"))))


@dataclass(frozen=True)
class RunOptions:
    """The ``--mq-*`` options of this run, with their environment fallbacks applied."""

    #: The providers named (``--mq-provider``); none means the plugin stays idle.
    named: tuple[str, ...]
    timing_scale: float | None
    real_time: bool
    require: bool
    allow_unavailable: bool
    json: str | None

    @property
    def providers(self) -> list[str]:
        """The providers to verify: those named, in order, once each (default: memory)."""
        return list(dict.fromkeys(self.named or ("memory",)))

    @classmethod
    def of(cls, config: pytest.Config) -> RunOptions:
        allow = os.environ.get(ALLOW_ENV, "").lower() in {"1", "true", "yes"}
        return cls(
            named=tuple(config.getoption("mq_provider") or ()),
            timing_scale=config.getoption("mq_timing_scale"),
            real_time=bool(config.getoption("mq_real_time")),
            require=backends_required(bool(config.getoption("mq_require_backends"))),
            allow_unavailable=bool(config.getoption("mq_allow_unavailable")) or allow,
            json=config.getoption("mq_json") or None,
        )


def selected_rules(config: pytest.Config) -> list[Rule]:
    """The rules ``--mq-rules`` names (ids or groups); all of them when it is not given."""
    text = str(config.getoption("mq_rules") or "")
    wanted = {w.strip().upper() for w in text.split(",") if w.strip()}
    rules = all_rules()
    if not wanted:
        return rules
    chosen = [r for r in rules if r.id in wanted or r.group in wanted]
    unknown = sorted(w for w in wanted if not any(w in (r.id, r.group) for r in rules))
    if unknown:
        raise pytest.UsageError(
            f"{flag(config, 'rules')}: no rule or group named {', '.join(unknown)} "
            f"(groups: {', '.join(GROUPS)}; `mqcontract rules` lists the ids)"
        )
    return chosen

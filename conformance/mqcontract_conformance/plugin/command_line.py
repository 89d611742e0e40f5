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
from mqcontract_conformance.timing import SCALE_ENV, checked_scale

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
    #: ``--mq-timing-scale``, else ``MQCONTRACT_TIMING_SCALE``, else 1 (checked: finite, > 0).
    timing_scale: float
    real_time: bool
    require: bool
    allow_unavailable: bool
    #: ``--mq-json``: None when not given ("" is a mistake :func:`.state.check` reports).
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
            timing_scale=_timing_scale(config),
            real_time=bool(config.getoption("mq_real_time")),
            require=backends_required(bool(config.getoption("mq_require_backends"))),
            allow_unavailable=bool(config.getoption("mq_allow_unavailable")) or allow,
            json=config.getoption("mq_json"),
        )


def _timing_scale(config: pytest.Config) -> float:
    """The run's timing scale; a usage error naming the option or variable unless it is a
    finite number greater than 0 (``inf`` would wait forever and blame the provider)."""
    given = config.getoption("mq_timing_scale")
    text = str(given) if given is not None else os.environ.get(SCALE_ENV, "")
    source = flag(config, "timing_scale") if given is not None else SCALE_ENV
    if given is None and not text.strip():
        return 1.0
    try:
        return checked_scale(text)
    except ValueError as exc:
        sep = " " if given is not None else "="
        raise pytest.UsageError(
            f"{source}{sep}{text}: {exc} (it multiplies every timing bound)"
        ) from None


def selected_rules(config: pytest.Config) -> list[Rule]:
    """The rules ``--mq-rules`` names (ids or groups); all of them when it is not given.

    Given, it must name at least one: an empty ``--rules "$RULES"`` is a mistake, not
    a request for the whole suite.
    """
    given = config.getoption("mq_rules")
    rules = all_rules()
    if given is None:
        return rules
    wanted = {w.strip().upper() for w in str(given).split(",") if w.strip()}
    if not wanted:
        raise pytest.UsageError(
            f"{flag(config, 'rules')} names no rule (got {str(given)!r}; give rule ids or "
            f"groups, comma-separated, or leave the option out to run every rule)"
        )
    chosen = [r for r in rules if r.id in wanted or r.group in wanted]
    unknown = sorted(w for w in wanted if not any(w in (r.id, r.group) for r in rules))
    if unknown:
        raise pytest.UsageError(
            f"{flag(config, 'rules')}: no rule or group named {', '.join(unknown)} "
            f"(groups: {', '.join(GROUPS)}; `mqcontract rules` lists the ids)"
        )
    return chosen

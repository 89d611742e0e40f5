"""The options of a contract run, in one table: ``mqcontract verify``'s and pytest's.

Each row gives both spellings (``--provider`` for verify, ``--mq-provider`` for pytest),
the argparse keywords both parsers take, and how verify passes a value on to pytest.
``verify`` reads this module before pytest starts, so it imports nothing of the kit's.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["OPTIONS", "Option", "Spelling", "option"]


class Spelling(enum.StrEnum):
    """Whose command line the user typed: messages name the option as they spelled it."""

    PYTEST = "pytest"
    VERIFY = "verify"


class _Kind(enum.Enum):
    REPEATED = "append"
    VALUE = "store"
    SWITCH = "store_true"


@dataclass(frozen=True)
class Option:
    """One option of a run."""

    #: ``provider``: verify's ``--provider`` and pytest's ``--mq-provider``.
    name: str
    help: str
    kind: _Kind = _Kind.VALUE
    metavar: str | None = None
    #: ``float`` and the like; None keeps the text.
    type: Any = None

    @property
    def dest(self) -> str:
        """The attribute pytest's ``config.getoption`` reads."""
        return f"mq_{self.name}"

    def flag(self, spelling: Spelling) -> str:
        """The option as a user of ``spelling``'s command line types it."""
        prefix = "--mq-" if spelling is Spelling.PYTEST else "--"
        return prefix + self.name.replace("_", "-")

    def keywords(self) -> dict[str, Any]:
        """What ``argparse``'s and pytest's ``addoption`` take besides the flag."""
        words: dict[str, Any] = {"action": self.kind.value, "help": self.help}
        if self.kind is _Kind.REPEATED:
            words["default"] = []
        if self.kind is _Kind.VALUE:
            words["default"] = None
        if self.metavar is not None:
            words["metavar"] = self.metavar
        if self.type is not None:
            words["type"] = self.type
        return words

    def pytest_args(self, value: Any) -> list[str]:
        """``value`` (as verify parsed it) passed on to pytest."""
        flag = self.flag(Spelling.PYTEST)
        if self.kind is _Kind.REPEATED:
            return [arg for item in value or () for arg in (flag, str(item))]
        if self.kind is _Kind.SWITCH:
            return [flag] if value else []
        # An empty value is passed on too: the plugin reports it (``--rules ""``).
        return [] if value is None else [flag, str(value)]


OPTIONS: Sequence[Option] = (
    Option(
        "provider",
        "provider to verify (repeatable; default: memory)",
        _Kind.REPEATED,
        "NAME|module:factory",
    ),
    Option("rules", "comma-separated rule ids or groups to run (default: all)", metavar="IDS"),
    Option("json", "write the results as JSON", metavar="PATH"),
    Option(
        "timing_scale",
        "multiply every timing bound (default: $MQCONTRACT_TIMING_SCALE or 1)",
        metavar="FACTOR",
        type=float,
    ),
    Option("real_time", "run providers that support virtual time in real time", _Kind.SWITCH),
    Option(
        "require_backends",
        "a missing backend fails each rule instead of skipping it "
        "(or $MQCONTRACT_REQUIRE_BACKENDS=1; use in CI)",
        _Kind.SWITCH,
    ),
    Option(
        "allow_unavailable",
        "a provider whose backend is unreachable is skipped instead of failing the run "
        "(or $MQCONTRACT_ALLOW_UNAVAILABLE=1)",
        _Kind.SWITCH,
    ),
)

_BY_NAME = {o.name: o for o in OPTIONS}


def option(name: str) -> Option:
    """The row named ``name``."""
    return _BY_NAME[name]

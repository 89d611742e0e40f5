"""A capability as declared and as measured: what the CAP rules find, on its way to a report.

A case appends :class:`Measurement` values to ``ctx.measured``; they travel, even from a
failing case, through the results JSON (``providers[].measured``) to the terminal summary
and the compatibility report. Values are JSON scalars, so a report made anywhere reads
them without the provider's enums.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

__all__ = ["Measurement", "Scalar", "Verdict", "render"]

#: A capability's value as the JSON carries it.
Scalar = str | int | float | bool | None


class Verdict(enum.StrEnum):
    """How a measurement compares with the declaration."""

    AGREES = "agrees"
    #: Declares less than it does, so rules that would hold it to more were skipped or
    #: loosened: the CAP rule fails.
    UNDER_DECLARED = "under-declared"
    #: Declares more than it does: the rules the capability enables hold it to that.
    OVER_DECLARED = "over-declared"
    #: Neither more nor less (a different requeue position): the rules it selects check it.
    DIFFERS = "differs"
    #: The probe could not tell (a hook missing, nothing observable).
    NOT_MEASURED = "not measured"

    @property
    def mismatch(self) -> bool:
        """The measurement contradicts the declaration."""
        return self in {Verdict.UNDER_DECLARED, Verdict.OVER_DECLARED, Verdict.DIFFERS}


def render(value: Scalar) -> str:
    """A value as people read it (``none`` for an absent optional capability)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@dataclass(frozen=True)
class Measurement:
    """One capability: its declared value, the value a probe observed, and the verdict."""

    capability: str
    declared: Scalar
    measured: Scalar
    verdict: Verdict
    #: The rules the declaration skipped or loosened (for an under-declaration).
    rules: tuple[str, ...] = ()
    #: How it was measured, or why it could not be.
    note: str = ""

    def text(self) -> str:
        """``push: declared none, measured full``."""
        return (
            f"{self.capability}: declared {render(self.declared)}, measured {render(self.measured)}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "capability": self.capability,
            "declared": self.declared,
            "measured": self.measured,
            "verdict": self.verdict.value,
            "rules": list(self.rules),
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        """The inverse of :meth:`to_dict`; an unknown verdict reads as not measured."""
        verdict = str(data.get("verdict", ""))
        known = {v.value for v in Verdict}
        return cls(
            capability=str(data.get("capability", "")),
            declared=_scalar(data.get("declared")),
            measured=_scalar(data.get("measured")),
            verdict=Verdict(verdict) if verdict in known else Verdict.NOT_MEASURED,
            rules=tuple(str(r) for r in data.get("rules", ())),
            note=str(data.get("note", "")),
        )


def _scalar(value: object) -> Scalar:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)

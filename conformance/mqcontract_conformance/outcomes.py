"""What happened to one rule for one provider: one typed value from the run to the report.

The runner and the plugin decide it, the results JSON stores its value, the report shows
its label. Nothing downstream reads a reason to find out what happened: reasons are for
people. The kinds of skip mean different things to whoever reads a gate: *not claimed*
(the provider declared it lacks the capability: the rule does not apply), *needs a
harness hook* (the rule applies, but the harness cannot inject the fault or read the
backdoor it needs: unverified), *backend unavailable* (nothing was verified), any
other skip (unverified too), and *not selected* (the run was narrowed, with ``--rules``
or ``-k``, and left the rule out: unverified, so a narrowed gate never reads as a full
certification).
"""

from __future__ import annotations

import enum

__all__ = ["Outcome"]


class Outcome(enum.StrEnum):
    """One rule's outcome for one provider, in display order (values are the JSON's)."""

    PASSED = "passed"
    FAILED = "failed"
    #: Failed as the harness's ``known_broken`` said it would (a strict xfail).
    KNOWN_BROKEN = "known-broken"
    NOT_CLAIMED = "not-claimed"
    NEEDS_HOOK = "needs-hook"
    BACKEND_UNAVAILABLE = "backend-unavailable"
    #: Skipped for a reason the kit did not decide (a ``pytest.skip`` of someone else's).
    SKIPPED = "skipped"
    #: Left out of a narrowed run (``--rules``, ``-k``): recorded for every rule of the
    #: suite the run did not select for a provider it verified.
    NOT_SELECTED = "not-selected"
    #: Report only: the provider's results say nothing about this rule.
    MISSING = "missing"

    @property
    def label(self) -> str:
        """How the terminal and the report name it."""
        return _LABELS[self]

    @property
    def ran(self) -> bool:
        """The rule's check ran to a verdict."""
        return self in {Outcome.PASSED, Outcome.FAILED, Outcome.KNOWN_BROKEN}

    @property
    def skip(self) -> bool:
        """The rule did not run, and the run said why."""
        return self in _SKIPS

    @property
    def unverified(self) -> bool:
        """The rule applies to the provider but did not run."""
        return self in _SKIPS and self is not Outcome.NOT_CLAIMED

    @classmethod
    def skips(cls) -> tuple[Outcome, ...]:
        """The kinds of skip, in display order."""
        return tuple(o for o in cls if o.skip)

    @classmethod
    def of_run(cls) -> tuple[Outcome, ...]:
        """Every outcome a run can record (all but :attr:`MISSING`)."""
        return tuple(o for o in cls if o is not Outcome.MISSING)


_SKIPS = frozenset(
    {
        Outcome.NOT_CLAIMED,
        Outcome.NEEDS_HOOK,
        Outcome.BACKEND_UNAVAILABLE,
        Outcome.SKIPPED,
        Outcome.NOT_SELECTED,
    }
)
_LABELS = {
    Outcome.PASSED: "passed",
    Outcome.FAILED: "failed",
    Outcome.KNOWN_BROKEN: "known broken",
    Outcome.NOT_CLAIMED: "not claimed",
    Outcome.NEEDS_HOOK: "needs a harness hook",
    Outcome.BACKEND_UNAVAILABLE: "backend unavailable",
    Outcome.SKIPPED: "skipped for another reason",
    Outcome.NOT_SELECTED: "not selected in this run",
    Outcome.MISSING: "missing",
}

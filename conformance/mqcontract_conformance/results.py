"""The JSON result of a verification run: what reports and CI gates read.

Each rule's ``outcome`` is an :class:`~.outcomes.Outcome` value (``passed``, ``failed``,
``known-broken``, and for a rule that did not run, the kind of skip: ``not-claimed``,
``needs-hook``, ``backend-unavailable`` or ``skipped``); the reason beside it is for
people. A provider whose rules passed but some of which were not verified is ``passing,
unverified``, never plain ``passing``. The document also carries the text of every rule
of the suite that ran, so a report made anywhere can show exactly what was checked.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mqcontract._arguments import check_file
from mqcontract_conformance.measurement import Measurement
from mqcontract_conformance.outcomes import Outcome
from mqcontract_conformance.registry import GROUPS, SUITE_VERSION, Rule
from mqcontract_conformance.rules import all_rules

__all__ = [
    "RESULTS_FORMAT",
    "ProviderResult",
    "RuleResult",
    "check_writable",
    "rule_text",
    "write_results",
]

#: The ``format`` of the document :func:`write_results` writes (3: the ``not-selected``
#: outcome, which a reader of 2 does not know).
RESULTS_FORMAT = "mqcontract-results/3"


@dataclass
class RuleResult:
    """One rule's outcome for one provider."""

    rule: str
    outcome: Outcome
    reason: str = ""
    duration: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    #: Failed by passing: the harness lists it as known broken (a strict xfail).
    known_broken_passed: bool = False

    def to_dict(self) -> dict[str, Any]:
        r = _rules().get(self.rule)
        return {
            "rule": self.rule,
            "group": self.rule.split("-", 1)[0],
            "title": r.title if r else "",
            "provisional": bool(r and r.provisional),
            "outcome": self.outcome.value,
            "reason": self.reason,
            "duration": round(self.duration, 4),
            **({"metrics": self.metrics} if self.metrics else {}),
            **({"known_broken_passed": True} if self.known_broken_passed else {}),
        }


@dataclass
class ProviderResult:
    """Every rule result of one provider, plus what it declared."""

    name: str
    capabilities: dict[str, Any] = field(default_factory=dict)
    describe: dict[str, str] = field(default_factory=dict)
    results: dict[str, RuleResult] = field(default_factory=dict)
    #: Capability -> what the CAP rules measured beside the declaration.
    measured: dict[str, Measurement] = field(default_factory=dict)

    def counts(self) -> dict[Outcome, int]:
        """How many rules ended in each outcome a run can record."""
        counts = dict.fromkeys(Outcome.of_run(), 0)
        for result in self.results.values():
            counts[result.outcome] += 1
        return counts

    def summary(self) -> dict[str, int]:
        """:meth:`counts` for the JSON, keyed by outcome value."""
        return {outcome.value: n for outcome, n in self.counts().items()}

    def mark_unselected(self) -> None:
        """Record every rule of the suite this run left out as ``not-selected``."""
        for rule_id in _rules():
            if rule_id not in self.results:
                reason = "not selected in this run (--rules, -k or another selection)"
                self.results[rule_id] = RuleResult(rule_id, Outcome.NOT_SELECTED, reason)

    def ran(self) -> int:
        """Rules that really ran (passed, failed or failed as known)."""
        return sum(n for outcome, n in self.counts().items() if outcome.ran)

    def unverified(self) -> dict[Outcome, list[str]]:
        """Rule ids that apply but did not run, per kind of skip (not-claimed excluded)."""
        out: dict[Outcome, list[str]] = {}
        for r in self.results.values():
            if r.outcome.unverified:
                out.setdefault(r.outcome, []).append(r.rule)
        return {kind: sorted(out[kind], key=_order_of) for kind in Outcome if kind in out}

    def unverified_groups(self, *, without: Outcome | None = None) -> dict[str, str]:
        """Rule group -> why some of its rules were not verified, in document order
        (``without``: leaving out that kind of skip)."""
        reasons: dict[str, list[str]] = {}
        for kind, ids in self.unverified().items():
            if kind is without:
                continue
            for rule_id in ids:
                group = rule_id.split("-", 1)[0]
                why = kind.label
                if kind is Outcome.NEEDS_HOOK:
                    hooks = _rules()[rule_id].hooks if rule_id in _rules() else ()
                    said = self.results[rule_id].reason.partition("needs a harness hook: ")[2]
                    why = f"needs a harness hook ({', '.join(hooks) or said or 'unnamed'})"
                reasons.setdefault(group, [])
                if why not in reasons[group]:
                    reasons[group].append(why)
        order = list(GROUPS)
        return {
            g: "; ".join(reasons[g])
            for g in sorted(reasons, key=lambda g: order.index(g) if g in order else len(order))
        }

    def status(self) -> str:
        """``failing``, ``not verified`` (no rule ran), ``passing, unverified`` or ``passing``."""
        if self.counts()[Outcome.FAILED]:
            return "failing"
        if self.ran() == 0:
            return "not verified"
        return "passing, unverified" if self.unverified() else "passing"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.describe.get("version", ""),
            "status": self.status(),
            "describe": self.describe,
            "capabilities": self.capabilities,
            "summary": self.summary(),
            **(
                {"measured": [m.to_dict() for m in self.measured.values()]} if self.measured else {}
            ),
            "unverified": [
                {"group": g, "heading": GROUPS.get(g, g), "why": why}
                for g, why in self.unverified_groups().items()
            ],
            "results": [r.to_dict() for r in sorted(self.results.values(), key=_order)],
        }


def rule_text(r: Rule) -> dict[str, Any]:
    """What a report needs to show a rule exactly as the suite that ran it states it."""
    return {
        "id": r.id,
        "group": r.group,
        "title": r.title,
        "why": r.why,
        "applies_when": r.applies_when.text(),
        "checked_by": r.checked_by,
        "hooks": list(r.hooks),
        "provisional": r.provisional,
    }


def _rules() -> dict[str, Rule]:
    return {r.id: r for r in all_rules()}


def _order_of(rule_id: str) -> int:
    ids = list(_rules())
    return ids.index(rule_id) if rule_id in ids else len(ids)


def _order(r: RuleResult) -> int:
    return _order_of(r.rule)


def check_writable(path: str | Path) -> None:
    """Raise ``OSError`` now if the results could not be written to ``path`` later
    (:func:`.arguments.check_file`: nothing is left behind by the check)."""
    check_file(path)


def write_results(
    path: str | Path, providers: list[ProviderResult], *, extra: dict[str, Any]
) -> None:
    """Write the run's JSON document."""
    doc = {
        "format": RESULTS_FORMAT,
        "suite_version": SUITE_VERSION,
        "package_version": _package_version(),
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        **extra,
        "providers": [p.to_dict() for p in providers],
        "rules": [rule_text(r) for r in all_rules()],
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def _package_version() -> str:
    import mqcontract

    return mqcontract.__version__

"""The JSON result of a verification run: what reports and CI gates read.

A skipped rule says why, in one of three kinds, because they mean different things to
whoever reads the gate: *not claimed* (the provider declared it lacks the capability:
the rule does not apply), *needs a harness hook* (the rule applies, but the harness
cannot inject the fault or read the backdoor it needs: the behaviour is unverified) and
*backend unavailable* (nothing about the provider was verified). A provider whose rules
passed but some of which were not verified is ``passing, unverified``, never plain
``passing``. The document also carries the text of every rule of the suite that ran, so
a report made anywhere can show exactly what was checked.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mqcontract_conformance.rules import GROUPS, SUITE_VERSION, Rule, all_rules

__all__ = [
    "OUTCOMES",
    "SKIP_KINDS",
    "ProviderResult",
    "RuleResult",
    "check_writable",
    "rule_text",
    "write_results",
]

OUTCOMES = ("passed", "failed", "skipped", "xfailed")

#: Why a rule was skipped -> how the terminal, the JSON and the report name it.
SKIP_KINDS: dict[str, str] = {
    "not-claimed": "not claimed",
    "needs-hook": "needs a harness hook",
    "backend-unavailable": "backend unavailable",
    "other": "skipped for another reason",
}


@dataclass
class RuleResult:
    """One rule's outcome for one provider."""

    rule: str
    outcome: str
    reason: str = ""
    duration: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    #: For a skip: a key of :data:`SKIP_KINDS`.
    skip_kind: str = ""

    def to_dict(self) -> dict[str, Any]:
        r = _rules().get(self.rule)
        return {
            "rule": self.rule,
            "group": self.rule.split("-", 1)[0],
            "title": r.title if r else "",
            "provisional": bool(r and r.provisional),
            "outcome": self.outcome,
            **({"skip_kind": self.skip_kind} if self.outcome == "skipped" else {}),
            "reason": self.reason,
            "duration": round(self.duration, 4),
            **({"metrics": self.metrics} if self.metrics else {}),
        }


@dataclass
class ProviderResult:
    """Every rule result of one provider, plus what it declared."""

    name: str
    capabilities: dict[str, Any] = field(default_factory=dict)
    describe: dict[str, str] = field(default_factory=dict)
    results: dict[str, RuleResult] = field(default_factory=dict)

    def summary(self) -> dict[str, int]:
        """Counts per outcome, and per kind of skip (which add up to ``skipped``)."""
        counts = dict.fromkeys(OUTCOMES, 0) | dict.fromkeys(SKIP_KINDS, 0)
        for result in self.results.values():
            counts[result.outcome] = counts.get(result.outcome, 0) + 1
            if result.outcome == "skipped":
                counts[result.skip_kind] = counts.get(result.skip_kind, 0) + 1
        return counts

    def ran(self) -> int:
        """Rules that really ran (passed, failed or failed as known)."""
        s = self.summary()
        return s["passed"] + s["failed"] + s["xfailed"]

    def unverified(self) -> dict[str, list[str]]:
        """Rule ids that apply but did not run, per kind of skip (not-claimed excluded)."""
        out: dict[str, list[str]] = {}
        for r in self.results.values():
            if r.outcome == "skipped" and r.skip_kind != "not-claimed":
                out.setdefault(r.skip_kind, []).append(r.rule)
        return {kind: sorted(ids, key=_order_of) for kind, ids in out.items()}

    def unverified_groups(self) -> dict[str, str]:
        """Rule group -> why some of its rules were not verified, in document order."""
        reasons: dict[str, list[str]] = {}
        for kind, ids in self.unverified().items():
            for rule_id in ids:
                group = rule_id.split("-", 1)[0]
                why = SKIP_KINDS.get(kind, kind)
                if kind == "needs-hook":
                    hooks = _rules()[rule_id].hooks if rule_id in _rules() else ()
                    why = f"needs a harness hook ({', '.join(hooks) or '?'})"
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
        if self.summary()["failed"]:
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
        "applies_when": r.capability,
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
    """Raise ``OSError`` now if the results could not be written to ``path`` later.

    Creates the parent directories (as writing would) and opens the file for appending,
    removing it again if it did not exist, so nothing is left behind by a check.
    """
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{target} is a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    existed = target.exists()
    with target.open("a", encoding="utf-8"):
        pass
    if not existed:
        target.unlink()


def write_results(
    path: str | Path, providers: list[ProviderResult], *, extra: dict[str, Any]
) -> None:
    """Write the run's JSON document."""
    doc = {
        "format": "mqcontract-results/1",
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

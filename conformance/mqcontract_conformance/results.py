"""The JSON result of a verification run: what reports and CI gates read."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mqcontract_conformance.rules import SUITE_VERSION, all_rules

__all__ = ["OUTCOMES", "ProviderResult", "RuleResult", "write_results"]

OUTCOMES = ("passed", "failed", "skipped", "xfailed")


@dataclass
class RuleResult:
    """One rule's outcome for one provider."""

    rule: str
    outcome: str
    reason: str = ""
    duration: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        r = _rules().get(self.rule)
        return {
            "rule": self.rule,
            "group": self.rule.split("-", 1)[0],
            "title": r.title if r else "",
            "provisional": bool(r and r.provisional),
            "outcome": self.outcome,
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
        counts = dict.fromkeys(OUTCOMES, 0)
        for result in self.results.values():
            counts[result.outcome] = counts.get(result.outcome, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.describe.get("version", ""),
            "describe": self.describe,
            "capabilities": self.capabilities,
            "summary": self.summary(),
            "results": [r.to_dict() for r in sorted(self.results.values(), key=_order)],
        }


def _rules() -> dict[str, Any]:
    return {r.id: r for r in all_rules()}


def _order(r: RuleResult) -> int:
    ids = list(_rules())
    return ids.index(r.rule) if r.rule in ids else len(ids)


def write_results(
    path: str | Path, providers: list[ProviderResult], *, extra: dict[str, Any]
) -> None:
    """Write the run's JSON document."""
    doc = {
        "format": "mqcontract-results/1",
        "suite_version": SUITE_VERSION,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        **extra,
        "providers": [p.to_dict() for p in providers],
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n", encoding="utf-8")

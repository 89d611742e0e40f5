"""The kill matrix: every rule against every broken provider, at each timing scale.

A specimen counts as caught only when the rule written for it fails it with a
``ContractViolation`` naming that rule, at every scale, and the same rule passes the
correct provider it was derived from (a rule that also fails the correct provider, or
skips it, proves nothing). Any other exception inside a case is recorded as an error,
never as a catch: a crash is not a rule doing its job.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from mqcontract.providers.memory import InMemoryMessagingService
from mqcontract.testing import Harness
from mqcontract_conformance.context import ContractViolation
from mqcontract_conformance.loop import run_bounded
from mqcontract_conformance.outcomes import Outcome
from mqcontract_conformance.registry import SUITE_VERSION, Rule
from mqcontract_conformance.runner import run_case
from mqcontract_conformance.selftest.catalogue import Specimen
from mqcontract_conformance.selftest.harness import SpecimenHarness
from mqcontract_conformance.timing import TimingProfile

__all__ = [
    "DEFAULT_SCALES",
    "SCHEMA_VERSION",
    "SELFTEST_FORMAT",
    "SelftestResult",
    "SpecimenResult",
    "Verdict",
    "run_matrix",
    "scale_key",
]

#: Bumped when the JSON layout changes incompatibly.
SCHEMA_VERSION = 1
#: The ``format`` of the JSON document (``mqcontract selftest --json``).
SELFTEST_FORMAT = f"mqcontract-selftest/{SCHEMA_VERSION}"
#: Timing scales every specimen must be caught at (the default profile, and stretched).
DEFAULT_SCALES: tuple[float, ...] = (1.0, 3.0)


def scale_key(scale: float) -> str:
    """How a scale is written as a JSON key and in the matrix (``1``, ``3``, ``0.5``)."""
    return f"{scale:g}"


class Verdict(StrEnum):
    """How one specimen fared against the suite."""

    #: Its intended rule failed it at every scale.
    CAUGHT = "caught"
    #: Its intended rule failed it at some scales only.
    SOME_SCALES = "caught at some scales only"
    #: Only rules other than its intended one failed it.
    OTHER_RULES = "caught only by other rules"
    #: No rule failed it.
    NOT_CAUGHT = "not caught"


@dataclass
class SpecimenResult:
    """One specimen's row of the matrix."""

    name: str
    defect: str
    #: The group of the intended rule (``""`` when the rule is unknown).
    group: str
    #: The rule written to catch this defect.
    rule: str
    reference: str
    #: Scale key -> ids of the rules that failed the specimen at that scale (suite order).
    caught_by: dict[str, list[str]] = field(default_factory=dict)
    #: Scale key -> rule id -> an exception other than a violation, raised inside the case.
    errors: dict[str, dict[str, str]] = field(default_factory=dict)
    #: Why the intended rule did not pass the reference (empty: it passed at every scale).
    reference_problem: str = ""
    seconds: float = 0.0

    @property
    def intended_caught(self) -> bool:
        """The intended rule failed the specimen at every scale that ran."""
        return bool(self.caught_by) and all(self.rule in ids for ids in self.caught_by.values())

    @property
    def reference_passes(self) -> bool:
        return not self.reference_problem

    @property
    def proven(self) -> bool:
        """Caught by its intended rule, which passes the correct provider: a real tooth."""
        return self.intended_caught and self.reference_passes

    @property
    def other_rules(self) -> list[str]:
        """Rules other than the intended one that failed the specimen at some scale."""
        found = dict.fromkeys(r for ids in self.caught_by.values() for r in ids)
        return [r for r in found if r != self.rule]

    @property
    def errored_rules(self) -> list[str]:
        """Rules whose case raised something other than a violation at some scale."""
        return list(dict.fromkeys(r for by_rule in self.errors.values() for r in by_rule))

    @property
    def verdict(self) -> Verdict:
        if self.intended_caught:
            return Verdict.CAUGHT
        if any(self.rule in ids for ids in self.caught_by.values()):
            return Verdict.SOME_SCALES
        if self.other_rules:
            return Verdict.OTHER_RULES
        return Verdict.NOT_CAUGHT

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "defect": self.defect,
            "group": self.group,
            "rule": self.rule,
            "reference": self.reference,
            "verdict": self.verdict.value,
            "intended_caught": self.intended_caught,
            "reference_passes": self.reference_passes,
            "reference_problem": self.reference_problem,
            "caught_by": {k: list(v) for k, v in self.caught_by.items()},
            "other_rules": self.other_rules,
            "errors": {k: dict(v) for k, v in self.errors.items()},
            "seconds": round(self.seconds, 3),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpecimenResult:
        return cls(
            name=str(data["name"]),
            defect=str(data.get("defect", "")),
            group=str(data.get("group", "")),
            rule=str(data["rule"]),
            reference=str(data.get("reference", "")),
            caught_by={str(k): [str(r) for r in v] for k, v in data.get("caught_by", {}).items()},
            errors={
                str(k): {str(r): str(m) for r, m in v.items()}
                for k, v in data.get("errors", {}).items()
            },
            reference_problem=str(data.get("reference_problem", "")),
            seconds=float(data.get("seconds", 0.0)),
        )


@dataclass
class SelftestResult:
    """The whole matrix: every specimen at every scale."""

    scales: list[float]
    specimens: list[SpecimenResult] = field(default_factory=list)
    suite_version: str = SUITE_VERSION
    seconds: float = 0.0

    @property
    def caught(self) -> int:
        """K: specimens caught by their intended rule at every scale (reference passing)."""
        return sum(s.proven for s in self.specimens)

    @property
    def total(self) -> int:
        return len(self.specimens)

    @property
    def ok(self) -> bool:
        """Every specimen caught by its intended rule, every reference passing it."""
        return self.caught == self.total

    def teeth_line(self) -> str:
        scales = ", ".join(scale_key(s) for s in self.scales)
        return (
            f"suite teeth: {self.caught} of {self.total} broken providers caught by their "
            f"intended rule (scales {scales})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SELFTEST_FORMAT,
            "schema_version": SCHEMA_VERSION,
            "suite_version": self.suite_version,
            "scales": list(self.scales),
            "caught": self.caught,
            "total": self.total,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "specimens": [s.to_dict() for s in self.specimens],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SelftestResult:
        if data.get("format") != SELFTEST_FORMAT:
            raise ValueError(
                f"not {SELFTEST_FORMAT} (format {data.get('format')!r}): "
                "re-run mqcontract selftest --json"
            )
        return cls(
            scales=[float(s) for s in data["scales"]],
            specimens=[SpecimenResult.from_dict(s) for s in data["specimens"]],
            suite_version=str(data.get("suite_version", "")),
            seconds=float(data.get("seconds", 0.0)),
        )


def _harness_for(specimen: Specimen, cls: type[InMemoryMessagingService]) -> Harness:
    build = specimen.harness if specimen.harness is not None else SpecimenHarness
    return build(cls)


def _run_one(harness: Harness, rule: Rule, timing: TimingProfile) -> tuple[str, str]:
    """Run one case: ``("violation", msg)``, ``("error", msg)`` or ``(outcome, reason)``."""
    try:
        outcome = run_bounded(run_case(harness, rule, timing, "selftest"))
    except ContractViolation as exc:
        text = str(exc)
        if text.startswith(f"[{rule.id}]"):
            return "violation", text
        return "error", f"ContractViolation not naming {rule.id}: {text}"
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # a crash (even a stray cancellation) is not a catch
        return "error", f"{type(exc).__name__}: {exc}"
    return outcome.outcome.value, outcome.reason


def _check_reference(specimen: Specimen, rule: Rule | None, scales: Sequence[float]) -> str:
    """Why the intended rule does not prove anything on the reference ('' when it does)."""
    if rule is None:
        return f"no rule {specimen.rule} is registered"
    for scale in scales:
        harness = _harness_for(specimen, specimen.reference)
        kind, text = _run_one(harness, rule, TimingProfile.from_scale(scale))
        if kind != Outcome.PASSED.value:
            where = f"{specimen.reference.__name__} at scale {scale_key(scale)}"
            return f"{rule.id} did not pass {where}: {kind}: {text}".strip()
    return ""


def run_specimen(
    specimen: Specimen, rules: Sequence[Rule], scales: Sequence[float]
) -> SpecimenResult:
    """Every rule against one specimen at each scale, and its intended rule on its reference."""
    started = time.perf_counter()
    by_id = {r.id: r for r in rules}
    intended = by_id.get(specimen.rule)
    result = SpecimenResult(
        name=specimen.name,
        defect=specimen.defect,
        group=intended.group if intended is not None else "",
        rule=specimen.rule,
        reference=specimen.reference.__name__,
    )
    for scale in scales:
        key = scale_key(scale)
        timing = TimingProfile.from_scale(scale)
        caught: list[str] = []
        errors: dict[str, str] = {}
        for rule in rules:
            kind, text = _run_one(_harness_for(specimen, specimen.cls), rule, timing)
            if kind == "violation":
                caught.append(rule.id)
            elif kind == "error":
                errors[rule.id] = text
        result.caught_by[key] = caught
        if errors:
            result.errors[key] = errors
    result.reference_problem = _check_reference(specimen, intended, scales)
    result.seconds = time.perf_counter() - started
    return result


def run_matrix(
    specimens: Iterable[Specimen],
    rules: Sequence[Rule],
    scales: Sequence[float] = DEFAULT_SCALES,
    on_result: Callable[[SpecimenResult], None] | None = None,
    jobs: int = 1,
) -> SelftestResult:
    """Run every specimen; ``on_result`` hears of each as it finishes.

    With ``jobs`` > 1 specimens run in that many worker processes (each case still runs
    alone in its own event loop, on a virtual clock, so running side by side changes no
    outcome); the rows keep the specimens' order whatever order they finish in.
    """
    started = time.perf_counter()
    todo = list(specimens)
    result = SelftestResult(scales=list(scales))
    if jobs <= 1 or len(todo) <= 1:
        rows = []
        for specimen in todo:
            rows.append(run_specimen(specimen, rules, scales))
            if on_result is not None:
                on_result(rows[-1])
    else:
        rows = _run_in_processes(todo, rules, scales, on_result, jobs)
    result.specimens.extend(rows)
    result.seconds = time.perf_counter() - started
    return result


def _run_in_processes(
    specimens: list[Specimen],
    rules: Sequence[Rule],
    scales: Sequence[float],
    on_result: Callable[[SpecimenResult], None] | None,
    jobs: int,
) -> list[SpecimenResult]:
    rule_ids = [r.id for r in rules]
    rows: dict[int, SpecimenResult] = {}
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {
            pool.submit(_run_specimen_by_id, specimen, rule_ids, list(scales)): index
            for index, specimen in enumerate(specimens)
        }
        for future in concurrent.futures.as_completed(futures):
            row = future.result()
            rows[futures[future]] = row
            if on_result is not None:
                on_result(row)
    return [rows[i] for i in range(len(specimens))]


def _run_specimen_by_id(
    specimen: Specimen, rule_ids: list[str], scales: list[float]
) -> SpecimenResult:
    """In a worker process: the rules named again from this process's registry."""
    from mqcontract_conformance.rules import get_rule

    return run_specimen(specimen, [get_rule(r) for r in rule_ids], scales)

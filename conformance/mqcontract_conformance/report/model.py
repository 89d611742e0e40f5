"""Result JSONs merged into one matrix: rules x providers, with staleness and gaps.

Everything here is a pure function of the input files and the options, so a report
regenerated from the same results is identical byte for byte. "Now" is therefore not the
wall clock: staleness is judged against ``as_of``, by default the newest result's time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mqcontract._redact import redact
from mqcontract_conformance.measurement import Measurement
from mqcontract_conformance.outcomes import Outcome
from mqcontract_conformance.registry import GROUPS, SUITE_VERSION
from mqcontract_conformance.report.bench_results import BenchRun
from mqcontract_conformance.report.documents import ReportError, read_documents
from mqcontract_conformance.report.stress import StressRun
from mqcontract_conformance.report.teeth import SELFTEST_FORMAT, Teeth
from mqcontract_conformance.results import RESULTS_FORMAT
from mqcontract_conformance.rules import all_rules

__all__ = [
    "COMPATIBILITY_FORMAT",
    "STATUSES",
    "Cell",
    "Matrix",
    "ProviderColumn",
    "ReportError",
    "RuleRow",
    "Superseded",
    "build_matrix",
    "load_results",
]

#: The ``format`` of ``compatibility.json``.
COMPATIBILITY_FORMAT = "mqcontract-compatibility/2"
#: Provider statuses, worst first, with their label.
STATUSES: dict[str, str] = {
    "missing": "missing",
    "failing": "failing",
    "not-verified": "not verified",
    "stale": "stale",
    "unverified": "passing, unverified",
    "passing": "passing",
}
#: Results files written before outcomes were typed: their four outcomes, and nothing
#: else (a skip of theirs is an other skip; its reason is not read for a kind).
_LEGACY_FORMAT = "mqcontract-results/1"
#: Results files before the ``not-selected`` outcome: read as they are.
_PREVIOUS_FORMAT = "mqcontract-results/2"
_LEGACY_OUTCOMES = {
    "passed": Outcome.PASSED,
    "failed": Outcome.FAILED,
    "xfailed": Outcome.KNOWN_BROKEN,
    "skipped": Outcome.SKIPPED,
}
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class RuleRow:
    """One rule of the matrix, in the words of the suite that produced the results.

    ``known`` is False for rules the installed suite lacks.
    """

    id: str
    group: str
    title: str
    provisional: bool = False
    known: bool = True
    why: str = ""
    applies_when: str = ""
    hooks: tuple[str, ...] = ()

    @property
    def slug(self) -> str:
        """The anchor of this rule's entry in the report's own rule text."""
        return self.id.lower()

    @property
    def anchor(self) -> str:
        """The heading anchor of this rule in ``RULES.md`` (GitHub's slug rules)."""
        heading = f"{self.id} (provisional)" if self.provisional else self.id
        return re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-")


@dataclass(frozen=True)
class Cell:
    """One provider's outcome for one rule."""

    state: Outcome
    reason: str = ""
    #: The rule's measurements (MODEL rules: programs, pairs, operations).
    metrics: dict[str, float] = field(default_factory=dict)


_NO_RESULT = Cell(Outcome.MISSING, "no result for this rule")


@dataclass
class ProviderColumn:
    """One provider: where its result came from, what it declared, and its cells."""

    name: str
    source: str = ""
    generated_at: str = ""
    suite_version: str = ""
    version: str = ""
    describe: dict[str, str] = field(default_factory=dict)
    capabilities: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    cells: dict[str, Cell] = field(default_factory=dict)
    stale: list[str] = field(default_factory=list)
    #: What the CAP rules measured beside the declaration (:mod:`.measured`).
    measured: list[Measurement] = field(default_factory=list)

    @property
    def missing(self) -> bool:
        return not self.source

    @property
    def status(self) -> str:
        """A key of :data:`STATUSES`: the worst that applies.

        ``unverified`` means every rule that ran passed, but some that apply did not run
        (a harness hook or the backend was missing): never shown as plain ``passing``.
        """
        if self.missing:
            return "missing"
        counts = self.counts()
        if counts[Outcome.FAILED]:
            return "failing"
        if not sum(n for outcome, n in counts.items() if outcome.ran):
            return "not-verified"
        if self.stale:
            return "stale"
        return "unverified" if self.unverified_groups() else "passing"

    def unverified_groups(self) -> dict[str, str]:
        """Rule group -> which of its rules did not run though they apply, and why.

        ``{"ERR": "ERR-5, ERR-6, ERR-7 (needs a harness hook)"}``.
        """
        ids: dict[str, list[str]] = {}
        reasons: dict[str, list[str]] = {}
        for rule_id, cell in self.cells.items():
            if cell.state.unverified:
                group = rule_id.split("-", 1)[0]
                ids.setdefault(group, []).append(rule_id)
                why = reasons.setdefault(group, [])
                if cell.state.label not in why:
                    why.append(cell.state.label)
        return {g: f"{', '.join(ids[g])} ({', '.join(reasons[g])})" for g in ids}

    def counts(self) -> dict[Outcome, int]:
        """How many cells are in each state (every :class:`Outcome`, in display order)."""
        counts = dict.fromkeys(Outcome, 0)
        for cell in self.cells.values():
            counts[cell.state] += 1
        return counts

    def unverified_count(self) -> int:
        """Rules that apply to the provider but did not run."""
        return sum(n for outcome, n in self.counts().items() if outcome.unverified)

    def cell(self, rule_id: str) -> Cell:
        return self.cells.get(rule_id, _NO_RESULT)


@dataclass(frozen=True)
class Superseded:
    """A result not shown: a newer one for the same provider is (``by``)."""

    provider: str
    source: str
    by: str
    #: Rules that failed in the result not shown.
    failed: int


@dataclass
class Matrix:
    """The whole report's data."""

    suite_version: str
    as_of: str
    stale_days: float
    groups: dict[str, str]
    rules: list[RuleRow]
    providers: list[ProviderColumn]
    sources: list[str]
    #: Stress accounts shown beside the rules (``mqcontract stress --json``).
    stress: list[StressRun] = field(default_factory=list)
    #: The kit's selftest (``mqcontract selftest --json``), or that it was not run.
    teeth: Teeth = field(default_factory=Teeth)
    #: Bench runs (``mqcontract bench --json``): the throughput column of "At a glance".
    bench: list[BenchRun] = field(default_factory=list)
    #: Results a newer one for the same provider replaced (the CLI warns of each).
    superseded: list[Superseded] = field(default_factory=list)

    def rules_in(self, group: str) -> list[RuleRow]:
        return [r for r in self.rules if r.group == group]

    def to_dict(self, glance: dict[str, Any] | None = None) -> dict[str, Any]:
        """The merged ``compatibility.json`` document (``glance``: the "At a glance" rows,
        :func:`.glance.glance_dict`, which reads this matrix)."""
        return {
            "format": COMPATIBILITY_FORMAT,
            "suite_version": self.suite_version,
            "as_of": self.as_of,
            "stale_after_days": self.stale_days,
            "sources": self.sources,
            **({"glance": glance} if glance is not None else {}),
            "rules": [
                {
                    "id": r.id,
                    "group": r.group,
                    "title": r.title,
                    "why": r.why,
                    "applies_when": r.applies_when,
                    "hooks": list(r.hooks),
                    "provisional": r.provisional,
                    "in_suite": r.known,
                }
                for r in self.rules
            ],
            "providers": [
                {
                    "name": p.name,
                    "status": p.status,
                    "unverified": p.unverified_groups(),
                    "stale": p.stale,
                    "source": p.source,
                    "generated_at": p.generated_at,
                    "suite_version": p.suite_version,
                    "version": p.version,
                    "describe": p.describe,
                    "capabilities": p.capabilities,
                    **({"measured": [m.to_dict() for m in p.measured]} if p.measured else {}),
                    "run": p.run,
                    "counts": {outcome.value: n for outcome, n in p.counts().items()},
                    "results": {
                        r.id: {"state": p.cell(r.id).state.value, "reason": p.cell(r.id).reason}
                        for r in self.rules
                    },
                }
                for p in self.providers
            ],
            "stress": [run.to_dict() for run in self.stress],
            "teeth": self.teeth.to_dict(),
        }


def _parse_time(text: str, where: str) -> datetime:
    try:
        return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise ReportError(f"{where}: generated_at {text!r} is not {_TIME_FORMAT}") from None


def load_results(paths: list[Path]) -> list[tuple[str, dict[str, Any]]]:
    """``(file name, document)`` per results file; a directory gives its ``*.json``.

    A directory that does not exist holds no results (its providers show as missing);
    a named file that does not exist is an error.
    """
    formats = {RESULTS_FORMAT, _PREVIOUS_FORMAT, _LEGACY_FORMAT}
    # The selftest's selftest.json lives beside the results (the teeth section reads it).
    return read_documents(paths, formats, "an mqcontract results file", skip={SELFTEST_FORMAT})


def _cell(result: dict[str, Any], doc: dict[str, Any], source: str) -> Cell:
    """A result's cell, by its typed outcome alone (the reason is only shown)."""
    value, reason = str(result.get("outcome", "")), redact(str(result.get("reason", "")))
    if doc.get("format") == _LEGACY_FORMAT:
        outcome = _LEGACY_OUTCOMES.get(value)
    else:
        outcome = Outcome(value) if value in set(Outcome.of_run()) else None
    if outcome is None:
        raise ReportError(f"{source}: rule {result.get('rule')}: unknown outcome {value!r}")
    raw = result.get("metrics")
    metrics = {
        str(k): float(v)
        for k, v in (raw.items() if isinstance(raw, dict) else ())
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    return Cell(outcome, reason, metrics)


def exploration_text(metrics: dict[str, float]) -> str:
    """How much a program-running rule (MODEL) explored, from its metrics; "" if none."""
    if "programs" not in metrics:
        return ""
    text = f"{metrics['programs']:.0f} programs"
    if metrics.get("pair_programs"):
        pairs = f"{metrics['pair_programs']:.0f} of them covering {metrics.get('pairs', 0):.0f}"
        text += f" ({pairs} ordered pairs of operations)"
    text += f", {metrics.get('operations', 0):.0f} steps"
    if metrics.get("programs_skipped_for_time"):
        text += f", {metrics['programs_skipped_for_time']:.0f} skipped for time"
    return text


def _column(name: str, source: str, doc: dict[str, Any], entry: dict[str, Any]) -> ProviderColumn:
    run: dict[str, Any] = {
        k: doc[k] for k in ("python", "timing_scale", "required_backends") if k in doc
    }
    return ProviderColumn(
        name=name,
        source=source,
        generated_at=str(doc.get("generated_at", "")),
        suite_version=str(doc.get("suite_version", "")),
        version=str(entry.get("version", "")),
        describe={str(k): redact(str(v)) for k, v in dict(entry.get("describe") or {}).items()},
        capabilities=dict(entry.get("capabilities") or {}),
        measured=[Measurement.from_dict(dict(m)) for m in entry.get("measured") or []],
        run=run,
        cells={
            str(r["rule"]): _cell(r, doc, source) for r in entry.get("results", []) if "rule" in r
        },
    )


def build_matrix(
    docs: list[tuple[str, dict[str, Any]]],
    *,
    expect: list[str] | None = None,
    stale_days: float = 30.0,
    as_of: str | None = None,
) -> Matrix:
    """Merge results: the newest result per provider wins (the others are listed in
    ``superseded``); expected ones absent are missing."""
    newest: dict[str, tuple[datetime, ProviderColumn]] = {}
    older: list[ProviderColumn] = []
    titles: dict[str, str] = {}
    texts: dict[str, tuple[datetime, dict[str, Any]]] = {}
    for source, doc in docs:
        when = _parse_time(str(doc.get("generated_at", "")), source)
        for text in doc.get("rules", []):  # the rule text of the suite that ran
            rule_id = str(text.get("id", ""))
            if rule_id and (rule_id not in texts or when >= texts[rule_id][0]):
                texts[rule_id] = (when, dict(text))
        for entry in doc.get("providers", []):
            column = _column(str(entry["name"]), source, doc, entry)
            held = newest.get(column.name)
            if held is None or when >= held[0]:
                newest[column.name] = (when, column)
                if held is not None:
                    older.append(held[1])
            else:
                older.append(column)
            for r in entry.get("results", []):
                titles.setdefault(str(r["rule"]), str(r.get("title", "")))
    times = [when for when, _ in newest.values()]
    reference = _parse_time(as_of, "--as-of") if as_of else max(times, default=None)
    rows = [
        _row(texts[r.id][1], known=True)
        if r.id in texts
        else RuleRow(
            r.id, r.group, r.title, r.provisional, True, r.why, r.applies_when.text(), r.hooks
        )
        for r in all_rules()
    ]
    known = {r.id for r in rows}
    others = set(titles) | set(texts)
    for rule_id in sorted(others - known, key=_rule_key):
        if rule_id in texts:
            rows.append(_row(texts[rule_id][1], known=False))
        else:
            rows.append(RuleRow(rule_id, rule_id.split("-", 1)[0], titles[rule_id], known=False))
    order = list(dict.fromkeys([*(expect or []), *newest]))
    providers = []
    for name in order:
        if name not in newest:
            providers.append(ProviderColumn(name))
            continue
        when, column = newest[name]
        for row in rows:  # a rule this result does not mention is missing, and counted
            column.cells.setdefault(row.id, _NO_RESULT)
        assert reference is not None  # there is at least this result
        age = (reference - when).total_seconds() / 86400
        if age > stale_days:
            column.stale.append(f"results are {age:.0f} days old (stale after {stale_days:g})")
        absent = sum(
            1 for row in rows if row.known and column.cells[row.id].state is Outcome.MISSING
        )
        if absent:
            column.stale.append(f"{absent} rules of this suite have no result")
        if column.suite_version != SUITE_VERSION:
            column.stale.append(
                f"results are from suite {column.suite_version or '?'}, not {SUITE_VERSION}"
            )
        providers.append(column)
    groups = dict(GROUPS)
    for row in rows:
        groups.setdefault(row.group, row.group)
    return Matrix(
        suite_version=SUITE_VERSION,
        as_of=reference.strftime(_TIME_FORMAT) if reference else "",
        stale_days=stale_days,
        groups=groups,
        rules=rows,
        providers=providers,
        sources=[source for source, _ in docs],
        superseded=[
            Superseded(
                provider=column.name,
                source=column.source,
                by=newest[column.name][1].source,
                failed=sum(1 for c in column.cells.values() if c.state is Outcome.FAILED),
            )
            for column in older
        ],
    )


def _row(text: dict[str, Any], *, known: bool) -> RuleRow:
    rule_id = str(text["id"])
    return RuleRow(
        id=rule_id,
        group=rule_id.split("-", 1)[0],
        title=str(text.get("title", "")),
        provisional=bool(text.get("provisional", False)),
        known=known,
        why=str(text.get("why", "")),
        applies_when=str(text.get("applies_when", "")),
        hooks=tuple(str(h) for h in text.get("hooks", [])),
    )


def _rule_key(rule_id: str) -> tuple[int, str, int]:
    group, _, number = rule_id.partition("-")
    order = list(GROUPS)
    return (order.index(group) if group in order else len(order), group, _int(number))


def _int(text: str) -> int:
    return int(text) if text.isdigit() else 0

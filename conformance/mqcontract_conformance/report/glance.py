"""The report's first section, "At a glance": one row per provider, read in a minute.

Each cell says what the rules, the stress accounts and the bench *measured* (the
declaration only where it is the fact, such as who enforces the visibility timeout), and
links to the rule or account it comes from. A fact no input carries reads "not measured",
never an empty cell or a default. Rows are every provider the inputs mention, so a new
provider appears as soon as its results, accounts or bench run exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html import escape
from typing import TYPE_CHECKING, Any

from mqcontract_conformance.measurement import Measurement, Verdict, render
from mqcontract_conformance.outcomes import Outcome

if TYPE_CHECKING:
    from mqcontract_conformance.report.bench_results import BenchRun
    from mqcontract_conformance.report.model import Matrix, ProviderColumn
    from mqcontract_conformance.report.stress import StressRun

__all__ = [
    "COLUMNS",
    "GLANCE_INTRO",
    "NOT_MEASURED",
    "GlanceCell",
    "GlanceRow",
    "Link",
    "Part",
    "glance_dict",
    "glance_html",
    "glance_markdown",
    "glance_rows",
]

NOT_MEASURED = "not measured"
#: Column key -> heading, in display order.
COLUMNS: dict[str, str] = {
    "rules": "rules",
    "push": "push (measured)",
    "visibility": "visibility timeout",
    "requeue": "requeue · receive counts",
    "delay": "delay",
    "payload": "payload",
    "faults": "lost/duplicated per fault",
    "throughput": "throughput vs raw client",
    "known_broken": "known broken",
}
GLANCE_INTRO = (
    "What the rules, the stress accounts and the bench measured, per provider; each cell "
    "links to the rule or account it comes from. Faults: messages lost / processed twice "
    "under each fault the stress accounts ran. Throughput: provider / raw driver, the range "
    "over the bench workloads (above 1x the provider is faster)."
)
#: In-document anchors the cells link to (Markdown heading slugs; the HTML uses them as ids).
PROVIDERS_ANCHOR = "providers"
STRESS_ANCHOR = "under-load"
FAILURES_ANCHOR = "failures-and-known-broken-rules"
BENCH_ANCHOR = "where-the-throughput-comes-from"
#: The rules that check what comes back of a payload.
_PAYLOAD_RULES = ("SEND-2", "SEND-3", "SEND-4", "SEND-5", "SEND-6", "SEND-10")
_NO_RESULTS = f"{NOT_MEASURED} (no results)"


@dataclass(frozen=True)
class Link:
    """Where a part comes from: a rule (by id) or a section of this report (by anchor)."""

    kind: str  # "rule" or "section"
    ref: str
    #: The files behind a section link (stress accounts, a bench result).
    files: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {self.kind: self.ref, **({"files": list(self.files)} if self.files else {})}


@dataclass(frozen=True)
class Part:
    """A run of a cell's text, linked to its source; ``title`` is shown on hover."""

    text: str
    link: Link | None = None
    title: str = ""


@dataclass(frozen=True)
class GlanceCell:
    """One fact about one provider: its text in parts, and the values behind it."""

    parts: tuple[Part, ...]
    values: dict[str, Any] = field(default_factory=dict)
    #: False when nothing in the inputs measured this fact.
    measured: bool = True

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts)

    def to_dict(self) -> dict[str, Any]:
        links = list(dict.fromkeys(p.link for p in self.parts if p.link is not None))
        return {
            "text": self.text,
            "measured": self.measured,
            "from": [link.to_dict() for link in links],
            "values": self.values,
        }


@dataclass(frozen=True)
class GlanceRow:
    provider: str
    cells: dict[str, GlanceCell]


def _rule(rule_id: str) -> Link:
    return Link("rule", rule_id)


def _section(anchor: str, *files: str) -> Link:
    return Link("section", anchor, files)


def _not_measured(why: str = "") -> GlanceCell:
    return GlanceCell((Part(f"{NOT_MEASURED} ({why})" if why else NOT_MEASURED),), measured=False)


def _cell(*parts: Part | None, **values: Any) -> GlanceCell:
    return GlanceCell(tuple(p for p in parts if p is not None), values)


def _duration(seconds: float) -> str:
    return f"{round(seconds * 1000):d} ms" if seconds < 1 else f"{round(seconds, 1):g} s"


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{round(seconds / size, 1):g} {unit}"
    return _duration(seconds)


def _size(n: int) -> str:
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{round(n / size, 1):g} {unit}"
    return f"{n} B"


def _measurement(p: ProviderColumn, capability: str) -> Measurement | None:
    """The CAP rules' measurement of ``capability``, if they could take one."""
    found = next((m for m in p.measured if m.capability == capability), None)
    if found is None or found.verdict is Verdict.NOT_MEASURED or found.measured is None:
        return None
    return found


def _declared_beside(m: Measurement) -> str:
    return f" (declared {render(m.declared)})" if m.verdict.mismatch else ""


def _rules_verdict(p: ProviderColumn, ids: list[str], noun: str) -> list[Part]:
    """``5/5 DLY rules passed``, then each rule that did not pass, linked."""
    applying = [i for i in ids if p.cell(i).state is not Outcome.NOT_CLAIMED]
    if not applying:
        return [Part(f"no {noun} apply")]
    passed = sum(1 for i in applying if p.cell(i).state is Outcome.PASSED)
    parts = [Part(f"{passed}/{len(applying)} {noun} passed", _rule(applying[0]))]
    for rule_id in applying:
        cell = p.cell(rule_id)
        if cell.state is not Outcome.PASSED:
            said = f"{rule_id} {cell.state.label}"
            parts += [Part(", "), Part(said, _rule(rule_id), cell.reason)]
    return parts


def _rules(p: ProviderColumn) -> GlanceCell:
    counts = p.counts()
    ran = sum(n for outcome, n in counts.items() if outcome.ran)
    text = f"{counts[Outcome.PASSED]}/{ran} passed"
    if counts[Outcome.FAILED]:
        text += f", {counts[Outcome.FAILED]} failed"
    if p.unverified_count():
        text += f" · {p.unverified_count()} not verified"
    if p.stale:
        text += " · stale"
    values = {"status": p.status, **{o.value: n for o, n in counts.items() if n}}
    return _cell(Part(text, _section(PROVIDERS_ANCHOR), "; ".join(p.stale)), **values)


def _push(p: ProviderColumn) -> GlanceCell:
    kind = _measurement(p, "push")
    if kind is None:
        declared = p.capabilities.get("push")
        return _not_measured(f"declared {declared}" if declared is not None else "")
    claimed = _measurement(p, "pushed_messages_claimed")
    text = render(kind.measured) + _declared_beside(kind)
    if claimed is not None:
        text += " · pushed messages " + ("claimed" if claimed.measured else "not claimed")
        text += _declared_beside(claimed)
    notes = "; ".join(m.note for m in (kind, claimed) if m is not None and m.note)
    return _cell(
        Part(text, _rule("CAP-1"), notes),
        kind=kind.measured,
        claimed=None if claimed is None else claimed.measured,
    )


def _visibility(p: ProviderColumn) -> GlanceCell:
    enforcer = p.capabilities.get("visibility_enforced_by")
    hold = p.cell("HOLD-1")
    returned, bound = hold.metrics.get("returned_after_s"), hold.metrics.get("bound_s")
    values: dict[str, Any] = {"enforced_by": enforcer}
    if hold.state is Outcome.PASSED and returned is not None and bound is not None:
        values |= {"frozen_returned_after_s": returned, "frozen_bound_s": bound}
        if enforcer == "holder":
            said = f"frozen holder keeps claims {_duration(returned)} (bound {_duration(bound)})"
        else:
            said = f"frozen holder's claims back in {_duration(returned)}"
            said += f" (timeout {_duration(bound)})"
        frozen = Part(said, _rule("HOLD-1"))
    elif hold.state is Outcome.PASSED:  # results from before HOLD-1 reported its times
        said = f"HOLD-1 passed (frozen holder's return time {NOT_MEASURED})"
        frozen = Part(said, _rule("HOLD-1"))
    elif hold.state.ran:
        said = f"HOLD-1 {hold.state.label} (frozen holder)"
        frozen = Part(said, _rule("HOLD-1"), hold.reason)
    else:
        said = f"frozen holder {NOT_MEASURED} (HOLD-1 {hold.state.label})"
        frozen = Part(said, _rule("HOLD-1"), hold.reason)
    lateness = p.cell("CAP-2").metrics.get("visibility_lateness_s")
    precision = _measurement(p, "visibility_precision_seconds")
    if lateness is None and precision is not None and isinstance(precision.measured, float | int):
        lateness = float(precision.measured)
    values["expiry_lateness_s"] = lateness
    if lateness is None:
        expiry = Part(f"expiry lateness {NOT_MEASURED}", _rule("CAP-2"))
    else:
        expiry = Part(f"expires ≤ {_duration(lateness)} late", _rule("CAP-2"))
    if enforcer is None and not hold.state.ran and lateness is None:
        return _not_measured()
    who = Part(f"{enforcer}-enforced: " if enforcer is not None else "enforcer not declared: ")
    return _cell(who, frozen, Part(" · "), expiry, **values)


def _requeue(p: ProviderColumn) -> GlanceCell:
    position = _measurement(p, "requeue_position")
    exact = _measurement(p, "exact_receive_count")
    if position is None and exact is None:
        return _not_measured()
    if position is None:
        first = Part(f"requeue {NOT_MEASURED}", _rule("CAP-1"))
    else:
        where = {"original": "in place", "back": "at the back"}
        text = "nacked: requeued " + where.get(str(position.measured), render(position.measured))
        text += _declared_beside(position)
        first = Part(text, _rule("CAP-1"), position.note)
    if exact is None:
        second = Part(f"receive counts {NOT_MEASURED}", _rule("CAP-1"))
    else:
        text = "receive counts " + ("exact" if exact.measured else "not exact")
        second = Part(text + _declared_beside(exact), _rule("CAP-1"), exact.note)
    return _cell(
        first,
        Part(" · "),
        second,
        requeue_position=None if position is None else position.measured,
        exact_receive_count=None if exact is None else exact.measured,
    )


def _delay(matrix: Matrix, p: ProviderColumn) -> GlanceCell:
    delay = p.capabilities.get("delay")
    ids = [r.id for r in matrix.rules if r.group == "DLY"]
    if not isinstance(delay, bool):
        return _not_measured()
    verdict = _rules_verdict(p, ids, "DLY rules")
    if not delay:
        return _cell(Part("not supported · "), *verdict, supported=False)
    longest = p.capabilities.get("max_delay_seconds")
    head = f"up to {_span(float(longest))}" if isinstance(longest, int | float) else "yes"
    late = [
        v for i in ids for k, v in p.cell(i).metrics.items() if k.endswith("lateness_s")
    ]  # no DLY rule reports one yet: the cell says so rather than guess
    lateness = Part(
        f"delivered ≤ {_duration(max(late))} late" if late else f"lateness {NOT_MEASURED}"
    )
    return _cell(
        Part(f"{head} · "),
        *verdict,
        Part(" · "),
        lateness,
        supported=True,
        max_delay_seconds=longest,
        lateness_s=max(late) if late else None,
    )


def _payload(matrix: Matrix, p: ProviderColumn) -> GlanceCell:
    fidelity = p.capabilities.get("payload_fidelity")
    if fidelity is None:
        return _not_measured()
    known = {r.id for r in matrix.rules}
    ids = [i for i in _PAYLOAD_RULES if i in known]
    said = {"bytes": "exact bytes", "json-value": "JSON as an equal value, other bytes exact"}
    limit = p.capabilities.get("max_message_size_bytes")
    head = said.get(str(fidelity), str(fidelity))
    if isinstance(limit, int):
        head += f", ≤ {_size(limit)}"
    return _cell(
        Part(f"{head} · "),
        *_rules_verdict(p, ids, "payload rules"),
        fidelity=fidelity,
        max_message_size_bytes=limit,
    )


def _faults(runs: list[StressRun]) -> GlanceCell:
    if not runs:
        return _not_measured("no stress account")
    by_fault: dict[str, list[StressRun]] = {}
    for run in runs:  # already in the order `mqcontract stress` lists its faults
        by_fault.setdefault(run.label, []).append(run)
    parts: list[Part] = []
    values: dict[str, Any] = {}
    for fault, group in by_fault.items():
        total = {k: sum(r.counts[k] for r in group) for k in ("lost", "duplicated", "reprocessed")}
        clean = all(r.ok for r in group)
        sources = [r.source for r in group]
        values[fault] = {**total, "clean": clean, "accounts": sources}
        text = f"{fault} {total['lost']}/{total['duplicated']}" + ("" if clean else " not clean")
        title = f"{', '.join(sources)}: reprocessed {total['reprocessed']}"
        if parts:
            parts.append(Part(" · "))
        parts.append(Part(text, _section(STRESS_ANCHOR, *sources), title))
    return _cell(*parts, **values)


def _throughput(bench: BenchRun | None) -> GlanceCell:
    if bench is None:
        return _not_measured("no bench run")
    if not bench.ratios:
        return _not_measured("the bench ran no raw client")
    low, high = min(bench.ratios.values()), max(bench.ratios.values())
    span = f"{low:.2f}x" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f}x to {high:.2f}x"
    n = len(bench.ratios)
    text = f"{span} of {bench.raw_client or 'raw'} ({n} workload{'s' if n > 1 else ''})"
    title = "; ".join(f"{w}: {r:.2f}x" for w, r in bench.ratios.items())
    return _cell(
        Part(text, _section(BENCH_ANCHOR, bench.source), title),
        raw_client=bench.raw_client,
        provider_per_raw=bench.ratios,
        source=bench.source,
    )


def _known_broken(matrix: Matrix, p: ProviderColumn) -> GlanceCell:
    broken = [r.id for r in matrix.rules if p.cell(r.id).state is Outcome.KNOWN_BROKEN]
    if not broken:
        return _cell(Part("0", _section(FAILURES_ANCHOR)), count=0, rules=[])
    parts = [Part(f"{len(broken)}: ")]
    for i, rule_id in enumerate(broken):
        sep = [Part(", ")] if i else []
        parts += [*sep, Part(rule_id, _rule(rule_id), p.cell(rule_id).reason)]
    parts.append(Part(" (reasons)", _section(FAILURES_ANCHOR)))
    return _cell(*parts, count=len(broken), rules=broken)


def _row(
    matrix: Matrix,
    name: str,
    p: ProviderColumn | None,
    runs: list[StressRun],
    bench: BenchRun | None,
) -> GlanceRow:
    cells: dict[str, GlanceCell]
    if p is None or p.missing:
        cells = {key: _not_measured("no results") for key in COLUMNS}
    else:
        cells = {
            "rules": _rules(p),
            "push": _push(p),
            "visibility": _visibility(p),
            "requeue": _requeue(p),
            "delay": _delay(matrix, p),
            "payload": _payload(matrix, p),
            "known_broken": _known_broken(matrix, p),
        }
    cells["faults"] = _faults(runs)
    cells["throughput"] = _throughput(bench)
    return GlanceRow(name, {key: cells[key] for key in COLUMNS})


def glance_rows(matrix: Matrix) -> list[GlanceRow]:
    """A row for every provider with results, stress accounts or a bench run."""
    columns = {p.name: p for p in matrix.providers}
    benches = {b.provider: b for b in matrix.bench}
    names = list(
        dict.fromkeys([*columns, *sorted({r.provider for r in matrix.stress}), *sorted(benches)])
    )
    return [
        _row(
            matrix,
            name,
            columns.get(name),
            [r for r in matrix.stress if r.provider == name],
            benches.get(name),
        )
        for name in names
    ]


def _bench_sources(matrix: Matrix) -> list[tuple[str, str, str]]:
    return list(dict.fromkeys((b.source, b.started_at, b.command) for b in matrix.bench))


def glance_dict(matrix: Matrix) -> dict[str, Any]:
    """The section's data for ``compatibility.json``."""
    return {
        "columns": COLUMNS,
        "bench": [
            {"source": source, "started_at": started, "command": command}
            for source, started, command in _bench_sources(matrix)
        ],
        "providers": [
            {"name": row.provider, **{key: cell.to_dict() for key, cell in row.cells.items()}}
            for row in glance_rows(matrix)
        ],
    }


def _href(matrix: Matrix, rules_url: str, link: Link) -> str:
    """A rule's text (the report's own, or ``rules_url``'s), or a section of the report."""
    if link.kind != "rule":
        return f"#{link.ref}"
    row = next((r for r in matrix.rules if r.id == link.ref), None)
    if row is None:
        return f"#{link.ref.lower()}"
    return f"{rules_url}#{row.anchor}" if rules_url else f"#{row.slug}"


def _bench_note() -> str:
    return (
        "No `mqcontract bench --json` result was given (by default the report reads "
        "`bench/results.json` beside the results directory): throughput is not measured."
    )


def _bench_lines(matrix: Matrix) -> list[str]:
    sources = _bench_sources(matrix)
    if not sources:
        return [_bench_note()]
    lines = []
    for source, started, command in sources:
        line = f"`{source}`, written by `mqcontract bench --json` (started {started})"
        lines.append(line + (f"; reproduce: `{command}`" if command else ""))
    return [
        "Median of per-round provider / raw driver throughput ratios (the sides ran "
        "interleaved in one process), from:",
        "",
        *(f"- {line}" for line in lines),
    ]


def _md(text: str) -> str:
    """One line (spaces at the edges kept: parts join into one cell), no pipes, no HTML."""
    flat = re.sub(r"\s+", " ", text)
    return flat.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _md_cell(matrix: Matrix, rules_url: str, cell: GlanceCell) -> str:
    out = []
    for part in cell.parts:
        text = _md(part.text).replace("[", "\\[").replace("]", "\\]")
        out.append(f"[{text}]({_href(matrix, rules_url, part.link)})" if part.link else text)
    return "".join(out)


def glance_markdown(matrix: Matrix, rules_url: str = "") -> list[str]:
    """The ``## At a glance`` section of ``compatibility.md``."""
    out = ["## At a glance", "", GLANCE_INTRO, ""]
    out.append("| provider | " + " | ".join(COLUMNS.values()) + " |")
    out.append("|---|" + "---|" * len(COLUMNS))
    for row in glance_rows(matrix):
        cells = [_md_cell(matrix, rules_url, c) for c in row.cells.values()]
        out.append(f"| **{_md(row.provider)}** | " + " | ".join(cells) + " |")
    out += ["", "### Where the throughput comes from", "", *_bench_lines(matrix)]
    return [*out, ""]


def _html_cell(matrix: Matrix, rules_url: str, cell: GlanceCell) -> str:
    out = []
    for part in cell.parts:
        text = escape(part.text)
        if part.link is None:
            out.append(text)
            continue
        title = f' title="{escape(" ".join(part.title.split()))}"' if part.title else ""
        out.append(f'<a href="{escape(_href(matrix, rules_url, part.link))}"{title}>{text}</a>')
    css = "" if cell.measured else ' class="muted"'
    return f"<td{css}>{''.join(out)}</td>"


def _html_code(text: str) -> str:
    """Escaped, with Markdown's single-backtick spans as ``<code>``."""
    pieces = escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))


def glance_html(matrix: Matrix, rules_url: str = "") -> str:
    """The At a glance section of ``compatibility.html``."""
    heads = "".join(f"<th>{escape(h)}</th>" for h in ("provider", *COLUMNS.values()))
    rows = "".join(
        f"<tr><th>{escape(row.provider)}</th>"
        + "".join(_html_cell(matrix, rules_url, c) for c in row.cells.values())
        + "</tr>"
        for row in glance_rows(matrix)
    )
    note = _bench_lines(matrix)
    text = _html_code(note[0])
    items = "".join(f"<li>{_html_code(line[2:])}</li>" for line in note[2:])
    return (
        f'<h2 id="at-a-glance">At a glance</h2><p class="muted">{escape(GLANCE_INTRO)}</p>'
        f'<div class="scroll"><table class="kv glance"><thead><tr>{heads}</tr></thead>'
        f"<tbody>{rows}</tbody></table></div>"
        f'<h3 id="{BENCH_ANCHOR}">Where the throughput comes from</h3>'
        f'<p class="muted">{text}</p>' + (f"<ul>{items}</ul>" if items else "")
    )

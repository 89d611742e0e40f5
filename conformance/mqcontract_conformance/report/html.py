"""``compatibility.html``: one self-contained static page (inline CSS, no script, no assets)."""

from __future__ import annotations

import json
from html import escape

from mqcontract_conformance.outcomes import Outcome
from mqcontract_conformance.report.glance import glance_html
from mqcontract_conformance.report.measured import measured_html
from mqcontract_conformance.report.model import (
    STATUSES,
    Matrix,
    ProviderColumn,
    RuleRow,
    exploration_text,
)
from mqcontract_conformance.report.stress import COUNTS, STRESS_INTRO
from mqcontract_conformance.report.teeth import teeth_html

__all__ = ["render_html"]

#: The mark of each state; its CSS class and colour variable are the outcome's value.
_MARKS = {
    Outcome.PASSED: "✓",
    Outcome.FAILED: "✗",
    Outcome.KNOWN_BROKEN: "!",
    Outcome.NOT_CLAIMED: "&#8211;",
    Outcome.NEEDS_HOOK: "h",
    Outcome.BACKEND_UNAVAILABLE: "»",
    Outcome.SKIPPED: "»",
    Outcome.NOT_SELECTED: "·",
    Outcome.MISSING: "?",
}

_CSS = """
:root{--passed:#1f883d;--failed:#cf222e;--known-broken:#bf8700;--not-claimed:#8c959f;
--needs-hook:#8250df;--backend-unavailable:#8250df;--skipped:#8250df;--not-selected:#d0d7de;--missing:#d0d7de;--ink:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg:#f6f8fa}
*{box-sizing:border-box}
body{margin:0;font:14px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",Helvetica,Arial,sans-serif;
color:var(--ink);background:#fff}
main{max-width:1180px;margin:0 auto;padding:28px 24px 48px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:36px 0 12px;padding-bottom:6px;
border-bottom:1px solid var(--line)}
a{color:#0969da;text-decoration:none}a:hover{text-decoration:underline}
.meta,.muted{color:var(--muted)}code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;
background:var(--bg);padding:1px 4px;border-radius:4px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:14px;margin-top:20px}
.card{border:1px solid var(--line);border-radius:10px;padding:14px 16px;background:#fff;
border-top:4px solid var(--passed)}
.card.failing,.card.not-verified{border-top-color:var(--failed)}
.card.unverified{border-top-color:#a4a61d}.card.stale{border-top-color:var(--known-broken)}
.card.missing{border-top-color:var(--missing);background:var(--bg)}
.card-head{display:flex;justify-content:space-between;align-items:baseline;gap:8px}
.card h3{margin:0;font-size:17px}
.pill{font-size:12px;font-weight:600;border-radius:999px;padding:1px 9px;color:#fff;
background:var(--passed);white-space:nowrap}
.pill.failing,.pill.not-verified{background:var(--failed)}.pill.unverified{background:#a4a61d}.pill.stale{background:var(--known-broken)}
.pill.missing{background:var(--not-claimed)}
.score{font-size:28px;font-weight:600;margin:6px 0 2px}.score small{font-size:14px;
font-weight:400;color:var(--muted)}
.bar{display:flex;height:10px;border-radius:5px;overflow:hidden;background:var(--bg);margin:8px 0}
.bar span{display:block;height:100%}
.counts{display:flex;flex-wrap:wrap;gap:4px 12px;margin:6px 0 0;padding:0;list-style:none;
font-size:12.5px}
.counts li{display:flex;align-items:center;gap:5px}
.dot{width:9px;height:9px;border-radius:2px;display:inline-block}
.facts{font-size:12.5px;color:var(--muted);margin:8px 0 0}
.warn{font-size:12.5px;color:#9a6700;background:#fff8c5;border-radius:6px;padding:4px 8px;
margin:8px 0 0}
.legend{display:flex;flex-wrap:wrap;gap:6px 16px;margin:0 0 12px;font-size:13px}
.legend span{display:inline-flex;align-items:center;gap:6px}
table{border-collapse:separate;border-spacing:0;width:100%}
.matrix th,.matrix td{border-bottom:1px solid var(--line);padding:6px 10px;text-align:left;
vertical-align:top}
.matrix thead th{position:sticky;top:0;background:#fff;z-index:1;
border-bottom:2px solid var(--line);font-size:13px}
.matrix thead th.p{text-align:center;min-width:96px;white-space:nowrap}
.matrix tr.group th{background:var(--bg);font-size:13px;padding-top:10px;color:var(--ink)}
.matrix tbody tr:hover td,.matrix tbody tr:hover th{background:#f6f8fa}
.rule{display:flex;gap:10px;align-items:baseline}
.rid{font:600 12.5px ui-monospace,SFMono-Regular,Menlo,monospace;white-space:nowrap;
flex:0 0 68px}
.rtitle{color:var(--ink);font-weight:400}
.prov{font-size:11px;color:#9a6700;border:1px solid #d4a72c;border-radius:4px;padding:0 4px;
margin-left:4px}
td.c{text-align:center;white-space:nowrap;font-size:12.5px;font-weight:600}
td.c b{display:inline-block;width:18px;height:18px;line-height:18px;border-radius:50%;color:#fff;
font-size:12px;margin-right:5px}
td.passed{color:var(--passed)}td.passed b{background:var(--passed)}
td.failed{color:var(--failed);background:#ffebe9}td.failed b{background:var(--failed)}
td.known-broken{color:#9a6700;background:#fff8c5}td.known-broken b{background:var(--known-broken)}
td.not-claimed{color:var(--not-claimed);font-weight:400}
td.not-claimed b{background:var(--not-claimed)}
td.skipped,td.needs-hook,td.backend-unavailable{color:var(--skipped);font-weight:400}
td.skipped b,td.needs-hook b,td.backend-unavailable b{background:var(--skipped)}
.ruletext dt{font:600 12.5px ui-monospace,SFMono-Regular,Menlo,monospace;margin-top:10px}
.ruletext dd{margin:2px 0 0 0}
td.missing{color:var(--muted);font-weight:400;background:repeating-linear-gradient(45deg,#fff,
#fff 4px,var(--bg) 4px,var(--bg) 8px)}td.missing b{background:var(--missing);color:var(--ink)}
.detail{border:1px solid var(--line);border-radius:8px;margin:0 0 12px;overflow:hidden}
.detail h3{margin:0;font-size:14px;padding:8px 12px;background:var(--bg);
border-bottom:1px solid var(--line)}
.detail h4{margin:10px 12px 4px;font-size:13px}
.detail pre{margin:0 12px 12px;padding:8px 10px;background:#fff;border:1px solid var(--line);
border-radius:6px;white-space:pre-wrap;word-break:break-word;font:12px/1.45 ui-monospace,
SFMono-Regular,Menlo,monospace}
.kv th,.kv td{border-bottom:1px solid var(--line);padding:5px 10px;text-align:left;
vertical-align:top;font-size:13px}
.kv thead th{border-bottom:2px solid var(--line)}
.kv td{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
.scroll{overflow-x:auto}
.glance td{font-family:inherit;font-size:12.5px;min-width:110px}.glance td.muted{color:var(--muted)}
footer{margin-top:40px;color:var(--muted);font-size:12.5px}
"""


#: The describe() fact that best names a provider's backend, in order of preference.
_BACKEND_KEYS = {"backend": "", "broker": "", "server": "", "server_version": "server "}


def _when(stamp: str) -> str:
    return stamp.replace("T", " ").replace("Z", " UTC") if stamp else "—"


def _bar(counts: dict[Outcome, int]) -> str:
    total = sum(counts.values()) or 1
    parts = []
    for state in Outcome:
        if counts[state]:
            width = f"{100 * counts[state] / total:.2f}%"
            parts.append(
                f'<span style="width:{width};background:var(--{state.value})" '
                f'title="{counts[state]} {state.label}"></span>'
            )
    return f'<div class="bar">{"".join(parts)}</div>'


def _link(rules_url: str, r: RuleRow) -> str:
    """Where a rule's text is: this page's own rule text, or ``rules_url`` if given."""
    return f"{rules_url}#{r.anchor}" if rules_url else f"#{r.slug}"


def _card(p: ProviderColumn) -> str:
    status = escape(p.status)
    head = (
        f'<div class="card-head"><h3>{escape(p.name)}</h3>'
        f'<span class="pill {status}">{escape(STATUSES[p.status])}</span></div>'
    )
    if p.missing:
        return (
            f'<article class="card missing">{head}<p class="score">no result</p>'
            '<p class="facts">No result file for this provider: every cell shows missing.</p>'
            "</article>"
        )
    counts = p.counts()
    ran = sum(n for outcome, n in counts.items() if outcome.ran)
    items = "".join(
        f'<li><span class="dot" style="background:var(--{s.value})"></span>'
        f"{counts[s]} {s.label}</li>"
        for s in Outcome
        if counts[s]
    )
    backend = next(
        (f"{v}{p.describe[k]}" for k, v in _BACKEND_KEYS.items() if p.describe.get(k)), ""
    )
    versions = " · ".join(x for x in (f"v{p.version}" if p.version else "", "suite ") if x)
    facts = "<br>".join(x for x in (escape(backend), escape(versions + p.suite_version)) if x)
    warnings = "".join(f'<p class="warn">stale: {escape(w)}</p>' for w in p.stale)
    warnings += "".join(
        f'<p class="warn">not verified: {escape(why)}</p>' for why in p.unverified_groups().values()
    )
    return (
        f'<article class="card {status}">{head}'
        f'<p class="score">{counts[Outcome.PASSED]}<small> / {ran} passed</small></p>'
        f'{_bar(counts)}<ul class="counts">{items}</ul>'
        f'<p class="facts">{facts}<br>results {escape(_when(p.generated_at))} · '
        f"<code>{escape(p.source)}</code></p>{warnings}</article>"
    )


def _rule_head(r: RuleRow, rules_url: str) -> str:
    rid = f'<a class="rid" href="{escape(_link(rules_url, r))}">{escape(r.id)}</a>'
    if not r.known:
        rid = f'<span class="rid">{rid}<br><span class="muted">not in this suite</span></span>'
    prov = '<span class="prov">provisional</span>' if r.provisional else ""
    title = f'<span class="rtitle">{escape(r.title)}{prov}</span>'
    return f'<th scope="row"><div class="rule">{rid}{title}</div></th>'


def _matrix(matrix: Matrix, rules_url: str) -> str:
    heads = "".join(f'<th class="p" scope="col">{escape(p.name)}</th>' for p in matrix.providers)
    rows = []
    for group, heading in matrix.groups.items():
        members = matrix.rules_in(group)
        if not members:
            continue
        span = len(matrix.providers) + 1
        rows.append(
            f'<tr class="group"><th colspan="{span}">{escape(group)} · {escape(heading)}</th></tr>'
        )
        for r in members:
            cells = []
            for p in matrix.providers:
                cell = p.cell(r.id)
                tip = f' title="{escape(cell.reason)}"' if cell.reason else ""
                cells.append(
                    f'<td class="c {cell.state.value}"{tip}><b>{_MARKS[cell.state]}</b>'
                    f"{escape(cell.state.label)}</td>"
                )
            rows.append(f"<tr>{_rule_head(r, rules_url)}{''.join(cells)}</tr>")
    legend = "".join(
        f'<span><span class="dot" style="background:var(--{s.value})"></span>'
        f"{escape(s.label)}</span>"
        for s in Outcome
    )
    return (
        f'<div class="legend">{legend}</div><div class="scroll"><table class="matrix">'
        f'<thead><tr><th scope="col">rule</th>{heads}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _details(matrix: Matrix, rules_url: str, states: set[Outcome]) -> str:
    blocks = []
    for r in matrix.rules:
        hits = [(p.name, p.cell(r.id)) for p in matrix.providers if p.cell(r.id).state in states]
        if not hits:
            continue
        body = "".join(
            f"<h4>{escape(name)} — {escape(cell.state.label)}</h4>"
            f"<pre>{escape(cell.reason or '(no reason recorded)')}</pre>"
            for name, cell in hits
        )
        link = f'<a href="{escape(_link(rules_url, r))}">{escape(r.id)}</a>'
        blocks.append(f'<div class="detail"><h3>{link} {escape(r.title)}</h3>{body}</div>')
    return "".join(blocks) or '<p class="muted">None.</p>'


def _rule_text(matrix: Matrix) -> str:
    """Every rule as the suite that produced the results states it."""
    items = []
    for r in matrix.rules:
        facts = []
        if r.applies_when:
            facts.append(f"applies when {escape(r.applies_when)}")
        if r.hooks:
            hooks = ", ".join(f"<code>{escape(h)}</code>" for h in r.hooks)
            facts.append(f"harness hooks: {hooks}")
        prov = '<span class="prov">provisional</span>' if r.provisional else ""
        items.append(
            f'<dt id="{escape(r.slug)}">{escape(r.id)}{prov}</dt><dd>{escape(r.title)}'
            + (f'<br><span class="muted">Why: {escape(r.why)}</span>' if r.why else "")
            + (f'<br><span class="muted">{"; ".join(facts)}</span>' if facts else "")
            + "</dd>"
        )
    return f'<dl class="ruletext">{"".join(items)}</dl>'


def _value(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return escape(value if isinstance(value, str) else json.dumps(value))


def _kv_table(rows: list[tuple[str, list[str]]], names: list[str]) -> str:
    heads = "".join(f"<th>{escape(n)}</th>" for n in names)
    body = "".join(
        f"<tr><th>{escape(key)}</th>{''.join(f'<td>{v}</td>' for v in values)}</tr>"
        for key, values in rows
    )
    return (
        f'<div class="scroll"><table class="kv"><thead><tr><th></th>{heads}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _exploration(matrix: Matrix) -> str:
    """How much each program-running rule (MODEL) explored, per provider."""
    items = [
        f"<li><b>{escape(p.name)}</b> {escape(r.id)}: {escape(text)}</li>"
        for r in matrix.rules
        for p in matrix.providers
        if (text := exploration_text(p.cell(r.id).metrics))
    ]
    if not items:
        return ""
    return f"<h2>Programs the model rules ran</h2><ul>{''.join(items)}</ul>"


def _stress(matrix: Matrix) -> str:
    if not matrix.stress:
        return ""
    heads = ["provider", "fault", *(k.replace("_", " ") for k in COUNTS), "faults", "account"]
    rows = []
    for run in matrix.stress:
        state = (Outcome.PASSED if run.ok else Outcome.FAILED).value
        numbers = "".join(f"<td>{run.counts[k]}</td>" for k in COUNTS)
        rows.append(
            f"<tr><th>{escape(run.provider)}</th><td>{escape(run.label)}</td>{numbers}"
            f"<td>{run.faults_injected}</td>"
            f'<td class="c {state}">{"clean" if run.ok else "not clean"}</td></tr>'
        )
    intro = escape(STRESS_INTRO).replace(
        "`mqcontract stress --json`", "<code>mqcontract stress --json</code>"
    )
    return (
        f'<section id="under-load"><h2>Under load</h2><p class="muted">{intro}</p>'
        f'<div class="scroll"><table class="kv"><thead><tr>'
        + "".join(f"<th>{escape(h)}</th>" for h in heads)
        + f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div></section>"
    )


def _capabilities(matrix: Matrix) -> str:
    present = [p for p in matrix.providers if not p.missing]
    keys = list(dict.fromkeys(k for p in present for k in p.capabilities))
    rows = [(k, [_value(p.capabilities.get(k)) for p in present]) for k in keys]
    return _kv_table(rows, [p.name for p in present]) if present else ""


def _facts(matrix: Matrix) -> str:
    present = [p for p in matrix.providers if not p.missing]
    facts = [{**p.describe, **{k: str(v) for k, v in p.run.items()}} for p in present]
    keys = sorted({k for f in facts for k in f})
    rows = [("results file", [escape(p.source) for p in present])]
    rows += [("generated at", [escape(_when(p.generated_at)) for p in present])]
    rows += [(k, [escape(f.get(k, "—")) for f in facts]) for k in keys]
    return _kv_table(rows, [p.name for p in present]) if present else ""


def render_html(matrix: Matrix, rules_url: str = "") -> str:
    """The whole page; it carries the text of every rule it shows (or links ``rules_url``)."""
    cards = "".join(_card(p) for p in matrix.providers)
    sources = ", ".join(f"<code>{escape(s)}</code>" for s in matrix.sources) or "no files"
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mqcontract compatibility · suite {escape(matrix.suite_version)}</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<h1>mqcontract compatibility</h1>
<p class="meta">Suite version <strong>{escape(matrix.suite_version)}</strong> ·
{len(matrix.rules)} rules · {len(matrix.providers)} providers · results as of
{escape(_when(matrix.as_of))} · <a href="{escape(rules_url or "#rule-text")}">the rules</a></p>
{glance_html(matrix, rules_url)}
<section class="cards" id="providers">{cards}</section>
<h2>Rules &times; providers</h2>
{_matrix(matrix, rules_url)}
<h2 id="failures-and-known-broken-rules">Failures and known-broken rules</h2>
{_details(matrix, rules_url, {Outcome.FAILED, Outcome.KNOWN_BROKEN})}
<h2>Claimed but not verified</h2>
<p class="muted">Rules a provider claims but that did not run: a fault hook its harness
does not offer, or a backend that was not reachable.</p>
{_details(matrix, rules_url, {o for o in Outcome if o.unverified})}
{_exploration(matrix)}
{_stress(matrix)}
{teeth_html(matrix.teeth)}
<h2>Declared capabilities</h2>
{_capabilities(matrix)}
{measured_html(matrix)}
<h2>Where the results come from</h2>
{_facts(matrix)}
<h2 id="rule-text">Rule text</h2>
{_rule_text(matrix)}
<footer>Generated by <code>mqcontract report</code> from {sources}. Do not edit by hand:
regenerate it from fresh results. Results older than {matrix.stale_days:g} days or from another
suite version are marked stale; a provider without a result is shown as missing.</footer>
</main>
</body>
</html>
"""

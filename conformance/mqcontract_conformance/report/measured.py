"""The report's "Declared and measured" section: per provider, each capability the CAP
rules probed, what was declared beside what was measured, and the verdict.

An under-declaration (rules skipped or loosened because the provider declared less than
it does) is the line to read first; the table says which rules it cost.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from mqcontract_conformance.measurement import Measurement, Verdict, render

if TYPE_CHECKING:
    from mqcontract_conformance.report.model import Matrix, ProviderColumn

__all__ = ["MEASURED_INTRO", "measured_html", "measured_markdown"]

MEASURED_INTRO = (
    "What the CAP rules measured, whatever the provider declares. An under-declaration "
    "skips or loosens the rules listed beside it and fails CAP-1 or CAP-2; an "
    "over-declaration fails the rules the capability enables."
)
_MARKS = {
    Verdict.AGREES: "✅",
    Verdict.UNDER_DECLARED: "❌",
    Verdict.OVER_DECLARED: "⚠️",
    Verdict.DIFFERS: "⚠️",
    Verdict.NOT_MEASURED: "—",
}
_HEADER = ("capability", "declared", "measured", "verdict", "rules affected", "how")


def _row(m: Measurement) -> list[str]:
    return [
        m.capability,
        render(m.declared),
        render(m.measured),
        f"{_MARKS[m.verdict]} {m.verdict.value}",
        ", ".join(m.rules) or "—",
        m.note or "—",
    ]


def _measured(matrix: Matrix) -> list[ProviderColumn]:
    return [p for p in matrix.providers if p.measured]


def measured_markdown(matrix: Matrix) -> list[str]:
    """The section's Markdown lines (none when no provider was measured)."""
    providers = _measured(matrix)
    if not providers:
        return []
    out = ["## Declared and measured", "", MEASURED_INTRO, ""]
    for p in providers:
        out += [f"### {_md(p.name)}", ""]
        out.append("| " + " | ".join(_HEADER) + " |")
        out.append("|" + "---|" * len(_HEADER))
        for m in p.measured:
            cells = _row(m)
            cells[0] = f"`{cells[0]}`"
            out.append("| " + " | ".join(_md(c) if i else c for i, c in enumerate(cells)) + " |")
        out.append("")
    return out


def measured_html(matrix: Matrix) -> str:
    """The section as HTML (empty when no provider was measured)."""
    providers = _measured(matrix)
    if not providers:
        return ""
    parts = [f'<h2>Declared and measured</h2><p class="muted">{escape(MEASURED_INTRO)}</p>']
    heads = "".join(f"<th>{escape(h)}</th>" for h in _HEADER)
    for p in providers:
        rows = []
        for m in p.measured:
            state = {
                Verdict.AGREES: "passed",
                Verdict.UNDER_DECLARED: "failed",
                Verdict.NOT_MEASURED: "not-claimed",
            }.get(m.verdict, "known-broken")
            cells = [f"<th><code>{escape(m.capability)}</code></th>"]
            for i, text in enumerate(_row(m)[1:], start=1):
                cls = f' class="c {state}"' if i == 3 else ""
                cells.append(f"<td{cls}>{escape(text)}</td>")
            rows.append(f"<tr>{''.join(cells)}</tr>")
        parts.append(
            f"<h3>{escape(p.name)}</h3>"
            f'<div class="scroll"><table class="kv"><thead><tr>{heads}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>"
        )
    return "".join(parts)


def _md(text: str) -> str:
    flat = " ".join(text.split())
    return flat.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")

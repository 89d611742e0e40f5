"""The suite's teeth in the report: how many broken providers its rules catch.

``mqcontract selftest --json RESULTS/selftest.json`` writes the kill matrix beside the
provider results; the report shows how many of the kit's broken providers were caught
by the rule written for each, so a reader can judge what a green column is worth. Without
the file the section says the selftest was not run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from mqcontract_conformance.report.documents import ReportError
from mqcontract_conformance.selftest.matrix import (
    SELFTEST_FORMAT,
    SelftestResult,
    SpecimenResult,
)

__all__ = [
    "SELFTEST_FILE",
    "SELFTEST_FORMAT",
    "TEETH_INTRO",
    "Teeth",
    "load_teeth",
    "teeth_html",
    "teeth_markdown",
]

#: The selftest's file name in a results directory.
SELFTEST_FILE = "selftest.json"

#: What the section says (Markdown and HTML alike).
TEETH_INTRO = (
    "Each broken provider breaks one promise a competent author could plausibly break, and "
    "one rule was written to catch it. `mqcontract selftest` runs every rule against every "
    "broken provider at each timing scale; a broken provider counts as caught only when its "
    "intended rule fails it at every scale and passes the correct provider it was derived from."
)

_NOT_RUN = (
    f"The selftest was not run: no `{SELFTEST_FILE}` beside the results "
    f"(`mqcontract selftest --json RESULTS/{SELFTEST_FILE}`)."
)


@dataclass(frozen=True)
class Teeth:
    """The selftest the report shows (``result`` None: it was not run)."""

    source: str = ""
    result: SelftestResult | None = None

    def headline(self) -> str:
        if self.result is None:
            return "Suite teeth: not measured (the selftest was not run)"
        r = self.result
        scales = ", ".join(f"{s:g}" for s in r.scales)
        return (
            f"Suite teeth: {r.caught} of {r.total} broken providers caught by their "
            f"intended rule (timing scales {scales}; suite {r.suite_version})"
        )

    def to_dict(self) -> dict[str, Any]:
        if self.result is None:
            return {"run": False}
        r = self.result
        return {
            "run": True,
            "source": self.source,
            "suite_version": r.suite_version,
            "scales": list(r.scales),
            "caught": r.caught,
            "total": r.total,
            "specimens": [
                {
                    "name": s.name,
                    "defect": s.defect,
                    "group": s.group,
                    "rule": s.rule,
                    "verdict": s.verdict.value,
                    "intended_caught": s.intended_caught,
                    "reference_passes": s.reference_passes,
                    "other_rules": s.other_rules,
                }
                for s in r.specimens
            ],
        }


def _candidates(paths: list[Path]) -> list[Path]:
    found = []
    for path in paths:
        if path.is_dir():
            found.append(path / SELFTEST_FILE)
        elif path.name == SELFTEST_FILE:
            found.append(path)
    return sorted({p for p in found if p.exists()})


def load_teeth(paths: list[Path]) -> Teeth:
    """The ``selftest.json`` among ``paths`` (results directories or files), if any.

    More than one, or one that cannot be read, is an error: the report must not pick one
    silently or drop it.
    """
    files = _candidates(paths)
    if not files:
        return Teeth()
    if len(files) > 1:
        raise ReportError(f"more than one {SELFTEST_FILE}: {', '.join(map(str, files))}")
    (file,) = files
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
        result = SelftestResult.from_dict(doc)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ReportError(f"{file}: not an mqcontract selftest ({exc})") from None
    return Teeth(file.name, result)


def _mark(row: SpecimenResult) -> tuple[bool, str]:
    """Whether the row is a tooth, and what to say about it."""
    if row.proven:
        return True, "caught"
    if row.intended_caught:
        return False, "caught, but the rule fails the correct provider too"
    return False, row.verdict.value


def _group_rows(result: SelftestResult) -> list[SpecimenResult]:
    from mqcontract_conformance.registry import GROUPS

    order = list(GROUPS)
    return sorted(
        result.specimens,
        key=lambda s: order.index(s.group) if s.group in order else len(order),
    )


def _md(text: str) -> str:
    flat = " ".join(text.split())
    return flat.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def teeth_markdown(teeth: Teeth) -> list[str]:
    """The ``## Suite teeth`` section of ``compatibility.md``."""
    out = ["## Suite teeth", ""]
    if teeth.result is None:
        return [*out, _NOT_RUN, ""]
    out += [f"**{teeth.headline()}**", "", TEETH_INTRO, ""]
    out += [
        "| broken provider | defect | intended rule | caught by it | also failed by |",
        "|---|---|---|---|---|",
    ]
    for row in _group_rows(teeth.result):
        ok, said = _mark(row)
        others = " ".join(row.other_rules) or "—"
        mark = f"{'✅' if ok else '❌'} {said}"
        out.append(f"| **{row.name}** | {_md(row.defect)} | {row.rule} | {mark} | {others} |")
    return [*out, ""]


def _html_text(text: str) -> str:
    """Escaped, with the docstrings' ````code```` spans as ``<code>``."""
    return re.sub(r"``(.+?)``", r"<code>\1</code>", escape(text))


def teeth_html(teeth: Teeth) -> str:
    """The Suite teeth section of ``compatibility.html``."""
    if teeth.result is None:
        text = escape(_NOT_RUN).replace("`", "")
        return f'<h2 id="suite-teeth">Suite teeth</h2><p class="muted">{text}</p>'
    intro = escape(TEETH_INTRO).replace("`mqcontract selftest`", "<code>mqcontract selftest</code>")
    rows = []
    for row in _group_rows(teeth.result):
        ok, said = _mark(row)
        state = "passed" if ok else "failed"
        rows.append(
            f"<tr><th>{escape(row.name)}</th><td>{_html_text(row.defect)}</td>"
            f"<td><code>{escape(row.rule)}</code></td>"
            f'<td class="c {state}">{escape(said)}</td>'
            f"<td>{escape(' '.join(row.other_rules)) or '—'}</td></tr>"
        )
    heads = ["broken provider", "defect", "intended rule", "caught by it", "also failed by"]
    return (
        f'<h2 id="suite-teeth">Suite teeth</h2><p><strong>{escape(teeth.headline())}</strong></p>'
        f'<p class="muted">{intro}</p>'
        '<div class="scroll"><table class="kv"><thead><tr>'
        + "".join(f"<th>{escape(h)}</th>" for h in heads)
        + f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )

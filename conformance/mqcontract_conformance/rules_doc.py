"""Render the rule registry as ``RULES.md`` (the document is generated, never edited)."""

from __future__ import annotations

from mqcontract_conformance.registry import GROUPS, SUITE_VERSION
from mqcontract_conformance.rules import all_rules

__all__ = ["render_rules_markdown"]


def render_rules_markdown() -> str:
    """The versioned contract document."""
    lines = [
        f"# The mqcontract rules, version {SUITE_VERSION}",
        "",
        "Generated from the rule registry by `mqcontract rules --markdown`; a test keeps this",
        "file identical to the registry. Each rule has a stable id; a rule that does not apply",
        "to a provider's declared capabilities is skipped as *not claimed*, with a reason",
        "stating when it applies (the text below, rendered from the same condition the suite",
        "checks). Provisional rules are new in this version and may still change.",
        "",
    ]
    rules = all_rules()
    for group, heading in GROUPS.items():
        members = [r for r in rules if r.group == group]
        if not members:
            continue
        lines += [f"## {group}: {heading}", ""]
        for r in members:
            tag = " *(provisional)*" if r.provisional else ""
            lines.append(f"### {r.id}{tag}")
            lines.append("")
            lines.append(f"**Must hold:** {r.title}")
            lines.append("")
            lines.append(f"**Why:** {r.why}")
            lines.append("")
            lines.append(f"**Applies when:** {r.applies_when}")
            lines.append("")
            lines.append(f"**Checked by:** `{r.checked_by}`")
            if r.hooks:
                lines.append("")
                lines.append(f"**Harness hooks:** {', '.join(r.hooks)}")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"

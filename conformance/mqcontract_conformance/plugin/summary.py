"""The terminal summary: a line per rule and provider, then each provider's status."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

import mqcontract
from mqcontract_conformance.measurement import Verdict
from mqcontract_conformance.outcomes import Outcome
from mqcontract_conformance.plugin.command_line import flag
from mqcontract_conformance.plugin.state import STATE
from mqcontract_conformance.registry import GROUPS, SUITE_VERSION
from mqcontract_conformance.report.model import exploration_text
from mqcontract_conformance.results import ProviderResult
from mqcontract_conformance.rules import all_rules

__all__ = ["pytest_terminal_summary"]

#: How a cell of the per-rule table shows each outcome; a rule the run left out is
#: blank, and a row blank for every provider is not printed (a run narrowed to a few
#: rules lists those, not every other rule as skipped).
_SYMBOLS = {
    Outcome.PASSED: "pass",
    Outcome.FAILED: "FAIL",
    Outcome.KNOWN_BROKEN: "xfail",
    **dict.fromkeys(Outcome.skips(), "skip"),
    Outcome.NOT_SELECTED: "-",
}


def _title_width(tr: Any, used: int) -> int:
    width = int(getattr(getattr(tr, "_tw", None), "fullwidth", 0) or 0)
    return max(40, width - used)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is None or not state.results:  # workers record nothing
        return
    tr = terminalreporter
    tr.section(f"mqcontract {mqcontract.__version__}, suite {SUITE_VERSION}: rules per provider")
    providers = list(state.results)
    width = max(8, *(len(p) for p in providers))
    used = 10 + (width + 2) * len(providers)
    tr.write_line("rule      " + "  ".join(p.ljust(width) for p in providers) + "  title")
    for rule in all_rules():
        cells = []
        for p in providers:
            r = state.results[p].results.get(rule.id)
            cells.append((_SYMBOLS[r.outcome] if r else "-").ljust(width))
        if any(c.strip() != "-" for c in cells):
            title = textwrap.shorten(rule.title, _title_width(tr, used), placeholder=" …")
            tr.write_line(f"{rule.id:<9} " + "  ".join(cells) + f"  {title}")
    _write_exploration(tr, state.results)
    for p in providers:
        _write_provider_summary(tr, state.results[p])
    allow = flag(config, "allow_unavailable")
    for p in state.unavailable_providers:
        if p in state.empty_providers:
            why = (
                f"{allow} makes this a skip only when some other provider ran rules: no rule "
                "ran at all"
                if state.options.allow_unavailable
                else f"{allow} makes this a skip"
            )
            tr.write_line(
                f"FAILED: provider {p!r} not verified: its backend is unavailable (see the skip "
                f"reasons; {why})",
                red=True,
            )
        else:
            tr.write_line(
                f"SKIPPED: provider {p!r} not verified: its backend is unavailable "
                f"(allowed by {allow})",
                yellow=True,
            )
    for p in state.empty_providers:
        if p not in state.unavailable_providers:
            tr.write_line(f"FAILED: no rule ran for provider {p!r} (everything skipped)", red=True)
    if state.options.json:
        tr.write_line(f"results written to {state.options.json}")


def _write_exploration(tr: Any, results: dict[str, ProviderResult]) -> None:
    for name, result in results.items():
        for rule_id, r in result.results.items():
            if explored := exploration_text(r.metrics):
                tr.write_line(f"{rule_id} on {name}: {explored}")


def _write_provider_summary(tr: Any, result: ProviderResult) -> None:
    counts = result.counts()
    skipped = ", ".join(f"{o.label}: {counts[o]}" for o in Outcome.skips() if counts[o])
    status = result.status()
    tr.write_line(
        f"{result.name}: {status}: {counts[Outcome.PASSED]} passed, "
        f"{counts[Outcome.FAILED]} failed, {counts[Outcome.KNOWN_BROKEN]} known broken; "
        f"skipped: {skipped or 'none'}",
        green=status == "passing",
        yellow=status in {"passing, unverified", "not verified"},
        red=status == "failing",
    )
    _write_measured(tr, result)
    for rule_id, r in result.results.items():
        if r.known_broken_passed:
            tr.write_line(
                f"  {rule_id} passed though the harness lists it as known broken: remove it "
                "from known_broken (a known-broken rule must fail, or it hides a change)",
                red=True,
            )
    unverified = result.unverified()
    if list(unverified) == [Outcome.BACKEND_UNAVAILABLE] and not result.ran():
        tr.write_line("  not verified: every rule: backend unavailable", yellow=True)
        return
    unselected = unverified.pop(Outcome.NOT_SELECTED, [])
    if unselected:
        tr.write_line(
            f"  not verified: {len(unselected)} rules not selected in this run "
            "(--rules, -k or another selection): only a full run verifies a provider",
            yellow=True,
        )
    for group, why in result.unverified_groups(without=Outcome.NOT_SELECTED).items():
        ids = [r for ids in unverified.values() for r in ids if r.startswith(f"{group}-")]
        tr.write_line(
            f"  not verified: {group} ({GROUPS.get(group, group)}): {', '.join(ids)}: {why}",
            yellow=True,
        )


def _write_measured(tr: Any, result: ProviderResult) -> None:
    """Each capability whose measurement contradicts the declaration (CAP rules)."""
    for m in result.measured.values():
        if not m.verdict.mismatch:
            continue
        under = m.verdict is Verdict.UNDER_DECLARED
        cost = f"; rules {', '.join(m.rules)} skipped or loosened" if m.rules else ""
        tr.write_line(
            f"  {m.verdict.value}: {m.text()}{cost}",
            red=under,
            yellow=not under,
        )

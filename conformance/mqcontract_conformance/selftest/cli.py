"""``mqcontract selftest``: run every broken provider against the suite, print the kill matrix.

Registered through ``SUBCOMMAND_MODULES``; the suite is imported only when the command
runs, so building the parser stays cheap for every other subcommand.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from mqcontract._arguments import output_problem, positive_number, usage_error

if TYPE_CHECKING:
    from mqcontract_conformance.selftest.matrix import SelftestResult, SpecimenResult

__all__ = ["register", "render_matrix", "run"]

#: The kill matrix stays within this many columns.
WIDTH = 100
_NAME = 30
_RULE = 9
_MARK = 7
_INDENT = "      "


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``mqcontract selftest``."""
    parser = subparsers.add_parser(
        "selftest",
        help="prove the suite's teeth: every broken provider caught by its intended rule",
        description=(
            "Run every rule against every built-in broken provider at each timing scale, "
            "and each rule written for a defect against the correct provider; print the kill "
            "matrix. Exit 1 unless every broken provider is caught by its intended rule."
        ),
    )
    parser.add_argument(
        "--scale",
        action="append",
        type=positive_number,
        default=None,
        metavar="S",
        help="timing scale to run at (repeatable; default: 1 and 3)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="PATH",
        help="also write the matrix as JSON (the report reads RESULTS/selftest.json)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=min(os.cpu_count() or 1, 4),
        metavar="N",
        help="worker processes (default: the CPUs, at most 4; 1 runs in this process)",
    )
    parser.add_argument(
        "--specimen",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this broken provider (repeatable)",
    )
    parser.set_defaults(func=run)


def run(options: argparse.Namespace) -> int:
    """Run the matrix; 0 when every specimen is caught by its intended rule, else 1."""
    from mqcontract_conformance.rules import all_rules
    from mqcontract_conformance.selftest.catalogue import all_specimens
    from mqcontract_conformance.selftest.matrix import DEFAULT_SCALES, run_matrix, scale_key

    scales = tuple(options.scale or DEFAULT_SCALES)  # each checked: finite, > 0
    problem = output_problem("--json", options.json)
    if problem:
        return usage_error(problem)
    specimens = all_specimens()
    if options.specimen:
        known = {s.name for s in specimens}
        unknown = sorted(set(options.specimen) - known)
        if unknown:
            print(f"mqcontract selftest: no specimen named {', '.join(unknown)}", file=sys.stderr)
            return 2
        specimens = [s for s in specimens if s.name in set(options.specimen)]
    rules = all_rules()
    total = len(specimens)
    print(
        f"mqcontract selftest: {total} broken providers, {len(rules)} rules, "
        f"timing scales {', '.join(scale_key(s) for s in scales)}",
        flush=True,
    )
    done = 0

    def progress(row: SpecimenResult) -> None:
        nonlocal done
        done += 1
        print(
            f"[{done:>{len(str(total))}}/{total}] {row.name:<{_NAME}} {row.rule:<{_RULE}} "
            f"{row.verdict.value} ({row.seconds:.1f} s)",
            flush=True,
        )

    result = run_matrix(specimens, rules, scales, on_result=progress, jobs=options.jobs)
    print()
    print(render_matrix(result))
    if options.json is not None:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n"
        options.json.write_text(text, encoding="utf-8", newline="\n")
        print(f"wrote {options.json}")
    return 0 if result.ok else 1


def _wrapped(label: str, words: list[str]) -> list[str]:
    return textwrap.wrap(
        f"{label} {' '.join(words)}",
        WIDTH,
        initial_indent=_INDENT,
        subsequent_indent=_INDENT + "  ",
        break_on_hyphens=False,
    )


def _row(row: SpecimenResult, scales: list[str]) -> list[str]:
    from mqcontract_conformance.selftest.matrix import Verdict

    mark = {Verdict.CAUGHT: "yes", Verdict.SOME_SCALES: "partly"}.get(row.verdict, "NO")
    head = f"  {row.name:<{_NAME}} {row.rule:<{_RULE}} {mark:<{_MARK}}"
    others = row.other_rules
    lines = textwrap.wrap(
        " ".join(others) if others else "-",
        WIDTH,
        initial_indent=head,
        subsequent_indent=" " * len(head),
        break_on_hyphens=False,
    )
    lines += textwrap.wrap(row.defect, WIDTH, initial_indent=_INDENT, subsequent_indent=_INDENT)
    if row.verdict is not Verdict.CAUGHT:
        missed = [k for k in scales if row.rule not in row.caught_by.get(k, [])]
        lines += _wrapped(f"{row.verdict.value}: {row.rule} did not fail it at scale", missed)
    if not row.reference_passes:
        lines += textwrap.wrap(
            f"proves nothing: {row.reference_problem}",
            WIDTH,
            initial_indent=_INDENT,
            subsequent_indent=_INDENT + "  ",
            max_lines=3,
        )
    errored = row.errored_rules
    if errored:
        lines += _wrapped("errors (an exception, not a violation):", errored)
    return lines


def render_matrix(result: SelftestResult) -> str:
    """The kill matrix as text, grouped by rule group, ending with the teeth line."""
    from mqcontract_conformance.registry import GROUPS
    from mqcontract_conformance.selftest.matrix import scale_key

    scales = [scale_key(s) for s in result.scales]
    head = f"  {'broken provider':<{_NAME}} {'rule':<{_RULE}} {'caught':<{_MARK}}also failed by"
    out = [
        "Kill matrix: each broken provider, the rule written for its defect, whether that rule",
        f"failed it at every timing scale ({', '.join(scales)}), and the other rules that did.",
        "",
        head,
    ]
    order = [*GROUPS, *sorted({r.group for r in result.specimens} - set(GROUPS))]
    for group in order:
        rows = [r for r in result.specimens if r.group == group]
        if not rows:
            continue
        out += ["", f"{group or '?'}: {GROUPS.get(group, 'rule not registered')}"]
        for row in rows:
            out += _row(row, scales)
    out += ["", result.teeth_line()]
    return "\n".join(out)

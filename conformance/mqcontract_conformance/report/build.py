"""Write the whole report directory from result JSONs: Markdown, HTML, JSON, badges, Allure."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from mqcontract_conformance.report.allure import allure_result_dirs, find_allure, generate_allure
from mqcontract_conformance.report.badges import badge_for
from mqcontract_conformance.report.bench_results import default_bench_paths, load_bench
from mqcontract_conformance.report.glance import glance_dict
from mqcontract_conformance.report.html import render_html
from mqcontract_conformance.report.markdown import render_markdown
from mqcontract_conformance.report.model import Matrix, build_matrix, load_results
from mqcontract_conformance.report.stress import load_stress
from mqcontract_conformance.report.teeth import load_teeth

__all__ = ["ReportOptions", "badge_name", "build_report"]


@dataclass(frozen=True, kw_only=True)
class ReportOptions:
    """What ``mqcontract report`` was asked for."""

    results: list[Path]
    out: Path
    expect: list[str] = field(default_factory=list)
    stale_days: float = 30.0
    as_of: str | None = None
    #: A ``RULES.md`` to link to; empty: link to the rule text the report itself carries.
    rules_url: str = ""
    #: Stress accounts (files or directories); ``None`` means ``<out>/stress`` when present.
    stress: list[Path] | None = None
    #: ``mqcontract bench --json`` results (files, or directories holding ``results.json``);
    #: ``None`` means ``bench/results.json`` beside each results directory when present.
    bench: list[Path] | None = None
    #: Allure: ``None`` means ``<out>/allure-results`` when present; ``False`` never.
    allure_results: Path | None = None
    allure: bool = True
    allure_bin: str | None = None


def badge_name(provider: str) -> str:
    """A file name for a provider's badge (``module:factory`` specs included)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", provider) + ".svg"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="\n")


def build_report(options: ReportOptions) -> tuple[Matrix, list[str]]:
    """Write the report; return the matrix and one line per thing done or skipped."""
    matrix = build_matrix(
        load_results(options.results),
        expect=options.expect,
        stale_days=options.stale_days,
        as_of=options.as_of,
    )
    out = options.out
    matrix.stress = load_stress(options.stress if options.stress is not None else [out / "stress"])
    matrix.teeth = load_teeth(options.results)
    bench = options.bench if options.bench is not None else default_bench_paths(options.results)
    matrix.bench = load_bench(bench)
    written = {
        out / "compatibility.md": render_markdown(matrix, options.rules_url),
        out / "compatibility.html": render_html(matrix, options.rules_url),
        out / "compatibility.json": json.dumps(
            matrix.to_dict(glance_dict(matrix)), indent=2, ensure_ascii=False
        )
        + "\n",
    }
    badges = out / "badges"
    for provider in matrix.providers:
        written[badges / badge_name(provider.name)] = badge_for(provider)
    for path, text in written.items():
        _write(path, text)
    if badges.is_dir():  # a provider no longer reported leaves no badge behind
        for old in badges.glob("*.svg"):
            if old not in written:
                old.unlink()
    lines = [f"wrote {path}" for path in written]
    lines.append(_allure(options))
    return matrix, lines


def _allure(options: ReportOptions) -> str:
    if not options.allure:
        return "allure: not requested"
    root = options.allure_results or options.out / "allure-results"
    dirs = allure_result_dirs(root)
    if not dirs:
        return f"allure: skipped, no Allure results under {root}"
    executable = find_allure(options.allure_bin)
    if executable is None:
        return (
            "allure: skipped, the allure tool is not installed (npm install --prefix "
            ".tox/allure-cli allure-commandline; it needs Java)"
        )
    try:
        report = generate_allure(executable, dirs, options.out / "allure")
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        return f"allure: skipped, {exc}"
    return f"wrote {report}"

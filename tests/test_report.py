"""``mqcontract report``: the matrix, staleness, gaps, badges and byte-for-byte regeneration."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from mqcontract_conformance.cli import main
from mqcontract_conformance.outcomes import Outcome
from mqcontract_conformance.report import ReportOptions, build_matrix, build_report, load_results
from mqcontract_conformance.report.allure import find_allure
from mqcontract_conformance.report.badges import render_badge
from mqcontract_conformance.rules import SUITE_VERSION, all_rules
from mqcontract_conformance.stress.account import Ledger


def result(rule: str, outcome: str, reason: str = "") -> dict[str, Any]:
    return {"rule": rule, "outcome": outcome, "reason": reason, "duration": 0.01}


def doc(
    providers: list[dict[str, Any]],
    when: str,
    suite: str = SUITE_VERSION,
    fmt: str = "mqcontract-results/2",
) -> dict[str, Any]:
    return {
        "format": fmt,
        "suite_version": suite,
        "generated_at": when,
        "python": "3.11.7",
        "timing_scale": 1.0,
        "required_backends": True,
        "providers": providers,
    }


def provider(name: str, results: list[dict[str, Any]], **caps: Any) -> dict[str, Any]:
    return {
        "name": name,
        "version": "1.2.3",
        "describe": {"backend": f"{name} backend", "url": "amqp://u:hunter2@h:5672/%2F"},
        "capabilities": {"push": "full", **caps},
        "results": results,
    }


ALL = [r.id for r in all_rules()]


def everything(outcome: str = "passed") -> list[dict[str, Any]]:
    return [result(rule_id, outcome) for rule_id in ALL]


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    """Four result files: current, failing, stale by age, stale by suite version."""
    d = tmp_path / "results"
    d.mkdir()
    mixed = everything()
    mixed[0] = result(ALL[0], "failed", "AssertionError: queue 'q' lost 1 message")
    mixed[1] = result(ALL[1], "known-broken", "ack is a no-op")
    mixed[2] = result(ALL[2], "not-claimed", f"{ALL[2]} not claimed: applies when push == none")
    mixed[3] = result(ALL[3], "needs-hook", f"{ALL[3]} needs a harness hook: no sever")
    del mixed[4]  # a rule with no result at all
    files = {
        "good.json": doc([provider("good", everything())], "2026-03-10T12:00:00Z"),
        "mixed.json": doc([provider("mixed", mixed)], "2026-03-10T11:00:00Z"),
        "old.json": doc([provider("old", everything())], "2026-01-01T00:00:00Z"),
        "other.json": doc(
            [provider("other", [*everything(), result("ZZZ-1", "passed")])],
            "2026-03-09T00:00:00Z",
            suite="0.9.0",
        ),
    }
    for name, content in files.items():
        (d / name).write_text(json.dumps(content))
    return d


def build(results_dir: Path, out: Path, **options: Any) -> None:
    build_report(
        ReportOptions(
            results=[results_dir],
            out=out,
            expect=["good", "mixed", "absent"],
            allure=False,
            **options,
        )
    )


def test_cells_states_staleness_and_missing_providers(results_dir: Path) -> None:
    matrix = build_matrix(load_results([results_dir]), expect=["good", "absent"])
    by_name = {p.name: p for p in matrix.providers}
    assert [p.name for p in matrix.providers] == ["good", "absent", "mixed", "old", "other"]
    assert matrix.as_of == "2026-03-10T12:00:00Z"  # the newest result, not the wall clock
    mixed = by_name["mixed"]
    states = [mixed.cell(rule_id).state for rule_id in ALL[:6]]
    assert states == [
        Outcome.FAILED,
        Outcome.KNOWN_BROKEN,
        Outcome.NOT_CLAIMED,
        Outcome.NEEDS_HOOK,
        Outcome.MISSING,
        Outcome.PASSED,
    ]
    assert mixed.cell(ALL[1]).reason == "ack is a no-op"
    assert mixed.status == "failing"
    assert by_name["good"].status == "passing"
    assert by_name["absent"].status == "missing"
    assert by_name["old"].status == "stale"
    assert "68 days old" in by_name["old"].stale[0]
    assert any("suite 0.9.0" in why for why in by_name["other"].stale)
    assert matrix.rules[-1].id == "ZZZ-1"
    assert not matrix.rules[-1].known


def test_markdown_links_every_rule_to_its_own_rule_text(results_dir: Path, tmp_path: Path) -> None:
    build(results_dir, tmp_path / "out")
    md = (tmp_path / "out" / "compatibility.md").read_text()
    text = md.split("\n## Rule text\n", 1)[1]  # the report carries the rule text itself
    headings = re.findall(r"^### (.+)$", text, flags=re.MULTILINE)
    slugs = {re.sub(r"[^a-z0-9 _-]", "", h.lower()).replace(" ", "-") for h in headings}
    links = re.findall(r"\]\(#([a-z]+-[0-9]+)\)", md)
    assert set(links) == slugs == {r.lower() for r in [*ALL, "ZZZ-1"]}
    assert "../conformance" not in md  # nothing points into this repository
    assert f"Suite version **{SUITE_VERSION}**" in md
    assert "| **absent** | ❔ missing |" in md
    assert "**old** is stale: results are 68 days old" in md
    assert "2026-03-10 11:00:00 UTC" in md
    assert "AssertionError: queue 'q' lost 1 message" in md
    assert "| `push` | full | full |" in md
    assert "hunter2" not in md


def test_html_is_one_self_contained_page(results_dir: Path, tmp_path: Path) -> None:
    build(results_dir, tmp_path / "out")
    html = (tmp_path / "out" / "compatibility.html").read_text()
    assert html.startswith("<!doctype html>")
    for external in ("<script", "<link", "src=", "@import", 'href="http', "url(http"):
        assert external not in html
    assert html.count('<article class="card') == 5
    assert 'class="c failed"' in html
    assert "AssertionError: queue &#x27;q&#x27; lost 1 message" in html
    assert "hunter2" not in html


def test_json_and_badges(results_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    build(results_dir, out)
    merged = json.loads((out / "compatibility.json").read_text())
    assert merged["format"] == "mqcontract-compatibility/2"
    statuses = {p["name"]: p["status"] for p in merged["providers"]}
    assert statuses == {
        "good": "passing",
        "mixed": "failing",
        "absent": "missing",
        "old": "stale",
        "other": "stale",
    }
    badges = {p.name: p.read_text() for p in (out / "badges").glob("*.svg")}
    assert set(badges) == {f"{name}.svg" for name in statuses}
    total = len(ALL)
    assert f"mqcontract: {total}/{total} passed" in badges["good.svg"]
    assert "#4c1" in badges["good.svg"]
    assert f"mqcontract: {total - 5}/{total - 3} passed" in badges["mixed.svg"]
    assert "#e05d44" in badges["mixed.svg"]
    assert "no result" in badges["absent.svg"]
    assert "stale" in badges["old.svg"]


def test_regenerating_from_the_same_results_is_byte_for_byte_identical(
    results_dir: Path, tmp_path: Path
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    build(results_dir, first)
    build(results_dir, second)
    build(results_dir, second)  # again in place
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(files) == 3 + 5
    for name in files:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_a_badge_of_a_provider_no_longer_reported_is_removed(
    results_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    build(results_dir, out)
    (results_dir / "old.json").unlink()
    build(results_dir, out)
    assert not (out / "badges" / "old.svg").exists()


def test_badge_widths_grow_with_the_text() -> None:
    short = render_badge("mqcontract", "1/1 passed", "#4c1")
    long = render_badge("mqcontract", "100/100 passed, stale", "#4c1")
    width = re.compile(r'<svg [^>]*width="(\d+)"')
    assert int(width.findall(long)[0]) > int(width.findall(short)[0])


def test_an_unreadable_result_fails_the_command(tmp_path: Path, capsys: Any) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else"}')
    assert main(["report", str(bad), "--out", str(tmp_path / "out"), "--no-allure"]) == 1
    assert "not an mqcontract results file" in capsys.readouterr().err


def test_report_from_a_real_verify_run(pytester: pytest.Pytester, tmp_path: Path) -> None:
    results = tmp_path / "results" / "memory.json"
    args = ["-p", "no:asyncio", "-p", "no:cacheprovider", "--pyargs"]
    args += ["mqcontract_conformance.contract", "--mq-provider", "memory"]
    pytester.runpytest(*args, "--mq-rules", "LIFE", "--mq-json", str(results)).assert_outcomes(
        passed=14, skipped=1
    )
    out = tmp_path / "out"
    status = main(
        ["report", str(results.parent), "--out", str(out), "--expect", "memory,pgmq", "--no-allure"]
    )
    assert status == 0
    md = (out / "compatibility.md").read_text()
    # Only LIFE ran: the run recorded the other rules as not selected.
    assert "| **memory** | ☑️ passing, unverified | 14 |" in md
    assert "| **pgmq** | ❔ missing |" in md
    assert (out / "badges" / "memory.svg").exists()


def test_the_allure_report_is_skipped_with_a_message_when_the_tool_is_absent(
    results_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    allure_results = tmp_path / "allure-results" / "memory"
    allure_results.mkdir(parents=True)
    (allure_results / "x-result.json").write_text("{}")
    _, lines = build_report(
        ReportOptions(
            results=[results_dir],
            out=out,
            allure_results=tmp_path / "allure-results",
            allure_bin="no-such-allure-binary",
        )
    )
    assert lines[-1].startswith("allure: skipped, the allure tool is not installed")


ALLURE_RESULT = {
    "uuid": "0b5e6c1e-0000-4000-8000-000000000001",
    "name": "memory LIFE-1: create_queue is idempotent",
    "status": "passed",
    "start": 1700000000000,
    "stop": 1700000000100,
    "labels": [{"name": "parentSuite", "value": "memory"}, {"name": "story", "value": "LIFE-1"}],
}


@pytest.mark.skipif(find_allure() is None, reason="the allure tool is not installed")
def test_the_allure_single_file_report_is_generated_when_the_tool_exists(
    results_dir: Path, tmp_path: Path
) -> None:
    allure_dir = tmp_path / "allure-results" / "memory"
    allure_dir.mkdir(parents=True)
    (allure_dir / f"{ALLURE_RESULT['uuid']}-result.json").write_text(json.dumps(ALLURE_RESULT))
    _, lines = build_report(
        ReportOptions(results=[results_dir], out=tmp_path / "out", allure_results=allure_dir.parent)
    )
    report = tmp_path / "out" / "allure" / "index.html"
    assert lines[-1] == f"wrote {report}"
    assert "googletagmanager" not in report.read_text(errors="replace")


def test_without_any_result_every_expected_provider_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, empty = tmp_path / "out", tmp_path / "no-results"
    empty.mkdir()  # a results directory no run wrote into (one that does not exist: an error)
    status = main(["report", str(empty), "--out", str(out), "--expect", "a,b"])
    assert status == 0  # the report is built all the same (a CI job publishes it always)
    assert capsys.readouterr().err == (
        "WARNING: --expect a, b: no result names it (results are named by the --provider"
        " given to verify; the results here name: none)\n"
    )
    merged = json.loads((out / "compatibility.json").read_text())
    assert [(p["name"], p["status"]) for p in merged["providers"]] == [
        ("a", "missing"),
        ("b", "missing"),
    ]
    assert merged["as_of"] == ""


def test_a_result_a_newer_one_replaced_is_named_with_its_failures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The newest result per provider is shown; an older failing one was dropped without
    a word, so a stray passing file in the directory turned a failing gate green."""
    d, out = tmp_path / "results", tmp_path / "out"
    d.mkdir()
    failing = everything()
    failing[0] = result(ALL[0], "failed", "AssertionError: lost")
    (d / "q.json").write_text(json.dumps(doc([provider("q", failing)], "2026-03-10T11:00:00Z")))
    newer = doc([provider("q", everything())], "2026-03-10T12:00:00Z")
    (d / "q-rt.json").write_text(json.dumps(newer))
    assert main(["report", str(d), "--out", str(out), "--expect", "q", "--no-allure"]) == 0
    err = capsys.readouterr().err
    assert err == (
        "WARNING: q: q.json is not shown: the newer q-rt.json is (the report shows the"
        " newest result per provider; it has 1 failed rule)\n"
    )


def stress_account(provider: str, fault: str, *, duplicated: bool = False) -> dict[str, Any]:
    """A real account (from the ledger), as ``mqcontract stress --json`` writes it."""
    ledger = Ledger()
    for msg_id, key in enumerate(("a", "b"), start=1):
        ledger.attempted.add(key)
        ledger.sent[key] = msg_id
        ledger.delivered("q", msg_id, key, 1)
        ledger.committed(key, 0)
        ledger.ack_outcome(0, "q", msg_id, True)
    if duplicated:  # a second consumer's ack of the same work was accepted too
        ledger.committed("a", 1)
        ledger.ack_outcome(1, "q", 1, True)
    return ledger.account(
        faulted=fault != "none",
        provider=provider,
        settings={"provider": provider, "fault": fault},
        faults={"kind": fault, "injected": 0 if fault == "none" else 3},
        backend={"endpoint": "amqp://u:hunter2@h:5672/%2F"},
        acked_per_second=12.5,
    ).to_dict()


@pytest.fixture
def stress_dir(tmp_path: Path) -> Path:
    d = tmp_path / "stress"
    d.mkdir()
    accounts = {
        "zeta-none.json": stress_account("zeta", "none"),
        "alpha-restart.json": stress_account("alpha", "restart"),
        "alpha-listener.json": stress_account("alpha", "listener", duplicated=True),
        "alpha-none.json": stress_account("alpha", "none"),
    }
    for name, account in accounts.items():
        (d / name).write_text(json.dumps(account))
    return d


def test_stress_accounts_are_shown_in_every_format(
    results_dir: Path, stress_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    build(results_dir, out, stress=[stress_dir])
    merged = json.loads((out / "compatibility.json").read_text())
    runs = [(r["provider"], r["fault"], r["clean"]) for r in merged["stress"]]
    # Providers by name, faults in the order `mqcontract stress` lists them.
    assert runs == [
        ("alpha", "none", True),
        ("alpha", "listener", False),
        ("alpha", "restart", True),
        ("zeta", "none", True),
    ]
    listener = merged["stress"][1]
    assert (listener["sent"], listener["duplicated"], listener["acked_twice"]) == (2, 1, 1)
    assert listener["faults_injected"] == 3
    markdown = (out / "compatibility.md").read_text()
    assert "## Under load" in markdown
    assert "| **alpha** | listener | 2 | 2 | 0 | 1 | 1 | 0 | 0 | 0 | 3 | ❌ not clean |" in markdown
    assert "| **zeta** | none | 2 | 2 | 0 | 0 | 0 | 0 | 0 | 0 | 0 | ✅ clean |" in markdown
    page = (out / "compatibility.html").read_text()
    assert "<h2>Under load</h2>" in page
    assert page.count('class="c failed">not clean<') == 1
    for text in (markdown, page, json.dumps(merged)):
        assert "hunter2" not in text


def test_the_stress_directory_beside_the_report_is_read_by_default(
    results_dir: Path, stress_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    stress_dir.rename(out / "stress")
    build(results_dir, out)
    assert len(json.loads((out / "compatibility.json").read_text())["stress"]) == 4
    bare = tmp_path / "bare"
    build(results_dir, bare)  # no accounts anywhere: no section, an empty list
    assert json.loads((bare / "compatibility.json").read_text())["stress"] == []
    assert "Under load" not in (bare / "compatibility.md").read_text()


def test_a_file_in_the_stress_directory_that_is_not_an_account_fails_the_command(
    results_dir: Path, stress_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    (stress_dir / "notes.json").write_text('{"sent": 3}')
    args = ["report", str(results_dir), "--out", str(tmp_path / "out"), "--no-allure"]
    assert main([*args, "--stress", str(stress_dir)]) == 1
    assert "notes.json: not an mqcontract stress account" in capsys.readouterr().err
    missing = tmp_path / "nowhere" / "run.json"
    assert main([*args, "--stress", str(missing)]) == 2  # a mistake, found before any work
    assert "ERROR: --stress" in capsys.readouterr().err


def test_the_rule_text_shown_is_the_text_of_the_suite_that_ran(tmp_path: Path) -> None:
    d = tmp_path / "results"
    d.mkdir()
    content = doc([provider("theirs", everything())], "2026-03-10T12:00:00Z")
    content["rules"] = [
        {"id": ALL[0], "title": "Their words for the first rule.", "why": "Because they ran it."}
    ]
    (d / "theirs.json").write_text(json.dumps(content))
    out = tmp_path / "out"
    build_report(ReportOptions(results=[d], out=out, allure=False))
    for name in ("compatibility.md", "compatibility.html", "compatibility.json"):
        page = (out / name).read_text()
        assert "Their words for the first rule." in page
        assert "Because they ran it." in page


def test_a_provider_whose_hook_rules_never_ran_is_not_plain_passing(tmp_path: Path) -> None:
    d = tmp_path / "results"
    d.mkdir()
    hooked = [r.id for r in all_rules() if r.hooks]
    partial = [
        result(rule_id, "needs-hook", f"{rule_id} needs a harness hook: no sever")
        if rule_id in hooked
        else result(rule_id, "passed")
        for rule_id in ALL
    ]
    content = doc(
        [provider("complete", everything()), provider("partial", partial)],
        "2026-03-10T12:00:00Z",
    )
    (d / "r.json").write_text(json.dumps(content))
    out = tmp_path / "out"
    matrix, _ = build_report(ReportOptions(results=[d], out=out, allure=False))
    by_name = {p.name: p for p in matrix.providers}
    assert by_name["complete"].status == "passing"
    assert by_name["partial"].status == "unverified"
    assert set(by_name["partial"].unverified_groups()) == {r.split("-")[0] for r in hooked}
    complete_badge = (out / "badges" / "complete.svg").read_text()
    partial_badge = (out / "badges" / "partial.svg").read_text()
    assert f"{len(ALL)}/{len(ALL)} passed</text>" in complete_badge
    assert f"passed, {len(hooked)} unverified</text>" in partial_badge
    md = (out / "compatibility.md").read_text()
    assert "passing, unverified" in md
    evt = ", ".join(r for r in hooked if r.startswith("EVT-"))
    assert f"not verified: {evt} (needs a harness hook)." in md
    summary = json.loads((out / "compatibility.json").read_text())["providers"]
    assert [p["status"] for p in summary] == ["passing", "unverified"]


def test_a_provider_whose_backend_was_unavailable_is_not_verified(tmp_path: Path) -> None:
    d = tmp_path / "results"
    d.mkdir()
    skipped = [result(r, "backend-unavailable", "x: backend unavailable: refused") for r in ALL]
    (d / "r.json").write_text(json.dumps(doc([provider("down", skipped)], "2026-03-10T12:00:00Z")))
    matrix, _ = build_report(ReportOptions(results=[d], out=tmp_path / "out", allure=False))
    (down,) = matrix.providers
    assert down.status == "not-verified"
    assert "not verified" in (tmp_path / "out" / "badges" / "down.svg").read_text()


def _one_file(tmp_path: Path, content: dict[str, Any]) -> Path:
    d = tmp_path / "results"
    d.mkdir()
    (d / "r.json").write_text(json.dumps(content))
    return d


#: A reason that names every kind of skip: a reader that looked at it would be misled.
LIE = "backend unavailable; X-1 not claimed: applies when push == none; needs a harness hook"


def test_a_cell_is_its_typed_outcome_whatever_its_reason_says(tmp_path: Path) -> None:
    outcomes = list(Outcome.of_run())
    results = [result(r, outcomes[i % len(outcomes)].value, LIE) for i, r in enumerate(ALL)]
    d = _one_file(tmp_path, doc([provider("p", results)], "2026-03-10T12:00:00Z"))
    (column,) = build_matrix(load_results([d])).providers
    for i, rule_id in enumerate(ALL):
        assert column.cell(rule_id).state is outcomes[i % len(outcomes)]
        assert column.cell(rule_id).reason == LIE


def test_a_version_1_result_is_read_by_its_outcome_alone(tmp_path: Path) -> None:
    """Before outcomes were typed, a skip was just a skip: its reason decides nothing."""
    results = [result(r, "passed") for r in ALL]
    results[0] = result(ALL[0], "skipped", f"{ALL[0]} not claimed: applies when push == none")
    results[1] = result(ALL[1], "skipped", f"{ALL[1]} needs a harness hook: no sever")
    results[1]["skip_kind"] = "needs-hook"
    results[2] = result(ALL[2], "xfailed", "known broken: ack is a no-op")
    results[3] = result(ALL[3], "failed", LIE)
    content = doc([provider("old", results)], "2026-03-10T12:00:00Z", fmt="mqcontract-results/1")
    (column,) = build_matrix(load_results([_one_file(tmp_path, content)])).providers
    states = [column.cell(rule_id).state for rule_id in ALL[:5]]
    assert states == [
        Outcome.SKIPPED,
        Outcome.SKIPPED,
        Outcome.KNOWN_BROKEN,
        Outcome.FAILED,
        Outcome.PASSED,
    ]
    assert column.cell(ALL[0]).reason == f"{ALL[0]} not claimed: applies when push == none"


def test_an_outcome_the_report_does_not_know_is_an_error(tmp_path: Path, capsys: Any) -> None:
    content = doc([provider("p", [result(ALL[0], "mostly-passed")])], "2026-03-10T12:00:00Z")
    d = _one_file(tmp_path, content)
    assert main(["report", str(d), "--out", str(tmp_path / "out"), "--no-allure"]) == 1
    assert "unknown outcome 'mostly-passed'" in capsys.readouterr().err


def test_neither_the_report_nor_the_plugin_reads_a_reason_to_classify() -> None:
    """No comparison, search or prefix test on a reason in the report or the plugin."""
    import ast

    import mqcontract_conformance.plugin as plugin
    import mqcontract_conformance.report as report

    modules = [
        *Path(report.__file__).parent.glob("*.py"),
        *Path(plugin.__file__).parent.glob("*.py"),
    ]
    probes = {"startswith", "endswith", "find", "index", "count", "search", "match"}
    found = []
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            named = [n.id for n in ast.walk(node) if isinstance(n, ast.Name)] + [
                n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)
            ]
            about_reasons = any("reason" in name or "message" in name for name in named)
            matching = (ast.In, ast.NotIn, ast.Eq, ast.NotEq)
            if (
                isinstance(node, ast.Compare)
                and about_reasons
                and any(isinstance(op, matching) for op in node.ops)
            ):
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in probes
                and about_reasons
            ):
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    assert not found, found


def test_the_published_report_is_what_the_code_makes_of_the_published_results(
    tmp_path: Path,
) -> None:
    """``reports/`` is an artefact of the code and the published results, never edited."""
    published = Path(__file__).resolve().parent.parent / "reports"
    expect = [
        "memory",
        "pgmq",
        "rabbitmq",
        "rabbitmq-quorum",
        "redis-streams",
        "nats-jetstream",
        "sql-postgres",
        "sql-mariadb",
        "beanstalkd",
        "mqtt",
    ]
    build_report(
        ReportOptions(
            results=[published / "results"],
            out=tmp_path,
            expect=expect,
            stress=[published / "stress"],
            allure=False,
        )
    )
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert made, "nothing was generated"
    stale = [str(p) for p in made if (tmp_path / p).read_bytes() != (published / p).read_bytes()]
    assert not stale, (
        f"reports/ is stale for {stale}: run `.venv/bin/mqcontract report reports/results "
        f"--out reports --no-allure --expect {','.join(expect)}`"
    )


@pytest.mark.parametrize(
    ("flag", "extra"),
    [
        ("RESULTS", ()),
        ("--stress", ("--stress",)),
        ("--bench", ("--bench",)),
        ("--allure-results", ("--allure-results",)),
    ],
)
def test_a_named_path_that_does_not_exist_fails_before_any_work(
    flag: str, extra: tuple[str, ...], results_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    """A typo is a mistake, never an empty report or an empty column."""
    missing = tmp_path / "no_such_path"
    out = tmp_path / "out"
    paths = [str(missing)] if flag == "RESULTS" else [str(results_dir), *extra, str(missing)]
    assert main(["report", *paths, "--out", str(out), "--no-allure"]) == 2
    err = capsys.readouterr().err
    assert err == f"ERROR: {flag} {missing}: no such file or directory\n"
    assert not out.exists()


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_an_out_that_cannot_be_written_fails_before_any_work(
    where: str, results_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = blocker if where == "a file" else blocker / "reports"
    assert main(["report", str(results_dir), "--out", str(out), "--no-allure"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ERROR: --out {out}: cannot write there ("), err
    assert len(err.splitlines()) == 1


def test_an_out_that_does_not_exist_yet_is_made(results_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "new" / "reports"
    assert main(["report", str(results_dir), "--out", str(out), "--no-allure"]) == 0
    assert (out / "compatibility.md").is_file()

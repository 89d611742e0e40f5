"""The report's "At a glance" section: measured facts per provider, each linked to its source."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from mqcontract_conformance.bench._measure import Run
from mqcontract_conformance.bench._results import throughput_entry
from mqcontract_conformance.cli import main
from mqcontract_conformance.measurement import Measurement, Verdict
from mqcontract_conformance.report import ReportOptions, build_report
from mqcontract_conformance.report.glance import COLUMNS
from mqcontract_conformance.rules import SUITE_VERSION, all_rules
from mqcontract_conformance.stress.account import Ledger

RULES_MD = Path(__file__).resolve().parent.parent / "conformance" / "RULES.md"
WHEN = "2026-03-10T12:00:00Z"


def result(
    rule: str, outcome: str = "passed", reason: str = "", **metrics: float
) -> dict[str, Any]:
    entry: dict[str, Any] = {"rule": rule, "outcome": outcome, "reason": reason}
    return {**entry, "metrics": metrics} if metrics else entry


def results(**overrides: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rule passed, but for ``overrides`` (rule id with ``_`` for ``-``)."""
    rows = {r.id: result(r.id) for r in all_rules()}
    for key, row in overrides.items():
        rows[key.replace("_", "-")] = row
    return list(rows.values())


def measured(capability: str, declared: Any, value: Any, verdict: Verdict) -> dict[str, Any]:
    return Measurement(capability, declared, value, verdict, note=f"probed {capability}").to_dict()


def provider(
    name: str,
    rows: list[dict[str, Any]],
    measurements: list[dict[str, Any]] | None = None,
    **caps: Any,
) -> dict[str, Any]:
    return {
        "name": name,
        "version": "1.0",
        "describe": {"backend": name},
        "capabilities": {"push": "full", **caps},
        **({"measured": measurements} if measurements is not None else {}),
        "results": rows,
    }


def write_results(directory: Path, *providers: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for p in providers:
        doc = {
            "format": "mqcontract-results/2",
            "suite_version": SUITE_VERSION,
            "generated_at": WHEN,
            "providers": [p],
        }
        (directory / f"{p['name']}.json").write_text(json.dumps(doc))
    return directory


def account(provider: str, fault: str, *, lost: bool = False) -> dict[str, Any]:
    """A real account (from the ledger), as ``mqcontract stress --json`` writes it."""
    ledger = Ledger()
    for msg_id, key in enumerate(("a", "b"), start=1):
        ledger.attempted.add(key)
        ledger.sent[key] = msg_id
        if lost and key == "b":
            continue
        ledger.delivered("q", msg_id, key, 1)
        ledger.committed(key, 0)
        ledger.ack_outcome(0, "q", msg_id, True)
    return ledger.account(
        faulted=fault != "none",
        provider=provider,
        settings={"provider": provider, "fault": fault},
        faults={"kind": fault, "injected": 0 if fault == "none" else 2},
        backend={},
        acked_per_second=10.0,
    ).to_dict()


def write_accounts(directory: Path, accounts: dict[str, dict[str, Any]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, doc in accounts.items():
        (directory / name).write_text(json.dumps(doc))
    return directory


def bench_doc(ratios: dict[str, dict[str, float] | None]) -> dict[str, Any]:
    """A bench result as ``mqcontract bench --json`` writes it: provider -> workload -> ratio."""
    providers: dict[str, Any] = {}
    for name, by_workload in ratios.items():
        sides = {"provider": f"mqcontract {name} provider"}
        throughput = []
        for workload, ratio in (by_workload or {"send": 1.0}).items():
            runs: dict[str, list[Run | None]] = {"provider": [Run(1000, 1.0)]}
            if by_workload is not None:
                sides["raw"] = "rawlib 2.0: the driver alone"
                runs["raw"] = [Run(1000, ratio)]  # raw takes ratio x the provider's time
            throughput.append(throughput_entry(workload, workload, None, runs, {}))
        providers[name] = {"provider": name, "sides": sides, "throughput": throughput}
    return {
        "tool": "mqcontract bench",
        "started_at": "2026-03-09T08:00:00+00:00",
        "command": "mqcontract bench --provider alpha",
        "providers": providers,
    }


ALPHA = provider(
    "alpha",
    results(
        HOLD_1=result("HOLD-1", returned_after_s=15.011, bound_s=15.0),
        CAP_2=result("CAP-2", visibility_lateness_s=0.004),
        DLY_3=result("DLY-3", "failed", "the short delay waited 2.0 s behind the long one"),
        VT_3=result("VT-3", "known-broken", "the broker rounds timeouts to whole seconds"),
        DLY_6=result("DLY-6", "not-claimed"),
    ),
    [
        measured("push", "none", "full", Verdict.UNDER_DECLARED),
        measured("pushed_messages_claimed", True, True, Verdict.AGREES),
        measured("requeue_position", "back", "back", Verdict.AGREES),
        measured("exact_receive_count", False, False, Verdict.AGREES),
    ],
    visibility_enforced_by="holder",
    frozen_holder_release_seconds=15.0,
    delay=True,
    max_delay_seconds=3600.0,
    payload_fidelity="json-value",
    max_message_size_bytes=262144,
)
#: Older results: no measurements, no metrics; and no accounts nor bench run either.
BARE = provider(
    "bare",
    results(**{f"DLY_{n}": result(f"DLY-{n}", "not-claimed") for n in (1, 2, 3, 4, 5, 7)}),
    delay=False,
    payload_fidelity="bytes",
)


@pytest.fixture
def report(tmp_path: Path) -> Path:
    """``tmp/reports``: alpha measured everywhere, bare with results alone, gamma stress only."""
    reports = tmp_path / "reports"
    results_dir = write_results(reports / "results", ALPHA, BARE)
    write_accounts(
        reports / "stress",
        {
            "alpha-none.json": account("alpha", "none"),
            "alpha-slow.json": account("alpha", "none"),
            "alpha-connection.json": account("alpha", "connection", lost=True),
            "gamma-none.json": account("gamma", "none"),
        },
    )
    (reports / "bench").mkdir()
    bench = bench_doc({"alpha": {"send": 0.8, "receive": 1.25}, "bare": None})
    (reports / "bench" / "results.json").write_text(json.dumps(bench))
    # An experiment beside the headline run is not read by default.
    (reports / "bench" / "alpha-patched.json").write_text("{not json")
    build_report(
        ReportOptions(results=[results_dir], out=reports, expect=["alpha", "bare"], allure=False)
    )
    return reports


def glance_md(reports: Path) -> str:
    text = (reports / "compatibility.md").read_text()
    return text.split("## At a glance", 1)[1].split("\n## ", 1)[0]


def row(section: str, name: str) -> list[str]:
    (line,) = [x for x in section.splitlines() if x.startswith(f"| **{name}** |")]
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[2:-1]]


def glance_json(reports: Path) -> dict[str, Any]:
    merged = json.loads((reports / "compatibility.json").read_text())
    return {p["name"]: p for p in merged["glance"]["providers"]}


def test_the_glance_is_the_first_section_in_markdown_and_html(report: Path) -> None:
    markdown = (report / "compatibility.md").read_text()
    assert re.findall(r"^## .*", markdown, re.M)[0] == "## At a glance"
    page = (report / "compatibility.html").read_text()
    assert page.index("<h2") == page.index('<h2 id="at-a-glance">')
    assert page.index('id="at-a-glance"') < page.index('class="cards"')


def test_cells_carry_what_was_measured(report: Path) -> None:
    alpha = row(glance_md(report), "alpha")
    text = {p: c["text"] for p, c in glance_json(report)["alpha"].items() if p != "name"}
    assert text["push"] == "full (declared none) · pushed messages claimed"
    assert text["visibility"] == (
        "holder-enforced: frozen holder keeps claims 15 s (bound 15 s) · expires ≤ 4 ms late"
    )
    assert text["requeue"] == "nacked: requeued at the back · receive counts not exact"
    assert text["delay"] == (
        "up to 1 h · 5/6 DLY rules passed, DLY-3 failed · lateness not measured"
    )
    assert text["payload"] == (
        "JSON as an equal value, other bytes exact, ≤ 256 KiB · 6/6 payload rules passed"
    )
    # Two accounts without faults add up; the lost message makes its fault not clean.
    assert text["faults"] == "none 0/0 · connection 1/0 not clean"
    assert text["throughput"] == "0.80x to 1.25x of rawlib 2.0 (2 workloads)"
    assert text["known_broken"] == "1: VT-3 (reasons)"
    assert alpha[0].startswith("[")  # every cell of a measured row is a link or holds one
    values = glance_json(report)["alpha"]
    assert values["visibility"]["values"]["frozen_returned_after_s"] == 15.011
    assert values["faults"]["values"]["none"]["accounts"] == ["alpha-none.json", "alpha-slow.json"]
    assert values["faults"]["from"] == [
        {"section": "under-load", "files": ["alpha-none.json", "alpha-slow.json"]},
        {"section": "under-load", "files": ["alpha-connection.json"]},
    ]
    assert values["throughput"]["from"] == [
        {"section": "where-the-throughput-comes-from", "files": ["results.json"]}
    ]


def test_missing_data_reads_not_measured_never_empty(report: Path) -> None:
    section = glance_md(report)
    bare = dict(zip(COLUMNS, row(section, "bare"), strict=True))
    cells = glance_json(report)["bare"]
    assert cells["push"]["text"] == "not measured (declared full)"
    assert cells["requeue"]["text"] == "not measured"
    assert cells["visibility"]["text"] == (  # no enforcer declared, no times reported
        "enforcer not declared: HOLD-1 passed (frozen holder's return time not measured)"
        " · expiry lateness not measured"
    )
    assert cells["faults"]["text"] == "not measured (no stress account)"
    assert cells["throughput"]["text"] == "not measured (the bench ran no raw client)"
    assert cells["delay"]["text"] == "not supported · 1/1 DLY rules passed"
    assert not cells["push"]["measured"]
    assert cells["delay"]["measured"]
    assert bare["faults"] == "not measured (no stress account)"
    for line in section.splitlines():
        if line.startswith("| **"):
            assert "| |" not in line
            assert all(cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1])


def test_a_provider_with_only_accounts_appears_with_the_rest_not_measured(report: Path) -> None:
    gamma = glance_json(report)["gamma"]
    assert gamma["faults"]["text"] == "none 0/0"
    assert gamma["rules"]["text"] == "not measured (no results)"
    assert gamma["throughput"]["text"] == "not measured (no bench run)"
    assert list(glance_json(report)) == ["alpha", "bare", "gamma"]


def test_every_link_reaches_its_rule_or_account(report: Path) -> None:
    page = (report / "compatibility.html").read_text()
    glance = page.split('<h2 id="at-a-glance">', 1)[1].split('<section class="cards"', 1)[0]
    targets = set(re.findall(r'href="#([^"]+)"', glance))
    assert {"hold-1", "cap-1", "cap-2", "dly-1", "dly-3", "vt-3", "send-2"} <= targets
    assert {"under-load", "failures-and-known-broken-rules", "providers"} <= targets
    for anchor in targets:
        assert f'id="{anchor}"' in page, anchor
    # The reason of a known-broken rule is on the link and in the section it points to.
    assert 'title="the broker rounds timeouts to whole seconds">VT-3</a>' in glance
    markdown = (report / "compatibility.md").read_text()
    assert "[VT-3](#vt-3)" in glance_md(report)
    headings = {h.lower() for h in re.findall(r"^#+ (.*)$", markdown, re.M)}
    for anchor in set(re.findall(r"\]\(#([^)]+)\)", glance_md(report))):
        # GitHub's heading slugs: lower case, spaces to hyphens, other punctuation dropped.
        assert any(re.sub(r"[^a-z0-9 -]", "", h).replace(" ", "-") == anchor for h in headings)


def test_rule_links_follow_rules_url_to_the_anchors_of_rules_md(tmp_path: Path) -> None:
    results_dir = write_results(tmp_path / "results", ALPHA)
    out = tmp_path / "out"
    build_report(
        ReportOptions(results=[results_dir], out=out, rules_url="RULES.md", stress=[], allure=False)
    )
    section = glance_md(out)
    anchors = set(re.findall(r"\]\(RULES\.md#([^)]+)\)", section))
    assert "hold-1-provisional" in anchors  # HOLD-1 is provisional: its heading says so
    rules_md = RULES_MD.read_text()
    slugs = {
        re.sub(r"[^a-z0-9 _-]", "", h.lower()).replace(" ", "-")
        for h in re.findall(r"^### (.*)$", rules_md, re.M)
    }
    assert anchors <= slugs, anchors - slugs


def test_a_new_provider_appears_without_code_changes(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    newcomer = provider(
        "nats-jetstream",
        results(HOLD_1=result("HOLD-1", returned_after_s=0.7, bound_s=0.6)),
        [measured("push", "full", "full", Verdict.AGREES)],
        visibility_enforced_by="server",
    )
    results_dir = write_results(reports / "results", newcomer)
    write_accounts(reports / "stress", {"nats.json": account("nats-jetstream", "restart")})
    build_report(ReportOptions(results=[results_dir], out=reports, allure=False))
    cells = glance_json(reports)["nats-jetstream"]
    assert cells["visibility"]["text"].startswith(
        "server-enforced: frozen holder's claims back in 700 ms (timeout 600 ms)"
    )
    assert cells["faults"]["text"] == "restart 0/0"
    assert "| **nats-jetstream** |" in glance_md(reports)
    assert ">nats-jetstream</th>" in (reports / "compatibility.html").read_text()


def test_without_a_bench_run_the_section_says_throughput_is_not_measured(tmp_path: Path) -> None:
    results_dir = write_results(tmp_path / "results", ALPHA)
    out = tmp_path / "out"
    build_report(ReportOptions(results=[results_dir], out=out, stress=[], allure=False))
    section = glance_md(out)
    assert "No `mqcontract bench --json` result was given" in section
    assert glance_json(out)["alpha"]["throughput"]["text"] == "not measured (no bench run)"
    assert json.loads((out / "compatibility.json").read_text())["glance"]["bench"] == []


def test_bench_results_are_read_from_the_command_line(tmp_path: Path, capsys: Any) -> None:
    results_dir = write_results(tmp_path / "results", ALPHA)
    bench = tmp_path / "elsewhere.json"
    bench.write_text(json.dumps(bench_doc({"alpha": {"send": 0.5}})))
    out = tmp_path / "out"
    args = ["report", str(results_dir), "--out", str(out), "--no-allure"]
    assert main([*args, "--bench", str(bench)]) == 0
    assert glance_json(out)["alpha"]["throughput"]["text"] == "0.50x of rawlib 2.0 (1 workload)"
    assert "`elsewhere.json`, written by `mqcontract bench --json`" in glance_md(out)
    bench.write_text(json.dumps({"format": "mqcontract-stress/1"}))
    assert main([*args, "--bench", str(bench)]) == 1
    assert "elsewhere.json: not an mqcontract bench result" in capsys.readouterr().err
    assert main([*args, "--bench", str(tmp_path / "missing.json")]) == 2  # a usage mistake
    assert "ERROR: --bench" in capsys.readouterr().err


def test_stress_accounts_of_another_consumer_mode_are_told_apart() -> None:
    from mqcontract_conformance.report.stress import StressRun

    def run(mode: str) -> StressRun:
        counts = {"lost": 0, "duplicated": 0, "reprocessed": 0}
        return StressRun("a.json", "p", "leader-kill", counts, 1, 1.0, True, {}, mode=mode)

    assert run("Hybrid").label == "leader-kill"
    assert run("EventDrivenOnly").label == "leader-kill (EventDrivenOnly)"


def test_stress_accounts_with_clients_on_every_node_are_told_apart() -> None:
    from mqcontract_conformance.report.stress import StressRun

    def run(mode: str, clients: str) -> StressRun:
        counts = {"lost": 0, "duplicated": 0, "reprocessed": 0}
        return StressRun(
            "a.json", "p", "partition", counts, 1, 1.0, True, {}, mode=mode, clients=clients
        )

    assert run("Hybrid", "node0").label == "partition"
    assert run("Hybrid", "all").label == "partition (clients on every node)"
    assert run("EventDrivenOnly", "all").label == (
        "partition (EventDrivenOnly, clients on every node)"
    )

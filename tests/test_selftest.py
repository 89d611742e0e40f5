"""``mqcontract selftest``: the kill matrix classifies honestly, the command's exit says so,
and the report shows the count.

A toy catalogue (toy rules, toy broken providers) pins the classification: a specimen
caught only by another rule is a miss, an exception is an error and never a catch, a rule
that also fails the correct provider proves nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mqcontract.providers.memory import InMemoryMessagingService
from mqcontract_conformance.cli import main
from mqcontract_conformance.context import CaseContext, ContractViolation
from mqcontract_conformance.registry import Rule
from mqcontract_conformance.report import ReportOptions, build_report, load_results
from mqcontract_conformance.rules import get_rule
from mqcontract_conformance.selftest import catalogue
from mqcontract_conformance.selftest.catalogue import Specimen
from mqcontract_conformance.selftest.matrix import (
    SELFTEST_FORMAT,
    SelftestResult,
    Verdict,
    run_matrix,
)

REPO = Path(__file__).resolve().parent.parent


class CaughtByIntended(InMemoryMessagingService):
    """Caught by ACK-91, as intended."""


class CaughtByOther(InMemoryMessagingService):
    """Only ACK-92 fails it."""


class Crashes(InMemoryMessagingService):
    """Its intended rule raises a plain exception on it."""


class NamesAnotherRule(InMemoryMessagingService):
    """Its intended rule raises a violation naming a different rule."""


class OnlyAtScaleOne(InMemoryMessagingService):
    """Its intended rule fails it at scale 1 only."""


class Unnoticed(InMemoryMessagingService):
    """Nothing fails it."""


class StrictReference(InMemoryMessagingService):
    """A reference its rule fails too."""


class CaughtButReferenceFails(StrictReference):
    """Caught by ACK-93, which fails its reference as well."""


async def _intended(ctx: CaseContext) -> None:
    service = ctx.service
    if isinstance(service, CaughtByIntended):
        raise ContractViolation("[ACK-91] caught")
    if isinstance(service, Crashes):
        raise RuntimeError("the check itself broke")
    if isinstance(service, NamesAnotherRule):
        raise ContractViolation("[ACK-92] a violation of another rule")
    if isinstance(service, OnlyAtScaleOne) and ctx.timing.scale < 2:
        raise ContractViolation("[ACK-91] caught at scale 1")


async def _other(ctx: CaseContext) -> None:
    if isinstance(ctx.service, CaughtByOther | Crashes):
        raise ContractViolation("[ACK-92] caught by another rule")


async def _strict(ctx: CaseContext) -> None:
    if isinstance(ctx.service, StrictReference):
        raise ContractViolation("[ACK-93] fails the reference too")


TOY_RULES = [
    Rule("ACK-91", "intended", "toy", _intended),
    Rule("ACK-92", "other", "toy", _other),
    Rule("ACK-93", "strict", "toy", _strict),
]
TOY_SPECIMENS = [
    Specimen(CaughtByIntended, "ACK-91"),
    Specimen(CaughtByOther, "ACK-91"),
    Specimen(Crashes, "ACK-91"),
    Specimen(NamesAnotherRule, "ACK-91"),
    Specimen(OnlyAtScaleOne, "ACK-91"),
    Specimen(Unnoticed, "ACK-91"),
    Specimen(CaughtButReferenceFails, "ACK-93", reference=StrictReference),
]


@pytest.fixture(scope="module")
def toy() -> SelftestResult:
    return run_matrix(TOY_SPECIMENS, TOY_RULES, (1.0, 3.0))


def test_caught_by_the_intended_rule_at_every_scale_is_a_tooth(toy: SelftestResult) -> None:
    (row,) = [r for r in toy.specimens if r.name == "CaughtByIntended"]
    assert row.verdict is Verdict.CAUGHT
    assert row.proven
    assert row.caught_by == {"1": ["ACK-91"], "3": ["ACK-91"]}
    assert row.group == "ACK"
    assert row.defect == "Caught by ACK-91, as intended."


def test_caught_only_by_another_rule_is_a_miss(toy: SelftestResult) -> None:
    (row,) = [r for r in toy.specimens if r.name == "CaughtByOther"]
    assert row.verdict is Verdict.OTHER_RULES
    assert not row.intended_caught
    assert row.other_rules == ["ACK-92"]


def test_an_exception_is_an_error_not_a_catch(toy: SelftestResult) -> None:
    (crashes,) = [r for r in toy.specimens if r.name == "Crashes"]
    assert not crashes.intended_caught
    assert crashes.verdict is Verdict.OTHER_RULES  # ACK-92 did catch it; ACK-91 crashed
    assert "RuntimeError" in crashes.errors["1"]["ACK-91"]
    assert crashes.errored_rules == ["ACK-91"]
    (mislabelled,) = [r for r in toy.specimens if r.name == "NamesAnotherRule"]
    assert mislabelled.verdict is Verdict.NOT_CAUGHT
    assert "not naming ACK-91" in mislabelled.errors["3"]["ACK-91"]


def test_caught_at_some_scales_only_is_a_miss(toy: SelftestResult) -> None:
    (row,) = [r for r in toy.specimens if r.name == "OnlyAtScaleOne"]
    assert row.verdict is Verdict.SOME_SCALES
    assert not row.proven
    assert row.caught_by == {"1": ["ACK-91"], "3": []}


def test_a_rule_that_fails_the_reference_too_proves_nothing(toy: SelftestResult) -> None:
    (row,) = [r for r in toy.specimens if r.name == "CaughtButReferenceFails"]
    assert row.intended_caught
    assert not row.reference_passes
    assert "StrictReference" in row.reference_problem
    assert not row.proven


def test_a_rule_that_skips_the_reference_proves_nothing() -> None:
    from mqcontract_conformance.rules import get_rule
    from mqcontract_conformance.selftest.broken_core import ListsWithoutClaiming
    from mqcontract_conformance.selftest.references import Unlisted

    # LIFE-5 applies only when list_queues is claimed: Unlisted skips it.
    specimen = Specimen(ListsWithoutClaiming, "LIFE-5", reference=Unlisted)
    result = run_matrix([specimen], [get_rule("LIFE-5")], (1.0,))
    (row,) = result.specimens
    assert "not-claimed" in row.reference_problem
    assert not result.ok


def test_the_count_and_the_json_round_trip(toy: SelftestResult) -> None:
    assert (toy.caught, toy.total, toy.ok) == (1, 7, False)
    assert toy.teeth_line() == (
        "suite teeth: 1 of 7 broken providers caught by their intended rule (scales 1, 3)"
    )
    doc = json.loads(json.dumps(toy.to_dict()))
    assert doc["format"] == SELFTEST_FORMAT
    assert doc["suite_version"]
    assert doc["scales"] == [1.0, 3.0]
    back = SelftestResult.from_dict(doc)
    assert back.to_dict() == toy.to_dict()


def _use_toys(monkeypatch: pytest.MonkeyPatch, specimens: list[Specimen]) -> None:
    monkeypatch.setattr(catalogue, "all_specimens", lambda: specimens)
    monkeypatch.setattr("mqcontract_conformance.rules.all_rules", lambda: TOY_RULES)


def test_the_command_exits_1_on_a_miss(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _use_toys(monkeypatch, TOY_SPECIMENS)
    assert main(["selftest"]) == 1
    out = capsys.readouterr().out
    assert "suite teeth: 1 of 7 broken providers caught by their intended rule" in out
    assert all(len(line) <= 100 for line in out.splitlines())


def test_the_command_exits_0_when_every_specimen_is_caught(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _use_toys(monkeypatch, TOY_SPECIMENS)
    path = tmp_path / "selftest.json"
    assert main(["selftest", "--specimen", "CaughtByIntended", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "[1/1] CaughtByIntended" in out
    assert "ACK: Ack and nack" in out
    assert "suite teeth: 1 of 1 broken providers caught by their intended rule" in out
    assert SelftestResult.from_dict(json.loads(path.read_text())).ok


def test_the_command_rejects_an_unknown_specimen(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["selftest", "--specimen", "NoSuchThing"]) == 2
    assert "NoSuchThing" in capsys.readouterr().err


def test_the_real_catalogue_runs_through_the_command(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "selftest.json"
    argv = ["selftest", "--specimen", "NoopAck", "--scale", "1", "--json", str(path)]
    assert main(argv) == 0
    assert "NoopAck" in capsys.readouterr().out
    (row,) = json.loads(path.read_text())["specimens"]
    assert (row["rule"], row["intended_caught"], row["reference_passes"]) == ("ACK-1", True, True)


def _report(tmp_path: Path, results: Path) -> str:
    out = tmp_path / "out"
    build_report(ReportOptions(results=[results], out=out, stress=[], allure=False))
    return (out / "compatibility.md").read_text()


def test_the_report_shows_the_teeth_beside_the_results(tmp_path: Path, toy: SelftestResult) -> None:
    results = tmp_path / "results"
    results.mkdir()
    memory = REPO / "reports" / "results" / "memory.json"
    (results / "memory.json").write_text(memory.read_text())
    (results / "selftest.json").write_text(json.dumps(toy.to_dict()))
    assert [name for name, _ in load_results([results])] == ["memory.json"]
    markdown = _report(tmp_path, results)
    assert "Suite teeth: 1 of 7 broken providers caught by their intended rule" in markdown
    assert "| **CaughtByOther** |" in markdown
    html = (tmp_path / "out" / "compatibility.html").read_text()
    assert 'id="suite-teeth"' in html
    assert "1 of 7 broken providers" in html
    doc = json.loads((tmp_path / "out" / "compatibility.json").read_text())
    assert (doc["teeth"]["caught"], doc["teeth"]["total"]) == (1, 7)


def test_the_report_says_when_the_selftest_was_not_run(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    markdown = _report(tmp_path, results)
    assert "The selftest was not run" in markdown
    doc = json.loads((tmp_path / "out" / "compatibility.json").read_text())
    assert doc["teeth"] == {"run": False}


def test_worker_processes_give_the_rows_of_one_process_in_the_same_order() -> None:
    chosen = {"NoopAck", "ReversedReceive", "HolderTimersWithoutHeartbeat"}
    specimens = [s for s in catalogue.all_specimens() if s.name in chosen]
    rules = [get_rule(r) for r in ("ACK-1", "ORD-2", "HOLD-1")]
    alone = run_matrix(specimens, rules, (1.0,), jobs=1)
    side_by_side = run_matrix(specimens, rules, (1.0,), jobs=2)
    assert [s.name for s in side_by_side.specimens] == [s.name for s in specimens]
    assert [s.caught_by for s in side_by_side.specimens] == [s.caught_by for s in alone.specimens]
    assert side_by_side.ok
    assert side_by_side.caught == 3

"""``mqcontract verify`` as a CI gate: its exit status and first page tell the truth.

Each test runs the command as a user types it, in a subprocess, and reads what it prints.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mqcontract_conformance import cli
from mqcontract_conformance.outcomes import Outcome
from mqcontract_conformance.results import ProviderResult, RuleResult
from mqcontract_conformance.rules import SUITE_VERSION, all_rules

CLOSED_POSTGRES = "postgresql://127.0.0.1:9/test"  # the discard port: nothing listens


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MQCONTRACT_")}
    return subprocess.run(
        [sys.executable, "-m", "mqcontract_conformance.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env={**environ, **(env or {})},
        timeout=timeout,
    )


def test_a_named_provider_whose_backend_is_unreachable_fails_the_gate(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    args = ("verify", "--provider", "memory", "--provider", "pgmq", "--rules", "LIFE,SEND")
    env = {"DATABASE_URL": CLOSED_POSTGRES}
    strict = run_cli(*args, "--json", str(out), cwd=tmp_path, env=env)
    assert strict.returncode != 0, strict.stdout[-2000:]
    assert "FAILED: provider 'pgmq' not verified: its backend is unavailable" in strict.stdout
    assert "--allow-unavailable makes this a skip" in strict.stdout
    pgmq = {p["name"]: p for p in json.loads(out.read_text())["providers"]}["pgmq"]
    assert pgmq["status"] == "not verified"
    assert {k for k, n in pgmq["summary"].items() if n} == {"backend-unavailable"}
    assert {r["outcome"] for r in pgmq["results"]} == {"backend-unavailable"}
    allowed = run_cli(*args, "--allow-unavailable", cwd=tmp_path, env=env)
    assert allowed.returncode == 0, allowed.stdout[-2000:]
    assert "SKIPPED: provider 'pgmq' not verified" in allowed.stdout


#: A memory harness without the push-connection fault: the EVT rules that need it cannot run.
_NO_KILL_LISTENER = """
from mqcontract.testing import HookUnavailable
from mqcontract_fixtures.memory import MemoryHarness


class NoKillListener(MemoryHarness):
    async def kill_listener(self, service):
        raise HookUnavailable("no-kill-listener: no kill_listener hook")


def make_harness(settings):
    return NoKillListener("no-kill-listener", settings)
"""


def test_skips_are_counted_by_kind_and_unverified_groups_are_named(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    (tmp_path / "no_kill_listener.py").write_text(_NO_KILL_LISTENER)
    provider = "no_kill_listener:make_harness"
    env = {"PYTHONPATH": str(tmp_path)}
    run = run_cli("verify", "--provider", provider, "--json", str(out), cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stdout[-2000:]
    document = json.loads(out.read_text())
    assert document["format"] == "mqcontract-results/3"
    (memory,) = document["providers"]
    summary = memory["summary"]
    assert list(summary) == [o.value for o in Outcome.of_run()]
    assert sum(summary.values()) == len(memory["results"])
    for outcome in Outcome.of_run():
        counted = [r for r in memory["results"] if r["outcome"] == outcome.value]
        assert len(counted) == summary[outcome.value]
    hooked = {r["rule"] for r in memory["results"] if r["outcome"] == "needs-hook"}
    assert hooked, "a harness without kill_listener: some rules must be unverified"
    assert memory["status"] == "passing, unverified"
    groups = {entry["group"] for entry in memory["unverified"]}
    assert groups == {rule_id.split("-")[0] for rule_id in hooked}
    assert f"{provider}: passing, unverified: {summary['passed']} passed" in run.stdout
    assert f"needs a harness hook: {summary['needs-hook']}" in run.stdout
    assert "not verified: EVT (Event system and fallback recovery)" in run.stdout
    assert "(not claimed)" not in run.stdout


def test_a_narrowed_run_is_never_plain_passing(tmp_path: Path) -> None:
    """A gate narrowed by ``--rules`` (or ``-k``) by mistake must not read as certified:
    every rule it left out is recorded as not selected, and so unverified."""
    out = tmp_path / "r.json"
    run = run_cli(
        "verify", "--provider", "memory", "--rules", "CAP-2", "--json", str(out), cwd=tmp_path
    )
    assert run.returncode == 0, run.stdout[-2000:]
    (memory,) = json.loads(out.read_text())["providers"]
    assert memory["status"] == "passing, unverified"
    assert memory["summary"]["passed"] == 1
    assert memory["summary"]["not-selected"] == len(all_rules()) - 1
    assert len(memory["results"]) == len(all_rules())
    left_out = len(all_rules()) - 1
    assert f"not verified: {left_out} rules not selected in this run" in run.stdout
    assert "memory: passing:" not in run.stdout


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        pytest.param(
            ("--rules", "LIFE-99"), {}, "--rules: no rule or group named LIFE-99", id="rule"
        ),
        pytest.param(
            ("--provider", "no_such_module:factory"), {}, "--provider no_such_module", id="provider"
        ),
        pytest.param(
            ("--json", "/proc/no/such/dir/r.json"),
            {},
            "--json /proc/no/such/dir/r.json: cannot write the results there",
            id="json",
        ),
        pytest.param((), {"MQCONTRACT_CONFIG": "typo.toml"}, "unknown key", id="toml"),
        *(
            pytest.param(
                ("--rules", "LIFE-1", "--timing-scale", scale),
                {},
                "must be a finite number greater than 0",
                id=f"timing-scale-{scale}",
            )
            for scale in ("0", "inf")  # the rest: test_timing_scale
        ),
        *(
            pytest.param(
                ("--rules", "LIFE-1"),
                {"MQCONTRACT_TIMING_SCALE": scale},
                f"MQCONTRACT_TIMING_SCALE={scale}: ",
                id=f"timing-scale-env-{scale}",
            )
            for scale in ("abc",)
        ),
        # `-- --co`: were the empty selection taken for "every rule", nothing would run.
        *(
            pytest.param(
                ("--rules", rules, "--", "--co"),
                {},
                "--rules names no rule",
                id=f"rules-{rules or 'empty'}",
            )
            for rules in ("", ",,")
        ),
        pytest.param(
            ("--rules", "LIFE-1", "--json", ""), {}, "--json names no file", id="json-empty"
        ),
        pytest.param(
            ("--provider", "factories:takes_nothing"),
            {"PYTHONPATH": "."},
            "must be an async provider factory (taking the config) or a harness factory",
            id="factory-signature",
        ),
        pytest.param(  # a plain `def` provider factory reads the settings as its config
            ("--provider", "factories:not_async"),
            {"PYTHONPATH": "."},
            "was called as a harness factory (with the HarnessSettings) and raised"
            " AttributeError at factories.py:5: 'HarnessSettings' object has no attribute"
            " 'memory'. If it is a provider factory, it must be async",
            id="factory-not-async",
        ),
    ],
)
def test_a_mistake_is_one_line_naming_the_flag_typed_before_any_rule_runs(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], says: str
) -> None:
    (tmp_path / "typo.toml").write_text("[pgmq]\nvisibilty_timeout_seconds = 5\n")
    (tmp_path / "factories.py").write_text(
        "def takes_nothing():\n    return None\n\n"
        "def not_async(config):\n    return config.memory\n"
    )
    run = run_cli("verify", "--provider", "memory", *args, cwd=tmp_path, env=env)
    assert run.returncode != 0
    output = run.stdout + run.stderr
    errors = [line for line in output.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1, output[-3000:]
    assert says in errors[0]
    for noise in ("Traceback", "INTERNALERROR", "--mq-", "passed"):
        assert noise not in output, output[-3000:]


def test_rules_piped_into_a_reader_that_stops_early_prints_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mqcontract_conformance.cli", "rules"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # like `| head -1`
    stderr = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in stderr, stderr


def test_rules_lists_whole_titles_when_piped(tmp_path: Path) -> None:
    run = run_cli("rules", cwd=tmp_path)
    assert run.returncode == 0
    assert run.stdout.splitlines() == [f"{r.id:<9} {r.title}" for r in all_rules()]


def test_the_summary_shows_whole_titles_on_a_wide_terminal(tmp_path: Path) -> None:
    longest = max(all_rules(), key=lambda r: len(r.title))
    run = run_cli(
        "verify", "--rules", longest.id, cwd=tmp_path, env={"COLUMNS": str(len(longest.title) + 60)}
    )
    assert longest.title in run.stdout, run.stdout[-2000:]


def test_version_names_the_package_and_the_suite(tmp_path: Path) -> None:
    import mqcontract

    run = run_cli("--version", cwd=tmp_path)
    assert run.returncode == 0
    assert (
        run.stdout.strip()
        == f"mqcontract {mqcontract.__version__} (conformance suite {SUITE_VERSION})"
    )
    verify = run_cli("verify", "--rules", "LIFE-1", cwd=tmp_path)
    assert f"mqcontract {mqcontract.__version__}, suite {SUITE_VERSION}" in verify.stdout


def test_a_rule_without_named_hooks_says_why_it_needed_one() -> None:
    """CLAIM-3 names no hook method (it needs a second service on the same backend): the
    summary gives the reason the run recorded, not a question mark."""
    result = ProviderResult("dictq")
    reason = "CLAIM-3 needs a harness hook: dictq: services opened by the harness do not share"
    result.results["CLAIM-3"] = RuleResult("CLAIM-3", Outcome.NEEDS_HOOK, reason)
    why = result.unverified_groups()["CLAIM"]
    assert why == "needs a harness hook (dictq: services opened by the harness do not share)"


def test_pgmq_install_refuses_an_empty_dsn_before_connecting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--dsn "$DATABASE_URL"` with the variable unset would install into libpq's default
    database, which nobody named."""
    import mqcontract.providers.pgmq as pgmq
    from mqcontract_conformance.cli import main

    def connected(*args: object, **kwargs: object) -> None:
        pytest.fail("install_pgmq was called with an empty DSN")

    monkeypatch.setattr(pgmq, "install_pgmq", connected)
    for dsn in ("", "   "):
        assert main(["pgmq", "install", "--dsn", dsn]) == 2
        err = capsys.readouterr().err
        assert err.startswith("ERROR: --dsn is empty: name the target database"), err
        assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("selftest", "--scale", "inf"), "argument --scale: must be a finite number"),
        (("selftest", "--scale", "0"), "argument --scale: must be greater than 0"),
    ],
)
def test_selftest_scales_must_be_finite_and_positive(
    args: tuple[str, ...], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from mqcontract_conformance.cli import build_parser

    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(list(args))
    assert exit_.value.code == 2
    assert says in capsys.readouterr().err


def test_alluredir_without_allure_pytest_is_one_error_naming_the_package(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """It was pytest's raw "unrecognized arguments: --alluredir" (exit 4)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "allure_pytest" else real(name, *a),
    )
    status = cli.main(["verify", "--rules", "LIFE-1", "--alluredir", str(tmp_path / "allure")])
    assert status == 2
    err = capsys.readouterr().err
    assert "--alluredir" in err
    assert "allure-pytest" in err

"""The pytest plugin, run as a provider author would run it (pytester)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mqcontract_conformance.rules import all_rules
from mqcontract_conformance.rules_doc import render_rules_markdown

THIRD_PARTY = '''
from mqcontract.providers.memory import InMemoryMessagingService


async def open_provider(config):
    """A provider outside mqcontract, found by module:factory."""
    return InMemoryMessagingService(config.memory)
'''

ARGS = ("-p", "no:asyncio", "-p", "no:cacheprovider", "--pyargs", "mqcontract_conformance.contract")


def test_a_third_party_provider_is_verified_by_module_factory(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(thirdparty_provider=THIRD_PARTY)
    pytester.syspathinsert()
    out = pytester.path / "out.json"
    result = pytester.runpytest(
        *ARGS,
        "--mq-provider",
        "thirdparty_provider:open_provider",
        "--mq-rules",
        "LIFE,SEND,RECV-1",
        "--mq-json",
        str(out),
    )
    # Skipped: LIFE-11 (list_queues is claimed), LIFE-12, LIFE-14 and LIFE-15 (a store per
    # service: not shared).
    result.assert_outcomes(passed=23, skipped=4)
    doc = json.loads(out.read_text())
    (provider,) = doc["providers"]
    assert provider["name"] == "thirdparty_provider:open_provider"
    assert provider["capabilities"]["push"] == "full"
    assert {r["rule"] for r in provider["results"]} >= {"LIFE-1", "SEND-9", "RECV-1"}


def test_unclaimed_rules_skip_with_the_rule_named(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(*ARGS, "--mq-rules", "PUSH-10,LIFE-1", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    # The summary names the rule's check, not the plugin line every skip goes through.
    result.stdout.fnmatch_lines(
        ["SKIPPED [[]1[]] *cases/*.py:*: PUSH-10 not claimed: applies when push == none*"]
    )
    result.stdout.no_fnmatch_line("*collection.py*")


def test_a_run_where_nothing_ran_fails(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(*ARGS, "--mq-rules", "PUSH-10")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*no rule ran for provider 'memory'*"])


def test_known_broken_rules_are_strict_xfail(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        brokenharness="""
from mqcontract.testing import Harness
from mqcontract.providers.memory import InMemoryMessagingService
from mqcontract.clock import VirtualClock


class NoopAck(InMemoryMessagingService):
    async def ack_message(self, queue, msg_id):
        self._queue(queue)


class H(Harness):
    known_broken = {"ACK-1": "ack is a no-op", "LIFE-1": "claimed broken but is not"}

    def new_clock(self):
        return VirtualClock()

    async def open(self, clock=None):
        return NoopAck(clock=clock)


def make(settings):
    return H("noop-ack", settings)
"""
    )
    pytester.syspathinsert()
    out = pytester.path / "out.json"
    spec = ("--mq-provider", "brokenharness:make", "--mq-rules", "ACK-1,LIFE-1")
    result = pytester.runpytest(*ARGS, *spec, "--mq-json", str(out))
    result.assert_outcomes(xfailed=1, failed=1)
    (provider,) = json.loads(out.read_text())["providers"]
    by_rule = {r["rule"]: r for r in provider["results"]}
    assert (by_rule["ACK-1"]["outcome"], by_rule["ACK-1"]["reason"]) == (
        "known-broken",
        "ack is a no-op",
    )
    assert by_rule["LIFE-1"]["outcome"] == "failed"
    assert by_rule["LIFE-1"]["known_broken_passed"] is True
    assert "known_broken_passed" not in by_rule["ACK-1"]
    result.stdout.fnmatch_lines(
        ["*LIFE-1 passed though the harness lists it as known broken: remove it from known_b*"]
    )


def test_unknown_provider_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(*ARGS, "--mq-provider", "does-not-exist")
    assert result.ret == pytest.ExitCode.USAGE_ERROR


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--mq-timing-scale", "nan"), "ERROR: --mq-timing-scale nan: must be a finite number*"),
        (("--mq-rules", ",,"), "ERROR: --mq-rules names no rule*"),
    ],
)
def test_a_mistake_in_pytest_spelling_is_a_usage_error_naming_the_option(
    pytester: pytest.Pytester, args: tuple[str, ...], says: str
) -> None:
    result = pytester.runpytest(*ARGS, "--mq-provider", "memory", "--co", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([says])
    assert "INTERNALERROR" not in str(result.stderr) + str(result.stdout)


def test_rules_document_is_generated_from_the_registry() -> None:
    committed = Path(__file__).parent.parent / "conformance" / "RULES.md"
    assert committed.read_text(encoding="utf-8") == render_rules_markdown(), (
        "conformance/RULES.md is stale: run `mqcontract rules --markdown > conformance/RULES.md`"
    )


def test_rule_ids_are_unique_and_numerous() -> None:
    ids = [r.id for r in all_rules()]
    assert len(ids) == len(set(ids)) >= 40
    assert all(r.title.endswith(".") and r.why for r in all_rules())


def test_verify_memory_passes_quickly(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    out = tmp_path / "memory.json"
    start = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mqcontract_conformance.cli",
            "verify",
            "--provider",
            "memory",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    took = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout[-3000:]
    doc = json.loads(out.read_text())
    results = doc["providers"][0]["results"]
    assert len(results) >= 40
    assert not [r for r in results if r["outcome"] == "failed"]
    assert took < 30  # generous on a shared machine; typically ~3 s


UNREACHABLE = """
from mqcontract.errors import BackendUnavailable
from mqcontract.testing import Harness


class Unreachable(Harness):
    async def setup(self):
        raise BackendUnavailable("nowhere", "amqp://u:secret@127.0.0.1:1/", "refused")


def make(settings):
    return Unreachable("nowhere", settings)
"""


def test_an_unreachable_backend_fails_the_run_beside_a_provider_that_ran(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MQCONTRACT_REQUIRE_BACKENDS", raising=False)  # CI sets it
    pytester.makepyfile(unreachable=UNREACHABLE)
    pytester.syspathinsert()
    both = ("--mq-provider", "memory", "--mq-provider", "unreachable:make", "--mq-rules", "LIFE-1")
    result = pytester.runpytest(*ARGS, *both)
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["*FAILED: provider 'unreachable:make' not verified*--mq-allow-unavailable*"]
    )
    assert "secret" not in result.stdout.str()
    allowed = pytester.runpytest(*ARGS, *both, "--mq-allow-unavailable")
    assert allowed.ret == pytest.ExitCode.OK
    allowed.stdout.fnmatch_lines(["*SKIPPED: provider 'unreachable:make' not verified*"])
    # An unavailable backend's skips say the same of every rule: folded into one line.
    several = ("--mq-rules", "LIFE-1,LIFE-2,SEND-1", "--mq-allow-unavailable", "-rs")
    folded = pytester.runpytest(
        *ARGS, "--mq-provider", "memory", "--mq-provider", "unreachable:make", *several
    )
    folded.assert_outcomes(passed=3, skipped=3)
    folded.stdout.fnmatch_lines(["SKIPPED [[]3[]] *unreachable:make: backend unavailable*"])


def test_an_unreachable_backend_alone_fails_and_required_backends_fail(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MQCONTRACT_REQUIRE_BACKENDS", raising=False)
    pytester.makepyfile(unreachable=UNREACHABLE)
    pytester.syspathinsert()
    alone = pytester.runpytest(*ARGS, "--mq-provider", "unreachable:make", "--mq-rules", "LIFE-1")
    assert alone.ret == pytest.ExitCode.TESTS_FAILED
    # Allowed, and still a failure: the message says why rather than offer the flag given.
    allowed_alone = pytester.runpytest(
        *ARGS, "--mq-provider", "unreachable:make", "--mq-rules", "LIFE-1", "--mq-allow-unavailable"
    )
    assert allowed_alone.ret == pytest.ExitCode.TESTS_FAILED
    allowed_alone.stdout.fnmatch_lines(
        [
            "*not verified*--mq-allow-unavailable makes this a skip only when some other provider"
            " ran rules: no rule ran at all*"
        ]
    )
    required = pytester.runpytest(
        *ARGS,
        "--mq-provider",
        "memory",
        "--mq-provider",
        "unreachable:make",
        "--mq-rules",
        "LIFE-1",
        "--mq-require-backends",
    )
    required.assert_outcomes(passed=1, errors=1)


FACTORY_UNREACHABLE = """
from mqcontract.errors import BackendUnavailable


async def open_provider(config):
    raise BackendUnavailable("nowhere", "nowhere://u:secret@127.0.0.1:1/", "refused")
"""

SETUP_MISCONFIGURED = """
from mqcontract.errors import ConfigurationError
from mqcontract.testing import Harness


class Misconfigured(Harness):
    async def setup(self):
        raise ConfigurationError("providers.nowhere.url", "x", "not a URL")


def make(settings):
    return Misconfigured("nowhere", settings)
"""


def test_a_plain_factory_that_cannot_connect_is_unavailable_not_failing_rules(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MQCONTRACT_REQUIRE_BACKENDS", raising=False)
    pytester.makepyfile(nowhere=FACTORY_UNREACHABLE)
    pytester.syspathinsert()
    out = pytester.path / "out.json"
    spec = ("--mq-provider", "memory", "--mq-provider", "nowhere:open_provider")
    result = pytester.runpytest(*ARGS, *spec, "--mq-rules", "LIFE-1,SEND-1", "--mq-json", str(out))
    result.assert_outcomes(passed=2, skipped=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*FAILED: provider 'nowhere:open_provider' not verified*"])
    nowhere = json.loads(out.read_text())["providers"][1]
    assert nowhere["summary"]["backend-unavailable"] == 2
    assert "secret" not in out.read_text()


def test_a_harness_setup_that_is_misconfigured_fails_instead_of_looking_unavailable(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(misconfigured=SETUP_MISCONFIGURED)
    pytester.syspathinsert()
    result = pytester.runpytest(
        *ARGS,
        "--mq-provider",
        "misconfigured:make",
        "--mq-rules",
        "LIFE-1",
        "--mq-allow-unavailable",
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*harness setup failed: ConfigurationError*"])


#: A reason naming every kind of skip: whoever classified by it would be misled.
LIE = "backend unavailable: LIFE-1 not claimed: applies when push == none; needs a harness hook"

MISLEADING = f"""
import pytest

from mqcontract.clock import VirtualClock
from mqcontract.errors import BackendUnavailable
from mqcontract.providers.memory import InMemoryMessagingService
from mqcontract.testing import Harness, HookUnavailable

LIE = {LIE!r}


class Misleading(Harness):
    def new_clock(self):
        return VirtualClock()

    async def open(self, clock=None):
        return InMemoryMessagingService(clock=clock)

    async def sever_connection(self, service):
        raise HookUnavailable(LIE)


def make(settings):
    return Misleading("misleading", settings)


async def unreachable(config):
    raise BackendUnavailable("nowhere", "nowhere://h/", LIE)


def pytest_runtest_setup(item):
    if item.name.endswith("make::LIFE-2]"):
        pytest.skip(LIE)
"""


def test_outcomes_are_typed_whatever_the_reasons_say(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MQCONTRACT_REQUIRE_BACKENDS", raising=False)
    pytester.makepyfile(misleading=MISLEADING)
    pytester.syspathinsert()
    out = pytester.path / "out.json"
    providers = ("--mq-provider", "misleading:make", "--mq-provider", "misleading:unreachable")
    result = pytester.runpytest(
        *ARGS,
        "-p",
        "misleading",
        *providers,
        "--mq-rules",
        "LIFE-1,LIFE-2,PUSH-10,ERR-5",
        "--mq-allow-unavailable",
        "--mq-json",
        str(out),
    )
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-3000:]
    outcomes = {
        (p["name"], r["rule"]): r["outcome"]
        for p in json.loads(out.read_text())["providers"]
        for r in p["results"]
    }
    unselected = {key for key, outcome in outcomes.items() if outcome == "not-selected"}
    # The rules left out of this narrowed run, for the provider that ran some.
    assert {rule for _, rule in unselected} == {r.id for r in all_rules()} - {
        "LIFE-1",
        "LIFE-2",
        "PUSH-10",
        "ERR-5",
    }
    assert {name for name, _ in unselected} == {"misleading:make"}
    for key in unselected:
        del outcomes[key]
    assert outcomes == {
        ("misleading:make", "LIFE-1"): "passed",
        ("misleading:make", "LIFE-2"): "skipped",
        ("misleading:make", "PUSH-10"): "not-claimed",
        ("misleading:make", "ERR-5"): "needs-hook",
        **{
            ("misleading:unreachable", rule): "backend-unavailable"
            for rule in ("LIFE-1", "LIFE-2", "PUSH-10", "ERR-5")
        },
    }

"""The pytest plugin (entry point ``pytest11``): runs the contract against any provider.

``pytest --pyargs mqcontract_conformance.contract --mq-provider NAME`` (or
``mqcontract verify``) parametrizes the one contract test over providers x rules. Rules a
provider does not claim are skipped with a reason naming the rule; rules its harness
declares known-broken run as strict xfail; a run in which no rule ran for a provider
fails. Results go to ``--mq-json`` and, with allure-pytest, to Allure.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from mqcontract.config import load_config
from mqcontract.errors import ConfigurationError, MessagingError
from mqcontract_conformance.harness import Harness, HarnessSettings
from mqcontract_conformance.harnesses import load_harness
from mqcontract_conformance.results import ProviderResult, RuleResult, write_results
from mqcontract_conformance.rules import GROUPS, SUITE_VERSION, Rule, all_rules
from mqcontract_conformance.runner import run_case
from mqcontract_conformance.timing import TimingProfile

__all__ = ["CaseRunner"]

_STATE = pytest.StashKey["_State"]()
#: Marks the skip reason of every case of a provider whose backend could not be reached.
_UNAVAILABLE = "backend unavailable"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mqcontract", "mqcontract conformance suite")
    group.addoption(
        "--mq-provider",
        action="append",
        default=[],
        metavar="NAME|module:factory",
        help="provider to verify (repeatable; default: memory)",
    )
    group.addoption(
        "--mq-rules",
        default="",
        metavar="IDS",
        help="comma-separated rule ids or groups to run (default: all)",
    )
    group.addoption(
        "--mq-timing-scale",
        type=float,
        default=None,
        help="multiply every timing bound (default: $MQCONTRACT_TIMING_SCALE or 1)",
    )
    group.addoption(
        "--mq-real-time",
        action="store_true",
        help="run providers that support virtual time in real time",
    )
    group.addoption(
        "--mq-require-backends",
        action="store_true",
        help="a missing backend fails instead of skipping (use in CI)",
    )
    group.addoption("--mq-json", default=None, metavar="PATH", help="write results as JSON")


@dataclass
class _Entry:
    harness: Harness
    ready: bool = False
    error: str | None = None


class _State:
    """Per-process state: harnesses, run id, and (on the controller) results."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.providers: list[str] = list(
            dict.fromkeys(config.getoption("mq_provider") or ["memory"])
        )
        self.timing = TimingProfile.from_scale(config.getoption("mq_timing_scale"))
        self.require = bool(config.getoption("mq_require_backends")) or _env_true(
            "MQCONTRACT_REQUIRE_BACKENDS"
        )
        worker = os.environ.get("PYTEST_XDIST_WORKER", "gw")
        self.run_id = f"{secrets.token_hex(3)}{worker.replace('gw', 'w')}"
        self._entries: dict[str, _Entry] = {}
        self.results: dict[str, ProviderResult] = {}
        self.empty_providers: list[str] = []
        self.unavailable_providers: list[str] = []
        self.active = False

    def harness(self, provider: str) -> _Entry:
        if provider not in self._entries:
            settings = HarnessSettings(
                config=load_config(validate_backend=False).with_backend(provider),
                run_id=self.run_id,
                require_backend=self.require,
                extra={"real_time": "1" if self.config.getoption("mq_real_time") else ""},
            )
            try:
                self._entries[provider] = _Entry(load_harness(provider, settings))
            except ConfigurationError as exc:
                raise pytest.UsageError(f"--mq-provider {provider}: {exc}") from exc
        return self._entries[provider]

    def ready(self, provider: str) -> _Entry:
        entry = self.harness(provider)
        if not entry.ready and entry.error is None:
            try:
                asyncio.run(entry.harness.setup())
                entry.ready = True
            except MessagingError as exc:
                entry.error = f"{provider}: {_UNAVAILABLE}: {exc}"
        return entry

    def teardown(self) -> None:
        for entry in self._entries.values():
            if entry.ready:
                asyncio.run(entry.harness.teardown())
                entry.ready = False


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").lower() in {"1", "true", "yes"}


def _selected_rules(config: pytest.Config) -> list[Rule]:
    wanted = {w.strip().upper() for w in str(config.getoption("mq_rules")).split(",") if w.strip()}
    rules = all_rules()
    if not wanted:
        return rules
    chosen = [r for r in rules if r.id in wanted or r.group in wanted]
    if not chosen:
        raise pytest.UsageError(f"--mq-rules {sorted(wanted)} matches no rule")
    return chosen


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mq_rule(id): a conformance case for rule id")
    state = _State(config)
    config.stash[_STATE] = state
    if config.getoption("mq_provider"):
        for provider in state.providers:  # fail fast on a typo, before collection
            state.harness(provider)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "mq_case" not in metafunc.fixturenames:
        return
    state = metafunc.config.stash[_STATE]
    state.active = True
    params = []
    for provider in state.providers:
        known_broken = state.harness(provider).harness.known_broken
        for rule in _selected_rules(metafunc.config):
            marks: list[Any] = [pytest.mark.mq_rule(rule.id)]
            if rule.id in known_broken:
                marks.append(
                    pytest.mark.xfail(
                        reason=f"known broken: {known_broken[rule.id]}",
                        strict=True,
                        raises=AssertionError,
                    )
                )
            params.append(pytest.param((provider, rule), id=f"{provider}::{rule.id}", marks=marks))
    metafunc.parametrize("mq_case", params, indirect=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "mq_case" in callspec.params:
            provider, rule = callspec.params["mq_case"]
            item.user_properties += [("mq_provider", provider), ("mq_rule", rule.id)]


class CaseRunner:
    """What the contract test receives: call :meth:`run`."""

    def __init__(self, state: _State, provider: str, rule: Rule, item: pytest.Item) -> None:
        self._state, self.provider, self.rule, self._item = state, provider, rule, item

    def run(self) -> None:
        """Run the rule; skips, failures and xfails surface as pytest outcomes."""
        _label_for_allure(self.provider, self.rule)
        entry = self._state.harness(self.provider)
        outcome = asyncio.run(
            run_case(entry.harness, self.rule, self._state.timing, self._state.run_id)
        )
        self._item.user_properties.append(("mq_capabilities", outcome.capabilities))
        self._item.user_properties.append(("mq_describe", json.dumps(entry.harness.describe())))
        if outcome.metrics:
            self._item.user_properties.append(("mq_metrics", json.dumps(outcome.metrics)))
        if outcome.skip_reason is not None:
            pytest.skip(outcome.skip_reason)


@pytest.fixture(scope="session")
def _mq_state(request: pytest.FixtureRequest) -> Iterator[_State]:
    state = request.config.stash[_STATE]
    yield state
    state.teardown()


@pytest.fixture
def mq_case(request: pytest.FixtureRequest, _mq_state: _State) -> CaseRunner:
    """One (provider, rule) case; backends are provisioned once per worker on first use."""
    provider, rule = request.param
    entry = _mq_state.ready(provider)
    if entry.error is not None:
        message = f"{entry.error} (set the URL, or start the service)"
        if _mq_state.require:
            pytest.fail(f"required backend missing: {message}", pytrace=False)
        pytest.skip(message)
    return CaseRunner(_mq_state, provider, rule, request.node)


def _label_for_allure(provider: str, rule: Rule) -> None:
    try:
        import allure
    except ImportError:
        return
    dynamic: Any = allure.dynamic
    dynamic.parent_suite(provider)
    dynamic.suite(GROUPS[rule.group])
    dynamic.feature(GROUPS[rule.group])
    dynamic.story(rule.id)
    dynamic.title(f"{provider} {rule.id}: {rule.title}")
    dynamic.description(f"{rule.title}\n\nWhy: {rule.why}")
    dynamic.tag(provider)
    dynamic.label("rule", rule.id)


# -- results (controller side) ---------------------------------------------------------


def _reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):
        return str(longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message)[:2000]
    return str(longrepr or "")[:2000]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    props = dict(report.user_properties)
    if "mq_rule" not in props:
        return
    config = _controller_config
    if config is None:
        return
    state = config.stash[_STATE]
    provider = str(props["mq_provider"])
    result_set = state.results.setdefault(provider, ProviderResult(provider))
    if "mq_capabilities" in props:
        result_set.capabilities = json.loads(str(props["mq_capabilities"]))
        result_set.describe = json.loads(str(props.get("mq_describe", "{}")))
    rule_id = str(props["mq_rule"])
    current = result_set.results.setdefault(rule_id, RuleResult(rule_id, "passed"))
    current.duration += report.duration
    if "mq_metrics" in props:
        current.metrics = json.loads(str(props["mq_metrics"]))
    if report.failed:
        current.outcome, current.reason = "failed", _reason(report)
    elif report.skipped and current.outcome != "failed":
        wasxfail = getattr(report, "wasxfail", None)
        current.outcome = "xfailed" if wasxfail is not None else "skipped"
        current.reason = str(wasxfail) if wasxfail else _reason(report)


_controller_config: pytest.Config | None = None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    global _controller_config
    if not hasattr(session.config, "workerinput"):
        _controller_config = session.config


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if hasattr(config, "workerinput") or config is not _controller_config:
        return
    state = config.stash[_STATE]
    if not state.results:
        return
    # A provider whose backend was unreachable was skipped loudly (or failed, when backends
    # are required); one that was reachable but ran no rule fails, and so does a run in
    # which no rule ran at all.
    ran = {p: r.summary()["passed"] + r.summary()["failed"] for p, r in state.results.items()}
    state.unavailable_providers = [
        p
        for p, r in state.results.items()
        if ran[p] == 0 and all(_UNAVAILABLE in x.reason for x in r.results.values())
    ]
    state.empty_providers = [
        p
        for p in state.results
        if ran[p] == 0 and (p not in state.unavailable_providers or not any(ran.values()))
    ]
    if state.empty_providers and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    path = config.getoption("mq_json")
    if path:
        write_results(
            path,
            list(state.results.values()),
            extra={"timing_scale": state.timing.scale, "required_backends": state.require},
        )


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if config is not _controller_config:
        return
    state = config.stash[_STATE]
    if not state.results:
        return
    tr = terminalreporter
    tr.section(f"mqcontract {SUITE_VERSION}: rules per provider")
    providers = list(state.results)
    symbol = {"passed": "pass", "failed": "FAIL", "skipped": "skip", "xfailed": "xfail"}
    width = max(8, *(len(p) for p in providers))
    tr.write_line("rule      " + "  ".join(p.ljust(width) for p in providers) + "  title")
    for rule in all_rules():
        cells = []
        for p in providers:
            r = state.results[p].results.get(rule.id)
            cells.append((symbol[r.outcome] if r else "-").ljust(width))
        if any(c.strip() != "-" for c in cells):
            tr.write_line(f"{rule.id:<9} " + "  ".join(cells) + f"  {rule.title[:60]}")
    for p in providers:
        s = state.results[p].summary()
        tr.write_line(
            f"{p}: {s['passed']} passed, {s['failed']} failed, "
            f"{s['skipped']} skipped (not claimed), {s['xfailed']} known broken"
        )
    for p in state.unavailable_providers:
        tr.write_line(
            f"SKIPPED: provider {p!r} not verified: its backend is unavailable "
            "(see the skip reasons; --mq-require-backends makes this a failure)",
            yellow=True,
        )
    for p in state.empty_providers:
        tr.write_line(f"FAILED: no rule ran for provider {p!r} (everything skipped)", red=True)
    path = config.getoption("mq_json")
    if path:
        tr.write_line(f"results written to {path}")

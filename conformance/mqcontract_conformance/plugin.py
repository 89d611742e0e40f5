"""The pytest plugin (entry point ``pytest11``): runs the contract against any provider.

``pytest --pyargs mqcontract_conformance.contract --mq-provider NAME`` (or
``mqcontract verify``) parametrizes the one contract test over providers x rules. Rules a
provider does not claim are skipped with a reason naming the rule; rules its harness
declares known-broken run as strict xfail. Every provider named must have run rules:
one whose backend is unreachable fails the run (``--mq-allow-unavailable`` makes it a loud
skip instead), and so does one for which nothing ran. Bad options, configuration or an
unwritable ``--mq-json`` path stop the run before any rule, as one line. Results go to
``--mq-json`` and, with allure-pytest, to Allure.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from mqcontract.config import load_config
from mqcontract.errors import BackendUnavailable, ConfigurationError, MessagingError
from mqcontract.testing import Harness, HarnessSettings
from mqcontract_conformance.harnesses import load_harness
from mqcontract_conformance.results import (
    SKIP_KINDS,
    ProviderResult,
    RuleResult,
    check_writable,
    write_results,
)
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
    group.addoption(
        "--mq-allow-unavailable",
        action="store_true",
        help="a provider whose backend is unreachable is skipped instead of failing the run",
    )
    group.addoption("--mq-json", default=None, metavar="PATH", help="write results as JSON")
    # Set by `mqcontract verify` so messages name the options its user typed.
    group.addoption("--mq-flag-names", default="pytest", choices=sorted(_FLAGS), help="")


#: The spelling of each option, by the command line the user typed.
_FLAGS: dict[str, dict[str, str]] = {
    "pytest": {
        "provider": "--mq-provider",
        "rules": "--mq-rules",
        "json": "--mq-json",
        "require_backends": "--mq-require-backends",
        "allow_unavailable": "--mq-allow-unavailable",
    },
    "verify": {
        "provider": "--provider",
        "rules": "--rules",
        "json": "--json",
        "require_backends": "--require-backends",
        "allow_unavailable": "--allow-unavailable",
    },
}


def flag(config: pytest.Config, name: str) -> str:
    """The option ``name`` as the user spells it (pytest's or ``mqcontract verify``'s)."""
    return _FLAGS[str(config.getoption("mq_flag_names"))][name]


@dataclass
class _Entry:
    harness: Harness
    ready: bool = False
    error: str | None = None
    #: The backend could not be reached (a skip, or a failure when backends are
    #: required); otherwise setup itself went wrong, which always fails.
    unavailable: bool = False


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
        self.allow_unavailable = bool(config.getoption("mq_allow_unavailable")) or _env_true(
            "MQCONTRACT_ALLOW_UNAVAILABLE"
        )
        self.base_config = _load_config(config)
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
                config=self.base_config.with_backend(provider),
                run_id=self.run_id,
                require_backend=self.require,
                extra={"real_time": "1" if self.config.getoption("mq_real_time") else ""},
            )
            try:
                self._entries[provider] = _Entry(load_harness(provider, settings))
            except ConfigurationError as exc:
                raise pytest.UsageError(
                    f"{flag(self.config, 'provider')} {provider}: {exc}"
                ) from exc
        return self._entries[provider]

    def ready(self, provider: str) -> _Entry:
        entry = self.harness(provider)
        if not entry.ready and entry.error is None:
            try:
                asyncio.run(entry.harness.setup())
                entry.ready = True
            except BackendUnavailable as exc:
                entry.error, entry.unavailable = f"{provider}: {_UNAVAILABLE}: {exc}", True
            except MessagingError as exc:
                entry.error = f"{provider}: harness setup failed: {type(exc).__name__}: {exc}"
        return entry

    def skip_unavailable(self, item: pytest.Item, message: str) -> None:
        """Skip a case whose backend is unreachable, or fail it when backends are required."""
        if self.require:
            pytest.fail(f"required backend missing: {message}", pytrace=False)
        item.user_properties.append(("mq_skip_kind", "backend-unavailable"))
        pytest.skip(message)

    def teardown(self) -> None:
        for entry in self._entries.values():
            if entry.ready:
                asyncio.run(entry.harness.teardown())
                entry.ready = False


def _load_config(config: pytest.Config) -> Any:
    try:
        return load_config(validate_backend=False)
    except ConfigurationError as exc:
        where = os.environ.get("MQCONTRACT_CONFIG")
        source = f"MQCONTRACT_CONFIG={where}" if where else "mqcontract"
        raise pytest.UsageError(f"{source}: {exc}") from None


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").lower() in {"1", "true", "yes"}


def _selected_rules(config: pytest.Config) -> list[Rule]:
    wanted = {w.strip().upper() for w in str(config.getoption("mq_rules")).split(",") if w.strip()}
    rules = all_rules()
    if not wanted:
        return rules
    chosen = [r for r in rules if r.id in wanted or r.group in wanted]
    unknown = sorted(w for w in wanted if not any(w in (r.id, r.group) for r in rules))
    if unknown:
        raise pytest.UsageError(
            f"{flag(config, 'rules')}: no rule or group named {', '.join(unknown)} "
            f"(groups: {', '.join(GROUPS)}; `mqcontract rules` lists the ids)"
        )
    return chosen


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mq_rule(id): a conformance case for rule id")
    state = _State(config)
    config.stash[_STATE] = state
    if not config.getoption("mq_provider"):
        return
    # Everything a user can get wrong fails here, as one line, before any rule runs.
    _selected_rules(config)
    path = config.getoption("mq_json")
    if path and not hasattr(config, "workerinput"):
        try:
            check_writable(path)
        except OSError as exc:
            raise pytest.UsageError(
                f"{flag(config, 'json')} {path}: cannot write the results there "
                f"({exc.strerror or exc})"
            ) from None
    for provider in state.providers:
        state.harness(provider)


def pytest_report_header(config: pytest.Config) -> str | None:
    state = config.stash.get(_STATE, None)
    if state is None or not config.getoption("mq_provider"):
        return None
    return (
        f"mqcontract {_package_version()}, suite {SUITE_VERSION}: "
        f"providers {', '.join(state.providers)}"
    )


def _package_version() -> str:
    import mqcontract

    return mqcontract.__version__


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
        if outcome.skip_kind == "backend-unavailable":
            self._state.skip_unavailable(self._item, str(outcome.skip_reason))
        if outcome.skip_reason is not None:
            self._item.user_properties.append(("mq_skip_kind", outcome.skip_kind))
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
    if entry.error is not None and not entry.unavailable:
        pytest.fail(entry.error, pytrace=False)
    if entry.error is not None:
        _mq_state.skip_unavailable(
            request.node, f"{entry.error} (set the URL, or start the service)"
        )
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
        kind = str(props.get("mq_skip_kind", "other"))
        current.skip_kind = kind if kind in SKIP_KINDS else "other"


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
    # Every provider named must have run rules. One whose backend was unreachable fails
    # the run unless the user allowed it (then it is a loud skip); one that was reachable
    # but ran nothing fails; and a run in which no rule ran at all always fails.
    anything_ran = any(r.ran() for r in state.results.values())
    state.unavailable_providers, state.empty_providers = [], []
    for name, result in state.results.items():
        if result.ran():
            continue
        unavailable = all(r.skip_kind == "backend-unavailable" for r in result.results.values())
        if unavailable:
            state.unavailable_providers.append(name)
        if not (unavailable and state.allow_unavailable and anything_ran):
            state.empty_providers.append(name)
    if state.empty_providers and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    path = config.getoption("mq_json")
    if path:
        write_results(
            path,
            list(state.results.values()),
            extra={
                "timing_scale": state.timing.scale,
                "required_backends": state.require,
                "allowed_unavailable": state.allow_unavailable,
            },
        )


def _title_width(tr: Any, used: int) -> int:
    width = int(getattr(getattr(tr, "_tw", None), "fullwidth", 0) or 0)
    return max(40, width - used)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if config is not _controller_config:
        return
    state = config.stash[_STATE]
    if not state.results:
        return
    tr = terminalreporter
    tr.section(f"mqcontract {_package_version()}, suite {SUITE_VERSION}: rules per provider")
    providers = list(state.results)
    symbol = {"passed": "pass", "failed": "FAIL", "skipped": "skip", "xfailed": "xfail"}
    width = max(8, *(len(p) for p in providers))
    used = 10 + (width + 2) * len(providers)
    tr.write_line("rule      " + "  ".join(p.ljust(width) for p in providers) + "  title")
    for rule in all_rules():
        cells = []
        for p in providers:
            r = state.results[p].results.get(rule.id)
            cells.append((symbol[r.outcome] if r else "-").ljust(width))
        if any(c.strip() != "-" for c in cells):
            title = textwrap.shorten(rule.title, _title_width(tr, used), placeholder=" …")
            tr.write_line(f"{rule.id:<9} " + "  ".join(cells) + f"  {title}")
    for p in providers:
        _write_provider_summary(tr, state.results[p])
    for p in state.unavailable_providers:
        if p in state.empty_providers:
            tr.write_line(
                f"FAILED: provider {p!r} not verified: its backend is unavailable (see the skip "
                f"reasons; {flag(config, 'allow_unavailable')} makes this a skip)",
                red=True,
            )
        else:
            tr.write_line(
                f"SKIPPED: provider {p!r} not verified: its backend is unavailable "
                f"(allowed by {flag(config, 'allow_unavailable')})",
                yellow=True,
            )
    for p in state.empty_providers:
        if p not in state.unavailable_providers:
            tr.write_line(f"FAILED: no rule ran for provider {p!r} (everything skipped)", red=True)
    path = config.getoption("mq_json")
    if path:
        tr.write_line(f"results written to {path}")


def _write_provider_summary(tr: Any, result: ProviderResult) -> None:
    s = result.summary()
    skipped = ", ".join(f"{label}: {s[k]}" for k, label in SKIP_KINDS.items() if s[k])
    status = result.status()
    tr.write_line(
        f"{result.name}: {status}: {s['passed']} passed, {s['failed']} failed, "
        f"{s['xfailed']} known broken; skipped: {skipped or 'none'}",
        green=status == "passing",
        yellow=status in {"passing, unverified", "not verified"},
        red=status == "failing",
    )
    unverified = result.unverified()
    if list(unverified) == ["backend-unavailable"] and not result.ran():
        tr.write_line("  not verified: every rule: backend unavailable", yellow=True)
        return
    for group, why in result.unverified_groups().items():
        ids = [r for ids in unverified.values() for r in ids if r.startswith(f"{group}-")]
        tr.write_line(
            f"  not verified: {group} ({GROUPS.get(group, group)}): {', '.join(ids)}: {why}",
            yellow=True,
        )

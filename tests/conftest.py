"""Shared helpers for the project's own tests."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from mqcontract.clock import VirtualClock
from mqcontract.config import MessagingConfig, load_config
from mqcontract.errors import BackendUnavailable
from mqcontract.providers.memory import InMemoryMessagingService
from mqcontract.service import MessagingService
from mqcontract.testing import Harness, HarnessSettings
from mqcontract_conformance.provisioning import Provisioner, backends_required, unavailable
from mqcontract_conformance.rules import get_rule
from mqcontract_conformance.runner import CaseOutcome, run_case
from mqcontract_conformance.timing import TimingProfile

pytest_plugins = ["pytester"]

#: Tests that crash a private server and time its recovery (``crashes_private_servers``)
#: run one after another under xdist (``--dist loadgroup``), in groups: with four servers
#: booting at once on two cores, a classic queue was still not routable 12 s after its
#: node was up again (``rabbitmq::DUR-4``, about once in fifteen runs). The crash cases of
#: each provider in ``SEPARATE_CRASHES`` are a group of their own: a RabbitMQ node boots
#: in 7 s alone but in 30 s beside the rest of the suite, and it restarts five times for
#: a provider's DUR cases (once cleanly to age their queues, then once per case); one group
#: for both, or for one of them and every other crash test, made it the run's longest
#: worker. At most two RabbitMQ nodes boot at once.
PRIVATE_BACKEND_HOOK = "private_backend"
CRASH_GROUP = "private-server-crashes"
SEPARATE_CRASHES = ("rabbitmq", "rabbitmq-quorum")
PRIVATE_FIXTURES = "mqcontract_fixtures.private"
#: Parts of the ids of other tests that take many seconds each, most of it waiting (a
#: bound waited out, a README run): started first, so that they overlap the short ones
#: instead of trailing the run on one worker.
LONG_TESTS = (
    "::HOLD-1]",
    "::ERR-9]",
    "::EVT-9]",
    "::PUSH-7]",
    "::MODEL-1]",
    "test_readme_block[quick-start",
    "test_readme_block[how-cost-grows",
    "test_readme_block[what-the-abstraction-costs",
    "test_frozen_holder.py",
)


def crashes_private_servers(item: pytest.Item) -> bool:
    """A contract case of a rule that needs the ``private_backend`` hook, or a test in a
    module that uses the private server fixtures (``mqcontract_fixtures.private``): by
    what the test needs, not by its name, so a new one joins the group on its own."""
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "mq_case" in callspec.params:
        _provider, rule = callspec.params["mq_case"]
        return PRIVATE_BACKEND_HOOK in rule.hooks
    module = getattr(item, "module", None)
    return module is not None and any(
        str(getattr(value, "__module__", "")).startswith(PRIVATE_FIXTURES)
        for value in vars(module).values()
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Crash tests in their xdist groups (xdist hands out its groups first, the largest
    first); long tests first among the rest (a stable sort keeps the others).

    Runs before xdist's own hook, which names each grouped test's group in its id.
    """
    for item in items:
        if (group := crash_group(item)) is not None:
            item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: not any(part in item.nodeid for part in LONG_TESTS))


def crash_group(item: pytest.Item) -> str | None:
    """The xdist group of a test that crashes private servers, None for any other."""
    if not crashes_private_servers(item):
        return None
    callspec = getattr(item, "callspec", None)
    case = callspec.params.get("mq_case") if callspec is not None else None
    if case is not None and case[0] in SEPARATE_CRASHES:
        return f"{CRASH_GROUP}-{case[0]}"
    return CRASH_GROUP


class ClassHarness(Harness):
    """Opens an instance of a given in-memory subclass on a virtual clock."""

    def __init__(self, cls: type[InMemoryMessagingService]) -> None:
        super().__init__(cls.__name__, HarnessSettings(config=MessagingConfig(), run_id="t"))
        self.cls = cls

    def new_clock(self) -> VirtualClock | None:
        return VirtualClock()

    async def open(self, clock: VirtualClock | None = None) -> MessagingService:
        return self.cls(clock=clock)


@pytest.fixture(scope="session")
def provisioned() -> Iterator[Callable[[str], Harness]]:
    """``provisioned("pgmq")``: that provider's harness, set up once for the session.

    Through the kit's provisioning, as the contract's cases: a missing backend skips the
    test, or fails it when ``MQCONTRACT_REQUIRE_BACKENDS`` is set; other errors fail.
    """
    provisioners: dict[str, Provisioner] = {}

    def ready(provider: str) -> Harness:
        if provider not in provisioners:
            provisioners[provider] = Provisioner.for_provider(
                provider, required=backends_required()
            )
        return provisioners[provider].ready()

    yield ready
    for provisioner in provisioners.values():
        provisioner.teardown()


@pytest.fixture
def run_rule() -> Callable[[type[InMemoryMessagingService], str], CaseOutcome]:
    """Run one rule against an in-memory subclass in virtual time (synchronously)."""

    def run(cls: type[InMemoryMessagingService], rule_id: str) -> CaseOutcome:
        return asyncio.run(run_case(ClassHarness(cls), get_rule(rule_id), TimingProfile(), "t"))

    return run


@pytest.fixture(scope="module")
def pgmq_db_url() -> Iterator[str]:
    """A fresh database with PGMQ installed, for one test module, dropped afterwards.

    A PostgreSQL that cannot be reached skips, or fails when backends are required, by
    the same verdict as everything else (:mod:`mqcontract_conformance.provisioning`).
    """
    from mqcontract.providers.pgmq import install_pgmq
    from mqcontract_fixtures.pgmq import create_database, drop_database

    admin = load_config(validate_backend=False).pgmq.database_url
    name = f"mqc_t_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        url = asyncio.run(create_database(admin, name))
    except BackendUnavailable as exc:
        unavailable(f"PostgreSQL unavailable: {exc}", required=backends_required()).enforce()
        raise
    try:
        asyncio.run(install_pgmq(url))
        yield url
    finally:
        asyncio.run(drop_database(admin, name))

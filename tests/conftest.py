"""Shared helpers for the project's own tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest

from mqcontract.clock import VirtualClock
from mqcontract.config import MessagingConfig
from mqcontract.providers.memory import InMemoryMessagingService
from mqcontract.service import MessagingService
from mqcontract.testing import Harness, HarnessSettings
from mqcontract_conformance.provisioning import Provisioner, backends_required
from mqcontract_conformance.rules import get_rule
from mqcontract_conformance.runner import CaseOutcome, run_case
from mqcontract_conformance.timing import TimingProfile

pytest_plugins = ["pytester"]


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

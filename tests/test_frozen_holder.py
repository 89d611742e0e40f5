"""HOLD-1 on real backends: a frozen consumer process gives its claims back within the bound
the provider declares, and the rule fails a provider whose frozen holders outlast it."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import pytest

from mqcontract.capabilities import VisibilityEnforcer
from mqcontract.config import RabbitMqConfig
from mqcontract.providers.rabbitmq._channels import MISSED_HEARTBEATS, heartbeat_seconds
from mqcontract.service import MessagingService
from mqcontract.testing import Harness
from mqcontract_conformance.context import ContractViolation
from mqcontract_conformance.rules import get_rule
from mqcontract_conformance.runner import CaseOutcome, run_case
from mqcontract_conformance.timing import TimingProfile
from mqcontract_fixtures.holders import freeze_holder
from mqcontract_fixtures.rabbitmq import HEARTBEAT_SECONDS, RabbitMqHarness


def test_the_heartbeat_is_shortened_to_the_push_timeout() -> None:
    default = RabbitMqConfig()
    assert heartbeat_seconds(default) == 20  # 60 s push timeout / 3 missed heartbeats
    assert heartbeat_seconds(RabbitMqConfig(heartbeat_seconds=7)) == 7
    assert heartbeat_seconds(RabbitMqConfig(push_visibility_timeout_seconds=3.0)) == 5
    assert MISSED_HEARTBEATS * heartbeat_seconds(default) <= default.push_visibility_timeout_seconds


class _SlowHeartbeatHolders(RabbitMqHarness):
    """Declares the bound of its own heartbeat, but its holders use the broker's usual 60 s."""

    def freeze_holder(
        self, service: MessagingService, queue: str, count: int, visibility_timeout: float
    ) -> AbstractAsyncContextManager[list[int]]:
        slow = dataclasses.replace(
            self.config.rabbitmq, heartbeat_seconds=60, push_visibility_timeout_seconds=600.0
        )
        config = dataclasses.replace(self.config, rabbitmq=slow)
        return freeze_holder(self.name, config, queue, count, visibility_timeout)


@pytest.fixture
def rabbitmq(provisioned: Callable[[str], Harness]) -> RabbitMqHarness:
    harness = provisioned("rabbitmq")
    assert isinstance(harness, RabbitMqHarness)
    return harness


def _hold_1(harness: Harness) -> CaseOutcome:
    return asyncio.run(run_case(harness, get_rule("HOLD-1"), TimingProfile(), "frz"))


def test_a_frozen_rabbitmq_holder_loses_its_claims_within_the_declared_bound(
    rabbitmq: RabbitMqHarness,
) -> None:
    outcome = _hold_1(rabbitmq)
    assert outcome.skip_reason is None
    bound = MISSED_HEARTBEATS * HEARTBEAT_SECONDS
    assert outcome.metrics["bound_s"] == bound
    assert outcome.metrics["returned_after_s"] <= bound + TimingProfile().slack


def test_hold_1_fails_holders_that_outlast_the_declared_bound(rabbitmq: RabbitMqHarness) -> None:
    slow = _SlowHeartbeatHolders(rabbitmq.name, rabbitmq.settings, quorum=False)
    slow.config = rabbitmq.config
    with pytest.raises(ContractViolation, match=r"^\[HOLD-1\] held by a frozen process"):
        _hold_1(slow)


def test_rabbitmq_declares_that_its_holders_enforce_the_timeout_with_a_bound(
    rabbitmq: RabbitMqHarness,
) -> None:
    async def declared() -> tuple[VisibilityEnforcer, float | None]:
        service = await rabbitmq.open(None)
        try:
            caps = service.capabilities
            return caps.visibility_enforced_by, caps.frozen_holder_release_seconds
        finally:
            await service.close()

    enforcer, bound = asyncio.run(declared())
    assert enforcer is VisibilityEnforcer.HOLDER
    assert bound == MISSED_HEARTBEATS * HEARTBEAT_SECONDS


def test_capabilities_default_to_a_server_enforced_timeout() -> None:
    from mqcontract.capabilities import Capabilities, PushKind

    assert Capabilities(push=PushKind.FULL).visibility_enforced_by is VisibilityEnforcer.SERVER

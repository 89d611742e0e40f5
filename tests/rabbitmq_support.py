"""What the RabbitMQ test modules share: a harness for classic and quorum queues, and a
service per test (the harness is provisioned once per session in conftest)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from mqcontract.providers.rabbitmq import RabbitMqMessagingService
from mqcontract.testing import Harness
from mqcontract_fixtures.rabbitmq import RabbitMqHarness

__all__ = ["harness", "service"]


@pytest.fixture(params=["rabbitmq", "rabbitmq-quorum"])
def harness(
    request: pytest.FixtureRequest, provisioned: Callable[[str], Harness]
) -> RabbitMqHarness:
    harness = provisioned(request.param)
    assert isinstance(harness, RabbitMqHarness)
    return harness


@pytest.fixture
async def service(harness: RabbitMqHarness) -> AsyncIterator[RabbitMqMessagingService]:
    service = await harness.open()
    assert isinstance(service, RabbitMqMessagingService)
    yield service
    await service.close()

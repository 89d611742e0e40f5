"""Test support: services on the machine's Mosquitto under a prefix of this run, polling."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from mqcontract.errors import BackendUnavailable
from mqcontract_conformance.provisioning import backends_required, unavailable

from mqcontract_mqtt import MqttConfig, MqttMessagingService, connect_mqtt
from mqcontract_mqtt._config import DEFAULT_MQTT_URL

RUN_ID = secrets.token_hex(3) + os.environ.get("PYTEST_XDIST_WORKER", "")
_names = itertools.count(1)


def mqtt_settings(**changes: Any) -> MqttConfig:
    """Settings for the test broker (``MQTT_URL``), under this run's topic prefix."""
    url = os.environ.get("MQTT_URL") or DEFAULT_MQTT_URL
    return dataclasses.replace(MqttConfig(url=url, topic_prefix=f"mqct_{RUN_ID}"), **changes)


def queue_name(tag: str = "q") -> str:
    return f"mt_{tag}_{next(_names)}"


async def open_service(**changes: Any) -> MqttMessagingService:
    """A connected service, or a skip (a failure in CI) when the broker is not there."""
    try:
        return await connect_mqtt(mqtt_settings(**changes), operation_timeout=5.0)
    except BackendUnavailable as exc:
        unavailable(f"MQTT broker not reachable: {exc}", required=backends_required()).enforce()
        raise


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Wait until ``condition()`` holds; fail the test if it does not within ``within`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() >= deadline:
            pytest.fail(f"condition not met within {within} s")
        await asyncio.sleep(0.01)


@pytest.fixture
async def service() -> AsyncIterator[MqttMessagingService]:
    """A provider; every queue (retained marker) of this run is cleared afterwards."""
    svc = await open_service()
    try:
        yield svc
    finally:
        await svc.close()
        cleaner = await open_service()
        try:
            for name in await cleaner.list_queues():
                await cleaner.delete_queue(name)
        finally:
            await cleaner.close()


@pytest.fixture
async def queue(service: MqttMessagingService) -> str:
    name = queue_name()
    await service.create_queue(name)
    return name

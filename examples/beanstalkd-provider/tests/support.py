"""Test support: a service on the test server, unique queue names, cleanup, polling."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
from mqcontract.errors import BackendUnavailable
from mqcontract_conformance.provisioning import backends_required, unavailable

from mqcontract_beanstalkd import BeanstalkdConfig, BeanstalkdMessagingService
from mqcontract_beanstalkd._config import DEFAULT_URL
from mqcontract_beanstalkd.harness import drop_prefix
from mqcontract_beanstalkd.service import connect_beanstalkd

T = TypeVar("T")

RUN_ID = secrets.token_hex(3) + os.environ.get("PYTEST_XDIST_WORKER", "")
#: Every tube of this test run starts with this prefix; the fixture empties them after.
PREFIX = f"mqctest_{RUN_ID}"
_names = itertools.count(1)


def settings(**changes: Any) -> BeanstalkdConfig:
    """Settings for the test server (``BEANSTALKD_URL``, default 127.0.0.1:11300)."""
    url = os.environ.get("BEANSTALKD_URL") or DEFAULT_URL
    return dataclasses.replace(BeanstalkdConfig(url=url, tube_prefix=PREFIX), **changes)


def queue_name(tag: str = "q") -> str:
    """A fresh valid queue name."""
    return f"bs_{tag}_{next(_names)}"


async def open_service(**changes: Any) -> BeanstalkdMessagingService:
    """A connected service, or a skip (a failure in CI) when beanstalkd is not there."""
    try:
        return await connect_beanstalkd(settings(**changes), operation_timeout=5.0)
    except BackendUnavailable as exc:
        unavailable(f"beanstalkd not reachable: {exc}", required=backends_required()).enforce()
        raise


@pytest.fixture
async def service() -> AsyncIterator[BeanstalkdMessagingService]:
    """A provider with default settings; this run's tubes are emptied afterwards."""
    svc = await open_service()
    try:
        yield svc
    finally:
        await svc.close()
        await drop_prefix(settings())


@pytest.fixture
async def queue(service: BeanstalkdMessagingService) -> str:
    """A created queue."""
    name = queue_name()
    await service.create_queue(name)
    return name


async def eventually(probe: Callable[[], Awaitable[T | None]], within: float, what: str) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = await probe()
        if result:
            return result
        if loop.time() >= deadline:
            pytest.fail(f"{what}: not observed within {within:g} s")
        await asyncio.sleep(0.02)

"""Test support: a service on the machine's Redis, unique queue names, cleanup, polling."""

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

from mqcontract_redis_streams import RedisStreamsConfig, RedisStreamsMessagingService
from mqcontract_redis_streams._config import DEFAULT_REDIS_URL
from mqcontract_redis_streams.service import connect_redis_streams

T = TypeVar("T")

RUN_ID = secrets.token_hex(3) + os.environ.get("PYTEST_XDIST_WORKER", "")
_names = itertools.count(1)


def redis_settings(**changes: Any) -> RedisStreamsConfig:
    """Settings for the test server (``REDIS_URL``, default 127.0.0.1:6379)."""
    url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    return dataclasses.replace(RedisStreamsConfig(url=url), **changes)


def queue_name(tag: str = "q") -> str:
    """A fresh valid queue name embedding this run's id."""
    return f"rs_{RUN_ID}_{tag}_{next(_names)}"


async def open_service(**changes: Any) -> RedisStreamsMessagingService:
    """A connected service, or a skip (a failure in CI) when Redis is not there."""
    try:
        return await connect_redis_streams(redis_settings(**changes), operation_timeout=5.0)
    except BackendUnavailable as exc:
        unavailable(f"Redis not reachable: {exc}", required=backends_required()).enforce()
        raise


async def drop_run_keys(service: RedisStreamsMessagingService) -> None:
    """Delete every queue and key this test run made."""
    for queue in await service.list_queues():
        if RUN_ID in queue:
            await service.delete_queue(queue)
    pattern = f"{service.settings.key_prefix}:q:*{RUN_ID}*"
    async for key in service.client.scan_iter(match=pattern):
        await service.client.delete(key)


@pytest.fixture
async def service() -> AsyncIterator[RedisStreamsMessagingService]:
    """A provider with default settings; this run's queues are dropped afterwards."""
    svc = await open_service()
    try:
        yield svc
    finally:
        await svc.close()
        cleaner = await open_service()
        try:
            await drop_run_keys(cleaner)
        finally:
            await cleaner.close()


@pytest.fixture
async def queue(service: RedisStreamsMessagingService) -> str:
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


async def claims_visible(service: RedisStreamsMessagingService, queue: str, count: int) -> None:
    """Wait until ``count`` pending entries are visible again, asking without claiming."""
    hold = int(service.capabilities.max_visibility_timeout_seconds * 1000)
    stream = service.stream_key(queue)

    async def visible() -> bool:
        rows = await service.client.xpending_range(stream, "mqcontract", "-", "+", 100, idle=hold)
        return len(rows) >= count

    await eventually(visible, 5, f"{count} claims visible again on {queue}")

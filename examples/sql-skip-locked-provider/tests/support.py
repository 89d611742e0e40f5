"""Test support: both dialects on this run's own databases, unique queue names, polling."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar

import pytest
from mqcontract.config import load_config
from mqcontract.errors import BackendUnavailable, ProviderClosed
from mqcontract.testing import HarnessSettings
from mqcontract_conformance.provisioning import backends_required, unavailable

from mqcontract_sql_skip_locked import MARIADB, POSTGRES, SqlQueueService
from mqcontract_sql_skip_locked.harness import SqlHarness, mariadb_harness, postgres_harness

T = TypeVar("T")

RUN_ID = "t" + secrets.token_hex(3) + os.environ.get("PYTEST_XDIST_WORKER", "")
DIALECTS = (POSTGRES, MARIADB)
_names = itertools.count(1)
#: Why a dialect's harness could not be set up (its server is missing).
harnesses_missing: dict[str, str] = {}


def make_harness(provider: str, run_id: str = RUN_ID) -> SqlHarness:
    """The provider's harness on a database of its own for ``run_id``."""
    settings = HarnessSettings(config=load_config(environ={}), run_id=run_id)
    factory = postgres_harness if provider == POSTGRES else mariadb_harness
    harness = factory(settings)
    assert isinstance(harness, SqlHarness)
    return harness


def queue_name(tag: str = "q") -> str:
    """A fresh valid queue name embedding this run's id."""
    return f"sq_{RUN_ID}_{tag}_{next(_names)}"


@pytest.fixture(scope="session")
def harnesses() -> Iterator[dict[str, SqlHarness]]:
    """Each dialect's harness, set up once (its database made) and torn down at the end;
    a dialect whose server is missing is left out (its tests skip, or fail in CI)."""
    ready: dict[str, SqlHarness] = {}
    missing: dict[str, str] = {}
    for provider in DIALECTS:
        harness = make_harness(provider)
        try:
            asyncio.run(harness.setup())
        except BackendUnavailable as exc:
            missing[provider] = str(exc)
        else:
            ready[provider] = harness
    harnesses_missing.update(missing)
    try:
        yield ready
    finally:
        for harness in ready.values():
            asyncio.run(harness.teardown())


@pytest.fixture(params=DIALECTS)
def harness(request: pytest.FixtureRequest, harnesses: dict[str, SqlHarness]) -> SqlHarness:
    """One dialect's harness (the test runs once per dialect)."""
    provider: str = request.param
    if provider not in harnesses:
        reason = harnesses_missing.get(provider, "not set up")
        unavailable(f"{provider}: {reason}", required=backends_required()).enforce()
    return harnesses[provider]


@pytest.fixture
async def service(harness: SqlHarness) -> AsyncIterator[SqlQueueService]:
    """A provider on the dialect's database, closed afterwards."""
    svc = await harness.open()
    assert isinstance(svc, SqlQueueService)
    try:
        yield svc
    finally:
        await svc.close()


@pytest.fixture
async def queue(service: SqlQueueService) -> AsyncIterator[str]:
    """A created queue, deleted afterwards."""
    name = queue_name()
    await service.create_queue(name)
    yield name
    with contextlib.suppress(ProviderClosed):  # a test that closed the service
        await service.delete_queue(name)


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

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from mqcontract import MessagingConfig

from mq_sqlite import SqliteQueue, SqliteSettings

pytest_plugins = ["mqcontract_fixtures.pytest_fixtures"]

T = TypeVar("T")


@pytest.fixture(scope="session")
def mq_provider_name() -> str:
    """The kit's fixtures (``mq_harness``, ``sever_connection``) run against this harness."""
    return "mq_sqlite.harness:make_harness"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def wait_for(
    probe: Callable[[], Awaitable[T | None]], *, deadline: float = 5.0, every: float = 0.01
) -> T:
    """Call ``probe`` until it returns something other than ``None``; fail at the deadline."""
    give_up = time.monotonic() + deadline
    while True:
        value = await probe()
        if value is not None:
            return value
        if time.monotonic() > give_up:
            raise AssertionError(f"condition not met within {deadline} s")
        await asyncio.sleep(every)


@pytest.fixture
def settings(tmp_path: Path) -> SqliteSettings:
    return SqliteSettings(path=str(tmp_path / "q.db"))


@pytest.fixture
def config() -> MessagingConfig:
    return MessagingConfig(operation_timeout_seconds=5.0)


@pytest.fixture
def opener(settings: SqliteSettings) -> Callable[[], Awaitable[SqliteQueue]]:
    async def open_one() -> SqliteQueue:
        return await SqliteQueue.connect(settings, operation_timeout=5.0)

    return open_one

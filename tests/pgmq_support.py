"""What the PGMQ test modules share: a configuration, a service and a queue per test, and
SQL run from outside the provider (the database comes from ``pgmq_db_url`` in conftest)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from mqcontract.config import MessagingConfig, PgmqConfig
from mqcontract.providers.pgmq import PgmqMessagingService, open_pgmq

__all__ = ["config", "queue", "service", "sql"]


def config(url: str, **pgmq: Any) -> MessagingConfig:
    """A configuration for the PGMQ provider on ``url``, with ``[pgmq]`` overrides."""
    return MessagingConfig(pgmq=PgmqConfig(database_url=url, **pgmq))


@pytest.fixture
async def service(pgmq_db_url: str) -> AsyncIterator[PgmqMessagingService]:
    svc = await open_pgmq(config(pgmq_db_url))
    yield svc
    await svc.close()


@pytest.fixture
async def queue(service: PgmqMessagingService) -> AsyncIterator[str]:
    name = f"t_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    await service.create_queue(name)
    yield name
    if not service._closed:
        await service.delete_queue(name)


async def sql(url: str, query: str, *args: object) -> Any:
    """Run ``query`` on a separate connection, as something outside the provider would."""
    conn = await asyncpg.connect(url, timeout=5)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()

"""The PGMQ harness: per-run database, fault hooks, teardown."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import asyncpg  # type: ignore[import-untyped]
import pytest

from mqcontract.config import MessagingConfig, PgmqConfig, load_config
from mqcontract.errors import BackendUnavailable
from mqcontract.messages import Available, Message
from mqcontract.providers.pgmq import PgmqMessagingService
from mqcontract.testing import HarnessSettings, HookUnavailable
from mqcontract_fixtures.pgmq import PgmqHarness, database_url, pgmq_harness, run_database_name

ADMIN_URL = load_config(validate_backend=False).pgmq.database_url


async def _databases() -> set[str]:
    try:
        conn = await asyncpg.connect(ADMIN_URL, timeout=3)
    except (OSError, TimeoutError, asyncpg.PostgresError):
        pytest.skip(f"PostgreSQL is not reachable at {ADMIN_URL}")
    try:
        return {r[0] for r in await conn.fetch("SELECT datname FROM pg_database")}
    finally:
        await conn.close()


@pytest.fixture
async def harness() -> AsyncIterator[PgmqHarness]:
    await _databases()
    run_id = f"T{os.getpid()}-{uuid.uuid4().hex[:6]}"
    h = pgmq_harness(HarnessSettings(config=MessagingConfig(), run_id=run_id))
    assert isinstance(h, PgmqHarness)
    await h.setup()
    yield h
    await h.teardown()
    assert h.database not in await _databases()


def test_database_names_are_sanitized_and_urls_rewritten() -> None:
    assert run_database_name("Gw0-AB.c") == "mqc_gw0_ab_c"
    assert len(run_database_name("x" * 100)) == 63
    url = "postgresql://u:pw@h:5433/admin?sslmode=disable"
    assert database_url(url, "mqc_1") == "postgresql://u:pw@h:5433/mqc_1?sslmode=disable"


async def test_setup_makes_a_database_with_pgmq_and_describe_reports_versions(
    harness: PgmqHarness,
) -> None:
    assert harness.database in await _databases()
    facts = harness.describe()
    assert facts["pgmq_version"] == "1.13.0"
    assert facts["server_version"].split(".")[0].isdigit()
    service = await harness.open()
    try:
        assert await service.list_queues() == []
    finally:
        await service.close()


async def test_the_hooks_act_on_the_real_backend(harness: PgmqHarness) -> None:
    service = await harness.open()
    assert isinstance(service, PgmqMessagingService)
    try:
        with pytest.raises(HookUnavailable):
            await harness.kill_listener(service)  # nothing to kill before a subscribe
        await service.create_queue("hq")
        sub = await service.subscribe("hq")

        await harness.kill_listener(service)
        assert await asyncio.wait_for(sub.__anext__(), 5) == Available("hq", None)

        restore = await harness.suppress_notifications(service, "hq")
        hidden = await service.send_message("hq", b"[1]")
        await restore()
        shown = await service.send_message("hq", b"[2]")
        note = await asyncio.wait_for(sub.__anext__(), 5)
        assert isinstance(note, Message)
        assert note.message.msg_id == shown
        assert sub.pending() == []
        assert await harness.stored_ids(service, "hq") == [hidden, shown]

        await harness.sever_connection(service)
        assert await service.queue_exists("hq")
        await sub.aclose()
        await harness.cleanup(service, ["hq"])
        assert await harness.stored_ids(service, "hq") == []
    finally:
        await service.close()


async def test_an_unreachable_backend_fails_setup_with_a_redacted_url() -> None:
    config = MessagingConfig(
        pgmq=PgmqConfig(database_url="postgresql://user:secret@127.0.0.1:1/nothing")
    )
    h = pgmq_harness(HarnessSettings(config=config, run_id="unreachable"))
    with pytest.raises(BackendUnavailable) as info:
        await h.setup()
    assert "secret" not in str(info.value)

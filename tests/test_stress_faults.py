"""Faults on a real PostgreSQL: an ack cut off mid-statement, and a short faulted run."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
from collections.abc import AsyncIterator, Iterator

import asyncpg  # type: ignore[import-untyped]
import pytest

from mqcontract.config import load_config
from mqcontract.errors import BackendUnavailable
from mqcontract.providers.pgmq import PgmqMessagingService
from mqcontract.testing import HarnessSettings
from mqcontract_conformance.provisioning import backends_required, unavailable
from mqcontract_conformance.stress import StressSettings, run_stress
from mqcontract_fixtures.pgmq import PgmqHarness

CONFIG = load_config(validate_backend=False)


@pytest.fixture(scope="module")
def harness() -> Iterator[PgmqHarness]:
    """A database of this module's own, with PGMQ installed."""
    run_id = f"t{os.getpid()}{secrets.token_hex(2)}"
    made = PgmqHarness("pgmq", HarnessSettings(config=CONFIG, run_id=run_id))
    try:
        asyncio.run(made.setup())
    except BackendUnavailable as exc:
        unavailable(f"PostgreSQL unavailable: {exc}", required=backends_required()).enforce()
    yield made
    asyncio.run(made.teardown())


@pytest.fixture
async def service(harness: PgmqHarness) -> AsyncIterator[PgmqMessagingService]:
    svc = await harness.open()
    assert isinstance(svc, PgmqMessagingService)
    yield svc
    await svc.close()


async def _cut_off_next_delete(url: str, queue: str) -> None:
    """The next DELETE on the queue kills its own connection mid-statement (once)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            f"""
            CREATE SEQUENCE cut_{queue};
            CREATE FUNCTION cut_{queue}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF nextval('cut_{queue}') = 1 THEN
                    PERFORM pg_terminate_backend(pg_backend_pid());
                    PERFORM pg_sleep(1);
                END IF;
                RETURN OLD;
            END $$;
            CREATE TRIGGER cut BEFORE DELETE ON pgmq.q_{queue}
                FOR EACH ROW EXECUTE FUNCTION cut_{queue}();
            """
        )
    finally:
        await conn.close()


async def test_an_ack_cut_off_mid_statement_is_retried_so_the_message_is_not_redone(
    harness: PgmqHarness, service: PgmqMessagingService
) -> None:
    queue = f"cut_{secrets.token_hex(4)}"
    await service.create_queue(queue)
    sent = await service.send_message(queue, b"work")
    (held,) = await service.receive_messages(queue, 1, 30.0)
    await _cut_off_next_delete(harness.url, queue)
    await service.ack_message(queue, held.msg_id)  # the first attempt dies, the retry acks
    assert await harness.stored_ids(service, queue) == []
    assert await service.receive_messages(queue, 10, 30.0) == []
    assert held.msg_id == sent


async def test_a_short_run_with_pool_connections_killed_loses_nothing() -> None:
    settings = StressSettings(
        provider="pgmq",
        messages=400,
        producers=2,
        consumers=2,
        workers=2,
        vt=1.0,
        slow_rate=0.0,
        fault="pool",
        fault_interval=0.4,
        poll_interval=0.5,
        max_seconds=60,
        seed=1,
    )
    try:
        account = await run_stress(settings, out=None)
    except BackendUnavailable as exc:
        unavailable(f"PostgreSQL unavailable: {exc}", required=backends_required()).enforce()
        raise
    data = account.to_dict()
    assert account.ok, data
    assert data["faults"]["injected"] >= 1
    assert dataclasses.asdict(settings)["fault"] == data["settings"]["fault"]

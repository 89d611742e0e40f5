"""The harness hooks really do what the conformance suite trusts them to do."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from mqcontract import MessagingConfig, QueuedMessage
from mqcontract.capabilities import VisibilityEnforcer
from mqcontract.errors import ConnectionLost
from mqcontract_conformance import Harness, HarnessSettings, HookUnavailable

from conftest import run, wait_for
from mq_sqlite import SqliteQueue
from mq_sqlite.harness import SqliteHarness, make_harness, run_directory


@pytest.fixture
def harness(config: MessagingConfig) -> Iterator[SqliteHarness]:
    made = make_harness(HarnessSettings(config=config, run_id="selftest0"))
    assert isinstance(made, SqliteHarness)
    run(made.setup())
    try:
        yield made
    finally:
        run(made.teardown())
    assert not run_directory("selftest0").exists()


def test_setup_reports_facts_and_isolates_the_run(harness: SqliteHarness) -> None:
    facts = harness.describe()
    assert facts["version"] == "0.1.0"
    assert facts["journal_mode"] == "wal"
    assert "selftest0" in harness.sqlite.path


def test_sever_kills_the_connection_and_loses_nothing(harness: SqliteHarness) -> None:
    async def scenario() -> None:
        service = await harness.open()
        assert isinstance(service, SqliteQueue)
        async with service:
            await service.create_queue("jobs")
            ids = await service.send_batch("jobs", [b"a", b"b"])
            (held,) = await service.receive_messages("jobs", 1, 60)
            assert service.connections_opened == 1

            await harness.sever_connection(service)
            with pytest.raises(ConnectionLost):
                await service.queue_exists("jobs")  # meets the dead connection
            assert await service.queue_exists("jobs")  # and recovers by itself
            assert service.connections_opened == 2

            assert await harness.stored_ids(service, "jobs") == ids
            await service.ack_message("jobs", held.msg_id)  # the claim lives in the file
            assert await harness.stored_ids(service, "jobs") == ids[1:]

    run(scenario())


def test_stored_ids_sees_every_state_without_touching_it(harness: SqliteHarness) -> None:
    async def scenario() -> None:
        service = await harness.open()
        assert isinstance(service, SqliteQueue)
        async with service:
            await service.create_queue("jobs")
            visible = await service.send_message("jobs", b"v")
            held = await service.send_message("jobs", b"h")
            await service.fetch_message("jobs", held, 60)
            delayed = await service.send_message_with_delay("jobs", b"d", 60)

            assert await harness.stored_ids(service, "jobs") == [visible, held, delayed]
            (got,) = await service.receive_messages("jobs", 10, 60)
            assert (got.msg_id, got.receive_count) == (visible, 1)
            assert await harness.stored_ids(service, "missing") == []

    run(scenario())


def _returned(
    service: SqliteQueue, count: int
) -> Callable[[], Awaitable[list[QueuedMessage] | None]]:
    """A probe: the messages, once ``count`` of them are receivable again."""
    got: list[QueuedMessage] = []

    async def probe() -> list[QueuedMessage] | None:
        got.extend(await service.receive_messages("jobs", 10, 60))
        return got if len(got) >= count else None

    return probe


def test_a_killed_holder_keeps_its_claims_only_until_they_lapse(harness: SqliteHarness) -> None:
    async def scenario() -> None:
        service = await harness.open()
        assert isinstance(service, SqliteQueue)
        async with service:
            await service.create_queue("jobs")
            ids = await service.send_batch("jobs", [b"a", b"b", b"c"])
            held = await harness.crash_holder(service, "jobs", 2, 1.0)  # process SIGKILLed
            assert held == ids[:2]
            (free,) = await service.receive_messages("jobs", 10, 60)
            assert free.msg_id == ids[2]  # the dead process's claims still hold
            back = await wait_for(_returned(service, 2))
            assert sorted((m.msg_id, m.receive_count) for m in back) == [(i, 2) for i in held]

    run(scenario())


def test_a_frozen_holder_loses_its_claims_when_they_lapse(harness: SqliteHarness) -> None:
    async def scenario() -> None:
        service = await harness.open()
        assert isinstance(service, SqliteQueue)
        async with service:
            caps = service.capabilities
            assert caps.visibility_enforced_by is VisibilityEnforcer.SERVER
            assert caps.frozen_holder_release_seconds is None
            await service.create_queue("jobs")
            (sent,) = await service.send_batch("jobs", [b"a"])
            async with harness.freeze_holder(service, "jobs", 1, 1.0) as held:  # SIGSTOPped
                assert held == [sent]
                assert await service.receive_messages("jobs", 10, 60) == []
                (back,) = await wait_for(_returned(service, 1))  # while it is still frozen
                assert (back.msg_id, back.receive_count) == (sent, 2)
                await service.ack_message("jobs", back.msg_id)
            assert await harness.stored_ids(service, "jobs") == []

    run(scenario())


def test_push_hooks_are_declared_unavailable(harness: SqliteHarness) -> None:
    async def scenario() -> None:
        service = await harness.open()
        assert isinstance(service, SqliteQueue)
        async with service:
            with pytest.raises(HookUnavailable):
                await harness.kill_listener(service)
            with pytest.raises(HookUnavailable):
                await harness.suppress_notifications(service, "jobs")

    run(scenario())


def test_the_kits_fixtures_drive_the_same_hook(
    mq_harness: Harness, sever_connection: Callable[[object], Awaitable[None]], tmp_path: Path
) -> None:
    async def scenario() -> None:
        service = await mq_harness.open()
        assert isinstance(service, SqliteQueue)
        async with service:
            await service.create_queue("jobs")
            await sever_connection(service)
            with pytest.raises(ConnectionLost):
                await service.list_queues()
            assert await service.list_queues() == ["jobs"]
            await service.delete_queue("jobs")

    run(scenario())

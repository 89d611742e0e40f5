"""The fallback poller leaves a backlog to push once push is seen delivering it.

``drain_queue`` claims batch after batch while they come back full; once the last
message pushed from the queue was sent before the drain began, push is delivering the
backlog and the drain stops after its current batch. Newer pushes (a signal-only
provider announces new sends only) never stop it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from mqcontract.clock import SystemClock
from mqcontract.events.commands import CommandReceiver, Intake, command_channel
from mqcontract.events.poller import drain_queue
from mqcontract.providers.memory import InMemoryMessagingService

BACKLOG, BATCH = 250, 100


@pytest.fixture
async def service() -> AsyncIterator[InMemoryMessagingService]:
    async with InMemoryMessagingService() as service:
        await service.create_queue("jobs")
        await service.send_batch("jobs", [b"{}"] * BACKLOG)
        yield service


async def _worker(receiver: CommandReceiver) -> None:
    while True:
        await receiver.receive()
        receiver.done()


async def _drain(
    service: InMemoryMessagingService, last_pushed: Callable[[str], float | None]
) -> int:
    sender, receiver = command_channel(BATCH * 3)
    worker = asyncio.create_task(_worker(receiver))
    try:
        async with asyncio.timeout(10):
            return await drain_queue(
                service,
                "jobs",
                sender,
                batch_size=BATCH,
                visibility_timeout=30,
                path=Intake.POLL,
                clock=SystemClock(),
                last_pushed=last_pushed,
            )
    finally:
        worker.cancel()


async def test_without_push_the_whole_backlog_is_drained(service: InMemoryMessagingService) -> None:
    assert await _drain(service, lambda queue: None) == BACKLOG


async def test_push_of_new_sends_only_does_not_stop_the_drain(
    service: InMemoryMessagingService,
) -> None:
    assert await _drain(service, lambda queue: SystemClock().now() + 60) == BACKLOG


async def test_push_delivering_the_backlog_stops_the_drain_after_its_batch(
    service: InMemoryMessagingService,
) -> None:
    sent_long_ago = SystemClock().now() - 60
    assert await _drain(service, {"jobs": sent_long_ago}.get) == BATCH
    assert await _drain(service, {"other": sent_long_ago}.get) == BACKLOG - BATCH

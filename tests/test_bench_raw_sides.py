"""The bench's raw sides settle as they say, against the real servers.

Their rows are only comparable if they do the work their descriptions claim: raw PGMQ
deletes a batch in one statement, and raw RabbitMQ's confirmed serial acks are read
back (the broker holds nothing unacked afterwards, and nothing comes back).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import asyncpg  # type: ignore[import-untyped]
import pytest

from mqcontract.service import MessagingService
from mqcontract.testing import Harness


@pytest.fixture(params=["pgmq", "rabbitmq"])
def harness(request: pytest.FixtureRequest, provisioned: Callable[[str], Harness]) -> Harness:
    return provisioned(request.param)


async def test_raw_sides_settle_everything_they_receive(harness: Harness) -> None:
    service = await harness.open()
    (raw,) = [side for side in harness.raw_sides(1) if side.label == "raw"]
    queue = f"rawside_{secrets.token_hex(3)}"
    await service.create_queue(queue)
    await raw.open()
    try:
        await raw.send_batch(queue, [b'{"n":1}'] * 25, 10)
        assert await raw.receive_ack(queue, 20, 10) == 20  # two batches settled at once
        confirmed = getattr(raw, "receive_ack_confirmed", raw.receive_ack)
        assert await confirmed(queue, 5, 1) == 5
        assert await raw.receive_ack(queue, 1, 1) == 0
    finally:
        await raw.close()  # RabbitMQ requeues whatever it still held
    try:
        assert await _left(harness, service, queue) == 0
    finally:
        await service.delete_queue(queue)
        await service.close()


async def _left(harness: Harness, service: MessagingService, queue: str) -> int:
    """Messages still in ``queue``, visible or not."""
    if harness.name == "pgmq":
        connection = await asyncpg.connect(harness.url)  # type: ignore[attr-defined]
        try:
            return int(await connection.fetchval(f'SELECT count(*) FROM pgmq."q_{queue}"'))
        finally:
            await connection.close()
    return len(await service.receive_messages(queue, 10, 30))

"""The event system tells messages apart by more than their id.

Two defects an outside tester found, each reproduced the way they did:

* RabbitMQ producers choose ids, and two messages with one id are two claims, each
  settled on its own (CLAIM-7); the consumer dropped the second while the first's
  handler ran, which left it held until its claim timed out (60 s by default), so six
  such messages took a timeout apart each;
* a PGMQ queue deleted and created again numbers its messages from 1 again; the
  consumer took each new message's pushed copy for one it had claimed and acked before
  and dropped it, so push went quiet until the poller found them.

Needs PostgreSQL and RabbitMQ (skipped when unreachable, failed when backends are
required). Waits poll a condition against a deadline from the timing profile.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable

import aiormq
import pytest
from pamqp import commands as spec

from mqcontract.events import ConsumerSettings, DeploymentMode, QueueConsumer
from mqcontract.messages import QueuedMessage
from mqcontract.providers.pgmq import PgmqMessagingService
from mqcontract.providers.rabbitmq import RabbitMqMessagingService
from mqcontract_conformance.timing import TimingProfile
from mqcontract_fixtures.rabbitmq import RabbitMqHarness
from tests import pgmq_support, rabbitmq_support

TIMING = TimingProfile.from_scale()

harness = rabbitmq_support.harness
rabbitmq = rabbitmq_support.service
pgmq = pgmq_support.service


async def _until(condition: Callable[[], bool], what: str, within: float) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() >= deadline:
            pytest.fail(f"{what}: not within {within:g} s")
        await asyncio.sleep(TIMING.step)


async def test_messages_sharing_a_producer_chosen_id_are_each_run_and_settled_promptly(
    harness: RabbitMqHarness, rabbitmq: RabbitMqMessagingService
) -> None:
    queue = f"t_same_id_{uuid.uuid4().hex[:10]}"
    await rabbitmq.create_queue(queue)
    handled: list[bytes] = []

    async def handler(message: QueuedMessage) -> None:
        await asyncio.sleep(TIMING.step)  # work that takes a moment: the ids overlap
        handled.append(message.payload)

    settings = ConsumerSettings(mode=DeploymentMode.EVENT_DRIVEN_ONLY, workers=4)
    connection = await aiormq.connect(harness.url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        async with QueueConsumer(rabbitmq, [queue], handler, settings) as consumer:
            for n in range(6):
                properties = spec.Basic.Properties(message_id="12345", delivery_mode=2)
                await channel.basic_publish(b"%d" % n, routing_key=queue, properties=properties)
            # Each well before a claim's timeout (the push timeout, 60 s by default).
            await _until(lambda: len(handled) == 6, "6 messages with one id handled", TIMING.slack)
            await _until(
                lambda: consumer.stats.handler_runs == 6 and not consumer.stats.errors,
                "their acks confirmed",
                TIMING.slack,
            )
        assert sorted(handled) == [b"%d" % n for n in range(6)]
        assert consumer.stats.duplicate_claims >= 1  # the case this is about happened
        assert await rabbitmq.receive_messages(queue, 10, TIMING.long) == []
    finally:
        await connection.close()
        await rabbitmq.delete_queue(queue)


async def test_push_goes_on_after_a_queue_is_deleted_and_created_again(
    pgmq: PgmqMessagingService,
) -> None:
    queue = f"t_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    await pgmq.create_queue(queue)
    handled: list[bytes] = []

    async def handler(message: QueuedMessage) -> None:
        handled.append(message.payload)

    # A poll interval far past the deadline: only push can deliver in time.
    settings = ConsumerSettings(
        mode=DeploymentMode.HYBRID, workers=2, poll_interval=TIMING.long * 10
    )
    try:
        async with QueueConsumer(pgmq, [queue], handler, settings) as consumer:
            for n in range(5):
                await pgmq.send_message(queue, b'"old %d"' % n)
            await _until(lambda: len(handled) == 5, "the first 5 handled", TIMING.slack)
            polled = consumer.stats.by_path.get("poll", 0)  # the poll at start may take some
            await pgmq.delete_queue(queue)
            await pgmq.create_queue(queue)  # its ids start at 1 again
            for n in range(5):
                await pgmq.send_message(queue, b'"new %d"' % n)
            await _until(lambda: len(handled) == 10, "the new 5 pushed and handled", TIMING.slack)
            assert consumer.stats.by_path.get("poll", 0) == polled
    finally:
        await pgmq.delete_queue(queue)

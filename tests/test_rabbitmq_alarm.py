"""A resource alarm stops sends, never receives and settlements, and a send it held
past its bound says so.

A memory or disk alarm makes RabbitMQ block every connection that publishes: it reads
nothing more from it until the alarm clears. Sends, receives and acks shared one
connection, so once a service had sent, a consumer holding messages could neither ack
them nor take more while the alarm lasted, and its claims ran out (their messages
delivered again). Publishing now has a connection of its own.

A private node (its alarm is raised by lowering its memory watermark, which the shared
broker must never see); each wait is bounded by the timing profile.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from mqcontract.config import load_config
from mqcontract.providers.rabbitmq import PublishingBlocked, RabbitMqMessagingService
from mqcontract.providers.rabbitmq._blocked import is_blocked
from mqcontract.providers.rabbitmq.service import connect_rabbitmq
from mqcontract_conformance.timing import TimingProfile
from mqcontract_fixtures.private.rabbitmq import PrivateRabbitNode, rabbitmq_available

pytestmark = [
    pytest.mark.cluster,  # a private node: CI runs these as their own step
    pytest.mark.skipif(not rabbitmq_available(), reason="RabbitMQ not installed"),
]

TIMING = TimingProfile.from_scale()
#: Bound on the whole case: a private node's start (about 10 s) and stop included.
BOUND = 180.0


async def _open(node: PrivateRabbitNode) -> RabbitMqMessagingService:
    config = load_config(validate_backend=False)
    rabbit = dataclasses.replace(
        config.rabbitmq, url=node.amqp_url, management_url=node.management_url
    )
    return await connect_rabbitmq(
        dataclasses.replace(config, rabbitmq=rabbit, operation_timeout_seconds=TIMING.operation),
        quorum=False,
    )


async def _alarm(node: PrivateRabbitNode, on: bool) -> None:
    await node.ctl("set_vm_memory_high_watermark", "0.000001" if on else "0.4")


async def _publish_blocked(service: RabbitMqMessagingService) -> None:
    """Wait (bounded) for the broker's ``connection.blocked`` on the publishing connection
    (sent once it publishes during the alarm)."""
    publishing = service.robust_connections[-1]  # the last opened: no subscribe here
    async with asyncio.timeout(TIMING.slack):
        while True:
            transport = publishing.transport
            if transport is not None and is_blocked(transport.connection):
                return
            await asyncio.sleep(TIMING.step)


async def test_a_memory_alarm_blocks_sends_but_not_receives_or_acks() -> None:
    async with asyncio.timeout(BOUND), PrivateRabbitNode() as node:
        service = await _open(node)
        try:
            queue = "alarm_jobs"
            await service.create_queue(queue)
            sent = await service.send_batch(queue, [b"1", b"2", b"3", b"4"])
            held = await service.receive_messages(queue, 2, TIMING.long)
            assert [m.msg_id for m in held] == sent[:2]
            await _alarm(node, True)
            try:
                blocked = asyncio.create_task(service.send_message(queue, b"5"))
                await _publish_blocked(service)  # the broker blocks on the first publish
                # Settling and receiving go on while the publish waits for the alarm.
                try:
                    async with asyncio.timeout(TIMING.operation):
                        for message in held:
                            await service.ack_message(queue, message.msg_id)
                        more = await service.receive_messages(queue, 2, TIMING.long)
                        await service.nack_message(queue, more[0].msg_id)
                        await service.ack_message(queue, more[1].msg_id)
                except TimeoutError:
                    pytest.fail(
                        f"acks and receives waited {TIMING.operation:g} s for the alarm: "
                        f"they share the blocked publishing connection ({service.connection_names})"
                    )
                assert service.connection_names[1].endswith("-publish")
                assert [m.msg_id for m in more] == sent[2:]
                assert not blocked.done(), "a send went through during the alarm"
            finally:
                await _alarm(node, False)
            fifth = await blocked  # sent once the alarm cleared
            left = await service.receive_messages(queue, 10, TIMING.long)
            assert sorted(m.msg_id for m in left) == sorted([sent[2], fifth])

            # A send that runs out of time behind an alarm says why, naming its queue.
            await _alarm(node, True)
            try:
                with pytest.raises(PublishingBlocked) as caught:
                    await service.send_message(queue, b"6")
            finally:
                await _alarm(node, False)
            assert caught.value.queue == queue
            assert caught.value.seconds == TIMING.operation
            assert "blocked publishing" in str(caught.value), str(caught.value)
        finally:
            await service.close()

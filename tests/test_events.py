"""The event system on the in-memory provider: modes, routing, stop, demo."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from mqcontract.capabilities import Capabilities, PushKind
from mqcontract.config import MessagingConfig
from mqcontract.errors import ConnectionLost
from mqcontract.events import ConsumerSettings, DeploymentMode, QueueConsumer
from mqcontract.events.demo import run_demo
from mqcontract.messages import QueuedMessage
from mqcontract.providers.memory import InMemoryMessagingService

FULL = Capabilities(push=PushKind.FULL)
SIGNAL_NEEDS_POLL = Capabilities(
    push=PushKind.SIGNAL, requires_fallback_polling=True, fallback_polling_interval=1.0
)
NO_PUSH = Capabilities(push=PushKind.NONE)


@pytest.mark.parametrize(
    ("requested", "caps", "effective"),
    [
        (DeploymentMode.EVENT_DRIVEN_ONLY, FULL, DeploymentMode.EVENT_DRIVEN_ONLY),
        (DeploymentMode.EVENT_DRIVEN_ONLY, SIGNAL_NEEDS_POLL, DeploymentMode.HYBRID),
        (DeploymentMode.EVENT_DRIVEN_ONLY, NO_PUSH, DeploymentMode.POLLING_ONLY),
        (DeploymentMode.HYBRID, FULL, DeploymentMode.HYBRID),
        (DeploymentMode.HYBRID, NO_PUSH, DeploymentMode.POLLING_ONLY),
        (DeploymentMode.POLLING_ONLY, FULL, DeploymentMode.POLLING_ONLY),
    ],
)
def test_effective_mode_follows_the_documented_table(
    requested: DeploymentMode, caps: Capabilities, effective: DeploymentMode
) -> None:
    assert requested.effective_for_provider(caps) is effective


async def _until(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    """Poll a condition with a deadline (the stats have no event to wait on)."""
    async with asyncio.timeout(seconds):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_stop_waits_for_in_flight_handlers_and_loses_nothing() -> None:
    service = InMemoryMessagingService()
    await service.create_queue("jobs")
    await service.send_batch("jobs", [b"a", b"b", b"c", b"d"])
    gate = asyncio.Event()

    async def blocked(_: QueuedMessage) -> None:
        await gate.wait()

    settings = ConsumerSettings(mode=DeploymentMode.EVENT_DRIVEN_ONLY, workers=2, stop_grace=0.2)
    consumer = QueueConsumer(service, ["jobs"], blocked, settings)
    await consumer.start()
    await _until(lambda: sum(consumer.stats.invocations.values()) == 2)
    await consumer.stop()  # the two blocked handlers are cancelled after the grace period
    assert consumer.stats.processed == 0
    survivors = await service.receive_messages("jobs", 10, 5)
    # Unstarted work was released at once; cancelled work is still held by its claim.
    assert len(survivors) == 2
    assert service.stored_ids("jobs") == [1, 2, 3, 4]
    await service.close()


async def test_demo_counts_match_on_memory() -> None:
    counts = await run_demo(
        MessagingConfig(backend="memory"),
        namespaces=["payments", "inventory"],
        steps=5,
        mode=DeploymentMode.HYBRID,
        timeout=10,
    )
    assert counts == {
        "steps sent": 10,
        "steps processed": 10,
        "results processed": 10,
        "processed twice": 0,
        "tasks": 2,
    }


class _FirstAckCutOff(InMemoryMessagingService):
    """The first ack fails as if the connection dropped mid-frame (outcome unknown)."""

    cut = False

    async def ack_message(self, queue: str, msg_id: int) -> None:
        if not self.cut:
            self.cut = True
            raise ConnectionLost("memory", "(in-process)", "ack cut off")
        await super().ack_message(queue, msg_id)


async def test_an_ack_with_an_unknown_outcome_is_not_a_success_and_the_batch_goes_on() -> None:
    service = _FirstAckCutOff()
    await service.create_queue("jobs")
    first, *rest = await service.send_batch("jobs", [b"a", b"b", b"c"])
    seen: list[int] = []

    async def handler(message: QueuedMessage) -> None:
        seen.append(message.msg_id)

    settings = ConsumerSettings(
        mode=DeploymentMode.POLLING_ONLY, workers=1, poll_interval=0.05, visibility_timeout=0.3
    )
    consumer = QueueConsumer(service, ["jobs"], handler, settings)
    await consumer.start()
    try:
        # The rest of the batch ran although the first ack failed; the first message came
        # back after its timeout (its ack was not applied) and was then settled.
        await _until(lambda: consumer.stats.processed == 3)
    finally:
        await consumer.stop()
    assert seen == [first, *rest, first]
    assert consumer.stats.unsettled_acks == 1
    assert consumer.stats.succeeded[("jobs", first)] == 1
    assert any("ack cut off" in e for e in consumer.stats.errors)
    assert service.stored_ids("jobs") == []
    await service.close()
